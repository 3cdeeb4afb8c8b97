# Sourced by the server benchmarks: starts HFS on a free port in $WORK, sets BASE and HFS_PID,
# and loads the generated cohort $WORK/cohort into it. With BASE and COHORT set (a server that
# already holds that cohort: benches/server_all.sh), it does nothing but point COHORT_DIR there.
# Validation is off here: HFS's enforce mode slows loading a 5,000-patient cohort to tens of
# resources per second, and these benchmarks measure reads (the tests keep enforce on).
if [ -n "${BASE:-}" ] && [ -n "${COHORT:-}" ]; then
    COHORT_DIR=$COHORT
    HFS_PID=
    HFS_BIN=${HFS_BIN:-"(started by the caller)"}
    return 0
fi
COHORT_DIR=$WORK/cohort
# Uses the release build in ~/.cache/tare-hfs-release when there is one (build it with
# `cargo install helios-hfs --version 0.2.7 --locked --root ~/.cache/tare-hfs-release`,
# 30-50 minutes), else the debug build `.ci/run` installs, which answers about 4x slower.
HFS_BIN=$HOME/.cache/tare-hfs-release/bin/hfs
if [ ! -x "$HFS_BIN" ]; then
    HFS_BIN=${HFS_CACHE:-$HOME/.cache/tare-hfs}/bin/hfs
    echo "warning: no release HFS; using the debug build $HFS_BIN"
fi
HFS_DATA=${HFS_CACHE:-$HOME/.cache/tare-hfs}/data-r4
[ -s "$HFS_DATA/search-parameters-r4.json" ] || { echo "run bash .ci/run once first (it fetches the search parameters)"; exit 1; }
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HFS_VALIDATION_MODE=off HFS_UI_ENABLED=false HFS_BASE_URL="http://127.0.0.1:$PORT" \
    "$HFS_BIN" --port "$PORT" --database-url :memory: --data-dir "$HFS_DATA" >"$WORK/hfs.log" 2>&1 &
HFS_PID=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 120); do curl -fsS -o /dev/null "$BASE/metadata" 2>/dev/null && break; sleep 1; done
"$BIN" generate --patients "$PATIENTS" --seed 3 --as-of 2026-11-01 --out "$COHORT_DIR" >/dev/null
python3 "$ROOT/benches/seed_fhir.py" "$BASE" "$COHORT_DIR"
