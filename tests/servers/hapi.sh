#!/usr/bin/env bash
# The HAPI FHIR JPA server of the tests (tests/servers/hapi: R4 on PostgreSQL, Bulk Data $export,
# every write validated against the R4 core definitions).
#
#   tests/servers/hapi.sh build        builds the jar when missing; prints its path
#   tests/servers/hapi.sh start PORT   builds when missing, starts a private PostgreSQL cluster and
#                                      the server on 127.0.0.1:PORT, waits for /metadata, prints
#                                      the FHIR base URL on its last line
#   tests/servers/hapi.sh stop [PORT]  stops the server this script started on PORT, or every
#                                      one it started (by PID), and its cluster, whose data goes
#
# The jar is cached outside the repository, under $HAPI_CACHE (default ~/.cache/tare-hapi), keyed
# by the hash of the project's files (pom.xml and sources), so a second start takes seconds.
# HAPI_JAVA_OPTS sets the JVM's options (default -Xmx2g; a benchmark holding 5,000 patients wants
# more); HAPI_ARGS adds Spring arguments (`--tare.validate-writes=false` turns request validation
# off, for loading benchmark data). The server's log is $HAPI_CACHE/hapi-PORT.log, its cluster's
# (once stopped) $HAPI_CACHE/postgres-PORT.log.
#
# The database is Debian's `postgresql` (the newest /usr/lib/postgresql/*/bin, or $PG_BIN), the
# one hospitals run HAPI on. Each start creates an empty cluster (a server starts empty), on a
# free port of 127.0.0.1 with a random password; stop deletes it.
set -euo pipefail

PROJECT="$(cd "$(dirname "$0")/hapi" && pwd)"
CACHE=${HAPI_CACHE:-$HOME/.cache/tare-hapi}
PG_BIN=${PG_BIN:-$(find /usr/lib/postgresql -path '*/bin/pg_ctl' 2>/dev/null | sort -V | tail -1 | xargs -r dirname)}
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

is_root() { [ "$(id -u)" -eq 0 ]; }

# PostgreSQL refuses to run as root: then the cluster belongs to `postgres`, the user Debian's
# package creates.
as_cluster_owner() {
    if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Where clusters live: under the cache; as root under /var/tmp instead, because `postgres`
# cannot enter root's home (mode 0700) and opening it up would expose the rest of it. The
# cluster's own directory is made by mktemp and given to its owner alone.
clusters_dir() {
    if is_root; then echo /var/tmp; else echo "$CACHE"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Creates and starts an empty cluster for the server on PORT; sets PG_PORT, PG_PASSWORD and
# PG_VERSION. $CACHE/hapi-PORT.pg names the cluster's directory, for stop.
start_postgres() { # PORT
    local port=$1 dir
    if [ ! -x "$PG_BIN/pg_ctl" ]; then
        echo "PostgreSQL is not installed (Debian: apt-get install postgresql), or set PG_BIN" >&2
        exit 1
    fi
    PG_VERSION=$("$PG_BIN/postgres" --version | awk '{print "PostgreSQL", $3}')
    dir=$(mktemp -d "$(clusters_dir)/tare-hapi-pg-$port.XXXXXX")
    echo "$dir" >"$CACHE/hapi-$port.pg"
    if is_root; then chown postgres: "$dir"; fi
    PG_PORT=$(free_port)
    PG_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && echo "$PG_PASSWORD" >"$dir/password")
    if is_root; then chown postgres: "$dir/password"; fi
    # The owner's cwd stays inside the cluster (it may not enter the caller's).
    if ! (cd "$dir" && as_cluster_owner "$PG_BIN/initdb" --pgdata="$dir/data" --username=hapi \
        --pwfile="$dir/password" --auth=scram-sha-256 --encoding=UTF8 --no-locale --no-sync) \
        >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        echo "initdb failed for the HAPI server on port $port (log above)" >&2
        stop_postgres "$port"
        exit 1
    fi
    rm -f "$dir/password"
    # A test cluster, deleted on stop: no durability (fsync, synchronous commit and full-page
    # writes off), TCP on loopback only, no Unix socket.
    cat >>"$dir/data/postgresql.conf" <<EOF

# tests/servers/hapi.sh: the test cluster of the HAPI server on port $port
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    if ! (cd "$dir" && as_cluster_owner "$PG_BIN/pg_ctl" --pgdata="$dir/data" \
        --log="$dir/postgres.log" --wait --timeout=60 start) >"$dir/pg_ctl.log" 2>&1; then
        cat "$dir/pg_ctl.log" >&2
        tail -20 "$dir/postgres.log" >&2 || true
        echo "PostgreSQL did not start for the HAPI server on port $port (log above)" >&2
        stop_postgres "$port"
        exit 1
    fi
}

# Stops the cluster of the server on PORT (the postmaster named by its postmaster.pid, when
# running in that cluster) and deletes it; keeps its log as $CACHE/postgres-PORT.log.
stop_postgres() { # PORT
    local record="$CACHE/hapi-$1.pg" dir pid
    [ -s "$record" ] || { rm -f "$record"; return 0; }
    dir=$(cat "$record")
    case "$dir" in
        */tare-hapi-pg-"$1".*) ;;
        *) echo "not deleting $dir: not a cluster this script made" >&2; rm -f "$record"; return 0 ;;
    esac
    pid=$(head -1 "$dir/data/postmaster.pid" 2>/dev/null || true)
    # The postmaster works in its data directory: a PID reused since is another process.
    if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$dir/data" ]; then
        kill -INT "$pid" 2>/dev/null || true # fast shutdown: ends open sessions
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    cp "$dir/postgres.log" "$CACHE/postgres-$1.log" 2>/dev/null || true
    rm -rf "$dir"
    rm -f "$record"
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
    stop_postgres "$port" # the cluster of a server on this port that died
    start_postgres "$port"
    # The password in the environment: other users can read a command line, not the environment.
    # shellcheck disable=SC2086 # HAPI_JAVA_OPTS and HAPI_ARGS are lists
    SPRING_DATASOURCE_PASSWORD=$PG_PASSWORD nohup java ${HAPI_JAVA_OPTS:--Xmx2g} -jar "$jar" \
        --server.port="$port" \
        --spring.datasource.url="jdbc:postgresql://127.0.0.1:$PG_PORT/postgres" \
        --spring.datasource.username=hapi \
        ${HAPI_ARGS:-} >"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$pid_file"
    local base="http://127.0.0.1:$port/fhir"
    await_metadata "HAPI FHIR on port $port ($PG_VERSION on port $PG_PORT)" "$base" "$pid" "$log" 300 ||
        { stop "$port"; exit 1; }
}

stop_hapi() { # PORT
    local pid_file="$CACHE/hapi-$1.pid" pid
    [ -s "$pid_file" ] || return 0
    pid=$(cat "$pid_file")
    if runs "$pid_file" tare-test-hapi-server; then
        kill "$pid" 2>/dev/null || true
        # Up to 30 s for a clean shutdown, then no more patience.
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
}

stop() { # [PORT]
    local ports port
    if [ -n "${1:-}" ]; then
        ports=$1
    else
        ports=$(find "$CACHE" -maxdepth 1 -name 'hapi-*.p*' -printf '%f\n' |
            sed -nE 's/^hapi-([0-9]+)\.(pid|pg)$/\1/p' | sort -u)
    fi
    for port in $ports; do
        stop_hapi "$port" # first: the server, then the database it uses
        stop_postgres "$port"
    done
}

mkdir -p "$CACHE"
case "${1:-}" in
    build) build ;;
    start)
        [[ $# -eq 2 && $2 =~ ^[0-9]+$ ]] || { echo "usage: $0 start PORT" >&2; exit 2; }
        start "$2"
        ;;
    stop)
        [[ ${2:-0} =~ ^[0-9]+$ ]] || { echo "usage: $0 stop [PORT]" >&2; exit 2; }
        stop "${2:-}"
        ;;
    *) echo "usage: $0 build | start PORT | stop [PORT]" >&2; exit 2 ;;
esac
