#!/usr/bin/env bash
# The server benchmark table: for each server (SERVERS, default "hfs hapi") and cohort size
# (SIZES, default "1000 5000"), one server loaded once with the generated cohort, then
# benches/server_second_run.sh (fetch-only requests per second; a second full run against
# fetch-only, target <= 1.1) and benches/incremental_vs_full.sh (an incremental run after 1% of
# patients changed against a full run, target <= 0.05). At the sizes in PAYLOAD_SIZES (default
# 1000) it also measures whether asking for less pays: fetch-only as configured, with
# `_elements` on the Observation searches, and with `_count=1000` (rounds alternate). Ends with
# one table row per server and size.
#
#   SERVERS="hfs hapi" SIZES="1000 5000" ROUNDS=3 bash benches/server_all.sh
# Lines are echoed to stderr as they come with `tee -a /dev/stderr`: without -a, tee truncates
# stderr when it is a file (2>log), and the log loses what was written before.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin tare-marker-monitor --examples
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tare-marker-monitor"
ROWS=()
PAYLOAD_ROWS=()
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
seconds_of() { sed -E 's/.* in ([0-9.]+) s.*/\1/'; }
payload() { # prints a table row: fetch-only plain / _elements / _count=1000
    local plain=() elements=() big=() line mb_plain mb_elements
    for _ in $(seq "${ROUNDS:-3}"); do
        line=$("${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/fetch_only" --server "$BASE"); plain+=("$(echo "$line" | seconds_of)")
        mb_plain=$(echo "$line" | sed -E 's/.*\(([0-9.]+) MB.*/\1/')
        line=$("${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/fetch_only" --server "$BASE" --elements); elements+=("$(echo "$line" | seconds_of)")
        mb_elements=$(echo "$line" | sed -E 's/.*\(([0-9.]+) MB.*/\1/')
        line=$(TMM_SERVER__PAGE_SIZE=1000 "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/fetch_only" --server "$BASE"); big+=("$(echo "$line" | seconds_of)")
    done
    echo "| $SERVER_NAME | $PATIENTS | $(median "${plain[@]}") s ($mb_plain MB) | $(median "${elements[@]}") s ($mb_elements MB) | $(median "${big[@]}") s |"
}
for SERVER in ${SERVERS:-hfs hapi}; do
    for PATIENTS in ${SIZES:-1000 5000}; do
        WORK=$(mktemp -d)
        # shellcheck source=benches/server.sh
        . "$ROOT/benches/server.sh"
        trap 'stop_server; rm -rf "$WORK"' EXIT
        echo "== $SERVER_NAME, $PATIENTS patients: second run vs fetch-only"
        second=$(BASE=$BASE COHORT=$COHORT_DIR PATIENTS=$PATIENTS SERVER_NAME=$SERVER_NAME \
            bash "$ROOT/benches/server_second_run.sh" | tee -a /dev/stderr)
        echo "== $SERVER_NAME, $PATIENTS patients: incremental vs full"
        incremental=$(BASE=$BASE COHORT=$COHORT_DIR PATIENTS=$PATIENTS SERVER_NAME=$SERVER_NAME \
            bash "$ROOT/benches/incremental_vs_full.sh" | tee -a /dev/stderr)
        rate=$(echo "$second" | sed -nE 's/^fetch-only:.* ([0-9.]+) requests\/s.*/\1/p')
        ratio=$(echo "$second" | sed -nE 's/^ratio second run \/ fetch-only: ([0-9.]+).*/\1/p')
        inc=$(echo "$incremental" | sed -nE 's/^ratio incremental \/ full: time ([0-9.]+),.*/\1/p')
        ROWS+=("| $SERVER_NAME | $PATIENTS | $rate | $ratio | $inc |")
        if [[ " ${PAYLOAD_SIZES:-1000} " == *" $PATIENTS "* ]]; then
            echo "== $SERVER_NAME, $PATIENTS patients: payload"
            PAYLOAD_ROWS+=("$(payload | tee -a /dev/stderr)")
        fi
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
if [ ${#PAYLOAD_ROWS[@]} -gt 0 ]; then
    echo
    echo "| server | patients | fetch-only as configured | with _elements | with _count=1000 |"
    echo "| --- | --- | --- | --- | --- |"
    printf '%s\n' "${PAYLOAD_ROWS[@]}"
fi
