#!/usr/bin/env bash
# Builds the libFuzzer targets with clang, ASan and UBSan into build-fuzz/ and
# runs each for SECONDS (default 60) from its committed corpus in
# tests/fuzz/corpus/<target>/. New inputs go to a scratch directory, so the
# committed corpus only changes by hand (see tests/fuzz/README.md). Prints one
# "fuzz: <target> executions=N" line per target and fails on any finding.
#
#   ./x fuzz [SECONDS]      # through the project environment
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${1:-60}"
TARGETS=(safetensors_fuzz adapter_config_fuzz generate_request_fuzz tokenizer_json_fuzz tokenizer_encode_fuzz
  chat_template_fuzz openai_request_fuzz)
# Unit tests of the parsers (tokenizers and chat templates included), the
# store, the registry and authentication, built in the same instrumented
# tree and run under ASan+UBSan after the fuzzers (the CI subset of
# ./x sanitize asan; see tests/sanitizers).
UNIT_TESTS=(safetensors_test safetensors_header_test finite_check_test lora_config_test adapter_store_test adapter_registry_test
  adapter_registry_failed_load_test adapter_cache_test path_policy_test call_authenticator_test openai_request_test
  tokenizer_components_test tokenizer_json_errors_test incremental_decoder_test stop_string_matcher_test
  chat_template_syntax_test chat_template_expression_test chat_template_filter_test chat_template_error_test
  chat_template_limits_test render_chat_test)
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
  -DADAPTERD_FUZZ=ON -DADAPTERD_BUILD_TESTS=ON >/dev/null
cmake --build build-fuzz --target "${TARGETS[@]}" "${UNIT_TESTS[@]}"
# allow_user_poisoning=0: Abseil's headers poison hash-table slots that
# Debian's uninstrumented Abseil libraries then touch legitimately.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_odr_violation=0:allow_user_poisoning=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
summary=()
for t in "${TARGETS[@]}"; do
  scratch="$(mktemp -d)"
  log="$scratch/log"
  # -timeout: an input that takes 10 s is a hang and counts as a finding.
  if ! "build-fuzz/tests/fuzz/$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$scratch/" "$scratch" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    tail -60 "$log"
    echo "fuzz: $t FAILED; reproducer in $scratch (run build-fuzz/tests/fuzz/$t <file>)"
    exit 1
  fi
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
  summary+=("fuzz: $t executions=${execs:-?} seconds=$SECS")
  rm -rf "$scratch"
done
export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/lsan.supp:print_suppressions=0"
for t in "${UNIT_TESTS[@]}"; do
  log="$(mktemp)"
  if ! "build-fuzz/tests/$t" --gtest_brief=1 >"$log" 2>&1; then
    tail -80 "$log"
    echo "asan+ubsan: $t FAILED"
    exit 1
  fi
  summary+=("asan+ubsan: $t $(grep -Eo '[0-9]+ tests? from [0-9]+ test suites? ran' "$log" | tail -1) passed")
  rm -f "$log"
done
printf '%s\n' "${summary[@]}"
