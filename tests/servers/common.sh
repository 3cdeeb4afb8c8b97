# Sourced by hfs.sh and hapi.sh: waiting for a server they started, and telling whether a PID
# file still names it.

# Whether PID_FILE names a running process whose command line holds PATTERN (a PID file left
# by a server that died may name another process by now).
runs() { # PID_FILE PATTERN
    [ -s "$1" ] && grep -qs -- "$2" "/proc/$(cat "$1")/cmdline"
}

# Waits up to SECONDS for BASE/metadata and prints BASE once it answers; returns 1, with the end
# of LOG, when the process PID ends or the time runs out.
await_metadata() { # NAME BASE PID LOG SECONDS
    local name=$1 base=$2 pid=$3 log=$4 seconds=$5
    for _ in $(seq "$seconds"); do
        if curl -fsS -o /dev/null "$base/metadata" 2>/dev/null; then
            echo "$name up (PID $pid, log $log)" >&2
            echo "$base"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -40 "$log" >&2
            echo "$name exited (log above)" >&2
            return 1
        fi
        sleep 1
    done
    tail -40 "$log" >&2
    echo "$name did not answer $base/metadata within $seconds s" >&2
    return 1
}
