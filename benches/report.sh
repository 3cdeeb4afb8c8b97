#!/usr/bin/env bash
# Benchmark of issue 5: the audit report for PATIENTS generated patients (release build): the
# wall time of `report` against `run` on the same folder (the same read and evaluation, with the
# run's outputs instead of the report), the report's size, and how long headless chromium takes
# from navigation start to the end of the report's script (the page is interactive then), as
# the page itself logs it.
#
#   PATIENTS=20000 ROUNDS=3 bash benches/report.sh
set -euo pipefail

PATIENTS=${PATIENTS:-20000}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tare-marker-monitor"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$BIN" generate --patients "$PATIENTS" --seed 11 --as-of 2026-11-01 --out "$WORK/cohort" >/dev/null

seconds() { python3 -c 'import time; print(time.time())'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
reports=(); runs=(); pages=()
for i in $(seq "$ROUNDS"); do
    start=$(seconds)
    "$BIN" report --source-dir "$WORK/cohort" --as-of 2026-11-01 --out "$WORK/report" >/dev/null
    reports+=("$(python3 -c "import time; print(round(time.time() - $start, 3))")")
    start=$(seconds)
    "$BIN" run --source-dir "$WORK/cohort" --as-of 2026-11-01 --out "$WORK/run" >/dev/null
    runs+=("$(python3 -c "import time; print(round(time.time() - $start, 3))")")
    if command -v chromium >/dev/null; then
        ms=$(chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --enable-logging=stderr --v=0 \
            --dump-dom "file://$WORK/report/report.html" 2>&1 >/dev/null \
            | grep -o 'drawn, [0-9]* ms after navigation start' | grep -o '[0-9]* ms' | grep -o '[0-9]*')
        pages+=("$ms")
    fi
done
flagged=$(($(wc -l <"$WORK/report/report-flagged-patients.csv") - 1))
REPORT=$(median "${reports[@]}"); RUN=$(median "${runs[@]}")
echo "patients: $PATIENTS, flagged: $flagged"
echo "report: median ${REPORT}s (${reports[*]}); run on the same folder: median ${RUN}s (${runs[*]}); ratio $(awk -v a="$REPORT" -v b="$RUN" 'BEGIN {printf "%.2f", a / b}')  (target: report under 10 s)"
echo "report.html: $(du -h "$WORK/report/report.html" | cut -f1) ($(stat -c %s "$WORK/report/report.html") bytes)"
[ ${#pages[@]} -gt 0 ] && echo "chromium, navigation start to script done: median $(median "${pages[@]}") ms (${pages[*]})  (target: under 3000 ms)"
