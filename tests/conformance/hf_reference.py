#!/usr/bin/env python3
"""Hugging Face reference for adapterd's conformance tests and benchmarks.

This script is NOT part of the server. It only produces ground truth that the
C++ tests compare against, computed live with `transformers`:

  make-model  build a tiny, randomly initialised Llama / Qwen2 checkpoint
              (safetensors, optionally sharded) with a fixed seed.
  reference   load a checkpoint in float32 (or --dtype) and, for each prompt (batch 1, no
              padding), record the full-prompt logits, greedy generation and
              the raw per-step logits of that generation, as JSON or as a
              .safetensors file (keys r{i}.prompt, r{i}.last_logits,
              r{i}.prompt_logits, r{i}.greedy, r{i}.step_logits).
  self-check  exercise both of the above in a temporary directory.

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

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM,  # noqa: E402
                          Qwen2Config, Qwen2ForCausalLM)

transformers.utils.logging.disable_progress_bar()
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EMBED_STD = 0.1  # small next to layer outputs, so tied lm_heads do not just echo the input
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def fail(msg):
    print(f"hf_reference.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def build_model(arch, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=256,
                max_pos=512, tie=False, seed=0):
    """Returns a randomly initialised model whose weights depend only on `seed`."""
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                  num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=kv_heads, max_position_embeddings=max_pos,
                  tie_word_embeddings=tie, bos_token_id=0, eos_token_id=vocab - 1,
                  attn_implementation="sdpa")
    if arch == "llama":
        cfg, cls = LlamaConfig(**common), LlamaForCausalLM
    elif arch == "llama3rope":
        cfg = LlamaConfig(rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE), **common)
        cls = LlamaForCausalLM
    elif arch == "qwen2":
        # rope_theta as in real Qwen2 checkpoints, so a loader that ignores it fails.
        cfg, cls = Qwen2Config(rope_theta=1000000.0, **common), Qwen2ForCausalLM
    else:
        fail(f"unknown arch {arch!r}")
    torch.manual_seed(seed)
    model = cls(cfg)
    # Re-initialise everything from our own generator. Magnitudes are chosen so
    # that every component matters: linear weights ~ N(0, 1/in_features) keep
    # activations O(1) (so attention is far from uniform and RoPE errors show),
    # embeddings ~ N(0, EMBED_STD^2), norm weights ~ 1 + 0.1 N(0, 1), biases ~ 0.02 N(0, 1).
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied lm_head is listed once
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                val = 1.0 + 0.1 * noise
            elif name.endswith(".bias"):
                val = 0.02 * noise
            elif "embed_tokens" in name:
                val = EMBED_STD * noise
            elif p.dim() == 2:
                val = noise / (p.shape[1] ** 0.5)
            else:
                fail(f"unexpected parameter {name} {tuple(p.shape)}")
            p.copy_(val)
    return model.eval()


def cmd_make_model(a):
    model = build_model(a.arch, a.hidden, a.layers, a.heads, a.kv_heads, a.intermediate, a.vocab,
                        a.max_pos, a.tie_embeddings, a.seed)
    model = model.to(DTYPES[a.dtype])
    kwargs = {"max_shard_size": a.shard_size} if a.shard_size else {}
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True, **kwargs)


def compute_reference(model_dir, prompts, new_tokens, dtype="float32"):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[dtype])  # = torch_dtype
    model.eval()
    # Greedy must never stop at EOS; drop it from the model defaults as well.
    model.generation_config.eos_token_id = None
    results = []
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            if not prompt or not all(isinstance(t, int) for t in prompt):
                fail(f"prompt {i} must be a non-empty list of token ids")
            if max(prompt) >= model.config.vocab_size or min(prompt) < 0:
                fail(f"prompt {i} has a token id outside [0, {model.config.vocab_size})")
            ids = torch.tensor([prompt], dtype=torch.long)
            mask = torch.ones_like(ids)
            prompt_logits = model(input_ids=ids, attention_mask=mask).logits[0].float()
            out = model.generate(ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 eos_token_id=None, pad_token_id=0, output_logits=True,
                                 return_dict_in_generate=True)
            greedy = out.sequences[0, len(prompt):]
            if greedy.numel() != new_tokens or len(out.logits) != new_tokens:
                fail(f"prompt {i}: generated {greedy.numel()} tokens, expected {new_tokens}")
            step_logits = torch.stack([s[0].float() for s in out.logits])
            # Raw logits must explain every greedy choice (no hidden logits processor).
            if not torch.equal(step_logits.argmax(-1), greedy):
                fail(f"prompt {i}: greedy tokens are not the argmax of the step logits")
            results.append({"prompt": torch.tensor(prompt, dtype=torch.int64),
                            "last_logits": prompt_logits[-1].clone(),
                            "prompt_logits": prompt_logits.contiguous(),
                            "greedy": greedy.to(torch.int64).contiguous(),
                            "step_logits": step_logits.contiguous()})
    return results


def min_top2_gap(results):
    """Smallest top-1/top-2 logit gap over all greedy choices (tie risk)."""
    gaps = [r["step_logits"].topk(2, dim=-1).values for r in results]
    return min(float((g[:, 0] - g[:, 1]).min()) for g in gaps)


def write_results(results, path, fmt):
    meta = {"transformers_version": transformers.__version__, "torch_version": torch.__version__}
    if fmt == "safetensors":
        tensors = {f"r{i}.{k}": v for i, r in enumerate(results) for k, v in r.items()}
        save_file(tensors, path, metadata=meta)
        return
    doc = dict(meta, results=[{k: v.tolist() for k, v in r.items()} for r in results])
    with open(path, "w") as f:
        json.dump(doc, f, allow_nan=False)


def load_prompts(path):
    try:
        with open(path) as f:
            prompts = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read prompts from {path}: {e}")
    if not isinstance(prompts, list) or not all(isinstance(p, list) for p in prompts):
        fail(f"{path}: prompts must be a JSON list of lists of token ids")
    return prompts


def cmd_reference(a):
    if not os.path.isfile(os.path.join(a.model, "config.json")):
        fail(f"{a.model} has no config.json")
    fmt = a.format or ("safetensors" if a.out.endswith(".safetensors") else "json")
    results = compute_reference(a.model, load_prompts(a.prompts), a.new_tokens, a.dtype)
    gap = min_top2_gap(results)
    if gap < 1e-3:
        print(f"hf_reference.py: warning: near-tie in greedy logits (gap {gap:.3g})",
              file=sys.stderr)
    write_results(results, a.out, fmt)


def cmd_self_check(a):
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        args = parser().parse_args(["make-model", "--arch", "llama", "--out", model_dir,
                                    "--seed", "1234"])
        args.func(args)
        prompts = [[1, 2, 3, 4, 5], [7, 100, 42, 9, 250, 17, 3, 88]]
        with open(os.path.join(tmp, "prompts.json"), "w") as f:
            json.dump(prompts, f)
        out_json, out_st = os.path.join(tmp, "ref.json"), os.path.join(tmp, "ref.safetensors")
        for out in (out_json, out_st):
            args = parser().parse_args(["reference", "--model", model_dir, "--prompts",
                                        os.path.join(tmp, "prompts.json"), "--out", out,
                                        "--new-tokens", "16"])
            args.func(args)
        from safetensors.torch import load_file
        st = load_file(out_st)
        with open(out_json) as f:
            doc = json.load(f)
        for i, r in enumerate(doc["results"]):
            for k, v in r.items():
                want = st[f"r{i}.{k}"]
                if not torch.equal(torch.tensor(v, dtype=want.dtype), want):
                    fail(f"self-check: JSON and safetensors differ for r{i}.{k}")
            if r["prompt"] != prompts[i] or len(r["greedy"]) != 16:
                fail("self-check: unexpected prompt or greedy length")
            # Decode-time logits must agree with a full forward over prompt + generated.
            if (torch.tensor(r["step_logits"][0]) - torch.tensor(r["last_logits"])).abs().max() > 1e-4:
                fail("self-check: first step logits differ from the prompt's last logits")
        gap = min_top2_gap([{"step_logits": st[f"r{i}.step_logits"]} for i in range(len(prompts))])
        print(f"self-check ok: transformers {transformers.__version__}, torch {torch.__version__}, "
              f"{len(prompts)} prompts, greedy {[r['greedy'][:6] for r in doc['results']]}..., "
              f"min top-2 gap {gap:.4f}")


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model", help="create a tiny random checkpoint")
    m.add_argument("--arch", choices=["llama", "qwen2", "llama3rope"], required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--hidden", type=int, default=64)
    m.add_argument("--layers", type=int, default=2)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--kv-heads", type=int, default=2)
    m.add_argument("--intermediate", type=int, default=128)
    m.add_argument("--vocab", type=int, default=256)
    m.add_argument("--max-pos", type=int, default=512)
    m.add_argument("--tie-embeddings", action="store_true")
    m.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    m.add_argument("--shard-size", help='e.g. "20KB": write a sharded checkpoint')
    m.set_defaults(func=cmd_make_model)
    r = sub.add_parser("reference", help="compute reference logits and greedy tokens")
    r.add_argument("--model", required=True)
    r.add_argument("--prompts", required=True, help="JSON [[token ids], ...]")
    r.add_argument("--out", required=True)
    r.add_argument("--new-tokens", type=int, default=32)
    r.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="the dtype transformers computes in (logits are written as float32)")
    r.add_argument("--format", choices=["json", "safetensors"],
                   help="default: safetensors if --out ends with .safetensors, else json")
    r.set_defaults(func=cmd_reference)
    s = sub.add_parser("self-check", help="build a model, run reference, verify")
    s.set_defaults(func=cmd_self_check)
    return p


def main():
    a = parser().parse_args()
    if a.cmd == "make-model" and a.hidden % a.heads:
        fail("--hidden must be divisible by --heads")
    if a.cmd == "reference" and a.new_tokens < 1:
        fail("--new-tokens must be at least 1")
    a.func(a)


if __name__ == "__main__":
    main()
