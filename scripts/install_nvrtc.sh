#!/usr/bin/env bash
# Installs NVRTC (no GPU, no CUDA toolkit needed) from the pinned PyPI wheel into .ci-cache/nvrtc, so that
# tests/nvrtc_compile.rs can compile every kernel. Prints the export lines and writes them to
# .ci-cache/nvrtc/env.sh:
#
#   eval "$(scripts/install_nvrtc.sh)"      # or: scripts/install_nvrtc.sh >/dev/null; . .ci-cache/nvrtc/env.sh
#
# The wheel holds lib/libnvrtc.so.12 and lib/libnvrtc-builtins.so.12.8 (plus nvrtc.h); the kernels need no
# other CUDA header. The cu12 wheel is used because the crate's cudarc bindings (feature cuda-12080) look for
# libnvrtc.so.12. Idempotent: a second run reuses the installed wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL="nvidia-cuda-nvrtc-cu12==12.8.93"
DEST=".ci-cache/nvrtc"
LIB="$DEST/site/nvidia/cuda_nvrtc/lib"
if [ ! -f "$LIB/libnvrtc.so.12" ] || [ "$(cat "$DEST/wheel" 2>/dev/null)" != "$WHEEL" ]; then
    rm -rf "$DEST"
    mkdir -p "$DEST"
    PIP=(python3 -m pip)
    if ! python3 -m pip --version >/dev/null 2>&1; then
        # No system pip: a throwaway venv brings its own.
        python3 -m venv "$DEST/venv" >&2
        PIP=("$DEST/venv/bin/python" -m pip)
    fi
    "${PIP[@]}" install --quiet --disable-pip-version-check --no-deps --target "$DEST/site" "$WHEEL" >&2
    echo "$WHEEL" >"$DEST/wheel"
fi
if [ ! -f "$LIB/libnvrtc.so.12" ]; then
    echo "install_nvrtc.sh: $LIB/libnvrtc.so.12 missing after installing $WHEEL" >&2
    exit 1
fi
ABS_LIB="$(cd "$LIB" && pwd)"
{
    echo "export ATTNSCOPE_NVRTC_LIB=\"$ABS_LIB\""
    echo "export LD_LIBRARY_PATH=\"$ABS_LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
} >"$DEST/env.sh"
cat "$DEST/env.sh"
