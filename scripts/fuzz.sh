#!/usr/bin/env bash
# Fuzzes the loaders of untrusted files (fuzz/: config.json, the safetensors header, the shard index,
# tokenizer.json, the --input spec): builds every cargo-fuzz target once, then runs each for SECONDS
# (default 30) from its committed seeds (fuzz/seeds/<target>) plus what earlier runs found
# (fuzz/corpus/<target>, not committed). Exits non-zero when any target crashes (a panic, an abort, over
# 2 GiB of memory, over 10 s on one input), after printing the reproducer's path under fuzz/artifacts/.
#
#   scripts/fuzz.sh [SECONDS]              # all targets
#   FUZZ_TARGETS="config_json" scripts/fuzz.sh 60
#
# With the nightly toolchain installed (`rustup toolchain list`) it uses `cargo +nightly fuzz`, with
# AddressSanitizer; otherwise stable with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly flags), where ASan
# works too on x86_64 Linux. Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
case $secs in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2 ;; esac

toolchain=()
if rustup toolchain list 2>/dev/null | grep '^nightly' >/dev/null; then
    toolchain=(+nightly)
else
    echo "fuzz: no nightly toolchain; using $(rustc --version) with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
fi
sanitizer=${FUZZ_SANITIZER:-address}
# cargo-fuzz's own backtrace on a failed run says nothing about the crash; the target's is kept.
export RUST_LIB_BACKTRACE=0
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets=${FUZZ_TARGETS:-$(cargo "${toolchain[@]}" fuzz list --fuzz-dir fuzz)}
# The same flags for the build and the runs, so that `cargo fuzz run` finds everything built.
flags=(--fuzz-dir fuzz --sanitizer "$sanitizer")
start=$(date +%s)
cargo "${toolchain[@]}" fuzz build "${flags[@]}"
echo "fuzz: built in $(($(date +%s) - start)) s"

failed=()
for t in $targets; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    before=$(ls "fuzz/artifacts/$t" | wc -l)
    echo "fuzz: $t for ${secs} s"
    if ! cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>"fuzz/artifacts/$t.log"; then
        tail -n 60 "fuzz/artifacts/$t.log" >&2
        echo "fuzz: $t: full log in fuzz/artifacts/$t.log" >&2
        failed+=("$t")
    else
        grep -E '^(stat::number_of_executed_units|Done [0-9]+ runs)' "fuzz/artifacts/$t.log" || true
    fi
    if [ "$(ls "fuzz/artifacts/$t" | wc -l)" -gt "$before" ]; then
        echo "fuzz: $t: reproducer(s):" >&2
        ls -t "fuzz/artifacts/$t" | head -n 5 | sed "s|^|    fuzz/artifacts/$t/|" >&2
        [[ " ${failed[*]} " == *" $t "* ]] || failed+=("$t")
    fi
done
echo "fuzz: done in $(($(date +%s) - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (rerun one input: cargo +nightly fuzz run --fuzz-dir fuzz <target> <file>)" >&2
    exit 1
fi
