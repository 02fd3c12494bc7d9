#!/usr/bin/env bash
# The test command: installs missing test prerequisites (scripts/test-deps.sh), then runs
# every test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
exec cargo test --locked "$@"
