#!/usr/bin/env bash
# After changing 1% of PATIENTS generated TARE patients on a FHIR server (a new PIVKA-II value
# each), the wall time and requests of an incremental run against a full run (`--full`) that
# has the same amount to write (another 1% changed before it). Rounds alternate; prints medians
# and the ratios (target: incremental <= 5% of full).
#
#   SERVER=hapi PATIENTS=5000 ROUNDS=3 bash benches/incremental_vs_full.sh
#
# The as-of date stays 2026-11-01, and the overlap is 0: the changes come seconds after each
# run (the default overlap of 15 minutes would take in the seeding itself).
set -euo pipefail

PATIENTS=${PATIENTS:-5000}
ROUNDS=${ROUNDS:-3}
CHANGED=$((PATIENTS / 100))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tare-marker-monitor"
WORK=$(mktemp -d)
# shellcheck source=benches/server.sh
. "$ROOT/benches/server.sh"
trap 'stop_server; rm -rf "$WORK"' EXIT

printf '[schedule]\nstate_file = "%s/state.json"\noverlap_minutes = 0\n' "$WORK" >"$WORK/config.toml"
"$BIN" run --server "$BASE" --config "$WORK/config.toml" --as-of 2026-11-01 --out "$WORK/first" | tail -1

field() { python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }
timed_run() { # OUT [extra args]: prints seconds
    local out=$1; shift
    local start; start=$(python3 -c 'import time; print(time.time())')
    "$BIN" run --server "$BASE" --config "$WORK/config.toml" --as-of 2026-11-01 --out "$out" "$@" >/dev/null
    python3 -c "import time; print(round(time.time() - $start, 3))"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
inc=(); full=(); inc_req=(); full_req=(); inc_seen=(); full_seen=()
for i in $(seq "$ROUNDS"); do
    sleep 1
    python3 "$ROOT/benches/change_patients.py" "$BASE" "$COHORT_DIR" "$CHANGED" "$((2 * i))" >/dev/null
    inc+=("$(timed_run "$WORK/inc-$i")")
    [ "$(field "$WORK/inc-$i/run-summary.json" 's["mode"]')" = incremental ] || { echo "not incremental"; exit 1; }
    inc_req+=("$(field "$WORK/inc-$i/run-summary.json" 's["server_requests"]')")
    inc_seen+=("$(field "$WORK/inc-$i/run-summary.json" 's["patients"]["seen"]')")
    sleep 1
    python3 "$ROOT/benches/change_patients.py" "$BASE" "$COHORT_DIR" "$CHANGED" "$((2 * i + 1))" >/dev/null
    full+=("$(timed_run "$WORK/full-$i" --full)")
    full_req+=("$(field "$WORK/full-$i/run-summary.json" 's["server_requests"]')")
    full_seen+=("$(field "$WORK/full-$i/run-summary.json" 's["patients"]["seen"]')")
    echo "round $i: incremental ${inc[-1]} s, ${inc_req[-1]} requests, ${inc_seen[-1]} patients; full ${full[-1]} s, ${full_req[-1]} requests, ${full_seen[-1]} patients; written: $(field "$WORK/inc-$i/run-summary.json" 's["write_back"]["transactions"]') / $(field "$WORK/full-$i/run-summary.json" 's["write_back"]["transactions"]') transactions"
done
INC=$(median "${inc[@]}"); FULL=$(median "${full[@]}")
INC_REQ=$(median "${inc_req[@]}"); FULL_REQ=$(median "${full_req[@]}")
echo "patients: $PATIENTS, changed per round: $CHANGED; server: $SERVER_NAME"
echo "incremental: median ${INC}s, $INC_REQ requests"
echo "full:        median ${FULL}s, $FULL_REQ requests"
echo "ratio incremental / full: time $(awk -v a="$INC" -v b="$FULL" 'BEGIN {printf "%.3f", a / b}'), requests $(awk -v a="$INC_REQ" -v b="$FULL_REQ" 'BEGIN {printf "%.3f", a / b}')  (target <= 0.05)"
