#!/usr/bin/env bash
# Throughput of the worker against a do-nothing forwarder on the same machine, server and
# events (see examples/throughput.rs for the forwarder). Each round runs the forwarder
# and the worker (each first in every other round; with OUTPUTS=both, three clients
# whose order turns by one each round) on the same N freshly preloaded events, and
# prints both rates, the
# CPU each client and nats-server spent per event, and the round's ratio; the last line,
# `ratio X.XX`, is the median of the rounds' ratios (worker / forwarder), since on a
# shared 2-core machine one run's rate can move by a tenth. Both clients are timed
# alike, by an observer process that looks at their consumer every 20 ms (from its first
# look to the one that finds it drained; since 2026-12-04's twelfth session: before, the
# forwarder timed itself, which left the observer's lag to the worker alone). The line
# before it, `cpu ratio X.XX`, is the median of what each round's ratio would be if the two cores were
# the only limit: the forwarder's CPU per event (its own and nats-server's) over the
# worker's.
#
#   [ROUNDS=5] [OUTPUTS=routed|both|same] [FORWARDER_DISPATCH=tasks] [FORWARDER_CONNECTIONS=1]
#   [FORWARDER_BUSY_NS=N] [FORWARDER_PUBLISH=numbered] scripts/bench-throughput.sh [EVENTS] [CONCURRENCY] [CONTAINERS] [CONFIGS_PER_CONTAINER]
#
# The yardstick is a forwarder run the way the worker runs (its messages polled by one
# task, its outputs on a connection of their own). Diagnostics, each changing only the
# forwarder: OUTPUTS=routed makes it write the worker's own subjects and headers, so
# that nats-server's work is the same in both runs (OUTPUTS=both runs that forwarder
# beside the yardstick in every round, and prints the worker's ratio to it, each
# round's and their median, `routed ratio X.XX`, before the others); FORWARDER_DISPATCH=tasks gives each
# message a task, the way the worker ran before 2026-12-03's sixth session;
# FORWARDER_CONNECTIONS=1 publishes on the consuming connection, the way the worker did
# before the seventh; FORWARDER_BUSY_NS=N spends N ns of CPU on each message (what that
# much work per event costs a forwarder that does no routing); FORWARDER_PUBLISH=numbered
# publishes with the worker's own publisher (PubAcks handed back by number) instead of
# async-nats's JetStream publish. OUTPUTS=same runs the yardstick forwarder in the
# worker's place too, and the worker not at all: its `ratio` is that of two runs of one
# client, the spread this bench shows with no difference to find (since 2026-12-05's
# fifteenth session).
#
# Defaults: 100000 events, concurrency 64, 100 containers x 10 configs (1,000 configs).
# It starts its own nats-server (JetStream, file storage, a temporary store, a port the
# kernel picks) and stops it at the end; nothing else on the machine is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS="${1:-100000}"
CONCURRENCY="${2:-64}"
CONTAINERS="${3:-100}"
PER="${4:-10}"

. scripts/bench-lib.sh
start_throughput_bench "$CONTAINERS"
echo "nats-server $("$NATS" --version) on port $port; $EVENTS events, concurrency $CONCURRENCY, $((CONTAINERS * PER)) configs in $CONTAINERS containers"

ROUNDS="${ROUNDS:-5}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive number, not '$ROUNDS'" >&2; exit 2; }
if [ "${OUTPUTS:-}" = both ] && (( ROUNDS % 3 )); then
    echo "note: with OUTPUTS=both, a multiple of 3 rounds gives each client each place in the order equally often" >&2
fi
if [ "${OUTPUTS:-}" = same ] && (( ROUNDS % 2 )); then
    echo "note: with OUTPUTS=same, an even number of rounds gives each copy each place in the order equally often" >&2
fi
case "${OUTPUTS:-}" in "" | routed | both | same) ;; *) echo "OUTPUTS must be empty, 'routed', 'both' or 'same', not '$OUTPUTS'" >&2; exit 2 ;; esac
"$TOOL" configs "$work/configs.json" "$CONTAINERS" "$PER"
export BENCH_SERVER_PID="${pids[0]}" BENCH_PER="$PER"

rate() { echo "$1" | grep -o '[0-9]*/s' | head -1 | tr -d '/s'; }
# CPU per event of a run, client plus nats-server (µs).
cpu() { echo "${1%% (its own clock*}" | grep -o '[0-9.]* µs' | awk '{ s += $1 } END { print s + 0 }'; }
median() { sort -n | awk '{ r[NR] = $1 } END { printf "%.2f\n", (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }'; }
ratios=()
cpu_ratios=()
routed_ratios=()
# The forwarder on the same events, timed by the same observer as the worker
# (`wait-drained`: from its first look at the consumer to the look that finds it
# drained, 20 ms apart), so that neither is timed more favourably; its own clock (from
# its first pull to its last ack) is printed beside. $1: what it writes, `plain` or
# `routed`, or `same` (plain, in the worker's place); sets $forwarder (or, for the
# second yardstick of OUTPUTS=both, $routed; for `same`, $worker).
run_forwarder() {
    "$TOOL" reset
    "$TOOL" preload "$EVENTS"
    local outputs=""
    [ "$1" = routed ] && outputs=routed
    FORWARDER_LINGER=1 "$TOOL" forward "$CONCURRENCY" $outputs > "$work/forwarder.out" &
    pids+=($!)
    local line
    line="$(BENCH_CLIENT_PID="${pids[-1]}" "$TOOL" wait-drained forwarder)"
    kill "${pids[-1]}" 2>/dev/null || true
    wait "${pids[-1]}" || { echo "the forwarder failed" >&2; exit 1; }
    unset 'pids[-1]'
    line="$line (its own clock: $(sed 's/^forwarder //' "$work/forwarder.out"))"
    if [ "${OUTPUTS:-}" = both ] && [ "$1" = routed ]; then
        routed="$line"
        echo "round $round: routed $line"
    elif [ "$1" = same ]; then
        worker="$line"
        echo "round $round: in the worker's place, $line"
    else
        forwarder="$line"
        echo "round $round: $line"
    fi
}
# The worker, same events, same concurrency.
run_worker() {
    "$TOOL" reset
    "$TOOL" preload "$EVENTS"
    start_worker "$BIN" --configs "$work/configs.json" --concurrency "$CONCURRENCY"
    worker="$(BENCH_CLIENT_PID="${pids[-1]}" "$TOOL" wait-drained blob-router)"
    echo "round $round: $worker"
    kill "${pids[-1]}" 2>/dev/null || true
    wait "${pids[-1]}" 2>/dev/null || true
    unset 'pids[-1]'
    # A slow round is easier to explain with what the worker warned about (its log goes
    # with the temporary directory).
    if grep -qiE '"level":"(warn|error)"' "$work/worker.log"; then
        echo "round $round: the worker's last warnings:"
        grep -iE '"level":"(warn|error)"' "$work/worker.log" | tail -5
    fi
}
case "${OUTPUTS:-}" in
    "") clients=("run_forwarder plain" run_worker) ;;
    routed) clients=("run_forwarder routed" run_worker) ;;
    both) clients=("run_forwarder plain" "run_forwarder routed" run_worker) ;;
    same) clients=("run_forwarder plain" "run_forwarder same") ;;
esac
for round in $(seq "$ROUNDS"); do
    # The machine's speed drifts within a round too: the order turns by one each round,
    # so that going first or last favours no client over a multiple of their number of
    # rounds (with two: the forwarder first in odd rounds, the worker in even ones).
    n=${#clients[@]}
    for i in $(seq 0 $((n - 1))); do
        ${clients[$(( (i + n - (round - 1) % n) % n ))]}
    done
    r="$(awk -v w="$(rate "$worker")" -v f="$(rate "$forwarder")" 'BEGIN { printf "%.2f", w / f }')"
    # What the ratio comes to when the two cores are the limit: the forwarder's CPU per
    # event (with the server's for it) over the worker's. Steadier than the rates, which
    # move with whatever else the machine is doing.
    c="$(awk -v w="$(cpu "$worker")" -v f="$(cpu "$forwarder")" 'BEGIN { printf "%.2f", (w > 0) ? f / w : 0 }')"
    if [ "${OUTPUTS:-}" = both ]; then
        rr="$(awk -v w="$(rate "$worker")" -v f="$(rate "$routed")" 'BEGIN { printf "%.2f", w / f }')"
        echo "round $round: ratio $r (cpu ratio $c); against the routed forwarder $rr"
        routed_ratios+=("$rr")
    else
        echo "round $round: ratio $r (cpu ratio $c)"
    fi
    ratios+=("$r")
    cpu_ratios+=("$c")
done
if [ "${OUTPUTS:-}" = both ]; then
    echo "routed ratio $(printf '%s\n' "${routed_ratios[@]}" | median)"
fi
echo "cpu ratio $(printf '%s\n' "${cpu_ratios[@]}" | median)"
echo "ratio $(printf '%s\n' "${ratios[@]}" | median)"
