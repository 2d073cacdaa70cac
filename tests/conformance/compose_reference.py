#!/usr/bin/env python3
"""Hugging Face PEFT reference for adapterd's composition conformance test.

This script is NOT part of the server. It only produces ground truth that the
C++ test compares against, computed live with `peft`:

  reference   load the base in float32 and several LoRA adapters (made with
              peft_reference.py make-lora) into one PeftModel; for each
              composition NAME=ID:W,ID:W,... call
              add_weighted_adapter(ids, weights, NAME, combination_type="cat")
              and record, per prompt (batch 1, no padding), {NAME}.r{i}.last_logits,
              .greedy and .step_logits; the same for every single adapter and for
              `__base__`. Each composition is also checked against the base with
              sum_i w_i * get_delta_weight(id_i) added to its weights (the sum of
              weighted deltas that "cat" stands for), and must change the output.
  self-check  make a tiny model and three adapters in a temporary directory, run
              the above and print what it found.

Nothing is written to stdout except by self-check; callers read the files.
Runs offline: nothing is ever downloaded.
"""
import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import transformers  # noqa: E402
import peft  # noqa: E402
from peft import PeftModel  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import hf_reference  # noqa: E402
import peft_reference  # noqa: E402

BASE = peft_reference.BASE
TOL = 1e-4


def fail(msg):
    print(f"compose_reference.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


hf_reference.fail = fail
peft_reference.fail = fail


def parse_compositions(text, names):
    """NAME=ID:W,ID:W;NAME=... -> {NAME: [(ID, W)]}, ids among `names`."""
    out = {}
    for item in (x for x in text.split(";") if x):
        name, _, spec = item.partition("=")
        parts = []
        for p in spec.split(","):
            aid, _, w = p.partition(":")
            if aid not in names or not w:
                fail(f"composition {name!r}: {p!r} must be ID:WEIGHT with ID among {sorted(names)}")
            parts.append((aid, float(w)))
        if not name or name in names or name == BASE or name in out or not parts:
            fail(f"composition names must be new and unique, with at least one adapter: {item!r}")
        out[name] = parts
    if not out:
        fail("--compose names no composition")
    return out


def check_cat(model, name, parts):
    """The composed adapter has scaling 1 everywhere and rank sum(r_i), as "cat" promises."""
    total = 0
    for aid, _ in parts:
        cfg = model.peft_config[aid]
        total += max([cfg.r, *cfg.rank_pattern.values()]) if cfg.rank_pattern else cfg.r
    cfg = model.peft_config[name]
    if cfg.r != total:
        fail(f"{name}: PEFT made rank {cfg.r}, expected {total}")
    scalings = {float(m.scaling[name]) for m in model.modules() if isinstance(m, LoraLayer) and name in m.scaling}
    if scalings != {1.0}:
        fail(f"{name}: composed scaling {sorted(scalings)}, not 1 (an rsLoRA first adapter scales "
             "the composite by sqrt(rank); list a plain one first)")


def merged_deltas(model, parts):
    """{module path: sum_i w_i * delta_i} over every LoRA module of the components."""
    deltas = {}
    for path, m in model.named_modules():
        if not isinstance(m, LoraLayer):
            continue
        for aid, w in parts:
            if aid in m.lora_A:
                d = w * m.get_delta_weight(aid).float()
                key = path[len("base_model.model."):]
                deltas[key] = deltas[key] + d if key in deltas else d
    return deltas


def max_merged_diff(model_dir, deltas, prompts, want):
    base = peft_reference.load_base(model_dir)
    with torch.no_grad():
        for path, d in deltas.items():
            base.get_submodule(path).weight.add_(d)
        return max(float((base(input_ids=torch.tensor([p])).logits[0, -1] - want[i]["last_logits"]).abs().max())
                   for i, p in enumerate(prompts))


def cmd_reference(a):
    prompts = hf_reference.load_prompts(a.prompts)
    adapters = [x.split("=", 1) for x in a.adapters.split(",") if x]
    if not adapters or any(len(x) != 2 or not x[0] or x[0] == BASE for x in adapters):
        fail("--adapters must be NAME=DIR[,NAME=DIR...]")
    names = {n for n, _ in adapters}
    comps = parse_compositions(a.compose, names)
    base = peft_reference.load_base(a.model)
    res, checks = {}, {}
    with torch.no_grad():
        res[BASE] = peft_reference.run_rows(base, prompts, a.new_tokens)
        model = PeftModel.from_pretrained(base, adapters[0][1], adapter_name=adapters[0][0])
        for n, d in adapters[1:]:
            model.load_adapter(d, adapter_name=n)
        model.eval()
        for n, _ in adapters:
            model.set_adapter(n)
            res[n] = peft_reference.run_rows(model, prompts, a.new_tokens)
        for name, parts in comps.items():
            model.add_weighted_adapter([x for x, _ in parts], [w for _, w in parts], name, combination_type="cat")
            check_cat(model, name, parts)
            model.set_adapter(name)
            res[name] = peft_reference.run_rows(model, prompts, a.new_tokens)
            d = max_merged_diff(a.model, merged_deltas(model, parts), prompts, res[name])
            if d > TOL:
                fail(f"{name}: PEFT's cat composition differs from the summed weighted deltas by {d:.3g}")
            changed = min(float((res[name][i]["last_logits"] - res[x][i]["last_logits"]).abs().max())
                          for x in [BASE, *(p for p, _ in parts)] for i in range(len(prompts)))
            if changed < 1e-2:
                fail(f"{name}: the composition barely differs from the base or a component ({changed:.3g})")
            checks[name] = (d, changed)
    tensors = {f"{k}.r{i}.{f}": v for k, rows in res.items() for i, r in enumerate(rows) for f, v in r.items()}
    meta = {"transformers_version": transformers.__version__, "torch_version": torch.__version__,
            "peft_version": peft.__version__, "compose": a.compose,
            "checks": json.dumps({k: [float(x) for x in v] for k, v in checks.items()})}
    save_file(tensors, a.out, metadata=meta)


def cmd_self_check(a):
    with tempfile.TemporaryDirectory() as tmp:
        base, pj, out = (os.path.join(tmp, x) for x in ("base", "prompts.json", "ref.safetensors"))
        hf_reference.build_model("llama", seed=1234).save_pretrained(base, safe_serialization=True)
        for name, seed, extra in [("a", 11, "--r 4 --alpha 8 --targets q_proj,v_proj"),
                                  ("b", 12, "--r 8 --alpha 32 --targets all-linear"),
                                  ("c", 13, "--r 16 --alpha 8 --targets q_proj,k_proj,o_proj,down_proj --rslora")]:
            args = peft_reference.parser().parse_args(["make-lora", "--model", base, "--out", f"{tmp}/{name}",
                                                       "--seed", str(seed), *extra.split()])
            args.func(args)
        prompts = [[1, 2, 3, 4, 5], [7, 100, 42, 9, 250, 17, 3, 88, 12, 19]]
        with open(pj, "w") as f:
            json.dump(prompts, f)
        comps = "ab=a:0.75,b:-0.5;abc=a:1.25,b:0.5,c:-0.75;dup=a:0.5,b:1,a:0.25"
        cmd_reference(parser().parse_args(["reference", "--model", base, "--adapters",
                                           ",".join(f"{x}={tmp}/{x}" for x in "abc"), "--prompts", pj,
                                           "--out", out, "--new-tokens", "8", "--compose", comps]))
        st = load_file(out)
        with safe_open(out, "pt") as f:
            checks = json.loads(f.metadata()["checks"])
        if len(st) != 3 * len(prompts) * 7:
            fail(f"self-check: {len(st)} tensors written")
        print(f"self-check ok: peft {peft.__version__}; per composition (|cat - summed deltas|, "
              f"min |composition - base or component|): {checks}")


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reference", help="compose adapters in PEFT and record their outputs")
    for flag in ("--model", "--adapters", "--prompts", "--out"):
        r.add_argument(flag, required=True)  # NAME=DIR[,...]; JSON [[ids]]; .safetensors
    r.add_argument("--compose", required=True, help="NAME=ID:W,ID:W[;NAME=...]")
    r.add_argument("--new-tokens", type=int, default=32)
    r.set_defaults(func=cmd_reference)
    sub.add_parser("self-check", help="build a model and adapters, run reference").set_defaults(func=cmd_self_check)
    return p


def main():
    a = parser().parse_args()
    if a.cmd == "reference" and a.new_tokens < 1:
        fail("--new-tokens must be at least 1")
    try:
        a.func(a)
    except SystemExit:
        raise
    except Exception as e:  # one line, exit 1
        fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


if __name__ == "__main__":
    main()
