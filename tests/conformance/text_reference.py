#!/usr/bin/env python3
"""Reference for adapterd's text API: a tiny Llama with a real tokenizer.

  make       OUT: trains a Llama-3-style byte-level BPE tokenizer (8,192 ids)
             on a generated corpus, saves it with tokenizer_config.json and a
             chat template the project wrote, builds a tiny random Llama with
             that vocabulary next to it (OUT/model) and a seeded random LoRA
             (OUT/lora).
  reference  MODEL LORA REQUESTS OUT: for each request in REQUESTS (JSON
             [{"text": ...} | {"messages": [...], "add_generation_prompt": b}]),
             the token ids transformers makes of it (tokenizer(text), or
             apply_chat_template(tokenize=True)), and for the base and the
             LoRA the greedy ids of generate (never stopping at EOS) and
             tokenizer.decode(those ids, skip_special_tokens=True).

Nothing is downloaded; everything is deterministic.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import hf_reference  # noqa: E402
import tokenizer_reference  # noqa: E402

VOCAB = 8192
# The project's own template: a header per message, and the assistant cue.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{- raise_exception('unknown role ' + message['role']) }}"
    "{%- endif %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")


def cmd_make(a):
    tok_dir = os.path.join(a.out, "model")
    os.makedirs(tok_dir, exist_ok=True)
    lines = tokenizer_reference.corpus(lines=20000)
    tokenizer_reference.build_llama3(tok_dir, lines, VOCAB)
    cfg_path = os.path.join(tok_dir, "tokenizer_config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["chat_template"] = CHAT_TEMPLATE
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=2)
    model = hf_reference.build_model("llama", hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128,
                                     vocab=VOCAB, max_pos=512, seed=7)
    model.save_pretrained(tok_dir, safe_serialization=True)
    import peft_reference  # noqa: E402  (after the model exists: it reads it)
    lora = peft_reference.parser().parse_args(["make-lora", "--model", tok_dir, "--out", os.path.join(a.out, "lora"),
                                                "--seed", "11", "--r", "8", "--targets", "q_proj,v_proj,o_proj"])
    lora.func(lora)


def greedy(model, ids, new_tokens):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long), pad_token_id=0)
    return out[0, len(ids):].tolist()


def cmd_reference(a):
    from peft import PeftModel
    tok = AutoTokenizer.from_pretrained(a.model)
    base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    base.generation_config.eos_token_id = None
    with open(a.requests, encoding="utf-8") as f:
        requests = json.load(f)
    out = []
    for r in requests:
        if "text" in r:
            ids = tok(r["text"])["input_ids"]
        else:
            ids = tok.apply_chat_template(r["messages"], add_generation_prompt=r["add_generation_prompt"],
                                          tokenize=True)
            if isinstance(ids, dict):
                ids = ids["input_ids"]
        out.append({"ids": list(ids)})
    for name, model in (("base", base), ("lora", None)):
        if model is None:
            model = PeftModel.from_pretrained(base, a.lora).eval()
            model.generation_config.eos_token_id = None
        for entry in out:
            gen = greedy(model, entry["ids"], a.new_tokens)
            entry[name] = {"ids": gen, "text": tok.decode(gen, skip_special_tokens=True)}
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    r = sub.add_parser("reference")
    r.add_argument("model")
    r.add_argument("lora")
    r.add_argument("requests")
    r.add_argument("out")
    r.add_argument("--new-tokens", type=int, default=24)
    a = p.parse_args(argv)
    {"make": cmd_make, "reference": cmd_reference}[a.cmd](a)


if __name__ == "__main__":
    main(sys.argv[1:])
