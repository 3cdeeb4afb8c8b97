#!/usr/bin/env bash
# Both server benchmarks on one loaded server (loading 5,000 patients takes minutes): first
# the second run against fetch-only (issue 3), then incremental against full (issue 4, which
# changes the data).
#
#   PATIENTS=5000 ROUNDS=3 bash benches/server_all.sh
set -euo pipefail
PATIENTS=${PATIENTS:-5000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/tare-marker-monitor"
WORK=$(mktemp -d)
# shellcheck source=benches/hfs.sh
. "$ROOT/benches/hfs.sh"
trap 'kill $HFS_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
echo "== issue 3: second run vs fetch-only"
BASE=$BASE COHORT=$COHORT_DIR PATIENTS=$PATIENTS HFS_BIN=$HFS_BIN bash "$ROOT/benches/server_second_run.sh" || echo "failed: $?"
echo "== issue 4: incremental vs full"
BASE=$BASE COHORT=$COHORT_DIR PATIENTS=$PATIENTS HFS_BIN=$HFS_BIN bash "$ROOT/benches/incremental_vs_full.sh"
