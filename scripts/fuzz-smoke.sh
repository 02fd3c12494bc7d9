#!/usr/bin/env bash
# Fuzz smoke run (README, "Fuzzing"), run by .ci/run after the tests: installs the pinned
# cargo-fuzz if missing, builds the fuzz targets in fuzz/ with libFuzzer instrumentation,
# then runs each target over its committed corpus (fuzz/corpus/<target>/) plus
# FUZZ_SECONDS (default 20) of fuzzing. Fails if any target panics, times out on one
# input (10 s) or runs out of memory; libFuzzer then prints the input (and its base64)
# and saves it under fuzz/artifacts/<target>/.
#
# The committed corpus is only read: new inputs go to a temporary directory. The
# instrumented build goes to FUZZ_TARGET_DIR (default fuzz/target).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-20}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}
# cargo-fuzz passes nightly-only flags (-Z, sanitizer coverage); the machines run stable
# Rust, which accepts them with this.
export RUSTC_BOOTSTRAP=1

log() { printf '\n==> %s\n' "$*"; }

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    # Its own build directory: CARGO_TARGET_DIR above is the fuzz targets'.
    env -u CARGO_TARGET_DIR cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

log "fuzz crate: cargo fmt --check, Cargo.lock up to date"
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

# `--dev`: the whole dependency tree is built instrumented from cold, and unoptimized is
# far cheaper than cargo-fuzz's default release build (opt-level 3, one codegen unit);
# for a smoke run that matters more than executions per second. No sanitizer: the code
# under test is safe Rust, and AddressSanitizer slows every execution. FUZZ_BUILD
# overrides both (e.g. FUZZ_BUILD="--release --sanitizer none").
# shellcheck disable=SC2206 # FUZZ_BUILD is split into arguments on purpose
build=(${FUZZ_BUILD:---dev --sanitizer none})
log "cargo fuzz build ${build[*]} (libFuzzer instrumentation, debug assertions)"
cargo fuzz build "${build[@]}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for target in $(cargo fuzz list); do
    log "fuzz $target: corpus fuzz/corpus/$target/ + ${seconds}s"
    mkdir -p "$tmp/$target"
    out="$tmp/$target.log"
    if ! cargo fuzz run "${build[@]}" "$target" "$tmp/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$out" 2>&1; then
        tail -n 80 "$out"
        echo "fuzz target $target FAILED (input saved under fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    # The corpus replay and the final figures; not every new coverage line.
    grep -E 'INITED|DONE|stat::' "$out" || true
done
log "fuzz smoke: every target ran clean"
