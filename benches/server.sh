# Sourced by the server benchmarks: starts SERVER (hfs or hapi, default hfs) on a free port in
# $WORK, sets BASE and SERVER_NAME and defines stop_server, and loads the generated cohort
# $WORK/cohort (PATIENTS patients, seed 3) into it. With BASE and COHORT set (a server that
# already holds that cohort: benches/server_all.sh), it does nothing but point COHORT_DIR there.
#
# Validation is off here: it slows loading a 5,000-patient cohort by an order of magnitude, and
# these benchmarks measure reads (the tests keep it on).
# - hfs: the release build in ~/.cache/tare-hfs-release when there is one (build it with
#   `cargo install helios-hfs --version 0.2.7 --locked --root ~/.cache/tare-hfs-release`, 30-50
#   minutes), else the debug build `.ci/run` installs, which answers about 4x slower.
# - hapi: tests/servers/hapi.sh (on a PostgreSQL cluster of its own, emptied and deleted with the
#   server), with an 8 GB heap (HAPI_JAVA_OPTS overrides).
SERVER=${SERVER:-hfs}
stop_server() { :; }
if [ -n "${BASE:-}" ] && [ -n "${COHORT:-}" ]; then
    COHORT_DIR=$COHORT
    SERVER_NAME=${SERVER_NAME:-"$SERVER (started by the caller)"}
    return 0
fi
COHORT_DIR=$WORK/cohort
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
case "$SERVER" in
    hfs)
        HFS_BIN=$HOME/.cache/tare-hfs-release/bin/hfs
        SERVER_NAME="HFS 0.2.7 (release build)"
        if [ ! -x "$HFS_BIN" ]; then
            HFS_BIN=${HFS_CACHE:-$HOME/.cache/tare-hfs}/bin/hfs
            SERVER_NAME="HFS 0.2.7 (debug build: answers about 4x slower)"
            echo "warning: no release HFS; using the debug build $HFS_BIN"
        fi
        HFS_DATA=${HFS_CACHE:-$HOME/.cache/tare-hfs}/data-r4
        [ -s "$HFS_DATA/search-parameters-r4.json" ] || "$ROOT/tests/servers/hfs.sh" install >/dev/null
        HFS_VALIDATION_MODE=off HFS_UI_ENABLED=false HFS_BASE_URL="http://127.0.0.1:$PORT" \
            "$HFS_BIN" --port "$PORT" --database-url :memory: --data-dir "$HFS_DATA" >"$WORK/hfs.log" 2>&1 &
        SERVER_PID=$!
        stop_server() { kill "$SERVER_PID" 2>/dev/null || true; }
        BASE="http://127.0.0.1:$PORT"
        # shellcheck source=tests/servers/common.sh
        . "$ROOT/tests/servers/common.sh"
        await_metadata "$SERVER_NAME" "$BASE" "$SERVER_PID" "$WORK/hfs.log" 120 >/dev/null || exit 1
        ;;
    hapi)
        SERVER_NAME="HAPI FHIR 8.8 JPA (PostgreSQL)"
        BASE=$(HAPI_JAVA_OPTS=${HAPI_JAVA_OPTS:--Xmx8g} HAPI_ARGS=--tare.validate-writes=false \
            "$ROOT/tests/servers/hapi.sh" start "$PORT" | tail -1)
        stop_server() { "$ROOT/tests/servers/hapi.sh" stop "$PORT"; }
        ;;
    *) echo "SERVER must be hfs or hapi"; exit 2 ;;
esac
"$BIN" generate --patients "$PATIENTS" --seed 3 --as-of 2026-11-01 --out "$COHORT_DIR" >/dev/null
seed_start=$SECONDS
python3 "$ROOT/benches/seed_fhir.py" "$BASE" "$COHORT_DIR"
echo "seeded $SERVER_NAME with $PATIENTS patients in $((SECONDS - seed_start)) s"
