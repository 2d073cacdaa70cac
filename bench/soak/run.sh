#!/usr/bin/env bash
# The long soak: tests/server/soak_test.cc for SECONDS (default 600) against
# the real server (loopback), writing its JSON report (requests by status
# code, resident memory and open descriptors every second, storm cycles) to
# REPORT (default bench/soak/report.json) and a short summary to stdout.
#
#   ./x build && ./x run bench/soak/run.sh [SECONDS] [REPORT]
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${1:-600}"
REPORT="${2:-bench/soak/report.json}"
[ -x build/tests/soak_test ] || { echo "build first: ./x build" >&2; exit 1; }
ADAPTERD_SOAK_SECONDS="$SECS" ADAPTERD_SOAK_CYCLES=1 ADAPTERD_SOAK_REPORT="$PWD/$REPORT" \
  build/tests/soak_test --gtest_brief=1 > "${REPORT%.json}.log" 2>&1 && rc=0 || rc=$?
python3 - "$REPORT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["samples"]
print(f"soak: {r['seconds']:.0f} s, {r['storm_cycles']} load/unload cycles, wrong tokens {r['wrong_tokens']}")
for what, codes in sorted(r["status_counts"].items()):
    print(f"  {what:20s} " + ", ".join(f"{c} {n}" for c, n in sorted(codes.items())))
mb = lambda b: b / 2**20
print(f"  RSS after warm-up {mb(r['rss_after_warmup_bytes']):.1f} MiB, at the end {mb(r['rss_end_bytes']):.1f} MiB "
      f"({100 * r['rss_growth_after_warmup']:+.2f}%); fds {r['fds_after_warmup']} -> {r['fds_end']}")
step = max(1, len(s) // 10)
print("  RSS over time: " + ", ".join(f"{x['t']:.0f}s {mb(x['rss_bytes']):.1f}" for x in s[::step]))
PY
exit "$rc"
