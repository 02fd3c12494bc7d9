#!/usr/bin/env bash
# One command for a laptop: makes sure nats-server (JetStream) runs on 127.0.0.1:4222,
# then builds and runs the worker on its embedded default configs.
# Extra arguments go to `blob-router run` (e.g. --configs fixtures/configs.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_PORT="${NATS_PORT:-4222}"
nats_up() { (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; }

if ! nats_up; then
    bin="$(command -v nats-server || true)"
    [ -z "$bin" ] && [ -x /usr/sbin/nats-server ] && bin=/usr/sbin/nats-server
    if [ -z "$bin" ]; then
        echo "installing nats-server (Debian package)…"
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nats-server
        bin=/usr/sbin/nats-server
    fi
    store="${NATS_STORE:-${TMPDIR:-/tmp}/blob-router-nats}"
    mkdir -p "$store"
    echo "starting nats-server with JetStream on 127.0.0.1:$NATS_PORT (store $store)"
    "$bin" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$store" -l "$store/nats-server.log" &
    for _ in $(seq 50); do nats_up && break; sleep 0.1; done
    nats_up || { echo "nats-server did not start; see $store/nats-server.log" >&2; exit 1; }
fi

exec cargo run --release --bin blob-router -- run --nats-url "nats://127.0.0.1:$NATS_PORT" "$@"
