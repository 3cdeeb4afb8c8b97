#!/usr/bin/env bash
# Benchmark of `run` on a large synthetic cohort against the floor for any JSON job: parsing every
# line of the same files as serde::de::IgnoredAny with the same reader and threads (the
# `parse_floor` benchmark program, benches/parse_floor.rs).
# Prints wall times (median of ROUNDS alternating pairs), their ratio, peak RSS and CPU use.
# Targets (issue 2): ratio <= 1.5, peak RSS <= 300 MB, both cores used.
#
#   PATIENTS=20000 ROUNDS=3 bash benches/run_vs_parse_floor.sh
set -euo pipefail

PATIENTS=${PATIENTS:-20000}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${BENCH_DATA:-/tmp/tare-bench-$PATIENTS}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin tare-marker-monitor --examples
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tare-marker-monitor"
EXAMPLES="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples"

if [ ! -s "$DATA/Observation.ndjson" ]; then
    "$BIN" generate --patients "$PATIENTS" --seed 1 --as-of 2026-11-01 --out "$DATA" >/dev/null
fi
OBSERVATIONS=$(wc -l < "$DATA/Observation.ndjson")
BYTES=$(cat "$DATA"/*.ndjson | wc -c)
cat "$DATA"/*.ndjson > /dev/null # warm the page cache for both

measure() { # prints "seconds max_rss_kb cpu_percent"
    /usr/bin/time -f "%e %M %P" -o "$OUT/time" "$@" > /dev/null
    tr -d '%' < "$OUT/time"
}

floor_times=(); lean_times=(); run_times=(); run_rss=(); run_cpu=(); floor_cpu=()
for _ in $(seq "$ROUNDS"); do
    read -r t rss cpu < <(measure "$EXAMPLES/parse_floor" --source-dir "$DATA")
    floor_times+=("$t"); floor_cpu+=("$cpu")
    read -r t rss cpu < <(measure "$EXAMPLES/parse_floor" --lean --source-dir "$DATA")
    lean_times+=("$t")
    read -r t rss cpu < <(measure "$BIN" run --source-dir "$DATA" --as-of 2026-11-01 --out "$OUT/run")
    run_times+=("$t"); run_rss+=("$rss"); run_cpu+=("$cpu")
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
FLOOR=$(median "${floor_times[@]}")
RUN=$(median "${run_times[@]}")
LEAN=$(median "${lean_times[@]}")
RSS_MB=$(( $(median "${run_rss[@]}") / 1024 ))
echo "input: $PATIENTS patients, $OBSERVATIONS Observations, $((BYTES / 1048576)) MiB, $(nproc) cores"
echo "parse-floor (IgnoredAny): median ${FLOOR}s over $ROUNDS rounds (${floor_times[*]}), CPU $(median "${floor_cpu[@]}")%"
echo "lean read structs only:   median ${LEAN}s over $ROUNDS rounds (${lean_times[*]}), ratio to floor $(awk -v r="$LEAN" -v f="$FLOOR" 'BEGIN {printf "%.2f", r / f}')"
echo "run:                      median ${RUN}s over $ROUNDS rounds (${run_times[*]}), CPU $(median "${run_cpu[@]}")%"
echo "ratio run / parse-floor:  $(awk -v r="$RUN" -v f="$FLOOR" 'BEGIN {printf "%.2f", r / f}')  (target <= 1.5)"
echo "peak RSS of run:          ${RSS_MB} MB  (target <= 300 MB)"
jq_like=$(grep -o '"read_ms": [0-9]*\|"evaluate_ms": [0-9]*\|"write_ms": [0-9]*' "$OUT/run/run-summary.json" | tr '\n' ' ')
echo "last run's stages:        $jq_like"
