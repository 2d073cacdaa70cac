#!/usr/bin/env bash
# Compiles the CUDA sources (server/gpu/ and the kernel check) with nvcc for
# the device's architecture, on a machine without a GPU, so that they never
# rot between device runs. Nothing runs: a GPU is not needed, nvcc is.
#
#   bash bench/gpu/compile_check.sh [OUT_DIR]   # default build-cuda-compile/
#
# NVCC and ARCH override the compiler and the architecture (sm_90). Exits
# non-zero when nvcc is missing or any file fails to compile.
set -euo pipefail
cd "$(dirname "$0")/../.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ARCH=${ARCH:-sm_90}
OUT=${1:-build-cuda-compile}
if [ ! -x "$NVCC" ]; then
  echo "compile_check: no nvcc (looked for \$NVCC, nvcc on PATH, /usr/local/cuda/bin/nvcc)" >&2
  exit 1
fi
mkdir -p "$OUT"
for src in server/gpu/*.cu bench/gpu/*.cu; do
  obj="$OUT/$(basename "${src%.cu}").o"
  "$NVCC" -std=c++20 -O3 -arch="$ARCH" -Werror all-warnings -Xcompiler -fPIC -I. -c "$src" -o "$obj"
  echo "compile_check: $src -> $obj"
done
"$NVCC" -arch="$ARCH" -o "$OUT/lora_kernels_check" "$OUT/lora_kernels_check.o" "$OUT/lora_kernels.o"
echo "compile_check: linked $OUT/lora_kernels_check ($("$NVCC" --version | tail -1))"
# The static CUDA runtime beside the kernels, for a server build that links
# them (-DADAPTERD_CUDA_KERNELS=$OUT, bench/gpu/bundle.sh).
cudart=$(dirname "$(dirname "$(readlink -f "$NVCC")")")/lib64/libcudart_static.a
if [ -f "$cudart" ]; then
  cp "$cudart" "$OUT/"
  echo "compile_check: $cudart -> $OUT/"
else
  echo "compile_check: no $cudart; a server build cannot link the kernels from $OUT" >&2
fi
# The toolkit's headers, for the server's CUDA graph code (server/gpu/
# cuda_step_graph.cc), which the bundle build compiles against LibTorch's
# CUDA headers where no toolkit is installed.
# nvcc may be a wrapper script outside the toolkit (a /usr/local/bin/nvcc
# whose neighbouring include/ holds absolute links into the toolkit, which
# do not resolve inside the build's root filesystem), so the folder is found
# through the header itself, and copied with links followed.
cuda_include=$(dirname "$(readlink -f "$(dirname "$(dirname "$(readlink -f "$NVCC")")")/include/cuda_runtime_api.h")")
if [ ! -f "$cuda_include/cuda_runtime_api.h" ]; then
  echo "compile_check: no cuda_runtime_api.h beside $NVCC (looked in $cuda_include)" >&2
  exit 1
fi
rm -rf "$OUT/include"
cp -rL "$cuda_include" "$OUT/include"
echo "compile_check: $cuda_include -> $OUT/include"
# The one generated header of LibTorch's CUDA headers that Debian's
# libtorch-dev leaves out (it says c10_cuda is a shared library), so that
# the CPU build can compile the CUDA graph code against Debian's headers.
mkdir -p "$OUT/shim/c10/cuda/impl"
echo '#define C10_CUDA_BUILD_SHARED_LIBS' > "$OUT/shim/c10/cuda/impl/cuda_cmake_macros.h"
