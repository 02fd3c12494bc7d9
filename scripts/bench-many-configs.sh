#!/usr/bin/env bash
# Warm-up and memory with many configs: writes CONTAINERS x PER_CONTAINER configs to a
# JSON file, starts `run --configs FILE`, and prints the time from process start to the
# first 200 from /health/ready (polled every 5 ms), the RSS once ready (VmRSS) and its
# peak (VmHWM), then the same after one TTL resync of the unchanged file.
#
#   scripts/bench-many-configs.sh [CONTAINERS] [PER_CONTAINER]     (default 10000 10)
#
# Starts its own nats-server on a port the kernel picks, with a temporary store.
set -euo pipefail
cd "$(dirname "$0")/.."
CONTAINERS="${1:-10000}"
PER="${2:-10}"
BIN="${BLOB_ROUTER_BIN:-${CARGO_TARGET_DIR:-target}/release/blob-router}"
[ -n "${BLOB_ROUTER_BIN:-}" ] || cargo build --release --quiet --bin blob-router
cargo build --release --quiet --example throughput
. scripts/bench-lib.sh
start_nats
"${CARGO_TARGET_DIR:-target}/release/examples/throughput" configs "$work/configs.json" "$CONTAINERS" "$PER"
echo "configs: $((CONTAINERS * PER)) in $CONTAINERS containers, file $(du -h "$work/configs.json" | cut -f1)"
python3 - "$BIN" "$port" "$work" <<'PY'
import os, re, subprocess, sys, time, urllib.request, json
bin, port, work = sys.argv[1], sys.argv[2], sys.argv[3]
env = dict(os.environ, BLOB_ROUTER_LOG_LEVEL="warn,blob_router::http=info")
log = open(os.path.join(work, "many.log"), "w")
start = time.monotonic()
p = subprocess.Popen([bin, "run", "--nats-url", f"nats://127.0.0.1:{port}", "--http-addr", "127.0.0.1:0",
                      "--log-format", "json", "--configs", os.path.join(work, "configs.json"),
                      "--cache-ttl", "1h"], env=env, stderr=log)
def status(field):
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
addr = None
def get(path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as r:
        return r.status, r.read()
try:
    while True:
        if p.poll() is not None:
            sys.exit("worker exited: " + open(os.path.join(work, "many.log")).read())
        if time.monotonic() - start > 120:
            sys.exit("not ready in 120 s")
        if addr is None:
            m = re.search(r'"addr":"([0-9.:]+)"', open(os.path.join(work, "many.log")).read())
            addr = m.group(1) if m else None
        if addr:
            try:
                if get("/health/ready")[0] == 200:
                    break
            except Exception:
                pass
        time.sleep(0.005)
    ready = time.monotonic() - start
    print(f"ready after {ready * 1000:.0f} ms")
    print(f"rss {status('VmRSS'):.0f} MB (peak {status('VmHWM'):.0f} MB)")
    for wait in (1, 3):
        time.sleep(1 if wait == 1 else 2)  # pacing: RSS as the allocator returns freed pages
        print(f"rss {wait} s after ready {status('VmRSS'):.0f} MB")
    cache = json.loads(get("/health/cache")[1])
    print(f"cache_size {cache['cache_size']}")
    # One resync of the unchanged file: touching it makes the file watcher reload it all.
    before = cache.get("last_full_load_at")
    t = time.monotonic()
    os.utime(os.path.join(work, "configs.json"))
    while json.loads(get("/health/cache")[1]).get("last_full_load_at") == before:
        if time.monotonic() - t > 60:
            break
        time.sleep(0.005)
    print(f"after a reload of the unchanged file: rss {status('VmRSS'):.0f} MB (peak {status('VmHWM'):.0f} MB)")
finally:
    p.terminate()
    p.wait()
PY
