#!/usr/bin/env bash
# GPU validation in two halves, for hosts where the GPU machine has no Rust toolchain:
#
#   scripts/gpu-check.sh build      # on a machine with cargo: release binary + test executables → .gpu-bundle/
#   scripts/gpu-check.sh run        # on the GPU host (nvcc/compute-sanitizer there): runs the bundle
#   scripts/gpu-check.sh all        # both, on a GPU host that also has cargo
#
# `run` executes the GPU tests (tests/gpu_kernels.rs, gpu_attention.rs, gpu_elementwise.rs: kernels against
# their CPU twins; they fail rather than skip when ATTNSCOPE_REQUIRE_GPU=1), the NVRTC compile test, and
# compute-sanitizer memcheck and racecheck on each kernel-test executable (with ATTNSCOPE_GPU_SMALL=1, which
# shrinks the grids of the attention tests, since the sanitizers are 10-100x slower), then prints one summary
# line per step. Exit status is non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE=".gpu-bundle"

build() {
    set -e
    cargo build --release
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
    cp target/release/attnscope "$BUNDLE/"
    # Test executables: cargo prints their paths as JSON artifacts.
    cargo test --release --no-run --message-format=json --test gpu_kernels --test gpu_attention \
        --test gpu_elementwise --test gpu_model --test nvrtc_compile \
        | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        shutil.copy(m["executable"], ".gpu-bundle/" + m["target"]["name"])
        print("bundled", m["target"]["name"])
'
    set +e
    echo "bundle ready in $BUNDLE (carry it to the GPU host and run: scripts/gpu-check.sh run)"
}

run() {
    local failed=0
    local summary=()
    step() {
        local name="$1"
        shift
        echo "== $name: $*"
        if "$@"; then summary+=("PASS  $name"); else summary+=("FAIL  $name"); failed=1; fi
    }
    nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader || true
    export ATTNSCOPE_REQUIRE_GPU=1 ATTNSCOPE_REQUIRE_NVRTC=1
    # What the backend finds (driver, GPUs, NVRTC + cuBLAS of one CUDA major, kernel cache); fails when unusable.
    step "attnscope doctor" "$BUNDLE/attnscope" doctor
    step "nvrtc compile (sm_80, sm_90)" "$BUNDLE/nvrtc_compile" --test-threads 1
    local tests=(gpu_kernels gpu_attention gpu_elementwise)
    for t in "${tests[@]}"; do
        step "$t vs CPU twins" "$BUNDLE/$t" --test-threads 1
    done
    # Whole models: transformers goldens on the GPU (f32, bf16) and GPU = CPU captures. The executable was
    # built elsewhere, so it is told where the fixtures (this checkout) and ../shared are.
    local shared_dir="../shared"
    [ -d shared ] && shared_dir="shared"
    step "gpu_model (goldens, GPU = CPU)" env ATTNSCOPE_REPO="$(pwd)" ATTNSCOPE_SHARED="$shared_dir" \
        "$BUNDLE/gpu_model" --test-threads 1 --nocapture
    if command -v compute-sanitizer >/dev/null; then
        for t in "${tests[@]}"; do
            for tool in memcheck racecheck; do
                step "compute-sanitizer $tool $t" env ATTNSCOPE_GPU_SMALL=1 compute-sanitizer --tool "$tool" \
                    --error-exitcode 1 "$BUNDLE/$t" --test-threads 1
            done
        done
    else
        summary+=("SKIP  compute-sanitizer (not found)")
    fi
    echo
    echo "== summary"
    printf '%s\n' "${summary[@]}"
    return $failed
}

case "${1:-}" in
    build) build ;;
    run) run ;;
    all) build && run ;;
    *)
        echo "usage: scripts/gpu-check.sh build|run|all" >&2
        exit 2
        ;;
esac
