#!/usr/bin/env bash
# Benchmark of issue 3: a second full `run --server` (nothing left to write) against
# the `fetch_only` benchmark program (benches/fetch_only.rs: the same searches with the same
# concurrency, pages discarded),
# on a FHIR server holding PATIENTS generated TARE patients (52 Observations each).
# Prints medians, the ratio (target <= 1.1) and requests per second.
#
#   SERVER=hapi PATIENTS=5000 ROUNDS=3 bash benches/server_second_run.sh
#
# SERVER=hfs|hapi: see benches/server.sh.
set -euo pipefail

PATIENTS=${PATIENTS:-5000}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin tare-marker-monitor --examples
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tare-marker-monitor"
EXAMPLES="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples"
WORK=$(mktemp -d)
# shellcheck source=benches/server.sh
. "$ROOT/benches/server.sh"
trap 'stop_server; rm -rf "$WORK"' EXIT

"$BIN" run --server "$BASE" --as-of 2026-11-01 --out "$WORK/first" | tail -1

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
runs=(); fetches=(); requests=0; fetch_requests=0
for i in $(seq "$ROUNDS"); do
    line=$("$EXAMPLES/fetch_only" --server "$BASE")
    fetches+=("$(echo "$line" | sed -E 's/.* in ([0-9.]+) s.*/\1/')")
    fetch_requests=$(echo "$line" | sed -E 's/.* ([0-9]+) requests in.*/\1/')
    start=$(python3 -c 'import time; print(time.time())')
    "$BIN" run --server "$BASE" --as-of 2026-11-01 --out "$WORK/second-$i" >/dev/null
    runs+=("$(python3 -c "import time; print(round(time.time() - $start, 3))")")
    requests=$(grep -o '"server_requests": [0-9]*' "$WORK/second-$i/run-summary.json" | grep -o '[0-9]*$')
    echo "round $i: fetch-only ${fetches[-1]} s ($fetch_requests requests), second run ${runs[-1]} s ($requests requests)"
done
RUN=$(median "${runs[@]}"); FETCH=$(median "${fetches[@]}")
echo "patients: $PATIENTS; server: $SERVER_NAME"
echo "fetch-only:  median ${FETCH}s (${fetches[*]}), $fetch_requests requests, $(awk -v n="$fetch_requests" -v t="$FETCH" 'BEGIN {printf "%.1f", n / t}') requests/s"
echo "second run:  median ${RUN}s (${runs[*]}), $requests requests"
echo "ratio second run / fetch-only: $(awk -v r="$RUN" -v f="$FETCH" 'BEGIN {printf "%.2f", r / f}')  (target <= 1.1)"
