#!/usr/bin/env bash
# How the cost of `run` grows with the export: for a realistic hospital export (`generate
# --realistic`: tumour markers and liver labs about 5 % of the Observation lines, with
# Encounters, MedicationRequests, DiagnosticReports around them) at about 10^5, 10^6 and 10^7
# Observation lines, and for the all-marker cohort (every Observation a marker or liver lab)
# at about 10^6, the wall time of `run` against the floor of any JSON job on the same folder:
# `parse_floor` (every line of every file parsed as serde::de::IgnoredAny with the job's own
# reader, on the same threads). Rounds alternate floor and run; prints medians, their ratio,
# the peak RSS of `run`, and one table row per folder.
#
#   ROUNDS=3 SIZES="100000 1000000 10000000" bash benches/read_scaling.sh
#
# Targets (issue 12): realistic export of 10^6 lines or more, run <= 0.6x the floor; all-marker
# cohort of 10^6, run <= 2.5x the floor and peak RSS <= 200 MB; realistic 10^7, peak RSS <=
# 300 MB. Folders are generated once under BENCH_DATA (default /tmp) and reused: 10^7 lines
# take about 10 GB of disk.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"100000 1000000 10000000"}
DATA=${BENCH_DATA:-/tmp}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin tare-marker-monitor --examples
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tare-marker-monitor"
EXAMPLES="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples"

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() { # prints "seconds max_rss_kb"
    /usr/bin/time -f "%e %M" -o "$OUT/time" "$@" >/dev/null 2>"$OUT/stderr" || { cat "$OUT/stderr"; exit 1; }
    cat "$OUT/time"
}

ROWS=()
bench() { # LABEL FOLDER
    local label=$1 folder=$2
    local lines bytes
    lines=$(cat "$folder"/Observation*.ndjson | wc -l)
    bytes=$(du -sb "$folder" | cut -f1)
    cat "$folder"/*.ndjson >/dev/null # the page cache, warm for both
    local floors=() runs=() rss=()
    for _ in $(seq "$ROUNDS"); do
        read -r t _ < <(measure "$EXAMPLES/parse_floor" --source-dir "$folder")
        floors+=("$t")
        read -r t r < <(measure "$BIN" run --source-dir "$folder" --as-of 2026-11-01 --out "$OUT/run")
        runs+=("$t"); rss+=("$r")
    done
    local floor run ratio rss_mb
    floor=$(median "${floors[@]}"); run=$(median "${runs[@]}")
    ratio=$(awk -v r="$run" -v f="$floor" 'BEGIN {printf "%.2f", r / f}')
    rss_mb=$(( $(median "${rss[@]}") / 1024 ))
    echo "$label: $lines Observation lines, $((bytes / 1048576)) MiB; floor ${floor}s (${floors[*]}); run ${run}s (${runs[*]}); ratio $ratio; peak RSS ${rss_mb} MB"
    ROWS+=("| $label | $lines | $((bytes / 1048576)) MiB | ${floor} s | ${run} s | $ratio | ${rss_mb} MB |")
}

for size in $SIZES; do
    # About 1,078 Observation lines per cohort patient in a realistic export.
    patients=$(( (size + 1077) / 1078 ))
    folder="$DATA/tare-realistic-$patients"
    if [ ! -s "$folder/Patient.ndjson" ]; then
        "$BIN" generate --realistic --patients "$patients" --seed 1 --as-of 2026-11-01 --out "$folder" >/dev/null
    fi
    bench "realistic export" "$folder"
done
# The all-marker cohort: 52 Observations per patient, 20,000 patients.
folder="$DATA/tare-bench-20000"
if [ ! -s "$folder/Observation.ndjson" ]; then
    "$BIN" generate --patients 20000 --seed 1 --as-of 2026-11-01 --out "$folder" >/dev/null
fi
bench "all-marker cohort" "$folder"

echo
echo "$(nproc) cores; medians of $ROUNDS rounds"
echo "| export | Observation lines | size | parse floor | run | run / floor | peak RSS of run |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
