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
# BLOB_ROUTER_BIN measures another build of the worker (e.g. an older commit's).
BIN="${BLOB_ROUTER_BIN:-target/release/blob-router}"
TOOL=target/release/examples/throughput
. scripts/bench-lib.sh
start_nats
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
start_worker "$BIN" --configs "$work/configs.json" --concurrency "$CONCURRENCY"
worker="$("$TOOL" wait-drained blob-router)"
echo "${worker/blob-router/worker}"

f="$(echo "$forwarder" | grep -o '[0-9]*/s' | tr -d '/s')"
w="$(echo "$worker" | grep -o '[0-9]*/s' | tr -d '/s')"
awk -v w="$w" -v f="$f" 'BEGIN { printf "ratio %.2f\n", w / f }'
