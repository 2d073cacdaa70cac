#!/usr/bin/env python3
"""PEFT fixtures for adapterd's prefix-tuning and LLaMA-Adapter conformance tests.

This script is NOT part of the server. It makes adapters with `peft` itself,
with every trained tensor filled from a seeded generator (so the adapter
clearly changes the output), and saves them as PEFT saves them:

  make-prefix     PEFT PREFIX_TUNING with V virtual tokens; with --projection,
                  prefix_projection=True (an Embedding -> Linear -> Tanh ->
                  Linear encoder whose output PEFT saves).
  make-adaption   PEFT ADAPTION_PROMPT (LLaMA-Adapter) with adapter_len and
                  adapter_layers; the zero-initialised gates are set to random
                  non-zero values, as training would leave them.
  self-check      both, on a tiny checkpoint in a temporary directory.

Reference outputs come from `peft_reference.py reference`, which loads each of
these with PeftModel.from_pretrained. Runs offline; writes nothing to stdout
except self-check.
"""
import argparse
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from peft import AdaptionPromptConfig, PrefixTuningConfig, get_peft_model  # noqa: E402

import hf_reference  # noqa: E402
import peft_reference  # noqa: E402


def fail(msg):
    print(f"prompt_methods_reference.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def cmd_make_prefix(a):
    base = peft_reference.load_base(a.model)
    kw = dict(encoder_hidden_size=a.encoder_hidden) if a.projection else {}
    cfg = PrefixTuningConfig(num_virtual_tokens=a.virtual_tokens, prefix_projection=a.projection,
                             task_type="CAUSAL_LM", **kw)
    model = get_peft_model(base, cfg)
    gen = torch.Generator().manual_seed(a.seed)
    enc = model.prompt_encoder["default"]
    params = sorted(enc.named_parameters())
    if not params or (a.projection and len(params) < 5):
        fail(f"unexpected prefix encoder parameters {[n for n, _ in params]}")
    with torch.no_grad():
        for name, p in params:  # keys and values of about unit size, like k_proj's outputs
            fan_in = p.shape[-1] if p.dim() > 1 and "embedding" not in name else 1
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
    peft_reference.save_adapter(model, a.out, 1)


def cmd_make_adaption(a):
    base = peft_reference.load_base(a.model)
    std = float(base.get_input_embeddings().weight.float().std())
    cfg = AdaptionPromptConfig(adapter_len=a.adapter_len, adapter_layers=a.adapter_layers, task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    gen = torch.Generator().manual_seed(a.seed)
    prompts = sorted((n, p) for n, p in model.named_parameters() if n.endswith("adaption_prompt"))
    gates = sorted((n, p) for n, p in model.named_parameters() if n.endswith("adaption_gate"))
    if len(prompts) != a.adapter_layers or len(gates) != a.adapter_layers:
        fail(f"expected {a.adapter_layers} wrapped layers, found {len(prompts)} prompts and {len(gates)} gates")
    with torch.no_grad():
        for _, p in prompts:  # hidden states of the embeddings' size
            p.copy_(4 * std * torch.randn(p.shape, generator=gen))
        for _, g in gates:  # away from zero, either sign
            g.copy_((0.5 + torch.rand(g.shape, generator=gen)) * torch.sign(torch.randn(g.shape, generator=gen)))
    peft_reference.save_adapter(model, a.out, 2 * a.adapter_layers)


def cmd_self_check(_):
    with tempfile.TemporaryDirectory() as d:
        base = os.path.join(d, "base")
        made = hf_reference.parser().parse_args(["make-model", "--arch", "llama", "--out", base, "--seed", "3"])
        made.func(made)
        for args in (["make-prefix", "--virtual-tokens", "3"],
                     ["make-prefix", "--virtual-tokens", "4", "--projection"],
                     ["make-adaption", "--adapter-len", "3", "--adapter-layers", "2"]):
            out = os.path.join(d, args[0] + str(len(args)))
            main(args + ["--model", base, "--out", out, "--seed", "5"])
            if not os.path.isfile(os.path.join(out, "adapter_model.safetensors")):
                fail(f"{args[0]} wrote nothing")
    print("self-check ok")


def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-prefix")
    m.add_argument("--virtual-tokens", type=int, required=True)
    m.add_argument("--projection", action="store_true")
    m.add_argument("--encoder-hidden", type=int, default=32)
    a = sub.add_parser("make-adaption")
    a.add_argument("--adapter-len", type=int, required=True)
    a.add_argument("--adapter-layers", type=int, required=True)
    for s in (m, a):
        s.add_argument("--model", required=True)
        s.add_argument("--out", required=True)
        s.add_argument("--seed", type=int, default=0)
    sub.add_parser("self-check")
    return p


def main(argv=None):
    a = parser().parse_args(argv)
    {"make-prefix": cmd_make_prefix, "make-adaption": cmd_make_adaption, "self-check": cmd_self_check}[a.cmd](a)


if __name__ == "__main__":
    main()
