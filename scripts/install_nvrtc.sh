#!/usr/bin/env bash
# Installs NVRTC of CUDA 12 or 13 (no GPU, no CUDA toolkit needed) from its pinned PyPI wheel into
# .ci-cache/nvrtc-<major>, so that tests/nvrtc_compile.rs can compile every kernel with it. Prints the export
# line and writes it to .ci-cache/nvrtc-<major>/env.sh:
#
#   eval "$(scripts/install_nvrtc.sh)"       # CUDA 12 (the default)
#   eval "$(scripts/install_nvrtc.sh 13)"    # CUDA 13
#
# CUDA 12: nvidia-cuda-nvrtc-cu12 holds nvidia/cuda_nvrtc/lib/libnvrtc.so.12 + libnvrtc-builtins.so.12.8.
# CUDA 13: nvidia-cuda-nvrtc (13.0.x, the CUDA of driver 580) holds nvidia/cu13/lib/libnvrtc.so.13 +
# libnvrtc-builtins.so.13.0. The kernels need no CUDA header. attnscope opens the library by full path from
# ATTNSCOPE_NVRTC_LIB, so nothing is added to LD_LIBRARY_PATH. Idempotent: a second run reuses the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
MAJOR="${1:-12}"
case "$MAJOR" in
    12) WHEEL="nvidia-cuda-nvrtc-cu12==12.8.93"; SUBDIR="nvidia/cuda_nvrtc/lib" ;;
    13) WHEEL="nvidia-cuda-nvrtc==13.0.88"; SUBDIR="nvidia/cu13/lib" ;;
    *) echo "install_nvrtc.sh: CUDA major must be 12 or 13, not $MAJOR" >&2; exit 2 ;;
esac
DEST=".ci-cache/nvrtc-$MAJOR"
LIB="$DEST/site/$SUBDIR"
SO="libnvrtc.so.$MAJOR"
if [ ! -f "$LIB/$SO" ] || [ "$(cat "$DEST/wheel" 2>/dev/null)" != "$WHEEL" ]; then
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
if [ ! -f "$LIB/$SO" ]; then
    echo "install_nvrtc.sh: $LIB/$SO missing after installing $WHEEL" >&2
    exit 1
fi
ABS_LIB="$(cd "$LIB" && pwd)"
echo "export ATTNSCOPE_NVRTC_LIB=\"$ABS_LIB/$SO\"" >"$DEST/env.sh"
cat "$DEST/env.sh"
