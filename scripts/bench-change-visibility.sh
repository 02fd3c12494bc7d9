#!/usr/bin/env bash
# How long a config-file change takes to show in /health/cache: the worker runs on a
# file; the file is replaced (written aside, renamed over, as editors and ConfigMaps do)
# with one config more, ROUNDS times; each time the delay until `cache_size` counts it is
# measured (polled every millisecond). Prints each delay and, last, `median X ms`.
#
#   scripts/bench-change-visibility.sh [ROUNDS]
#
# Starts its own nats-server on a port the kernel picks, with a temporary store.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-10}"
cargo build --release --quiet --bin blob-router
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
echo '[{"_id": "c0", "ingestion": {"mode": "blob_trigger", "landing_container": "c0"}}]' > "$work/configs.json"
BLOB_ROUTER_LOG_LEVEL="warn,blob_router::http=info" target/release/blob-router run --nats-url "nats://127.0.0.1:$port" \
    --configs "$work/configs.json" --http-addr 127.0.0.1:0 --log-format json 2> "$work/worker.log" &
pids+=($!)
for _ in $(seq 600); do
    addr="$(grep -o '"addr":"[0-9.:]*"' "$work/worker.log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)"
    [ -n "$addr" ] && curl -sf "http://$addr/health/ready" >/dev/null 2>&1 && break
    sleep 0.05
done
python3 - "$work" "$addr" "$ROUNDS" <<'PY'
import json, os, sys, time, urllib.request
work, addr, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def size():
    with urllib.request.urlopen(f"http://{addr}/health/cache") as r:
        return json.load(r)["cache_size"]
delays = []
for n in range(1, rounds + 1):
    docs = [{"_id": f"c{i}", "ingestion": {"mode": "blob_trigger", "landing_container": f"c{i}"}} for i in range(n + 1)]
    tmp = os.path.join(work, ".configs.json.tmp")
    with open(tmp, "w") as f:
        json.dump(docs, f)
    start = time.monotonic()
    os.rename(tmp, os.path.join(work, "configs.json"))
    while size() != n + 1:
        time.sleep(0.001)
        if time.monotonic() - start > 10:
            sys.exit(f"change {n} never showed")
    delays.append((time.monotonic() - start) * 1000)
    print(f"change {n}: {delays[-1]:.1f} ms")
    time.sleep(0.3)  # pacing between rounds, not synchronisation: each round waits on the condition above
delays.sort()
print(f"median {delays[len(delays) // 2]:.1f} ms")
PY
