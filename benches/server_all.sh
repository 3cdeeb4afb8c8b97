#!/usr/bin/env bash
# The server benchmark table: for each server (SERVERS, default "hfs hapi") and cohort size
# (SIZES, default "1000 5000"), one server loaded once with the generated cohort, then
# benches/server_second_run.sh (fetch-only requests per second; a second full run against
# fetch-only, target <= 1.1) and benches/incremental_vs_full.sh (an incremental run after 1% of
# patients changed against a full run, target <= 0.05). Ends with one table row per run.
#
#   SERVERS="hfs hapi" SIZES="1000 5000" ROUNDS=3 bash benches/server_all.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin tare-marker-monitor --examples
BIN="$ROOT/target/release/tare-marker-monitor"
ROWS=()
for SERVER in ${SERVERS:-hfs hapi}; do
    for PATIENTS in ${SIZES:-1000 5000}; do
        WORK=$(mktemp -d)
        # shellcheck source=benches/server.sh
        . "$ROOT/benches/server.sh"
        trap 'stop_server; rm -rf "$WORK"' EXIT
        echo "== $SERVER_NAME, $PATIENTS patients: second run vs fetch-only"
        second=$(BASE=$BASE COHORT=$COHORT_DIR PATIENTS=$PATIENTS SERVER_NAME=$SERVER_NAME \
            bash "$ROOT/benches/server_second_run.sh" | tee /dev/stderr)
        echo "== $SERVER_NAME, $PATIENTS patients: incremental vs full"
        incremental=$(BASE=$BASE COHORT=$COHORT_DIR PATIENTS=$PATIENTS SERVER_NAME=$SERVER_NAME \
            bash "$ROOT/benches/incremental_vs_full.sh" | tee /dev/stderr)
        rate=$(echo "$second" | sed -nE 's/^fetch-only:.* ([0-9.]+) requests\/s.*/\1/p')
        ratio=$(echo "$second" | sed -nE 's/^ratio second run \/ fetch-only: ([0-9.]+).*/\1/p')
        inc=$(echo "$incremental" | sed -nE 's/^ratio incremental \/ full: time ([0-9.]+),.*/\1/p')
        ROWS+=("| $SERVER_NAME | $PATIENTS | $rate | $ratio | $inc |")
        stop_server
        rm -rf "$WORK"
        trap - EXIT
        unset BASE COHORT
    done
done
echo
echo "| server | patients | fetch-only requests/s | second run / fetch-only (<= 1.1) | incremental / full (<= 0.05) |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
