#!/usr/bin/env bash
# GPU benchmarks on a host with an NVIDIA GPU, PyTorch + transformers and no Rust: attnscope's attention kernel
# against torch SDPA (flash), and end-to-end prefill against HF transformers.
#
#   scripts/gpu-bench.sh                 # from anywhere; runs in the repo root
#   OUT=/path/to/results scripts/gpu-bench.sh
#
# Needs: .gpu-bundle/attnscope (the release binary; `scripts/gpu-check.sh build` on a machine with cargo puts it
# there), python3 with torch + transformers (PYTHON=... picks another interpreter), nvidia-smi.
# Results go to $OUT (default ./gpu-bench-out):
#   device.txt            nvidia-smi (name, driver, compute capability, memory), torch's view, which CUDA
#                         libraries can be dlopen'ed with the LD_LIBRARY_PATH below
#   attn_attnscope.json   attnscope bench-attention, T=512..8192    (schema attnscope-attn-bench/1)
#   attn_sdpa.json        scripts/bench_sdpa.py --with-probs         (same schema)
#   attn_compare.md       scripts/attn_bench_compare.py
#   e2e_attnscope.json    attnscope bench, llama-3.2-1b shape, prefill T=2048   (schema attnscope-bench/1)
#   e2e_hf.json           scripts/bench_hf.py, same shape, bf16
#   e2e_compare.md        scripts/bench_compare.py
#   logs/<step>.log       everything each step printed;  summary.txt  PASS/FAIL per step
# Every step runs even if an earlier one failed. The exit status is non-zero if any step failed.
#
# Environment knobs:
#   OUT=DIR                 results folder
#   PYTHON=python3          interpreter with torch + transformers
#   E2E_ATTNSCOPE_DECODE    decode flags for the end-to-end prefill step of `attnscope bench`
#                           (default "--decode-steps 0": prefill only)
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
BIN="$REPO/.gpu-bundle/attnscope"
PY="${PYTHON:-python3}"
OUT="${OUT:-./gpu-bench-out}"
mkdir -p "$OUT/logs" || exit 1
OUT="$(cd "$OUT" && pwd)"
T_LIST="512,1024,2048,4096,8192"

# ---- Libraries that attnscope dlopens: libcuda (from the driver), libnvrtc, libcublas, libcublasLt. Add the
# lib directories of the pip nvidia-* wheels that torch brought (nvidia/cublas/lib, nvidia/cuda_nvrtc/lib, ...,
# or nvidia/cu13/lib for CUDA 13 wheels) and the CUDA toolkit's lib64 when present.
NV_LIBS="$("$PY" -c '
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
dirs = []
for root in list(getattr(nvidia, "__path__", [])):
    for d in sorted(glob.glob(os.path.join(root, "*", "lib"))):
        if os.path.isdir(d) and d not in dirs:
            dirs.append(d)
print(":".join(dirs))
' 2>/dev/null)"
LIB_DIRS="$NV_LIBS"
if [ -d /usr/local/cuda/lib64 ]; then
    LIB_DIRS="${LIB_DIRS:+$LIB_DIRS:}/usr/local/cuda/lib64"
fi
if [ -n "$LIB_DIRS" ]; then
    export LD_LIBRARY_PATH="$LIB_DIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
echo "results -> $OUT"

failed=0
summary=()
# step NAME CMD...: prints the command, runs it (output to the terminal and logs/NAME.log), records PASS/FAIL.
step() {
    local name="$1"
    shift
    echo
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$OUT/logs/$name.log"
    local rc=${PIPESTATUS[0]}
    local dt=$((SECONDS - t0))
    if [ "$rc" -eq 0 ]; then
        summary+=("PASS  $name (${dt}s)")
    else
        summary+=("FAIL  $name (exit $rc, ${dt}s; see logs/$name.log)")
        failed=1
    fi
}

need_bin() {
    if [ ! -x "$BIN" ]; then
        echo "missing $BIN: build it where cargo is (scripts/gpu-check.sh build) and copy .gpu-bundle here" >&2
        return 127
    fi
}

# Which shared libraries can be dlopen'ed by name with this LD_LIBRARY_PATH (for the record: attnscope itself
# finds NVRTC and cuBLAS by full path, see `attnscope doctor`, saved as doctor.txt).
lib_report() {
    "$PY" -c '
import ctypes
for n in ["libcuda.so.1", "libnvrtc.so.12", "libnvrtc.so.13", "libnvrtc.so", "libcublas.so.12",
          "libcublas.so.13", "libcublas.so", "libcublasLt.so.12", "libcublasLt.so.13", "libcublasLt.so"]:
    try:
        ctypes.CDLL(n)
        print("  found   ", n)
    except OSError:
        print("  missing ", n)
'
}

device_txt() {
    local rc
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv >"$OUT/device.txt" 2>&1
    rc=$?
    {
        echo
        "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)' 2>&1
        echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
        echo "dlopen check:"
        lib_report 2>&1
    } >>"$OUT/device.txt"
    cat "$OUT/device.txt"
    if [ -x "$BIN" ]; then
        "$BIN" doctor >"$OUT/doctor.txt" 2>&1 || true
        cat "$OUT/doctor.txt"
    fi
    return $rc
}

attn_attnscope() {
    need_bin || return $?
    local json_args=(--json "$OUT/attn_attnscope.json")
    echo "+ $BIN bench-attention --device cuda --t $T_LIST ${json_args[*]}"
    "$BIN" bench-attention --device cuda --t "$T_LIST" "${json_args[@]}"
}

e2e_attnscope() {
    need_bin || return $?
    local decode
    read -r -a decode <<<"${E2E_ATTNSCOPE_DECODE:-"--decode-steps 0"}"
    echo "+ $BIN bench --device cuda --models llama-3.2-1b --prefill 2048 ${decode[*]} --json $OUT/e2e_attnscope.json"
    "$BIN" bench --device cuda --models llama-3.2-1b --prefill 2048 "${decode[@]}" --json "$OUT/e2e_attnscope.json"
}

# compare_md SCRIPT A.json B.json OUT.md: runs a compare script that writes OUT.md, then shows OUT.md.
compare_md() {
    "$PY" "$1" "$2" "$3" --out "$4" >/dev/null || return $?
    cat "$4"
}

step device device_txt

# ---- attention kernel, Llama-3.2-1B attention shape: attnscope vs torch SDPA (flash) and eager-with-probs
step attn_attnscope attn_attnscope
step attn_sdpa "$PY" scripts/bench_sdpa.py --t "$T_LIST" --with-probs --out "$OUT/attn_sdpa.json"
step attn_compare compare_md scripts/attn_bench_compare.py "$OUT/attn_attnscope.json" "$OUT/attn_sdpa.json" \
    "$OUT/attn_compare.md"

# ---- end-to-end prefill, llama-3.2-1b shape (random weights), T=2048, no decode on the HF side
step e2e_attnscope e2e_attnscope
step e2e_hf "$PY" scripts/bench_hf.py --device cuda --dtype bfloat16 --models llama-3.2-1b --prefill 2048 \
    --decode-steps 0 --out "$OUT/e2e_hf.json"
step e2e_compare compare_md scripts/bench_compare.py "$OUT/e2e_attnscope.json" "$OUT/e2e_hf.json" \
    "$OUT/e2e_compare.md"

# ---- decode: per-step capture cost on the GPU (none / stats / weights), batch 1 and 8, against HF generate
step decode_attnscope "$BIN" bench --device cuda --models llama-3.2-1b --prefill 128 --batch 1,8 \
    --decode-context 512 --decode-steps 32 --json "$OUT/decode_attnscope.json"
step decode_hf "$PY" scripts/bench_hf.py --device cuda --dtype bfloat16 --models llama-3.2-1b --prefill 128 \
    --batch 1,8 --decode-context 512 --decode-steps 32 --out "$OUT/decode_hf.json"
step decode_compare compare_md scripts/bench_compare.py "$OUT/decode_attnscope.json" "$OUT/decode_hf.json" \
    "$OUT/decode_compare.md"

echo
echo "== summary (results in $OUT)"
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
exit $failed
