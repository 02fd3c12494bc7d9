#!/usr/bin/env bash
# Regenerates the README's reliability table: runs the fault suite (tests/it/chaos.rs,
# plus any other test that prints `RELIABILITY|` lines, e.g. `faults::`) and prints one
# markdown row per line the tests printed. Extra arguments are test name filters
# (default: `chaos::`).
#
#   scripts/reliability-table.sh               # the fault suite
#   scripts/reliability-table.sh chaos:: faults::
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh >/dev/null
filters=("$@")
[ ${#filters[@]} -eq 0 ] && filters=(chaos::)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! cargo test --locked --test it -- "${filters[@]}" --nocapture >"$out" 2>&1; then
    grep -E "^test |panicked|FAILED" "$out" >&2 || true
    echo "the fault tests failed; no table (full output: rerun with --nocapture)" >&2
    exit 1
fi
echo "| fault | load | lost | duplicated | recovery |"
echo "|---|---|---|---|---|"
grep '^RELIABILITY|' "$out" | sed -e 's/^RELIABILITY|/|/' -e 's/ *$/ |/'
