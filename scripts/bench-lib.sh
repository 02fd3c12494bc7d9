# Shared by the bench scripts (sourced, not run): a private nats-server and a worker,
# each on a port the kernel picks and read back from its log, cleaned up on exit.

NATS="${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Starts nats-server (JetStream, file storage in $work); sets $port.
start_nats() {
    "$NATS" -a 127.0.0.1 -p -1 -js -sd "$work/store" -l "$work/nats.log" &
    pids+=($!)
    port=""
    for _ in $(seq 100); do
        port="$(grep -o 'Listening for client connections on 127.0.0.1:[0-9]*' "$work/nats.log" 2>/dev/null | grep -o '[0-9]*$' || true)"
        [ -n "$port" ] && break
        sleep 0.05
    done
    [ -n "$port" ] || { echo "nats-server did not start" >&2; cat "$work/nats.log" >&2; exit 1; }
}

# Starts `BIN run` with the given flags (JSON logs in $work/worker.log) and waits until
# it is ready; sets $addr to its HTTP address.
start_worker() {
    local bin="$1"
    shift
    BLOB_ROUTER_LOG_LEVEL="warn,blob_router::http=info" "$bin" run --nats-url "nats://127.0.0.1:$port" \
        --http-addr 127.0.0.1:0 --log-format json "$@" 2> "$work/worker.log" &
    pids+=($!)
    addr=""
    for _ in $(seq 600); do
        addr="$(grep -o '"addr":"[0-9.:]*"' "$work/worker.log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)"
        [ -n "$addr" ] && curl -sf "http://$addr/health/ready" >/dev/null 2>&1 && break
        sleep 0.05
    done
    curl -sf "http://$addr/health/ready" >/dev/null 2>&1 || { echo "worker never became ready" >&2; cat "$work/worker.log" >&2; exit 1; }
}

# For the throughput-style benches: builds the worker and examples/throughput, sets $BIN
# (the worker, or $BLOB_ROUTER_BIN: another build, e.g. an older commit's) and $TOOL,
# starts nats-server and points both at it, with $1 containers for the bench's events.
start_throughput_bench() {
    cargo build --release --quiet --bin blob-router --example throughput
    local target="${CARGO_TARGET_DIR:-target}"
    BIN="${BLOB_ROUTER_BIN:-$target/release/blob-router}"
    TOOL="$target/release/examples/throughput"
    start_nats
    export NATS_URL="nats://127.0.0.1:$port" BENCH_CONTAINERS="$1"
}
