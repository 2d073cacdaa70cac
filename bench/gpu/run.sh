#!/usr/bin/env bash
# The whole GPU check in one command (bench/gpu/README.md): unpack the
# bundle (or use a build tree), run the CUDA kernel check against its
# float64 host reference, run end-to-end conformance against transformers,
# PEFT and AdapterHub on the same device (bench/gpu/conformance.py), then
# the benchmarks (bench/gpu/bench.py). Writes report.md and run.json to
# $OUT (default: ./gpu-out) and exits non-zero when any step failed. A step
# that fails does not stop the later ones.
#
#   bash bench/gpu/run.sh --bundle=build-gpu/adapterd-gpu-bundle.tar.xz   # on the device
#   bash bench/gpu/run.sh --device=cpu --build=build                      # rehearsal on the CPU
#
# Options: --device=cuda[:N]|cpu (default cuda), --bundle=FILE or
# --build=DIR, --size=1b|100m|tiny (benchmark checkpoint; default 1b on
# cuda, tiny on cpu). PYTHON overrides the interpreter (default: the
# device's /opt/torch/.venv, else $ADAPTERD_REF_PYTHON, else python3);
# TORCH_LIB the LibTorch directory a bundle runs with (default: that
# Python's torch/lib); BUNDLE_LOADER=always starts the bundle's binaries
# through its own loader whatever the glibc (to rehearse that path);
# DELTA_BACKEND the server's --delta_backend in conformance (default auto:
# the CUDA kernels on a GPU; the rehearsal takes sgmv, their host version).
set -uo pipefail
cd "$(dirname "$0")/../.."
SRC=$(pwd)
DEVICE=cuda BUNDLE="" BUILD="" SIZE=""
for arg in "$@"; do
  case "$arg" in
    --device=*) DEVICE=${arg#*=} ;;
    --bundle=*) BUNDLE=${arg#*=} ;;
    --build=*) BUILD=${arg#*=} ;;
    --size=*) SIZE=${arg#*=} ;;
    *) echo "run.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$SRC/gpu-out}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/adapterd-gpu-run-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
REPORT="$OUT/report.md"
: > "$REPORT"
STEPS="$WORK/steps.jsonl"
: > "$STEPS"
if [ -z "${PYTHON:-}" ]; then
  if [ -x /opt/torch/.venv/bin/python ]; then PYTHON=/opt/torch/.venv/bin/python
  else PYTHON=${ADAPTERD_REF_PYTHON:-python3}; fi
fi
case "$DEVICE" in cuda*) GPU=1 ;; *) GPU=0 ;; esac
[ -n "$SIZE" ] || { [ "$GPU" = 1 ] && SIZE=1b || SIZE=tiny; }
FAILED=0

log() { printf '%s\n' "$*" | tee -a "$REPORT" >&2; }

# step NAME TIMEOUT_S CMD...: runs CMD with its output in the report (a
# command under the timeout; a function of this script without one).
step() {
  local name=$1 limit=$2; shift 2
  log "" "## $name" '```'
  local start=$SECONDS rc
  if declare -F "$1" >/dev/null; then
    "$@" >"$WORK/$name.log" 2>&1  # a function here, in this shell: what it exports stays
  else
    timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
  fi
  rc=$?
  tail -c 6000 "$WORK/$name.log" | tee -a "$REPORT" >&2
  log '```' "$name: exit $rc in $((SECONDS - start)) s"
  printf '{"step": "%s", "rc": %d, "seconds": %d}\n' "$name" "$rc" $((SECONDS - start)) >> "$STEPS"
  [ "$rc" = 0 ] || FAILED=1
  return "$rc"
}

environment() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "no nvidia-smi"
  ldd --version 2>&1 | head -1
  echo "device=$DEVICE python=$PYTHON commit=$(cat "$BUILD/COMMIT" 2>/dev/null || git rev-parse HEAD 2>/dev/null)"
  "$PYTHON" - <<'EOF'
import importlib
for name in ("torch", "transformers", "peft", "adapters", "safetensors"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"), "cuda" if name == "torch" and m.cuda.is_available() else "")
    except Exception as e:
        print(name, "NOT IMPORTABLE:", type(e).__name__, str(e)[:200])
EOF
}

# Unpacks the bundle; LibTorch comes from the device's PyTorch. Where the
# device's glibc is older than the bundle's, the binaries start through the
# bundle's own loader.
unpack() {
  "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
    "$BUNDLE" "$WORK" || return 1
  BUILD="$WORK/adapterd-gpu"
  local torch_lib=${TORCH_LIB:-}
  [ -n "$torch_lib" ] ||
    torch_lib=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') ||
    return 1
  echo "LibTorch from $torch_lib"
  export LD_LIBRARY_PATH="$BUILD/lib:$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local have; have=$(ldd --version 2>&1 | head -1 | grep -oE '[0-9]+\.[0-9]+$')
  if [ "${BUNDLE_LOADER:-}" = always ] || [ "$(printf '%s\n2.41\n' "$have" | sort -V | head -1)" != 2.41 ]; then
    echo "starting the binaries through the bundle's loader (glibc here $have, the bundle's 2.41)"
    local b
    for b in server/adapterd server/adapterctl bench/adapterd_loadgen; do
      mv "$BUILD/$b" "$BUILD/$b.bin"
      printf '#!/bin/sh\nADAPTERD_SENTENCEPIECE_LIB="%s" exec "%s/lib/glibc/ld-linux-x86-64.so.2" --library-path "%s/lib/glibc:%s" "%s.bin" "$@"\n' \
        "$BUILD/server/libadapterd_sentencepiece.so" "$BUILD" "$BUILD" "$LD_LIBRARY_PATH" "$BUILD/$b" > "$BUILD/$b"
      chmod +x "$BUILD/$b"
    done
  fi
  "$BUILD/server/adapterd" --version 2>&1 || "$BUILD/server/adapterd" --helpshort 2>&1 | head -5
}

# The reference libraries in CI's pinned versions, from the bundle's wheels,
# where the device's own cannot import `adapters`.
reference_libs() {
  if "$PYTHON" -c 'import adapters, peft, transformers' 2>/dev/null; then echo "the device's own reference libraries"; return 0; fi
  [ -d "$BUILD/pywheels" ] || { echo "no importable adapters and no pywheels/"; return 1; }
  "$PYTHON" -m pip install --quiet --no-deps --no-index --target "$WORK/pylib" "$BUILD"/pywheels/*.whl || return 1
  export PYTHONPATH="$WORK/pylib${PYTHONPATH:+:$PYTHONPATH}"
  "$PYTHON" -c 'import adapters, peft, transformers; print("pinned:", transformers.__version__, peft.__version__, adapters.__version__)'
}

kernel_check() {
  if [ "$GPU" = 0 ]; then
    echo "rehearsal on $DEVICE: the CUDA kernels need a GPU"
    if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
      bash bench/gpu/compile_check.sh "$WORK/cuda-compile"
    else
      echo "no nvcc here either: ./x test compiles them (bench/gpu/compile_check.sh)"
    fi
    return
  fi
  local check="$BUILD/bench/lora_kernels_check"
  [ -x "$check" ] || check="$BUILD/cuda/lora_kernels_check"
  [ -x "$check" ] || { echo "no lora_kernels_check in $BUILD"; return 1; }
  "$check"
}

log "# adapterd GPU run ($(date -u +%FT%TZ))"
step environment 120 environment
if [ -n "$BUNDLE" ]; then
  step unpack 120 unpack
fi
BUILD=$(cd "${BUILD:-build}" && pwd)
step reference_libs 120 reference_libs
step kernel_check 120 kernel_check
step conformance 300 "$PYTHON" bench/gpu/conformance.py --build "$BUILD" --device "$DEVICE" \
  --delta-backend "${DELTA_BACKEND:-auto}" --out "$WORK/conformance.json"
if [ "$GPU" = 1 ]; then
  step bench 330 "$PYTHON" bench/gpu/bench.py --build "$BUILD" --device "$DEVICE" --size "$SIZE" \
    --work "$WORK/bench-work" --out "$WORK/bench.json"
else
  step bench 330 "$PYTHON" bench/gpu/bench.py --build "$BUILD" --device "$DEVICE" --size "$SIZE" \
    --dtype float32 --many 40 --device-budget-mb 1 --new-tokens 16 --runs 1 --work "$WORK/bench-work" \
    --out "$WORK/bench.json"
fi

"$PYTHON" - "$STEPS" "$WORK" "$OUT/run.json" "$DEVICE" <<'EOF'
import json, os, sys
steps_file, work, out, device = sys.argv[1:]
report = {"device": device, "steps": [json.loads(l) for l in open(steps_file) if l.strip()]}
for name in ("conformance", "bench"):
    path = os.path.join(work, f"{name}.json")
    report[name] = json.load(open(path)) if os.path.exists(path) else None
report["passed"] = all(s["rc"] == 0 for s in report["steps"])
json.dump(report, open(out, "w"), indent=1)
EOF
log "" "run.json: $OUT/run.json; failed steps: $(grep -c '"rc": [1-9]' "$STEPS")"
exit "$FAILED"
