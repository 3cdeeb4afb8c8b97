#!/usr/bin/env bash
# Benchmark of issue 3: a second full `run --server` (nothing left to write) against
# `run --server --fetch-only` (the same searches with the same concurrency, pages discarded),
# on a FHIR server holding PATIENTS generated TARE patients (52 Observations each).
# Prints medians, the ratio (target <= 1.2) and requests per second.
#
#   PATIENTS=5000 ROUNDS=3 bash benches/server_second_run.sh
#
# Uses a release build of HFS from ~/.cache/tare-hfs-release when there is one (build it with
# `cargo install helios-hfs --version 0.2.7 --locked --root ~/.cache/tare-hfs-release`,
# 30-50 minutes); else the debug build that .ci/run installs, which answers about 4x slower:
# its figures say little about the job.
set -euo pipefail

PATIENTS=${PATIENTS:-5000}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HFS_BIN=$HOME/.cache/tare-hfs-release/bin/hfs
if [ ! -x "$HFS_BIN" ]; then
    HFS_BIN=${HFS_CACHE:-$HOME/.cache/tare-hfs}/bin/hfs
    echo "warning: no release HFS; using the debug build $HFS_BIN"
fi
HFS_DATA=${HFS_CACHE:-$HOME/.cache/tare-hfs}/data-r4
[ -s "$HFS_DATA/search-parameters-r4.json" ] || { echo "run bash .ci/run once first (it fetches the search parameters)"; exit 1; }

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/tare-marker-monitor"
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HFS_VALIDATION_MODE=enforce HFS_UI_ENABLED=false HFS_BASE_URL="http://127.0.0.1:$PORT" \
    "$HFS_BIN" --port "$PORT" --database-url :memory: --data-dir "$HFS_DATA" >"$WORK/hfs.log" 2>&1 &
HFS_PID=$!
trap 'kill $HFS_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 120); do curl -fsS -o /dev/null "$BASE/metadata" 2>/dev/null && break; sleep 1; done

"$BIN" generate --patients "$PATIENTS" --seed 3 --as-of 2026-11-01 --out "$WORK/cohort" >/dev/null
python3 "$ROOT/benches/seed_fhir.py" "$BASE" "$WORK/cohort"
"$BIN" run --server "$BASE" --as-of 2026-11-01 --out "$WORK/first" | tail -1

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
runs=(); fetches=(); requests=0; fetch_requests=0
for i in $(seq "$ROUNDS"); do
    line=$("$BIN" run --server "$BASE" --fetch-only)
    fetches+=("$(echo "$line" | sed -E 's/.* in ([0-9.]+) s.*/\1/')")
    fetch_requests=$(echo "$line" | sed -E 's/.* ([0-9]+) requests in.*/\1/')
    start=$(python3 -c 'import time; print(time.time())')
    "$BIN" run --server "$BASE" --as-of 2026-11-01 --out "$WORK/second-$i" >/dev/null
    runs+=("$(python3 -c "import time; print(round(time.time() - $start, 3))")")
    requests=$(grep -o '"server_requests": [0-9]*' "$WORK/second-$i/run-summary.json" | grep -o '[0-9]*$')
done
RUN=$(median "${runs[@]}"); FETCH=$(median "${fetches[@]}")
echo "patients: $PATIENTS; HFS: $HFS_BIN"
echo "fetch-only:  median ${FETCH}s (${fetches[*]}), $fetch_requests requests, $(awk -v n="$fetch_requests" -v t="$FETCH" 'BEGIN {printf "%.1f", n / t}') requests/s"
echo "second run:  median ${RUN}s (${runs[*]}), $requests requests"
echo "ratio second run / fetch-only: $(awk -v r="$RUN" -v f="$FETCH" 'BEGIN {printf "%.2f", r / f}')  (target <= 1.2)"
