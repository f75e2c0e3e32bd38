#!/usr/bin/env bash
# The core's unit tests (GEMM, the tiled attention and its SIMD softmax, the decode mat-vec, recorders) built
# for aarch64 and run under qemu-user: the NEON kernels that gemm and pulp pick at run time on ARM, checked
# against the same references as on x86-64. Installs what it needs (Debian's gcc-aarch64-linux-gnu and
# qemu-user, the rustup target) when missing.
#
#   scripts/test-aarch64.sh            # ~4 min on 2 cores (release build, tests under emulation)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
    (apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
        (apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null)) >&2
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
    rustup target add aarch64-unknown-linux-gnu >&2
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo test --locked --release -p attnscope-core --lib --target aarch64-unknown-linux-gnu \
    --target-dir target/aarch64 -- --nocapture
