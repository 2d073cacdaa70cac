#!/usr/bin/env python3
"""Clang thread-safety analysis over adapterd's own sources.

Reads the gcc build's compile_commands.json, re-runs each server/ and bench/
translation unit through clang++ with -fsyntax-only -Wthread-safety
-Werror=thread-safety, and fails when any ABSL_GUARDED_BY /
ABSL_LOCKS_EXCLUDED contract is violated. Parsing only (no code
generation) keeps it fast enough to run with every test run.
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

DROP = {"-g1", "-g", "-O2", "-O3"}


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
        out.append(a)
    if out[1:2] and out[1].endswith(("c++", "g++")):
        del out[1]
    return out + ["-fsyntax-only", "-Wthread-safety", "-Werror=thread-safety",
                  "-Wno-unknown-warning-option", "-Wno-unused-command-line-argument"]


def main():
    db_path, src = sys.argv[1], os.path.realpath(sys.argv[2])
    clang = shutil.which("clang++")
    if clang is None:
        print("clang++ not found: install the 'clang' package (deploy/packages.txt)")
        return 1
    with open(db_path) as f:
        db = json.load(f)
    units = [e for e in db if os.path.realpath(e["file"]).startswith(
        (os.path.join(src, "server") + os.sep, os.path.join(src, "bench") + os.sep))]
    if not units:
        print(f"no server/ or bench/ sources in {db_path}")
        return 1

    def run(e):
        p = subprocess.run(clang_command(e, clang), cwd=e["directory"], capture_output=True, text=True)
        return e["file"], p.returncode, p.stderr

    failed = 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for path, rc, err in pool.map(run, units):
            if rc != 0:
                failed += 1
                print(f"FAIL {os.path.relpath(path, src)}\n{err}")
    print(f"thread-safety analysis: {len(units) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
