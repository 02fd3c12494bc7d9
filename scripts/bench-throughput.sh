#!/usr/bin/env bash
# Throughput of the worker against a do-nothing forwarder on the same machine, server and
# events (see examples/throughput.rs for the forwarder). Prints both rates and, last,
# `ratio X.XX` (worker / forwarder).
#
#   scripts/bench-throughput.sh [EVENTS] [CONCURRENCY] [CONTAINERS] [CONFIGS_PER_CONTAINER]
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

cargo build --release --quiet --bin blob-router --example throughput
BIN=target/release/blob-router
TOOL=target/release/examples/throughput
NATS="${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$NATS" -a 127.0.0.1 -p -1 -js -sd "$work/store" -l "$work/nats.log" &
pids+=($!)
for _ in $(seq 100); do
    port="$(grep -o 'Listening for client connections on 127.0.0.1:[0-9]*' "$work/nats.log" 2>/dev/null | grep -o '[0-9]*$' || true)"
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || { echo "nats-server did not start" >&2; cat "$work/nats.log" >&2; exit 1; }
export NATS_URL="nats://127.0.0.1:$port" BENCH_CONTAINERS="$CONTAINERS"
echo "nats-server $("$NATS" --version) on port $port; $EVENTS events, concurrency $CONCURRENCY, $((CONTAINERS * PER)) configs in $CONTAINERS containers"

"$TOOL" configs "$work/configs.json" "$CONTAINERS" "$PER"

# 1. The forwarder.
"$TOOL" reset
"$TOOL" preload "$EVENTS"
forwarder="$("$TOOL" forward "$CONCURRENCY")"
echo "$forwarder"

# 2. The worker, same events, same concurrency.
"$TOOL" reset
"$TOOL" preload "$EVENTS"
BLOB_ROUTER_LOG_LEVEL="warn,blob_router::http=info" "$BIN" run --nats-url "$NATS_URL" --configs "$work/configs.json" \
    --http-addr 127.0.0.1:0 --concurrency "$CONCURRENCY" --log-format json 2> "$work/worker.log" &
pids+=($!)
addr=""
for _ in $(seq 600); do
    addr="$(grep -o '"addr":"[0-9.:]*"' "$work/worker.log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)"
    [ -n "$addr" ] && curl -sf "http://$addr/health/ready" >/dev/null 2>&1 && break
    sleep 0.05
done
curl -sf "http://$addr/health/ready" >/dev/null || { echo "worker never became ready" >&2; cat "$work/worker.log" >&2; exit 1; }
worker="$("$TOOL" wait-drained blob-router)"
echo "${worker/blob-router/worker}"

f="$(echo "$forwarder" | grep -o '[0-9]*/s' | tr -d '/s')"
w="$(echo "$worker" | grep -o '[0-9]*/s' | tr -d '/s')"
awk -v w="$w" -v f="$f" 'BEGIN { printf "ratio %.2f\n", w / f }'
