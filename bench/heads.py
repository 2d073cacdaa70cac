"""`./x bench heads` (bench/heads.py): adapters that bring their own heads,
on the ~100M Llama, side by side in one run.

Classify: n SEQ_CLS LoRA adapters (each with its own `score` head, made by
PEFT) serve a closed loop of Classify RPCs through adapterd_loadgen
--classify, adapters round-robin, so every engine step mixes them. PEFT gets
the same requests (loadgen --dump_workload, same seed) one adapter at a
time, as it must: set_adapter, then that adapter's requests in padded
batches of --peft-batch through LlamaForSequenceClassification. Both report
requests per second of wall time.

Decode: one batch of n concurrent greedy requests, each with its own
adapter, on n LoRAs that also replace lm_head (modules_to_save, a full
[vocab, hidden] copy each) against n plain LoRAs of the same rank and
targets, and the base alone. Runs alternate and medians are reported.
"""
import json
import statistics
import time

from common import (MODEL_100M, Server, dump_workload, ensure_model, loadgen, log, make_peft_adapters,
                    work_dir)


def add_parser(sub, cpus):
    p = sub.add_parser("heads", help="Classify with n SEQ_CLS adapters vs PEFT; decode with n lm_head adapters")
    p.add_argument("--adapters", type=int, default=8)
    p.add_argument("--labels", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--requests", type=int, default=256, help="Classify requests per run")
    p.add_argument("--concurrency", type=int, default=16, help="Classify clients")
    p.add_argument("--prompt-min", type=int, default=16)
    p.add_argument("--prompt-max", type=int, default=64)
    p.add_argument("--peft-batch", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=128, help="decode: tokens per request")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=cpus)


def peft_classify_rate(model, reqs, batch):
    """`reqs` through PEFT one adapter at a time, in padded batches; requests/s."""
    import torch
    by_adapter = {}
    for r in reqs:
        by_adapter.setdefault(r["adapter"], []).append(r["prompt"])
    start = time.perf_counter()
    for name, prompts in by_adapter.items():
        model.set_adapter(name)
        for i in range(0, len(prompts), batch):
            chunk = prompts[i:i + batch]
            width = max(len(p) for p in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)  # pad id 0: prompts are drawn from 3 up
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for j, p in enumerate(chunk):
                ids[j, :len(p)] = torch.tensor(p)
                mask[j, :len(p)] = 1
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
    return len(reqs) / (time.perf_counter() - start)


def classify_part(a, base, dirs):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification
    names = [f"c{i}" for i in range(a.adapters)]
    common = dict(classify="true", concurrency=a.concurrency, requests=a.requests, warmup=a.concurrency,
                  vocab=MODEL_100M["vocab"], prompt_min=a.prompt_min, prompt_max=a.prompt_max, output_min=1,
                  output_max=1, round_robin="true", adapters=",".join(names))
    reqs = dump_workload(a.build, seed=1, **{k: v for k, v in common.items() if k != "classify"})
    hf = AutoModelForSequenceClassification.from_pretrained(base, dtype=torch.float32, num_labels=a.labels,
                                                            pad_token_id=0)
    model = PeftModel.from_pretrained(hf, dirs[0], adapter_name=names[0])
    for name, d in zip(names[1:], dirs[1:]):
        model.load_adapter(d, adapter_name=name)
    model.eval()
    server = Server(a.build, [f"--model={base}", f"--threads={a.threads}"])
    ours, theirs = [], []
    try:
        server.register(dirs, prefix="c")
        peft_classify_rate(model, reqs[:a.peft_batch], a.peft_batch)  # warm-up
        for run in range(a.runs):
            r = loadgen(a.build, server.addr, seed=1, **common)
            ours.append(r["requests_per_s"])
            theirs.append(peft_classify_rate(model, reqs, a.peft_batch))
            log(f"classify run {run}: adapterd {ours[-1]:.1f} req/s (p50 {r['ttft_p50_s'] * 1000:.1f} ms), "
                f"PEFT {theirs[-1]:.1f} req/s")
    finally:
        server.stop()
    del model, hf
    return ours, theirs


def decode_part(a, base, head_dirs, plain_dirs):
    common = dict(concurrency=a.adapters, requests=a.adapters, warmup=0, vocab=MODEL_100M["vocab"],
                  prompt_min=16, prompt_max=16, output_min=a.new_tokens, output_max=a.new_tokens,
                  round_robin="true")
    server = Server(a.build, [f"--model={base}", f"--threads={a.threads}"])
    rates = {"base": [], "plain": [], "lm_head": []}
    try:
        server.register(head_dirs, prefix="h")
        server.register(plain_dirs, prefix="p")
        loadgen(a.build, server.addr, **dict(common, output_min=8, output_max=8))  # warm-up
        for run in range(a.runs):
            order = ["lm_head", "plain", "base"] if run % 2 == 0 else ["base", "plain", "lm_head"]
            for kind in order:
                ids = {"base": "", "plain": ",".join(f"p{i}" for i in range(a.adapters)),
                       "lm_head": ",".join(f"h{i}" for i in range(a.adapters))}[kind]
                rates[kind].append(loadgen(a.build, server.addr, adapters=ids, **common)["throughput_tok_s"])
            log(f"decode run {run}: " + ", ".join(f"{k} {v[-1]:.1f} tok/s" for k, v in rates.items()))
    finally:
        server.stop()
    return rates


def cmd_heads(a):
    import torch
    torch.set_num_threads(a.threads)
    work = work_dir()
    base = ensure_model(work, "llama-100m", a.build)
    r, alpha = str(a.rank), str(2 * a.rank)
    cls_dirs = make_peft_adapters(work, base, f"cls{a.labels}-r{a.rank}", a.adapters,
                                  ["make-cls", "--labels", str(a.labels), "--r", r, "--alpha", alpha,
                                   "--targets", "q_proj,k_proj,v_proj,o_proj"])
    head_dirs = make_peft_adapters(work, base, f"lmhead-r{a.rank}", a.adapters,
                                   ["make-lora", "--r", r, "--alpha", alpha, "--targets", "q_proj,v_proj",
                                    "--modules-to-save", "lm_head"])
    plain_dirs = make_peft_adapters(work, base, f"qv-r{a.rank}", a.adapters,
                                    ["make-lora", "--r", r, "--alpha", alpha, "--targets", "q_proj,v_proj"])
    ours, theirs = classify_part(a, base, cls_dirs)
    rates = decode_part(a, base, head_dirs, plain_dirs)
    med = {"classify_adapterd": statistics.median(ours), "classify_peft": statistics.median(theirs)}
    med.update({f"decode_{k}": statistics.median(v) for k, v in rates.items()})
    print(f"Classify: {a.adapters} SEQ_CLS LoRA adapters (rank {a.rank} on q/k/v/o, {a.labels}-label `score` head "
          f"each), ~100M Llama, fp32, {a.threads} threads, {a.requests} requests per run with prompts of "
          f"{a.prompt_min}-{a.prompt_max} tokens, adapters round-robin; adapterd over gRPC at concurrency "
          f"{a.concurrency}, PEFT one adapter at a time in padded batches of {a.peft_batch}; median of "
          f"{a.runs} runs:\n")
    print("| system | requests/s |")
    print("|---|---|")
    print(f"| adapterd `Classify`, adapters mixed in every step | {med['classify_adapterd']:.1f} |")
    print(f"| PEFT `LlamaForSequenceClassification`, `set_adapter` per adapter | {med['classify_peft']:.1f} |")
    print(f"\nadapterd / PEFT: {med['classify_adapterd'] / med['classify_peft']:.2f}x\n")
    print(f"Decode: one batch of {a.adapters} concurrent greedy requests (prompt 16, {a.new_tokens} new tokens), "
          f"each with its own adapter: rank-{a.rank} q/v LoRAs that also replace lm_head "
          f"(modules_to_save, {MODEL_100M['vocab']}x{MODEL_100M['hidden']} fp32 each), the same LoRAs "
          f"without it, and the base alone; median of {a.runs} alternating runs:\n")
    print("| batch | tok/s | vs base |")
    print("|---|---|---|")
    for k, label in (("base", "base alone"), ("plain", f"{a.adapters} plain LoRAs"),
                     ("lm_head", f"{a.adapters} LoRAs with their own lm_head")):
        print(f"| {label} | {med[f'decode_{k}']:.1f} | {med[f'decode_{k}'] / med['decode_base']:.2f} |")
    print(f"\nlm_head adapters / plain LoRAs: {med['decode_lm_head'] / med['decode_plain']:.2f}")
    print("\n" + json.dumps({"medians": med, "classify": {"adapterd": ours, "peft": theirs}, "decode": rates}))
