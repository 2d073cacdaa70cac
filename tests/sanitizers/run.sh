#!/usr/bin/env bash
# Builds everything with clang and a sanitizer into build-<mode>/ and runs
# ctest there (extra arguments go to ctest, e.g. -R 'AdapterStore').
#
#   ./x sanitize asan [ctest args]   # ASan + UBSan (build-asan/)
#   ./x sanitize tsan [ctest args]   # TSan (build-tsan/)
#
# The server binary that integration tests start is the sanitized one too.
# Reports from code that is not ours (LibTorch, gRPC, Abseil, Python) are
# suppressed by the files next to this script; see SECURITY.md (Sanitizers).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE="${1:?usage: run.sh asan|tsan [ctest args]}"
shift
case "$MODE" in
  asan) SAN=address ;;
  tsan) SAN=thread ;;
  *) echo "run.sh: mode must be asan or tsan" >&2; exit 2 ;;
esac
DIR="build-$MODE"
SUPP="$PWD/tests/sanitizers"
cmake -S . -B "$DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
  -DADAPTERD_SANITIZE="$SAN" -DADAPTERD_REF_PYTHON="${ADAPTERD_REF_PYTHON:-}" >/dev/null
cmake --build "$DIR"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_odr_violation=0:strict_string_checks=1:allow_user_poisoning=0"
export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$SUPP/ubsan.supp"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$SUPP/tsan.supp"
if [ "$MODE" = tsan ]; then
  export LD_PRELOAD="$PWD/$DIR/libadapterd_tsan_absl_sync.so"
fi
# One compute thread: LibTorch's OpenMP pool is not instrumented.
export OMP_NUM_THREADS=1
cd "$DIR"
ctest --output-on-failure --timeout 1800 -E thread_safety_analysis "$@"
