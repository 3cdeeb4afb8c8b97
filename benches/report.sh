#!/usr/bin/env bash
# Benchmark of issues 5 and 17: the audit report for PATIENTS generated patients (release
# build): the wall time of `report` against `run` on the same folder (the same read and
# evaluation, with the run's outputs instead of the report; target: at most 1.5x), the report's
# size, and in headless chromium (benches/report_page.mjs, over the DevTools protocol) the time
# from navigation start to the end of the page's script (interactive then; target 1.5 s), to
# the end of parsing (the patients' details, placed after the script), the time one filter takes
# (target 100 ms) and the time opening a patient takes, all measured by the page itself.
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
reports=(); runs=(); pages=(); parsed=(); filters=(); opens=()
for i in $(seq "$ROUNDS"); do
    start=$(seconds)
    "$BIN" report --source-dir "$WORK/cohort" --as-of 2026-11-01 --out "$WORK/report" >/dev/null
    reports+=("$(python3 -c "import time; print(round(time.time() - $start, 3))")")
    start=$(seconds)
    "$BIN" run --source-dir "$WORK/cohort" --as-of 2026-11-01 --out "$WORK/run" >/dev/null
    runs+=("$(python3 -c "import time; print(round(time.time() - $start, 3))")")
    if command -v chromium >/dev/null && command -v node >/dev/null; then
        measured=$(node --experimental-websocket --no-warnings "$ROOT/benches/report_page.mjs" "$(readlink -f "$WORK/report")/report.html")
        pages+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ready_ms"])' "$measured")")
        parsed+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["parsed_ms"])' "$measured")")
        filters+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["filter_ms"])' "$measured")")
        opens+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["open_ms"])' "$measured")")
    fi
done
flagged=$(($(wc -l <"$WORK/report/report-flagged-patients.csv") - 1))
REPORT=$(median "${reports[@]}"); RUN=$(median "${runs[@]}")
echo "patients: $PATIENTS, flagged: $flagged"
echo "report: median ${REPORT}s (${reports[*]}); run on the same folder: median ${RUN}s (${runs[*]}); ratio $(awk -v a="$REPORT" -v b="$RUN" 'BEGIN {printf "%.2f", a / b}')  (target: at most 1.50)"
echo "report.html: $(du -h "$WORK/report/report.html" | cut -f1) ($(stat -c %s "$WORK/report/report.html") bytes)"
if [ ${#pages[@]} -gt 0 ]; then
    echo "chromium, navigation start to script done: median $(median "${pages[@]}") ms (${pages[*]})  (target: at most 1500 ms)"
    echo "chromium, navigation start to the end of parsing (DOMContentLoaded; patients' details read): median $(median "${parsed[@]}") ms (${parsed[*]})"
    echo "one filter (severity high) applied in the page: median $(median "${filters[@]}") ms (${filters[*]})  (target: at most 100 ms)"
    echo "the first patient shown opened (details parsed, charts drawn): median $(median "${opens[@]}") ms (${opens[*]})"
fi
