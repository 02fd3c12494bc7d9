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
. scripts/bench-lib.sh
start_nats
echo '[{"_id": "c0", "ingestion": {"mode": "blob_trigger", "landing_container": "c0"}}]' > "$work/configs.json"
start_worker "${CARGO_TARGET_DIR:-target}/release/blob-router" --configs "$work/configs.json"
python3 - "$work" "$addr" "$ROUNDS" <<'PY'
import json, os, sys, time, urllib.request
work, addr, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def size():
    with urllib.request.urlopen(f"http://{addr}/health/cache", timeout=5) as r:
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
