#!/usr/bin/env bash
# Assemble a CUDA 13.0 toolkit directory from NVIDIA's PyPI wheels, enough to build
# `cargo build --release --features cuda` on a machine with no GPU, no driver and no
# system CUDA install:
#
#     eval "$(scripts/cuda_toolkit.sh ~/cuda13)"
#     cargo build --release --features cuda
#
# DIR gets bin/ (nvcc, ptxas, ...), include/, nvvm/ and lib/ (with the unversioned
# `libcudart.so` that the wheels omit and candle-kernels links against); the wheels
# themselves go to DIR/.pip. The script prints the `export` lines for the build on
# stdout, everything else on stderr. Running it again on the same DIR reuses the
# download and rebuilds bin/ and lib/, so DIR should be the script's own.
#
# --runtime-libs also installs cuBLAS, cuRAND and NVRTC, which cudarc opens at run time
# on a GPU machine (with the driver's libcuda.so.1): point LD_LIBRARY_PATH at DIR/lib.
#
# Why 13.0: cudarc 0.19.10 has bindings for 12.x and 13.0-13.4, but the cu12 nvcc wheel
# (nvidia-cuda-nvcc-cu12) ships ptxas and nvvm without the nvcc driver, so 13.x is the
# only toolkit PyPI can give. 13.0 is its lowest release: its PTX and libcudart.so.13
# need an NVIDIA driver >= 580 at run time, later 13.x releases a newer one.
set -euo pipefail

usage() { echo "usage: $0 DIR [--runtime-libs]" >&2; exit 2; }
[ $# -ge 1 ] || usage
DIR=$1
shift
RUNTIME_LIBS=0
for a in "$@"; do
    case $a in
        --runtime-libs) RUNTIME_LIBS=1 ;;
        *) usage ;;
    esac
done
PYTHON=${PYTHON:-python3}

# One CUDA release (13.0, update 2), pinned; --no-deps keeps pip from pulling newer ones.
BUILD_PKGS=(
    nvidia-cuda-nvcc==13.0.88    # bin/: nvcc, ptxas, cudafe++, fatbinary, nvlink
    nvidia-cuda-crt==13.0.88     # include/crt
    nvidia-nvvm==13.0.88         # nvvm/: cicc, libdevice
    nvidia-cuda-runtime==13.0.96 # CUDA runtime headers, libcudart.so.13
    nvidia-cuda-cccl==13.0.85    # include/cccl: libcu++, CUB, Thrust
)
RUNTIME_PKGS=(
    nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.0.2.14
    nvidia-curand==10.4.0.35
)
PKGS=("${BUILD_PKGS[@]}")
[ $RUNTIME_LIBS = 1 ] && PKGS+=("${RUNTIME_PKGS[@]}")
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
PIP=$DIR/.pip
STAMP=$PIP/.installed

want=$(printf '%s\n' "${PKGS[@]}")
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    rm -rf "$PIP"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$PIP" "${PKGS[@]}" >&2
    printf '%s\n' "$want" >"$STAMP"
fi

CU=$PIP/nvidia/cu13
[ -x "$CU/bin/nvcc" ] || { echo "$0: no nvcc in $CU/bin" >&2; exit 1; }

# bin/: nvcc reads nvcc.profile beside its own (resolved) path, and the wheel's profile
# looks for targets/x86_64-linux/, which the wheels do not have. So nvcc is copied and
# given a profile for this layout; the other tools are links (nvcc finds them on its
# own directory).
rm -rf "$DIR/bin" "$DIR/lib"
mkdir -p "$DIR/bin" "$DIR/lib"
for f in "$CU"/bin/*; do
    case ${f##*/} in
        nvcc | nvcc.profile) ;;
        *) ln -s "$f" "$DIR/bin/" ;;
    esac
done
cp "$CU/bin/nvcc" "$DIR/bin/nvcc"
cat >"$DIR/bin/nvcc.profile" <<'EOF'

TOP              = $(_HERE_)/..

CICC_PATH        = $(TOP)/nvvm/bin
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice

LD_LIBRARY_PATH += $(TOP)/lib:
PATH            += $(CICC_PATH):$(_HERE_):

INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)
SYSTEM_INCLUDES +=  "-isystem" "$(TOP)/include/cccl" $(_SPACE_)

LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib/stubs" "-L$(TOP)/lib"

CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
EOF

ln -sfn "$CU/include" "$DIR/include"
ln -sfn "$CU/nvvm" "$DIR/nvvm"
ln -sfn lib "$DIR/lib64"

# lib/: every library of the wheels under its own name, and the unversioned name the
# linker asks for (-lcudart finds libcudart.so only).
for f in "$CU"/lib/*; do
    name=${f##*/}
    ln -s "$f" "$DIR/lib/$name"
    case $name in
        *.so.*)
            base=${name%%.so.*}.so
            [ -e "$DIR/lib/$base" ] || ln -s "$name" "$DIR/lib/$base"
            ;;
    esac
done

ver=$("$DIR/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
[ -n "$ver" ] || { echo "$0: $DIR/bin/nvcc --version failed" >&2; exit 1; }
echo "CUDA $ver toolkit in $DIR" >&2

# CUDA_HOME/CUDA_PATH/CUDA_ROOT: cudarc and cudaforge look there; nvcc on PATH: cudarc's
# build script takes the CUDA version from `nvcc --version`, cudaforge (candle-kernels)
# compiles with it; NVCC: cudaforge's first choice. CUDA_COMPUTE_CAP: the GPU the
# kernels are compiled for, which cudaforge otherwise asks nvidia-smi (90: H100/H200).
# LIBRARY_PATH: where the linker finds libcudart.so (candle-kernels links it and says
# nowhere where it is). LD_LIBRARY_PATH: libcudart.so.13 at run time.
cat <<EOF
export CUDA_HOME=$DIR
export CUDA_PATH=$DIR
export CUDA_ROOT=$DIR
export NVCC=$DIR/bin/nvcc
export PATH=$DIR/bin:\$PATH
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$DIR/lib\${LIBRARY_PATH:+:\$LIBRARY_PATH}
export LD_LIBRARY_PATH=$DIR/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
EOF
