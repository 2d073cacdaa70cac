#!/usr/bin/env bash
# Builds the GPU bundle (bench/gpu/README.md, option b): adapterd,
# adapterctl and adapterd_loadgen compiled here against the headers and
# libraries of the PyTorch wheel the device runs (torch 2.11.0+cu130), with
# the Debian libraries they need, packed as one .tar.xz to carry to the
# device. LibTorch itself is not packed: the device's PyTorch provides it.
#
#   ./x gpu-bundle          # runs this inside the build environment
#
# Inside the build environment (./x run): downloads the wheel once into
# $ADAPTERD_CACHE_DIR/wheels (with pip, at bundle time; nothing downloads at
# run time), unpacks its headers and five libraries, configures build-gpu/
# (Release, no tests, -DADAPTERD_TORCH_ROOT), builds the three binaries,
# strips them, and writes build-gpu/adapterd-gpu-bundle.tar.xz. The adapter
# kernels and the kernel check (build-gpu/cuda/, made by compile_check.sh
# with the host's nvcc) must be there: the kernels are linked into the
# server (-DADAPTERD_CUDA_KERNELS), the check goes into the bundle. Fails when the bundle exceeds
# 60 MiB (a device call carries at most 64 MiB).
#
# The reference libraries the conformance run needs in the versions CI pins
# (transformers, peft, adapters and the two they constrain) go in as wheels
# under pywheels/; run.sh installs them only when the device's own versions
# cannot import `adapters`.
set -euo pipefail
cd "$(dirname "$0")/../.."
TORCH_VERSION=${TORCH_VERSION:-2.11.0}
CACHE=${ADAPTERD_CACHE_DIR:-/cache}
PY=${ADAPTERD_REF_PYTHON:-python3}
BUILD=${BUILD_DIR:-build-gpu}
WHEELS="$CACHE/wheels"
TORCH_ROOT="$CACHE/torch-$TORCH_VERSION-cuda"
REF_PINS=(transformers==4.57.6 peft==0.21.2 adapters==1.3.0 huggingface_hub==0.36.2 tokenizers==0.22.2)
say() { printf '[gpu-bundle] %s\n' "$*" >&2; }

download() {  # download SPEC...: wheels for the device's Python (3.12, manylinux x86_64)
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "$@"
}

mkdir -p "$WHEELS"
if [ ! -f "$TORCH_ROOT/.complete" ]; then
  ls "$WHEELS"/torch-"$TORCH_VERSION"-cp312-*.whl >/dev/null 2>&1 || { say "downloading torch $TORCH_VERSION"; download "torch==$TORCH_VERSION"; }
  wheel=$(ls "$WHEELS"/torch-"$TORCH_VERSION"-cp312-*.whl | head -1)
  say "unpacking headers and libraries of $(basename "$wheel")"
  rm -rf "$TORCH_ROOT"
  "$PY" - "$wheel" "$TORCH_ROOT" <<'EOF'
import os, sys, zipfile
wheel, root = sys.argv[1:]
libs = {f"torch/lib/{n}" for n in ("libtorch.so", "libtorch_cpu.so", "libc10.so", "libtorch_cuda.so",
                                    "libc10_cuda.so")}
with zipfile.ZipFile(wheel) as z:
    for m in z.namelist():
        # Its copy of protobuf's headers is left out: the server compiles
        # against Debian's protobuf, the version its gRPC was built with.
        header = m.startswith("torch/include/") and not m.startswith("torch/include/google/")
        if (header and not m.endswith("/")) or m in libs or m == "torch/version.py":
            dest = os.path.join(root, m[len("torch/"):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(m) as src, open(dest, "wb") as out:
                out.write(src.read())
EOF
  touch "$TORCH_ROOT/.complete"
fi
say "reference wheels: ${REF_PINS[*]}"
download "${REF_PINS[@]}"

# The adapter kernels, compiled by the host's nvcc (compile_check.sh), are
# linked into the server with the static CUDA runtime.
KERNELS="$PWD/$BUILD/cuda"
for f in lora_kernels.o libcudart_static.a; do
  [ -f "$KERNELS/$f" ] || { say "no $KERNELS/$f: run bench/gpu/compile_check.sh $BUILD/cuda first (./x gpu-bundle does)"; exit 1; }
done
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DADAPTERD_BUILD_TESTS=OFF \
  -DADAPTERD_TORCH_ROOT="$TORCH_ROOT" -DADAPTERD_CUDA_KERNELS="$KERNELS" \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build "$BUILD" --target adapterd adapterctl adapterd_loadgen

stage="$BUILD/stage/adapterd-gpu"
rm -rf "$BUILD/stage"
mkdir -p "$stage/server" "$stage/bench" "$stage/lib/glibc" "$stage/pywheels"
# The SentencePiece shim is opened at run time from beside the executable.
for b in server/adapterd server/adapterctl bench/adapterd_loadgen server/libadapterd_sentencepiece.so; do
  strip -o "$stage/$b" "$BUILD/$b"
done
if [ -x "$BUILD/cuda/lora_kernels_check" ]; then
  cp "$BUILD/cuda/lora_kernels_check" "$stage/bench/"
else
  say "no $BUILD/cuda/lora_kernels_check (bench/gpu/compile_check.sh $BUILD/cuda makes it); the bundle has no kernel check"
fi
# Every library the binaries load, but LibTorch's (the device's PyTorch has
# them) and CUDA's (not found here, found there). The C library itself goes
# in lib/glibc/, used only when the device's glibc is older than ours.
for b in server/adapterd server/adapterctl bench/adapterd_loadgen server/libadapterd_sentencepiece.so; do
  ldd "$stage/$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
done | sort -u | while read -r lib; do
  name=$(basename "$lib")
  case "$name" in
    libtorch*|libc10*) ;;
    libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*) cp -L "$lib" "$stage/lib/glibc/" ;;
    *) cp -L "$lib" "$stage/lib/" ;;
  esac
done
cp -L /lib64/ld-linux-x86-64.so.2 "$stage/lib/glibc/"
strip --strip-unneeded "$stage"/lib/*.so* 2>/dev/null || true
for spec in "${REF_PINS[@]}"; do
  n=${spec%%==*}; v=${spec#*==}
  cp "$WHEELS"/"$n"-"$v"-*.whl "$stage/pywheels/"
done
cp "$TORCH_ROOT/version.py" "$stage/torch_version.py"
git rev-parse HEAD > "$stage/COMMIT" 2>/dev/null || echo unknown > "$stage/COMMIT"

out="$BUILD/adapterd-gpu-bundle.tar.xz"
"$PY" - "$BUILD/stage" "$out" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[2], "w:xz", preset=6) as t:
    t.add(f"{sys.argv[1]}/adapterd-gpu", arcname="adapterd-gpu")
EOF
size=$(stat -c %s "$out")
say "wrote $out ($((size / 1048576)) MiB)"
[ "$size" -le $((60 * 1048576)) ] || { say "the bundle is over 60 MiB"; exit 1; }
