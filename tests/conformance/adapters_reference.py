#!/usr/bin/env python3
"""AdapterHub `adapters` reference for adapterd's bottleneck-adapter conformance tests.

This script is NOT part of the server. It only produces test fixtures and ground
truth that the C++ tests compare against, computed live with `adapters`:

  make-bottleneck  add a Pfeiffer (seq_bn), Houlsby (double_seq_bn) or parallel
                   (par_bn) bottleneck adapter to a checkpoint made by
                   hf_reference.py make-model, fill every adapter tensor from a
                   seeded generator (|A(z)| about GAIN * |h|, so logits clearly
                   change) and save it (adapter_config.json + adapter.safetensors).
  reference        load the base in float32 plus several adapters and, for each
                   adapter (and `__base__`) and each prompt (batch 1, no padding),
                   record {NAME}.r{i}.last_logits, .greedy and .step_logits.
  inspect          print a saved adapter's config and tensor names and shapes.
  self-check       build a tiny Llama and adapters, run reference, and verify the
                   library against an independent pure-torch placement formula.

Nothing is written to stdout except by inspect and self-check.
Runs offline: nothing is ever downloaded.
"""
import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
import adapters  # noqa: E402
from adapters import BnConfig, DoubleSeqBnConfig, ParBnConfig, SeqBnConfig  # noqa: E402
from adapters.methods.bottleneck import BottleneckLayer  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import hf_reference  # noqa: E402
import peft_reference  # noqa: E402

BASE = "__base__"
GAIN = 0.5  # |A(z)| ~ GAIN * |h| per adapter location: greedy tokens usually change
CONFIGS = {"seq_bn": SeqBnConfig, "double_seq_bn": DoubleSeqBnConfig, "par_bn": ParBnConfig}
LOCATIONS = {"mh_adapter": "attention_adapters", "output_adapter": "output_adapters"}
FILES = ("adapter_config.json", "adapter.safetensors")


def fail(msg):
    print(f"adapters_reference.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


hf_reference.fail = peft_reference.fail = fail  # their helpers report with our name
logging.getLogger("adapters").setLevel(logging.ERROR)  # "none are activated" for __base__


def warn(msg):
    print(f"adapters_reference.py: warning: {msg}", file=sys.stderr)


def bottleneck_config(a):
    kw = {}
    if a.reduction_factor is not None:
        rf = json.loads(a.reduction_factor)
        if not isinstance(rf, (int, float, dict)) or isinstance(rf, bool):
            fail("--reduction-factor must be a number or a JSON map like {\"0\": 8, \"default\": 16}")
        kw["reduction_factor"] = rf
    if a.non_linearity:
        kw["non_linearity"] = a.non_linearity
    fields = {f.name for f in dataclasses.fields(BnConfig)}
    for item in a.set or []:
        key, sep, val = item.partition("=")
        if not sep or key not in fields:
            fail(f"--set {item!r}: expected KEY=JSONVALUE with KEY a BnConfig field")
        kw[key] = json.loads(val)
    if isinstance(kw.get("scaling"), int) and not isinstance(kw["scaling"], bool):
        kw["scaling"] = float(kw["scaling"])  # adapters only accepts float or "learned"/"channel"
    cfg = CONFIGS[a.config](**kw)
    if cfg.phm_layer or cfg.inv_adapter or cfg.use_gating or cfg.cross_adapter:
        fail("phm_layer, inv_adapter, use_gating and cross_adapter are not supported here")
    if not isinstance(cfg.residual_before_ln, bool):  # "post_add" needs the layer_norm Llama lacks
        fail("residual_before_ln must be true or false (adapters 1.3.0 fails on Llama otherwise)")
    return cfg


def adapter_modules(model, name):
    """[(BottleneckLayer path, layer, adapter module)] for `name`, in forward order."""
    return [(n, m, m.adapters[name]) for n, m in model.named_modules()
            if isinstance(m, BottleneckLayer) and name in m.adapters]


def calibrate(model, mods, gen, passes=3):
    """Scales each adapter_up so that rms(A(z)) ~ GAIN * rms(h) on random tokens."""
    ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=gen)
    for _ in range(passes):  # later layers see earlier adapters: iterate to settle
        stats, hooks = {}, []
        for path, layer, ad in mods:
            hooks.append(layer.register_forward_pre_hook(
                lambda m, args, p=path: stats.__setitem__((p, "h"), args[0].pow(2).mean().sqrt())))
            hooks.append(ad.register_forward_hook(
                lambda m, args, out, p=path: stats.__setitem__((p, "a"), out[2].pow(2).mean().sqrt())))
        model(input_ids=ids)
        for h in hooks:
            h.remove()
        for path, _, ad in mods:
            ad.adapter_up.weight.mul_(GAIN * stats[(path, "h")] / stats[(path, "a")])
            ad.adapter_up.bias.mul_(GAIN * stats[(path, "h")] / stats[(path, "a")])


def cmd_make_bottleneck(a):
    cfg = bottleneck_config(a)
    model = peft_reference.load_base(a.model)
    adapters.init(model)
    model.add_adapter(a.name, config=cfg)
    model.set_active_adapters(a.name)
    mods = adapter_modules(model, a.name)
    if not mods:
        fail("the configuration places no adapter in any layer")
    gen = torch.Generator().manual_seed(a.seed)
    with torch.no_grad():
        for _, _, ad in mods:
            for m in ad.modules():
                if isinstance(m, torch.nn.LayerNorm):
                    m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                elif isinstance(m, torch.nn.Linear):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / m.in_features ** 0.5)
                    m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(ad.scaling, torch.nn.Parameter):  # "learned" [1] or "channel" [hidden]
                ad.scaling.copy_(1 + 0.2 * torch.randn(ad.scaling.shape, generator=gen))
        calibrate(model, mods, gen)
    os.makedirs(a.out, exist_ok=True)
    if not cfg.ln_before:
        model.save_adapter(a.out, a.name, with_head=False, use_safetensors=True)
    else:  # adapter_norm_before is also adapter_down.0: safetensors refuses shared tensors,
        model.save_adapter(a.out, a.name, with_head=False)  # so write both names as copies
        legacy = os.path.join(a.out, "pytorch_adapter.bin")
        sd = torch.load(legacy, weights_only=True)
        save_file({k: v.clone().contiguous() for k, v in sd.items()}, os.path.join(a.out, FILES[1]))
        os.remove(legacy)
    missing = [f for f in FILES if not os.path.isfile(os.path.join(a.out, f))]
    if missing:
        fail(f"save_adapter did not write {missing} in {a.out}: {sorted(os.listdir(a.out))}")
    with safe_open(os.path.join(a.out, FILES[1]), "pt") as f:
        if len(list(f.keys())) < 4 * len(mods):
            fail("saved adapter lacks tensors")


def load_adapters(model_dir, named_dirs):
    model = peft_reference.load_base(model_dir)
    adapters.init(model)
    for name, d in named_dirs:
        info = {}
        model.load_adapter(d, load_as=name, with_head=False, use_safetensors=True,
                           loading_info=info)
        if info.get("missing_keys") or info.get("unexpected_keys"):
            fail(f"adapter {name} from {d} does not fit the model: {info}")
    return model.eval()


def cmd_reference(a):
    prompts = hf_reference.load_prompts(a.prompts)
    named = [x.split("=", 1) for x in a.adapters.split(",") if x]
    if not named or any(len(x) != 2 or not x[0] or x[0] == BASE for x in named):
        fail("--adapters must be NAME=DIR[,NAME=DIR...] (names other than __base__)")
    if len({n for n, _ in named}) != len(named):
        fail("--adapters names must be unique")
    for _, d in named:
        missing = [f for f in FILES if not os.path.isfile(os.path.join(d, f))]
        if missing:
            fail(f"no {missing[0]} in {d}")
    model = load_adapters(a.model, named)
    vocab = model.config.vocab_size
    if not all(p and all(isinstance(t, int) and 0 <= t < vocab for t in p) for p in prompts):
        fail(f"prompts must be non-empty lists of token ids in [0, {vocab})")
    res = {}
    with torch.no_grad():
        for name in [BASE] + [n for n, _ in named]:
            model.set_active_adapters(None if name == BASE else name)
            # adapters 1.3.0's Llama layers take `past_key_value`, transformers 4.57 passes
            # `past_key_values`: the KV cache is silently ignored, so generate without it.
            res[name] = peft_reference.run_rows(model, prompts, a.new_tokens, use_cache=False)
    gap = hf_reference.min_top2_gap([r for rows in res.values() for r in rows])
    if gap < 1e-3:
        warn(f"near-tie in greedy logits (gap {gap:.3g})")
    tensors = {f"{k}.r{i}.{f}": v for k, rows in res.items()
               for i, r in enumerate(rows) for f, v in r.items()}
    meta = {"transformers_version": transformers.__version__, "torch_version": torch.__version__,
            "adapters_version": adapters.__version__, "adapters": ",".join(n for n, _ in named)}
    save_file(tensors, a.out, metadata=meta)


def cmd_inspect(a):
    paths = [os.path.join(a.adapter, f) for f in FILES]
    if not all(os.path.isfile(p) for p in paths):
        fail(f"{a.adapter} lacks {' or '.join(FILES)}")
    with open(paths[0]) as f:
        print(json.dumps(json.load(f), indent=2, sort_keys=True))
    with safe_open(paths[1], "pt") as f:
        for k in sorted(f.keys()):
            print(f"{k} {list(f.get_slice(k).get_shape())} {f.get_slice(k).get_dtype()}")


# --- independent re-implementation, used by self-check only ------------------

ACTS = {"relu": F.relu, "swish": F.silu, "silu": F.silu, "gelu": F.gelu, "tanh": torch.tanh,
        "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "sigmoid": torch.sigmoid,
        "leakyrelu": F.leaky_relu, "linear": lambda x: x}


def manual_adapter(cfg, t, h, x):
    """Output of one adapter location from the saved tensors `t` (prefix stripped),
    sublayer output h and its residual input x (Llama passes no layer_norm)."""
    def ln(v, which):
        return F.layer_norm(v, v.shape[-1:], t[f"adapter_norm_{which}.weight"],
                            t[f"adapter_norm_{which}.bias"], 1e-5)

    def bottleneck(v):
        v = ln(v, "before") if cfg["ln_before"] else v
        i = 1 if cfg["ln_before"] else 0  # adapter_down = [LN_before?, Linear, act]
        v = ACTS[cfg["non_linearity"].lower()](F.linear(v, t[f"adapter_down.{i}.weight"],
                                                         t[f"adapter_down.{i}.bias"]))
        v = F.linear(v, t["adapter_up.weight"], t["adapter_up.bias"])
        return v * (cfg["scaling"] if isinstance(cfg["scaling"], float) else t["scaling"])

    if cfg["is_parallel"]:
        o = bottleneck(x)
        o = ln(o, "after") if cfg["ln_after"] else o
        return o + h + (x if cfg["original_ln_after"] else 0)
    z = h + x if cfg["original_ln_before"] else h
    res = h if cfg["residual_before_ln"] is True else z
    o = bottleneck(z)
    if cfg["adapter_residual_before_ln"]:
        o = o + res
    if cfg["ln_after"]:
        o = ln(o, "after")
    if not cfg["adapter_residual_before_ln"]:
        o = o + res
    return o + x if cfg["original_ln_after"] else o


def manual_logits(base, adapter_dir, name, ids):
    """Plain-transformers forward whose sublayer outputs are rewritten by manual_adapter."""
    with open(os.path.join(adapter_dir, FILES[0])) as f:
        cfg = json.load(f)["config"]
    st = load_file(os.path.join(adapter_dir, FILES[1]))
    hooks, resid = [], {}
    for i, layer in enumerate(base.model.layers):
        for key, sub, ln_mod in (("mh_adapter", layer.self_attn, layer.input_layernorm),
                                 ("output_adapter", layer.mlp, layer.post_attention_layernorm)):
            pre = f"model.layers.{i}.{LOCATIONS[key]}.adapters.{name}."
            t = {k[len(pre):]: v for k, v in st.items() if k.startswith(pre)}
            want = cfg[key] and i not in cfg["leave_out"]
            if bool(t) != want:
                fail(f"self-check: {name} layer {i} {key}: tensors present {bool(t)}, expected {want}")
            if not t:
                continue
            hooks.append(ln_mod.register_forward_pre_hook(  # the norm's input is the residual x
                lambda m, args, k=(i, key): resid.__setitem__(k, args[0])))

            def rewrite(m, args, out, t=t, k=(i, key)):  # the layer adds x afterwards
                h = out[0] if isinstance(out, tuple) else out
                new = manual_adapter(cfg, t, h, resid[k]) - resid[k]
                return (new,) + tuple(out[1:]) if isinstance(out, tuple) else new
            hooks.append(sub.register_forward_hook(rewrite))
    try:
        return base(input_ids=ids).logits[0]
    finally:
        for h in hooks:
            h.remove()


def cmd_self_check(a):
    def run(*argv):
        (args := parser().parse_args(list(argv))).func(args)

    specs = [("pfeiffer", 21, ["--config", "seq_bn", "--reduction-factor", "8",
                               "--non-linearity", "relu"]),
             ("houlsby", 22, ["--config", "double_seq_bn", "--reduction-factor", "4",
                              "--non-linearity", "swish"]),
             ("par", 23, ["--config", "par_bn", "--reduction-factor", "4", "--set",
                          "mh_adapter=true", "--non-linearity", "gelu"]),
             ("lnx", 24, ["--config", "seq_bn", "--reduction-factor", '{"0": 8, "default": 16}',
                          "--set", "ln_before=true", "--set", "ln_after=true", "--set",
                          'scaling="channel"', "--set", "adapter_residual_before_ln=true",
                          "--non-linearity", "gelu_new"]),
             ("misc", 25, ["--config", "double_seq_bn", "--reduction-factor", "8", "--set",
                           "original_ln_before=true", "--set", "original_ln_after=false", "--set",
                           "residual_before_ln=false", "--set", 'scaling="learned"', "--set",
                           "leave_out=[1]", "--non-linearity", "tanh"])]
    with tempfile.TemporaryDirectory() as tmp:
        base_dir, pj, out = (os.path.join(tmp, x) for x in ("base", "prompts.json", "ref.safetensors"))
        hf_reference.build_model("llama", seed=1234).save_pretrained(base_dir, safe_serialization=True)
        for name, seed, extra in specs:
            run("make-bottleneck", "--model", base_dir, "--out", f"{tmp}/{name}", "--seed",
                str(seed), "--name", name, *extra)
        prompts = [[1, 2, 3, 4, 5], [7, 100, 42, 9, 250, 17, 3, 88], [9, 8, 7]]
        with open(pj, "w") as f:
            json.dump(prompts, f)
        names = [n for n, _, _ in specs]
        run("reference", "--model", base_dir, "--adapters", ",".join(f"{n}={tmp}/{n}" for n in names),
            "--prompts", pj, "--out", out, "--new-tokens", "10")
        st, rows = load_file(out), range(len(prompts))
        delta = {n: max(float((st[f"{n}.r{i}.last_logits"] - st[f"{BASE}.r{i}.last_logits"])
                              .abs().max()) for i in rows) for n in names}
        changed = {n: sum(not torch.equal(st[f"{n}.r{i}.greedy"], st[f"{BASE}.r{i}.greedy"])
                          for i in rows) for n in names}
        if min(delta.values()) < 1e-2:
            fail(f"self-check: an adapter barely changes the logits: {delta}")
        # Independent formula over prompt + greedy: checks last_logits and every step's logits.
        base, worst = peft_reference.load_base(base_dir), 0.0
        with torch.no_grad():
            for n in [BASE] + names:
                for i, p in enumerate(prompts):
                    seq = torch.tensor([p + st[f"{n}.r{i}.greedy"][:-1].tolist()])
                    got = (base(input_ids=seq).logits[0] if n == BASE
                           else manual_logits(base, f"{tmp}/{n}", n, seq))[len(p) - 1:]
                    worst = max(worst, float((got - st[f"{n}.r{i}.step_logits"]).abs().max()),
                                float((got[0] - st[f"{n}.r{i}.last_logits"]).abs().max()))
        if worst > 1e-5:
            fail(f"self-check: library and placement formula disagree by {worst:.3g}")
        print(f"self-check ok: adapters {adapters.__version__}, transformers "
              f"{transformers.__version__}, torch {torch.__version__}; max |adapter - base| last "
              f"logits { {k: round(v, 3) for k, v in delta.items()} }, greedy changed in {changed} "
              f"of {len(prompts)} prompts; library vs placement formula max diff {worst:.2e}")


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-bottleneck", help="create a seeded random bottleneck adapter")
    for flag in ("--model", "--out"):
        m.add_argument(flag, required=True)
    m.add_argument("--seed", type=int, required=True)
    m.add_argument("--config", choices=sorted(CONFIGS), required=True)
    m.add_argument("--reduction-factor", help='number, or JSON map {"0": 8, "default": 16}')
    m.add_argument("--non-linearity", help="relu, swish, gelu, gelu_new, tanh, ... (ACT2FN)")
    m.add_argument("--set", action="append", metavar="KEY=JSON", help="BnConfig override")
    m.add_argument("--name", default="bottleneck", help="adapter name inside the files")
    m.set_defaults(func=cmd_make_bottleneck)
    r = sub.add_parser("reference", help="compute reference logits and greedy tokens")
    for flag in ("--model", "--adapters", "--prompts", "--out"):
        r.add_argument(flag, required=True)  # NAME=DIR[,...]; JSON [[ids]]; .safetensors
    r.add_argument("--new-tokens", type=int, default=32)
    r.set_defaults(func=cmd_reference)
    i = sub.add_parser("inspect", help="print a saved adapter's config and tensors")
    i.add_argument("--adapter", required=True)
    i.set_defaults(func=cmd_inspect)
    sub.add_parser("self-check", help="build a model and adapters, run reference, verify"
                   ).set_defaults(func=cmd_self_check)
    return p


def main():
    a = parser().parse_args()
    if a.cmd == "reference" and a.new_tokens < 1:
        fail("--new-tokens must be at least 1")
    try:
        a.func(a)
    except Exception as e:  # one line, exit 1
        fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


if __name__ == "__main__":
    main()
