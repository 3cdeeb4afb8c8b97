#!/usr/bin/env bash
# The HAPI FHIR JPA server of the tests (tests/servers/hapi: R4, in-memory H2, Bulk Data $export,
# every write validated against the R4 core definitions).
#
#   tests/servers/hapi.sh build        builds the jar when missing; prints its path
#   tests/servers/hapi.sh start PORT   builds when missing, starts it on 127.0.0.1:PORT, waits
#                                      for /metadata, prints the FHIR base URL on its last line
#   tests/servers/hapi.sh stop [PORT]  stops the server this script started on PORT, or every
#                                      one it started (by PID)
#
# The jar is cached outside the repository, under $HAPI_CACHE (default ~/.cache/tare-hapi), keyed
# by the hash of the project's files (pom.xml and sources), so a second start takes seconds.
# HAPI_JAVA_OPTS sets the JVM's options (default -Xmx2g; a benchmark holding 5,000 patients wants
# more); HAPI_ARGS adds Spring arguments (`--tare.validate-writes=false` turns request validation
# off, for loading benchmark data). The server's log is $HAPI_CACHE/hapi-PORT.log.
set -euo pipefail

PROJECT="$(cd "$(dirname "$0")/hapi" && pwd)"
CACHE=${HAPI_CACHE:-$HOME/.cache/tare-hapi}
# shellcheck source=tests/servers/common.sh
. "$(dirname "$0")/common.sh"

project_hash() {
    (cd "$PROJECT" && find pom.xml src -type f -print0 | sort -z | xargs -0 sha256sum) |
        sha256sum | cut -c1-16
}

build() {
    local jar="$CACHE/$(project_hash)/tare-test-hapi-server.jar"
    if [ ! -s "$jar" ]; then
        echo "building the HAPI FHIR test server (Maven; first time about 5 minutes)" >&2
        local work
        work=$(mktemp -d)
        # Built in a copy, so the repository stays clean and an interrupted build leaves no jar.
        cp -r "$PROJECT/pom.xml" "$PROJECT/src" "$work/"
        if ! (cd "$work" && mvn -q -B -DskipTests package >"$work/build.log" 2>&1); then
            tail -40 "$work/build.log" >&2
            echo "the HAPI FHIR test server did not build (log above)" >&2
            exit 1
        fi
        mkdir -p "$(dirname "$jar")"
        mv "$work/target/tare-test-hapi-server.jar" "$jar.partial"
        mv "$jar.partial" "$jar"
        rm -rf "$work"
    fi
    echo "$jar"
}

start() {
    local port=$1
    local jar log pid
    jar=$(build)
    log="$CACHE/hapi-$port.log"
    local pid_file="$CACHE/hapi-$port.pid"
    if runs "$pid_file" tare-test-hapi-server; then
        echo "a HAPI server started by this script runs on port $port (PID $(cat "$pid_file"))" >&2
        exit 1
    fi
    # shellcheck disable=SC2086 # HAPI_JAVA_OPTS and HAPI_ARGS are lists
    nohup java ${HAPI_JAVA_OPTS:--Xmx2g} -jar "$jar" --server.port="$port" ${HAPI_ARGS:-} >"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$pid_file"
    local base="http://127.0.0.1:$port/fhir"
    await_metadata "HAPI FHIR on port $port" "$base" "$pid" "$log" 300 || { stop "$port"; exit 1; }
}

stop() { # [PORT]
    local pid_file pid pattern="hapi-${1:-*}.pid"
    # $pattern unquoted: without a port it is a glob over every PID file.
    for pid_file in "$CACHE"/$pattern; do
        [ -s "$pid_file" ] || continue
        pid=$(cat "$pid_file")
        if ! runs "$pid_file" tare-test-hapi-server; then
            rm -f "$pid_file"
            continue
        fi
        kill "$pid" 2>/dev/null || true
        # Up to 30 s for a clean shutdown, then no more patience.
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$pid_file"
    done
}

mkdir -p "$CACHE"
case "${1:-}" in
    build) build ;;
    start) [ $# -eq 2 ] || { echo "usage: $0 start PORT" >&2; exit 2; }; start "$2" ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: $0 build | start PORT | stop [PORT]" >&2; exit 2 ;;
esac
