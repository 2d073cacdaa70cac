#!/usr/bin/env python3
"""Checks adapterd's layering and two structural rules over every source file.

Layers, lowest first (docs/architecture.md, "Layers"):

  common, metrics          server/common, server/metrics
  gpu                      server/gpu (the adapter kernels and their launchers)
  model | text | template | auth
                           server/model, server/text, server/template, server/auth
  adapters | engine        adapters/, server/engine
  core                     server/core
  rpc | http               server/rpc, server/http (the transports)
  main                     server/main.cc, server/cli

A file may include its own layer and the layers below it, never a layer
above it, and never a sibling on the same row (adapters and engine do not
know each other; neither do the two transports). Generated protos
("adapterd/v1/...") belong to the transports and above. bench/ and tests/
sit on top and may include anything.

Structural rules, for server/ and adapters/:
  - nothing sleeps to wait for something (SleepFor, sleep_for, usleep,
    nanosleep): waits are notifications;
  - nothing includes torch/torch.h (headers that only pass tensors include
    ATen/core/Tensor.h; math .cc files include ATen/ATen.h);
  - nothing a serving step runs (server/engine/, and server/model/ but its
    trainers) reads one tensor element back with .item(): a step copies
    what the host needs once, for all rows.

Exits 1 and names every offending line.
"""
import os
import re
import sys

RANK = {
    "common": 0, "metrics": 0,
    "gpu": 1,
    "model": 2, "text": 2, "template": 2, "auth": 2,
    "adapters": 3, "engine": 3,
    "core": 4,
    "rpc": 5, "http": 5,
    "main": 6,
    "top": 7,
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SLEEP = re.compile(r"\b(SleepFor|sleep_for|usleep|nanosleep)\s*\(")
SOURCE_EXT = (".h", ".cc", ".cu", ".cuh")
ITEM = re.compile(r"\.item\s*(<[^>]*>)?\s*\(")
NOT_A_STEP = ("server/model/lm_trainer.cc", "server/model/demo_trainer.cc", "server/model/trainable_llama.cc")


def in_step(path):
    return path.startswith(("server/engine/", "server/model/")) and path not in NOT_A_STEP


def layer_of(path):
    """The layer of a repository-relative path, or None for a file outside the layers."""
    parts = path.split("/")
    if parts[0] == "adapters":
        return "adapters"
    if parts[0] in ("bench", "tests", "clients"):
        return "top"
    if parts[0] == "server":
        if len(parts) == 2:
            return "main" if parts[1] == "main.cc" else None
        sub = parts[1]
        if sub == "cli":
            return "main"
        return sub if sub in RANK else None
    if parts[0] == "adapterd":  # generated protos, as included
        return "proto"
    return None


def allowed(src, dst):
    if src == "top":
        return True
    if dst == "proto":
        return RANK[src] >= RANK["rpc"]
    if dst is None or dst == src:
        return True
    if RANK[dst] < RANK[src]:
        return True
    return False


def check(root):
    errors = []
    files = 0
    for top in ("server", "adapters", "bench", "tests", "clients"):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for name in names:
                if not name.endswith(SOURCE_EXT):
                    continue
                path = os.path.relpath(os.path.join(dirpath, name), root)
                src = layer_of(path)
                if src is None:
                    errors.append(f"{path}: not in any layer (add its folder to tests/layers/check_layers.py)")
                    continue
                files += 1
                with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
                    for n, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if m:
                            target = m.group(1)
                            if target == "torch/torch.h" and top in ("server", "adapters"):
                                errors.append(f"{path}:{n}: includes torch/torch.h")
                            dst = layer_of(target) if "/" in target else None
                            if not allowed(src, dst):
                                errors.append(f"{path}:{n}: layer '{src}' includes {target} of layer '{dst}'")
                        if in_step(path) and ITEM.search(line.split("//")[0]):
                            errors.append(f"{path}:{n}: reads an element back per call ({line.strip()})")
                        if top in ("server", "adapters") and SLEEP.search(line.split("//")[0]):
                            errors.append(f"{path}:{n}: sleeps ({line.strip()}); wait on a notification instead")
    return files, errors


def main():
    root = os.path.realpath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../.."))
    files, errors = check(root)
    for e in errors:
        print(e)
    print(f"layers: {files} files checked, {len(errors)} problems")
    if files == 0:
        print("no sources found")
        return 1
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
