#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, when missing (Debian):
#   nats-server       the integration tests start their own, on kernel-picked loopback ports;
#   python3-mockupdb  MongoDB's mock wire-protocol server, which the MongoDB source tests
#                     drive the real driver against (tests/it/support/mockupdb_bridge.py).
set -euo pipefail

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
updated=""
install() {
    echo "==> installing $* from Debian"
    if [ -z "$updated" ]; then $SUDO apt-get update -qq; updated=1; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

if [ -z "${NATS_SERVER:-}" ] && [ ! -x /usr/sbin/nats-server ] && ! command -v nats-server >/dev/null 2>&1; then
    install nats-server
fi
if ! /usr/bin/python3 -c 'import mockupdb' >/dev/null 2>&1; then
    install python3-mockupdb
fi
