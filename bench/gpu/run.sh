#!/usr/bin/env bash
# Builds and checks the CUDA adapter kernels on a machine with a GPU and nvcc
# (no LibTorch, gRPC or Abseil needed), then prints a short table last.
#
#   bash bench/gpu/run.sh            # on the GPU machine, from the repo root
#   ARCH=sm_90 bash bench/gpu/run.sh # override the target architecture
#
# What it does not cover yet: the CUDA/bf16 server build against LibTorch,
# CUDA graphs and the end-to-end benchmarks (see docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ARCH=${ARCH:-sm_90}
OUT=${OUT_DIR:-build-gpu}
mkdir -p "$OUT"
"$NVCC" -std=c++20 -O3 -arch="$ARCH" -I. -o "$OUT/lora_kernels_check" \
  bench/gpu/lora_kernels_check.cu server/gpu/lora_kernels.cu
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$OUT/lora_kernels_check"
