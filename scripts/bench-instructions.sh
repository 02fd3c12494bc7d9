#!/usr/bin/env bash
# Instructions per event of the worker and of the do-nothing forwarder, counted by
# valgrind's callgrind: unlike a rate, a count does not move with what else the shared
# 2-core machine is doing, so it shows a change of a few percent that the throughput
# bench (scripts/bench-throughput.sh) cannot. Each client drains SMALL and then LARGE
# preloaded events in two runs of its own, start to exit; the difference of the two
# totals divided by LARGE - SMALL is its cost per event, without start-up and shutdown.
#
#   scripts/bench-instructions.sh [SMALL] [LARGE] [CONCURRENCY] [CONTAINERS] [CONFIGS_PER_CONTAINER]
#
# Defaults: 2000 and 12000 events, concurrency 64, 100 containers x 10 configs. The last
# lines are `forwarder instructions per event N`, `worker instructions per event N` and
# `ratio X.XX` (forwarder / worker). BLOB_ROUTER_BIN measures another build of the worker.
# Under valgrind the clients run many times slower and on one thread at a time, so only
# the counts mean anything, not the time taken. PROFILE_DIR=DIR keeps the four callgrind
# outputs there (`callgrind_annotate --inclusive=yes DIR/worker.12000` shows where they go).
set -euo pipefail
# The runs below happen inside $(...): let a failure there stop the script too.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

SMALL="${1:-2000}"
LARGE="${2:-12000}"
CONCURRENCY="${3:-64}"
CONTAINERS="${4:-100}"
PER="${5:-10}"
(( LARGE > SMALL )) || { echo "LARGE ($LARGE) must be more than SMALL ($SMALL)" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }

. scripts/bench-lib.sh
start_throughput_bench "$CONTAINERS"
"$TOOL" configs "$work/configs.json" "$CONTAINERS" "$PER" 2>/dev/null
echo "nats-server on port $port; $SMALL and $LARGE events, concurrency $CONCURRENCY, $((CONTAINERS * PER)) configs"

# Total instructions of the callgrind run whose output file is $1; fails if there is none.
total() {
    local n
    n="$(awk '/^(summary|totals):/ { print $2; exit }' "$1")"
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "no instruction total in $1" >&2; return 1; }
    echo "$n"
}
CALLGRIND=(valgrind --tool=callgrind --dump-instr=no --dump-line=no)

# Instructions of the forwarder draining $1 events, start to exit.
forwarder() {
    "$TOOL" reset
    "$TOOL" preload "$1" 2>/dev/null
    "${CALLGRIND[@]}" --callgrind-out-file="$work/fwd.$1" "$TOOL" forward "$CONCURRENCY" >/dev/null 2>"$work/fwd.$1.log"
    total "$work/fwd.$1"
}

# Instructions of the worker started on $1 preloaded events, until drained and stopped.
worker() {
    "$TOOL" reset
    "$TOOL" preload "$1" 2>/dev/null
    # Not start_worker: the worker runs under valgrind, and wait-drained waits for it.
    BLOB_ROUTER_LOG_LEVEL=warn,blob_router::http=info "${CALLGRIND[@]}" --callgrind-out-file="$work/wrk.$1" \
        "$BIN" run --nats-url "nats://127.0.0.1:$port" --http-addr 127.0.0.1:0 --log-format json \
        --configs "$work/configs.json" --concurrency "$CONCURRENCY" 2>"$work/worker.log" &
    local pid=$!
    # Stopped here on any failure (this runs in a subshell: the EXIT trap does not see it).
    trap 'kill "$pid" 2>/dev/null || true' EXIT
    "$TOOL" wait-drained blob-router >/dev/null
    kill -TERM "$pid"
    wait "$pid" || { echo "the worker did not exit cleanly" >&2; tail -5 "$work/worker.log" >&2; return 1; }
    trap - EXIT
    total "$work/wrk.$1"
}

per_event() { awk -v a="$1" -v b="$2" -v n="$((LARGE - SMALL))" 'BEGIN { printf "%.0f", (b - a) / n }'; }
f="$(per_event "$(forwarder "$SMALL")" "$(forwarder "$LARGE")")"
echo "forwarder instructions per event $f"
w="$(per_event "$(worker "$SMALL")" "$(worker "$LARGE")")"
echo "worker instructions per event $w"
awk -v f="$f" -v w="$w" 'BEGIN { printf "ratio %.2f\n", f / w }'
if [ -n "${PROFILE_DIR:-}" ]; then
    mkdir -p "$PROFILE_DIR"
    for n in "$SMALL" "$LARGE"; do
        cp "$work/fwd.$n" "$PROFILE_DIR/forwarder.$n"
        cp "$work/wrk.$n" "$PROFILE_DIR/worker.$n"
    done
fi
