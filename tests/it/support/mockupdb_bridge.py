#!/usr/bin/python3
"""A scripted MongoDB for the Rust tests, served by MockupDB (MongoDB's mock-server library).

MockupDB speaks the wire protocol (OP_MSG) to the real `mongodb` driver; the Rust test
decides every answer. Protocol, one JSON object per line (MongoDB canonical extended
JSON inside):

  stdout  {"port": N}                                  once, when listening
  stdout  {"id": K, "command": {...}}                  for every request not auto-answered
  stdin   {"id": K, "reply": {...}}                    answers request K
  stdin   {"id": K, "hangup": true}                    closes request K's connection

Handshakes (hello/isMaster), ping, endSessions and killCursors are answered here. The
first argument picks what `hello` says: "replicaset" (default), "sharded" or "standalone";
the second, if given, the port to listen on (a restarted server keeps its address).
"""

import datetime
import json
import sys
import threading

from bson import json_util
from bson.json_util import JSONMode, JSONOptions
from bson.timestamp import Timestamp
from mockupdb import MockupDB

CANONICAL = JSONOptions(json_mode=JSONMode.CANONICAL)
# The operation time every ping reports: tests assert startAtOperationTime against it.
PING_TIME = Timestamp(1700000000, 1)


def hello_reply(mode, port):
    reply = {
        "ok": 1,
        "isWritablePrimary": True,
        "ismaster": True,
        "helloOk": True,
        "minWireVersion": 0,
        "maxWireVersion": 17,
        "maxBsonObjectSize": 16 * 1024 * 1024,
        "maxMessageSizeBytes": 48000000,
        "maxWriteBatchSize": 100000,
        "logicalSessionTimeoutMinutes": 30,
        "connectionId": 1,
        "localTime": datetime.datetime.now(datetime.timezone.utc),
    }
    if mode == "replicaset":
        host = "127.0.0.1:%d" % port
        reply.update(setName="rs0", hosts=[host], primary=host, me=host, setVersion=1)
    elif mode == "sharded":
        reply["msg"] = "isdbgrid"
    return reply


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "replicaset"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else None
    server = MockupDB(port=port, request_timeout=3600)
    port = server.run()
    hello = hello_reply(mode, port)
    for name in ("hello", "isMaster", "ismaster"):
        server.autoresponds(name, hello)
    server.autoresponds("ping", ok=1, operationTime=PING_TIME)
    server.autoresponds("endSessions", ok=1)
    server.autoresponds("killCursors", ok=1, cursorsKilled=[])

    pending = {}
    lock = threading.Lock()
    out = sys.stdout

    def emit(obj):
        with lock:
            out.write(json.dumps(obj) + "\n")
            out.flush()

    def forward():
        n = 0
        while True:
            try:
                request = server.receives(timeout=3600)
            except AssertionError:
                continue  # nothing within the timeout
            except OSError:
                continue  # the client hung up while its request waited: nobody to answer
            n += 1
            with lock:
                pending[n] = request
            command = json.loads(json_util.dumps(request.doc, json_options=CANONICAL))
            emit({"id": n, "command": command})

    emit({"port": port})
    threading.Thread(target=forward, daemon=True).start()

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        with lock:
            request = pending.pop(msg["id"], None)
        if request is None:
            continue
        try:
            if msg.get("hangup"):
                request.hangup()
            else:
                reply = json_util.loads(json.dumps(msg["reply"]), json_options=CANONICAL)
                request.replies(reply)
        except OSError:
            pass  # the client hung up while its request waited: nobody to answer
    server.stop()


if __name__ == "__main__":
    main()
