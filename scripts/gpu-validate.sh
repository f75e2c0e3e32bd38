#!/usr/bin/env bash
# GPU validation in one command, sized for a 15-minute GPU window (≤ 8 minutes of it here, kernel compilation
# included), in two halves because the GPU host has no Rust toolchain:
#
#   scripts/gpu-validate.sh build   # where cargo is: release binary + GPU test executables + the shared data
#                                   # they read → .gpu-bundle/ (≤ 64 MiB: executables stripped, xz-packed)
#   scripts/gpu-validate.sh run     # on the GPU host, in the repository root: unpacks .gpu-bundle, runs below
#   scripts/gpu-validate.sh all     # both, on a GPU host that also has cargo
#
# `run`, in this order, each step under its own timeout and never past the total budget (a step that would
# start with too little budget left is recorded SKIP):
#   1. preflight: glibc against the bundle's need, nvidia-smi, `attnscope doctor`, PyTorch; then every kernel
#      compiled once for this GPU into the kernel cache, which every later step reuses
#   2. kernel tests against their CPU twins, reduced grids first (ATTNSCOPE_GPU_SMALL=1), then the full grids
#   3. whole-model tests: the transformers goldens (fixtures + stories260K) on the GPU, GPU = CPU captures, and
#      random-weight models at head_dim 64 / 128 with GQA (tests/gpu_model_head_dims.rs), one stream sync per
#      captured pass (tests/gpu_sync_count.rs)
#   4. attention benchmark against torch SDPA (flash) at T = 1024, 4096, 8192, both prefill kernels
#   5. end-to-end prefill and decode against HF transformers at one shape (llama-3.2-1b, random weights, bf16)
#   6. compute-sanitizer memcheck on the attention tests with small grids; 7. racecheck on probs and decode
#   8. the rest: NVRTC compile test for sm_80/sm_90, memcheck of the other kernel tests
# Each step's result is appended to $OUT/summary.txt and $OUT/summary.json the moment it finishes, so a run cut
# short still reports; all output goes to $OUT/log.txt, benchmark JSON and tables to $OUT/results.tgz (few
# files, so that a device tool returning at most 8 files gets them all).
#
# Environment: OUT (default ./gpu-validate-out), BUDGET_S (total seconds, default 480), BENCH_T (attention
# benchmark lengths, default 1024,4096,8192), PYTHON (python3 with torch + transformers), ATTNSCOPE_CACHE_DIR
# (the kernel cache is its kernels/; default a temporary one). No library path is set: `attnscope doctor` finds the CUDA
# 12 or 13 libraries itself (toolkit, pip wheels of the active Python) and says which it uses.
# Without a GPU, `run` fails at once with one line. Exit status: non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
BUNDLE="$REPO/.gpu-bundle"
TESTS=(gpu_kernels gpu_attention gpu_probs_decode gpu_elementwise gpu_model gpu_model_head_dims gpu_sync_count nvrtc_compile)

build() {
    set -e
    command -v cargo >/dev/null || { echo "gpu-validate build: cargo not found (build where Rust is)" >&2; exit 2; }
    cargo build --release --locked
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/pack/bin" "$BUNDLE/pack/shared"
    cp target/release/attnscope "$BUNDLE/pack/bin/"
    local args=()
    for t in "${TESTS[@]}"; do args+=(--test "$t"); done
    # Test executables: cargo prints their paths as JSON artifacts.
    cargo test --release --locked --no-run --message-format=json "${args[@]}" | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
' "$BUNDLE/pack/bin"
    strip "$BUNDLE"/pack/bin/* 2>/dev/null || true
    # The shared data the GPU tests read (stories260K and its goldens); ../shared does not travel.
    if [ -d ../shared ]; then
        mkdir -p "$BUNDLE/pack/shared/models" "$BUNDLE/pack/shared/golden"
        cp -r ../shared/models/stories260K "$BUNDLE/pack/shared/models/"
        cp ../shared/golden/stories260K.* "$BUNDLE/pack/shared/golden/"
    fi
    # The newest glibc symbol version the executables need, checked by the preflight on the GPU host.
    objdump -T "$BUNDLE"/pack/bin/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1 \
        >"$BUNDLE/pack/glibc-needed" || true
    git rev-parse --short HEAD >"$BUNDLE/pack/commit" 2>/dev/null || echo unknown >"$BUNDLE/pack/commit"
    tar -C "$BUNDLE/pack" -cJf "$BUNDLE/bundle.tar.xz" .
    rm -rf "$BUNDLE/pack"
    set +e
    echo "bundle: $(du -h "$BUNDLE/bundle.tar.xz" | cut -f1) in $BUNDLE (carry .gpu-bundle to the GPU host; there: scripts/gpu-validate.sh run)"
}

# ---- run ---------------------------------------------------------------------------------------------------

now() { date +%s; }

# record NAME STATUS SECONDS DETAIL: appends one line to summary.txt and one object to summary.json.
record() {
    local name="$1" status="$2" secs="$3" detail="$4"
    printf '%-5s %-40s %4ss  %s\n' "$status" "$name" "$secs" "$detail" | tee -a "$OUT/summary.txt"
    detail="${detail//\\/\\\\}"
    detail="${detail//\"/\\\"}"
    printf '{"step": "%s", "status": "%s", "seconds": %s, "detail": "%s"}\n' "$name" "$status" "$secs" \
        "$detail" >>"$WORK/steps.jsonl"
    {
        printf '{"schema": "attnscope-gpu-validate/1", "commit": "%s", "budget_s": %s, "elapsed_s": %s, "steps": [\n' \
            "$COMMIT" "$BUDGET_S" "$(($(now) - T0))"
        paste -sd, "$WORK/steps.jsonl"
        printf ']}\n'
    } >"$OUT/summary.json.tmp" && mv "$OUT/summary.json.tmp" "$OUT/summary.json"
}

# step NAME TIMEOUT_S CMD...: runs CMD under min(TIMEOUT_S, budget left), output to log.txt and the terminal.
step() {
    local name="$1" limit="$2"
    shift 2
    local left=$((BUDGET_S - ($(now) - T0)))
    if [ "$left" -lt 10 ]; then
        record "$name" SKIP 0 "total budget of ${BUDGET_S}s spent"
        FAILED=1
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (timeout ${limit}s): $*" | tee -a "$OUT/log.txt"
    local t0
    t0=$(now)
    # Shell functions (preflight, compare) run in a child bash, which `timeout` can signal like any command.
    if declare -F "$1" >/dev/null; then
        set -- bash -c "$(declare -f "$1"); $(printf '%q ' "$@")"
    fi
    timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$OUT/log.txt" | tail -n 40
    local rc=${PIPESTATUS[0]}
    local dt=$(($(now) - t0))
    if [ "$rc" -eq 0 ]; then
        record "$name" PASS "$dt" ""
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        record "$name" FAIL "$dt" "timed out after ${limit}s"
        FAILED=1
    else
        record "$name" FAIL "$dt" "exit $rc (see log.txt)"
        FAILED=1
    fi
    tar -C "$WORK/results" -czf "$OUT/results.tgz" . 2>/dev/null
}

preflight() {
    local need have
    need="$(cat "$WORK/pack/glibc-needed" 2>/dev/null)"
    have="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
    echo "glibc here: ${have:-unknown}; the bundle needs ${need:-?}"
    if [ -n "$need" ] && [ -n "$have" ] &&
        [ "$(printf '%s\n%s\n' "${need#GLIBC_}" "$have" | sort -V | tail -1)" != "$have" ]; then
        echo "glibc $have is older than the bundle's ${need}: build the bundle on an older distribution"
        return 1
    fi
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total,clocks.max.sm --format=csv || return 1
    "$BIN" doctor || return 1
    "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda,
"transformers", transformers.__version__)' || echo "(no torch/transformers: the comparison steps will fail)"
}

run() {
    OUT="${OUT:-$REPO/gpu-validate-out}"
    BUDGET_S="${BUDGET_S:-480}"
    PY="${PYTHON:-python3}"
    T0=$(now)
    FAILED=0
    # Fail fast without a GPU.
    if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        echo "gpu-validate: no NVIDIA GPU on this host (nvidia-smi missing or lists none); run it on the GPU host" >&2
        exit 2
    fi
    if [ ! -f "$BUNDLE/bundle.tar.xz" ]; then
        echo "gpu-validate: $BUNDLE/bundle.tar.xz missing: run 'scripts/gpu-validate.sh build' where cargo is" >&2
        exit 2
    fi
    mkdir -p "$OUT" || exit 2
    OUT="$(cd "$OUT" && pwd)"
    : >"$OUT/summary.txt"
    : >"$OUT/log.txt"
    WORK="$(mktemp -d)"
    mkdir -p "$WORK/pack" "$WORK/results"
    : >"$WORK/steps.jsonl"
    tar -C "$WORK/pack" -xJf "$BUNDLE/bundle.tar.xz" || exit 2
    COMMIT="$(cat "$WORK/pack/commit" 2>/dev/null || echo unknown)"
    BIN="$WORK/pack/bin/attnscope"
    export OUT WORK BIN PY
    local tb="$WORK/pack/bin"
    # Everything compiles into one cache once (step 1) and is reused by every later step and test process.
    export ATTNSCOPE_CACHE_DIR="${ATTNSCOPE_CACHE_DIR:-$WORK/cache}"
    export ATTNSCOPE_REQUIRE_GPU=1 ATTNSCOPE_REQUIRE_NVRTC=1
    export ATTNSCOPE_REPO="$REPO" ATTNSCOPE_SHARED="$WORK/pack/shared"
    echo "gpu-validate: commit $COMMIT, budget ${BUDGET_S}s, results in $OUT" | tee -a "$OUT/log.txt"

    # 1. preflight and the kernel cache
    step preflight 60 preflight
    step "compile kernels (this GPU)" 150 "$BIN" doctor --compile-kernels
    if [ "$FAILED" -ne 0 ]; then
        # Nothing after this can pass; stop so that the window's minutes go to a fix and a rerun.
        record "remaining steps" SKIP 0 "preflight or kernel compilation failed: see log.txt"
        cat "$OUT/summary.txt"
        rm -rf "$WORK"
        return 1
    fi
    # 2. kernels against their CPU twins: reduced grids first, then the full ones
    for t in gpu_kernels gpu_attention gpu_probs_decode gpu_elementwise; do
        step "$t (small grids)" 60 env ATTNSCOPE_GPU_SMALL=1 "$tb/$t" --test-threads 4
    done
    for t in gpu_kernels gpu_attention gpu_probs_decode; do
        step "$t (full grids)" 120 "$tb/$t" --test-threads 4
    done
    # 3. whole models
    step "gpu_model (goldens, GPU = CPU)" 120 "$tb/gpu_model" --test-threads 2
    step "gpu_model_head_dims (hd 64/128, GQA)" 120 "$tb/gpu_model_head_dims" --test-threads 2
    step "gpu_sync_count (one sync per captured pass)" 60 "$tb/gpu_sync_count" --test-threads 1
    # 4. attention kernel against torch SDPA, both prefill kernels
    local tl="${BENCH_T:-1024,4096,8192}"
    step "bench-attention (fast kernel)" 60 "$BIN" bench-attention --device cuda --t "$tl" \
        --json "$WORK/results/attn_attnscope.json"
    step "bench-attention (reference kernel)" 60 env ATTNSCOPE_PREFILL_KERNEL=reference "$BIN" bench-attention \
        --device cuda --t "$tl" --json "$WORK/results/attn_attnscope_reference.json"
    step "torch SDPA" 60 "$PY" scripts/bench_sdpa.py --t "$tl" --with-probs --out "$WORK/results/attn_sdpa.json"
    step "attention comparison" 20 compare scripts/attn_bench_compare.py attn_attnscope.json attn_sdpa.json \
        attn_compare.md
    # 5. end to end against HF transformers, one shape
    local shape=(--models llama-3.2-1b --prefill 2048 --batch 1 --decode-context 512 --decode-steps 32
        --warmup 1 --repeats 3)
    step "e2e attnscope (llama-3.2-1b bf16)" 90 "$BIN" bench --device cuda --dtype bf16 "${shape[@]}" -q \
        --json "$WORK/results/e2e_attnscope.json"
    step "e2e HF transformers" 90 "$PY" scripts/bench_hf.py --device cuda --dtype bfloat16 "${shape[@]}" \
        --out "$WORK/results/e2e_hf.json"
    step "e2e comparison" 20 compare scripts/bench_compare.py e2e_attnscope.json e2e_hf.json e2e_compare.md
    # 6-8. sanitizers on small grids, then the rest
    if command -v compute-sanitizer >/dev/null; then
        for t in gpu_attention gpu_probs_decode; do
            step "memcheck $t" 90 env ATTNSCOPE_GPU_SMALL=1 compute-sanitizer --tool memcheck \
                --error-exitcode 1 "$tb/$t" --test-threads 1
        done
        step "racecheck probs + decode" 90 env ATTNSCOPE_GPU_SMALL=1 compute-sanitizer --tool racecheck \
            --error-exitcode 1 "$tb/gpu_probs_decode" --test-threads 1
    else
        record "compute-sanitizer" SKIP 0 "compute-sanitizer not on PATH"
    fi
    step "nvrtc compile (sm_80, sm_90)" 90 "$tb/nvrtc_compile" --test-threads 2
    if command -v compute-sanitizer >/dev/null; then
        step "memcheck gpu_kernels" 90 env ATTNSCOPE_GPU_SMALL=1 compute-sanitizer --tool memcheck \
            --error-exitcode 1 "$tb/gpu_kernels" --test-threads 1
        step "memcheck gpu_elementwise" 60 env ATTNSCOPE_GPU_SMALL=1 compute-sanitizer --tool memcheck \
            --error-exitcode 1 "$tb/gpu_elementwise" --test-threads 1
    fi
    echo
    echo "== summary ($(($(now) - T0))s of ${BUDGET_S}s; $OUT/summary.txt, summary.json, log.txt, results.tgz)"
    cat "$OUT/summary.txt"
    for f in attn_compare.md e2e_compare.md; do
        [ -f "$WORK/results/$f" ] && cat "$WORK/results/$f"
    done
    rm -rf "$WORK"
    return $FAILED
}

# compare SCRIPT A B MD: a comparison script over two result files of $WORK/results, writing and showing MD.
compare() {
    "$PY" "$1" "$WORK/results/$2" "$WORK/results/$3" --out "$WORK/results/$4" >/dev/null || return $?
    cat "$WORK/results/$4"
}

case "${1:-}" in
    build) build ;;
    run) run ;;
    all) build && run ;;
    *)
        echo "usage: scripts/gpu-validate.sh build|run|all   (see the header of this script)" >&2
        exit 2
        ;;
esac
