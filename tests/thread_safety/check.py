#!/usr/bin/env python3
"""Clang thread-safety analysis over adapterd's own sources.

Reads the gcc build's compile_commands.json, re-runs every translation unit
of the project's own folders (server/, adapters/, bench/, tests/; generated
protos aside) through clang++ with -fsyntax-only -Wthread-safety
-Wthread-safety-beta -Werror, and fails when any ABSL_GUARDED_BY /
ABSL_LOCKS_EXCLUDED / ABSL_ACQUIRED_BEFORE contract is violated. It also
fails when a folder that holds sources is missing from the run, so a new
folder cannot escape the check. Parsing only (no code generation) keeps it
fast enough to run with every test run.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

DROP = {"-g1", "-g", "-O2", "-O3"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
# What a translation unit must see, through its own text or the project
# headers it includes, for the analysis to have anything to check: a lock
# or a thread-safety annotation. A unit whose include closure has none of
# these cannot break a lock contract, and is skipped (and counted).
LOCKS = re.compile(r"absl/synchronization/|absl::Mutex|ABSL_(GUARDED_BY|PT_GUARDED_BY|EXCLUSIVE_LOCKS_REQUIRED|"
                   r"SHARED_LOCKS_REQUIRED|LOCKS_EXCLUDED|ACQUIRED_BEFORE|ACQUIRED_AFTER|LOCK_RETURNED|"
                   r"EXCLUSIVE_LOCK_FUNCTION|UNLOCK_FUNCTION)")


def needs_check(path, src, cache):
    """Whether `path` or a project header it includes, transitively, uses locks."""
    seen, stack = set(), [path]
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        if p not in cache:
            try:
                with open(p, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                cache[p] = (False, [])
                continue
            includes = [os.path.join(src, inc) for inc in INCLUDE.findall(text)]
            cache[p] = (bool(LOCKS.search(text)), [i for i in includes if os.path.exists(i)])
        uses_locks, includes = cache[p]
        if uses_locks:
            return True
        stack.extend(includes)
    return False


def clang_command(entry, clang):
    args = shlex.split(entry["command"]) if "command" in entry else list(entry["arguments"])
    out = [clang]
    skip = False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MT", "-MQ"):
            skip = True
            continue
        if a in DROP or a in ("-MD", "-MMD", "-c") or a == "ccache":
            continue
        if a == "-fopenmp":
            # GCC's OpenMP (libgomp); clang has no omp.h here. Parse these
            # files as the clang builds compile them (server/common/parallel.h).
            out.append("-DADAPTERD_SERIAL_KERNELS")
            continue
        out.append(a)
    if out[1:2] and out[1].endswith(("c++", "g++")):
        del out[1]
    return out + ["-fsyntax-only", "-Wthread-safety", "-Wthread-safety-beta", "-Werror=thread-safety",
                  "-Werror=thread-safety-beta",
                  "-Wno-unknown-warning-option", "-Wno-unused-command-line-argument"]


def main():
    db_path, src = sys.argv[1], os.path.realpath(sys.argv[2])
    clang = shutil.which("clang++")
    if clang is None:
        print("clang++ not found: install the 'clang' package (deploy/packages.txt)")
        return 1
    with open(db_path) as f:
        db = json.load(f)
    folders = ("server", "adapters", "bench", "tests")
    units = [e for e in db if os.path.realpath(e["file"]).startswith(
        tuple(os.path.join(src, f) + os.sep for f in folders))]
    covered = {os.path.dirname(os.path.relpath(os.path.realpath(e["file"]), src)) for e in units}
    # Every folder with C++ sources that the build compiles must be covered.
    missing = []
    for f in folders:
        for dirpath, _, names in os.walk(os.path.join(src, f)):
            rel = os.path.relpath(dirpath, src)
            if any(n.endswith(".cc") for n in names) and rel not in covered and not rel.startswith(
                    ("tests/fuzz", "tests/sanitizers", "bench/gpu")):
                missing.append(rel)
    if missing:
        print("folders with sources that the build did not compile, so the check cannot cover them: "
              + ", ".join(sorted(missing)))
        return 1
    if not units:
        print(f"no project sources in {db_path}")
        return 1
    cache = {}
    checked = [e for e in units if needs_check(os.path.realpath(e["file"]), src, cache)]
    skipped = len(units) - len(checked)
    units = checked

    def run(e):
        p = subprocess.run(clang_command(e, clang), cwd=e["directory"], capture_output=True, text=True)
        return e["file"], p.returncode, p.stderr

    failed = 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for path, rc, err in pool.map(run, units):
            if rc != 0:
                failed += 1
                print(f"FAIL {os.path.relpath(path, src)}\n{err}")
    print(f"thread-safety analysis: {len(units) - failed} passed, {failed} failed, {skipped} without any lock "
          "in their include closure, over " + ", ".join(sorted(covered)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
