#!/usr/bin/env bash
# Byte-for-byte comparison of the Parquet and safetensors files two attnscope binaries write for the same
# commands: prefill, generation (f16 weights, layer/head selection), seeded sampling, parallel sets
# (visible and isolated), --input specs with explicit positions/groups, ablation (zero, mean), on the
# default model, ../shared/models/stories260K and every tests/fixtures model. For refactors that must not
# change behaviour:
#
#   git stash; cargo build --release; cp target/release/attnscope /tmp/attnscope-before; git stash pop
#   cargo build --release; scripts/compare-outputs.sh /tmp/attnscope-before target/release/attnscope
#
# manifest.json is left out (it holds timings and the time of the run). Exit status 1 if any file differs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: scripts/compare-outputs.sh BEFORE_BINARY AFTER_BINARY" >&2; exit 2; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/input.json" <<'JSON'
{"sequences": [
  {"token_ids": [1, 40, 41, 22, 37, 43, 38, 28], "positions": [0, 1, 2, 3, 3, 3, 4, 5],
   "groups": [-1, -1, -1, 0, 0, 0, -1, -1], "visibility": "isolated"},
  {"token_ids": [3, 9, 27, 11, 5]}
]}
JSON
runs() {
    local B="$1" O="$2" S=../shared/models/stories260K
    mkdir -p "$O"
    "$B" run --quiet --prompt "Once upon a time" --generate 8 --capture all --out "$O/default"
    for f in tests/fixtures/*/; do
        "$B" run --quiet --model "$f" --input "$WORK/input.json" --generate 4 --capture all --out "$O/fx_$(basename "$f")"
    done
    if [ -d "$S" ]; then
        "$B" run --quiet --model $S --prompt "Once upon a time" --capture all --out "$O/prefill"
        "$B" run --quiet --model $S --prompt "Once upon a time" --prompt "The cat sat" --generate 20 --capture all \
            --weights-dtype f16 --layers 0,2 --heads 1-3 --out "$O/gen"
        "$B" run --quiet --model $S --prompt "Lily went to the park" --generate 12 --temperature 0.8 --top-k 20 \
            --top-p 0.9 --seed 7 --capture stats --out "$O/sample"
        "$B" run --quiet --model $S --prompt "Once upon a time" --generate 15 --parallel-threshold 0.05 \
            --parallel-max 3 --capture all --out "$O/parallel"
        "$B" run --quiet --model $S --prompt "Once upon a time" --generate 15 --parallel-threshold 0.05 \
            --parallel-max 3 --visibility isolated --set-distribution mean --capture all --out "$O/parallel_iso"
        "$B" run --quiet --model $S --input "$WORK/input.json" --generate 6 --capture all --out "$O/input_iso"
        "$B" ablate --model $S --prompt "Once upon a time there was a girl" --slots 2-3 --target " She" \
            --out "$O/ablate_zero" >/dev/null
        "$B" ablate --model $S --prompt "Once upon a time there was a girl" --slots 2 --mode mean \
            --ablate-layers 1 --target-ids 5,6 --out "$O/ablate_mean" >/dev/null
    else
        echo "SKIP: ../shared/models/stories260K is absent; comparing the default and fixture models only" >&2
    fi
    (cd "$O" && find . -type f \( -name '*.parquet' -o -name '*.safetensors' \) | sort | xargs sha256sum)
}
runs "$1" "$WORK/before" >"$WORK/before.sums"
runs "$2" "$WORK/after" >"$WORK/after.sums"
if diff "$WORK/before.sums" "$WORK/after.sums"; then
    echo "identical: $(wc -l <"$WORK/after.sums") Parquet and safetensors files"
else
    echo "DIFFERENT (lines above: < before, > after)" >&2
    exit 1
fi
