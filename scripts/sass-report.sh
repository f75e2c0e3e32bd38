#!/usr/bin/env bash
# Static SASS proxy of the attention kernels, no GPU needed:
#
#   scripts/sass-report.sh [ARCH ...]        # default: sm_90 (sm_80 optional)
#
# For each attention kernel (tensor-core prefill: fast `attn_prefill_fa2_*` of attention_prefill_fa2.cu and
# reference `attn_prefill_<T>_hd<HD>` of attention_prefill.cu; SIMT prefill, probs, decode) it prints
# registers, spill stores/loads, stack frame and static shared memory (from `ptxas -v`), and for the
# tensor-core kernels the instructions and HMMAs of the main loop and their ratio.
#
# How:
#  1. NVRTC from the pinned wheel (scripts/install_nvrtc.sh) and the PTX of each kernel file through the
#     engine's own compile path (`attnscope_cuda::compile_kernel`, i.e. common.cuh and the AttnParams layout
#     defines prepended): `cargo run -p attnscope-cuda --example dump_ptx`.
#  2. ptxas 12.8 from the `nvidia-cuda-nvcc-cu12` wheel assembles each PTX to a cubin (`-v` for resources;
#     the default -O3, as the driver's JIT does when the engine loads the PTX).
#  3. nvdisasm from the `nvidia-cuda-nvdisasm` wheel (13.x) disassembles the cubin. Neither nvcc wheel has a
#     disassembler: `nvidia-cuda-nvcc-cu12` 12.8.93 holds only ptxas in bin/, `nvidia-cuda-nvcc` 13.5.37
#     nvcc, ptxas, nvlink, fatbinary; nvdisasm and cuobjdump come only as 13.x wheels of their own.
#  4. scripts/sass_report.py finds the main loop: every backward branch (BRA to a label at or before it)
#     closes a loop region [label, branch], merged per label; of the regions holding HMMAs the innermost
#     ones are candidates, the main loop is the one with the most HMMAs (ties: fewest instructions, which
#     in the fast kernel is the loop over fully visible K tiles; the loop over partial tiles, with the
#     per-element visibility check, is listed in the last column). Instructions = every SASS instruction of
#     the region but NOP. A static count: it says nothing of stalls, only of the issue slots per mma.
#
# Wheels go to .ci-cache/ (idempotent). Output: a markdown table on stdout; cubins and SASS under
# .ci-cache/sass/<arch>/.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHS=("$@")
[ ${#ARCHS[@]} -gt 0 ] || ARCHS=(sm_90)

NVCC_WHEEL="nvidia-cuda-nvcc-cu12==12.8.93"
DISASM_WHEEL="nvidia-cuda-nvdisasm==13.5.37"
PIP=(python3 -m pip)
if ! python3 -m pip --version >/dev/null 2>&1; then
    python3 -m venv .ci-cache/sass-venv >&2
    PIP=(.ci-cache/sass-venv/bin/python -m pip)
fi
install_wheel() { # DEST WHEEL FILE
    local dest="$1" wheel="$2" file="$3"
    if [ ! -x "$dest/site/$file" ] || [ "$(cat "$dest/wheel" 2>/dev/null)" != "$wheel" ]; then
        rm -rf "$dest"
        mkdir -p "$dest"
        "${PIP[@]}" install --quiet --disable-pip-version-check --no-deps --target "$dest/site" "$wheel" >&2
        echo "$wheel" >"$dest/wheel"
    fi
    [ -x "$dest/site/$file" ] || { echo "sass-report.sh: $dest/site/$file missing after installing $wheel" >&2; exit 1; }
}
install_wheel .ci-cache/nvcc "$NVCC_WHEEL" nvidia/cuda_nvcc/bin/ptxas
install_wheel .ci-cache/nvdisasm "$DISASM_WHEEL" nvidia/cu13/bin/nvdisasm
PTXAS=.ci-cache/nvcc/site/nvidia/cuda_nvcc/bin/ptxas
NVDISASM=.ci-cache/nvdisasm/site/nvidia/cu13/bin/nvdisasm
eval "$(scripts/install_nvrtc.sh)"

FILES=(attention_prefill_fa2.cu attention_prefill.cu attention_probs.cu attention_decode.cu)
version() { "$1" --version | grep -o 'release [0-9.]*, V[0-9.]*' | head -n 1; }
echo "ptxas $(version "$PTXAS") ($NVCC_WHEEL); nvdisasm $(version "$NVDISASM") ($DISASM_WHEEL)"
echo
for arch in "${ARCHS[@]}"; do
    out=".ci-cache/sass/$arch"
    rm -rf "$out"
    mkdir -p "$out"
    cargo run --quiet -p attnscope-cuda --example dump_ptx -- "$out" "$arch" "${FILES[@]}" >/dev/null
    sass=()
    : >"$out/ptxas.log"
    for f in "${FILES[@]}"; do
        stem="${f%.cu}"
        "$PTXAS" -arch="$arch" -v -o "$out/$stem.cubin" "$out/$stem.$arch.ptx" 2>>"$out/ptxas.log"
        # nvdisasm 13 reads the 12.8 cubin in its "old format" and says so on stderr: not an error.
        "$NVDISASM" -c "$out/$stem.cubin" >"$out/$stem.sass" 2>"$out/$stem.nvdisasm.log"
        sass+=("$out/$stem.sass")
    done
    python3 scripts/sass_report.py "$arch" "$out/ptxas.log" "${sass[@]}"
    echo
done
