#!/usr/bin/env python3
"""adapterd benchmarks, run side by side with Hugging Face in one process tree.

  ./x bench decode [--runs 7] [--new-tokens 128] [--threads 2]
  ./x bench lora   [--runs 5] [--adapters 8] [--rank 16] [--new-tokens 128]
  ./x bench serving [--adapters 1,8,64,256] [--requests 64] [--runs 3]
  ./x bench http   [--adapters 64] [--concurrency 32] [--runs 5]   (bench/http_bench.py)
  ./x bench heads  [--adapters 8] [--requests 256] [--runs 3]        (bench/heads.py)
  ./x bench prefix [--adapters 64] [--system-tokens 1000] [--runs 3] (bench/prefix.py)
  ./x bench scale [--adapters 2000] [--device-mib 256] [--runs 2] (bench/scale.py)
  ./x bench step [--batches 1,8,32,64] [--dtypes fp32,bf16] [--runs 3] (bench/step.py)

`decode`: single-stream greedy decode tokens/s of the demo model and of a
~100M-parameter Llama-shaped random checkpoint, for adapterd (over gRPC, via
adapterd_loadgen) and for transformers `generate` on the same checkpoint,
with the same thread count. Runs alternate between the two systems and the
medians are reported. Prints a Markdown table for docs/benchmarks.md.
"""
import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.generation.streamers import BaseStreamer  # noqa: E402

import heads  # noqa: E402
import http_bench  # noqa: E402
import prefix  # noqa: E402
import scale  # noqa: E402
import step  # noqa: E402
import tiers  # noqa: E402
from common import (MODEL_100M, Server, dump_workload, ensure_model, load_config, loadgen, peft_batch_rate,  # noqa: E402
                    log, make_peft_loras, work_dir, write_bottleneck, write_lora)


class Timer(BaseStreamer):
    """Records when generate() emits each new token (the first put() is the prompt)."""

    def __init__(self):
        self.times = []
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self):
        pass


def hf_decode_rate(model, prompt, new_tokens):
    timer = Timer()
    ids = torch.tensor([prompt], dtype=torch.long)
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                       max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=None,
                       pad_token_id=0, streamer=timer)
    t = timer.times
    return (len(t) - 1) / (t[-1] - t[0])


def cmd_decode(a):
    torch.set_num_threads(a.threads)
    work = work_dir()
    rows = []
    for name in ["demo", "llama-100m"]:
        path = ensure_model(work, name, a.build)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        model.generation_config.eos_token_id = None
        params = sum(p.numel() for p in model.parameters())
        vocab = model.config.vocab_size
        prompt = [(7 * i + 3) % vocab for i in range(16)]
        server = Server(a.build, [f"--model={path}", f"--threads={a.threads}"])
        try:
            ours, theirs = [], []
            hf_decode_rate(model, prompt, 8)  # warm-up
            loadgen(a.build, server.addr, requests=1, warmup=1, vocab=vocab, prompt_min=16,
                    prompt_max=16, output_min=8, output_max=8)
            for run in range(a.runs):
                theirs.append(hf_decode_rate(model, prompt, a.new_tokens))
                r = loadgen(a.build, server.addr, requests=1, warmup=0, vocab=vocab,
                            prompt_min=16, prompt_max=16, output_min=a.new_tokens,
                            output_max=a.new_tokens, seed=run + 1)
                ours.append(r["decode_tok_s_per_stream_p50"])
                log(f"{name} run {run}: adapterd {ours[-1]:.1f} tok/s, transformers {theirs[-1]:.1f} tok/s")
        finally:
            server.stop()
        row = dict(model=name, params=params, adapterd=statistics.median(ours),
                   transformers=statistics.median(theirs), runs=a.runs)
        row["ratio"] = row["adapterd"] / row["transformers"]
        rows.append(row)
        del model

    print(f"Single-stream greedy decode, fp32, {a.threads} threads, prompt 16, "
          f"{a.new_tokens} new tokens, median of {a.runs} alternating runs "
          f"({platform.processor() or platform.machine()}, torch {torch.__version__}):\n")
    print("| model | parameters | adapterd tok/s | transformers tok/s | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['adapterd']:.1f} | "
              f"{r['transformers']:.1f} | {r['ratio']:.2f}x |")
    print("\n" + json.dumps(rows))


def cmd_lora(a):
    from peft import PeftModel
    torch.set_num_threads(a.threads)
    work = work_dir()
    base = ensure_model(work, "llama-100m", a.build)
    dirs = make_peft_loras(work, base, a.adapters, a.rank)
    names = [f"a{i}" for i in range(a.adapters)]
    vocab = MODEL_100M["vocab"]
    prompts = [[(7 * i + 13 * r + 3) % vocab for i in range(16)] for r in range(a.adapters)]

    server = Server(a.build, [f"--model={base}", f"--threads={a.threads}", f"--lora_dtype={a.lora_dtype}",
                              f"--skinny_gemm_rows={a.skinny_gemm_rows}"])
    server.register(dirs, prefix="a")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None
    peft_model = PeftModel.from_pretrained(model, dirs[0], adapter_name=names[0])
    for name, d in zip(names[1:], dirs[1:]):
        peft_model.load_adapter(d, adapter_name=name)
    peft_model.eval()
    common = dict(requests=a.adapters, warmup=0, concurrency=a.adapters, vocab=vocab,
                  prompt_min=16, prompt_max=16, output_min=a.new_tokens, output_max=a.new_tokens)
    results = {k: [] for k in ("adapterd_base", "adapterd_lora", "peft_lora", "peft_base")}
    try:
        loadgen(a.build, server.addr, **dict(common, output_min=8, output_max=8))  # warm-up
        peft_batch_rate(peft_model, prompts, names, 4)
        for run in range(a.runs):
            results["adapterd_base"].append(loadgen(a.build, server.addr, **common)["throughput_tok_s"])
            results["adapterd_lora"].append(loadgen(a.build, server.addr, adapters=",".join(names),
                                                    round_robin="true", **common)["throughput_tok_s"])
            results["peft_lora"].append(peft_batch_rate(peft_model, prompts, names, a.new_tokens))
            with peft_model.disable_adapter():
                results["peft_base"].append(peft_batch_rate(peft_model, prompts, None, a.new_tokens))
            log("run %d: %s" % (run, {k: round(v[-1], 1) for k, v in results.items()}))
    finally:
        server.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"Batch of {a.adapters} concurrent greedy requests, each with its own rank-{a.rank} LoRA on "
          f"all 7 projections (base alone for comparison), ~100M Llama, fp32, {a.threads} threads, "
          f"--lora_dtype={a.lora_dtype}, --skinny_gemm_rows={a.skinny_gemm_rows}, "
          f"prompt 16, {a.new_tokens} new tokens; median of {a.runs} alternating runs:\n")
    print("| system | base alone tok/s | 8 distinct adapters tok/s | adapters / base |")
    print("|---|---|---|---|")
    print(f"| adapterd | {med['adapterd_base']:.1f} | {med['adapterd_lora']:.1f} | "
          f"{med['adapterd_lora'] / med['adapterd_base']:.2f} |")
    print(f"| PEFT `generate(adapter_names=...)` | {med['peft_base']:.1f} | {med['peft_lora']:.1f} | "
          f"{med['peft_lora'] / med['peft_base']:.2f} |")
    print(f"\nadapterd / PEFT with the mixed adapters: {med['adapterd_lora'] / med['peft_lora']:.2f}x")
    print("\n" + json.dumps({"medians": med, "runs": results}))


def peft_workload(model, reqs, batch):
    """Replays `reqs` (loadgen --dump_workload) through PEFT as static batches
    of `batch` in arrival order: each batch is left-padded and generates until
    its longest request is done. Returns requested tokens per second of wall
    time, so the tokens a batch computes past a row's own length count as the
    waste they are."""
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(reqs), batch):
        chunk = reqs[i:i + batch]
        width = max(len(r["prompt"]) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for j, r in enumerate(chunk):
            ids[j, width - len(r["prompt"]):] = torch.tensor(r["prompt"])
            mask[j, width - len(r["prompt"]):] = 1
        new = max(r["max_new_tokens"] for r in chunk)
        with torch.no_grad():
            model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new,
                           min_new_tokens=new, eos_token_id=None, pad_token_id=0,
                           adapter_names=[r["adapter"] for r in chunk])
        tokens += sum(r["max_new_tokens"] for r in chunk)
    return tokens / (time.perf_counter() - start)


def cmd_serving(a):
    """S-LoRA/Punica-style workload over gRPC: n adapters, uniform or skewed
    popularity, a saturating closed loop and Poisson arrivals at a fraction of
    the base model's saturation rate, a long prompt injected into the Poisson
    load, and PEFT replaying the same requests at its best batch size."""
    from peft import PeftModel
    torch.set_num_threads(a.threads)
    work = work_dir()
    base = ensure_model(work, a.model, a.build)
    cfg = load_config(base)
    counts = [int(x) for x in a.adapters.split(",")]
    peft_counts = [int(x) for x in a.peft_adapters.split(",") if x]
    dirs = [write_lora(os.path.join(work, f"fast-{a.model}-r{a.rank}-{i}"), cfg, a.rank, 5000 + i)
            for i in range(max(counts + peft_counts))]
    server = Server(a.build, [f"--model={base}", f"--threads={a.threads}",
                              f"--max_batch_size={a.concurrency}", f"--lora_dtype={a.lora_dtype}"])
    server.register(dirs[:max(counts)])
    common = dict(requests=a.requests, warmup=0, vocab=cfg["vocab_size"], prompt_min=a.prompt_min,
                  prompt_max=a.prompt_max, output_min=a.output_min, output_max=a.output_max)
    configs = [("base", None, 1.0)]
    for n in counts:
        for pop, alpha in (("uniform", 1.0), ("skewed", a.skew)):
            configs.append((f"{n} {pop}", ",".join(f"t{i}" for i in range(n)), alpha))
    rows, peft_rows, rate = [], [], a.rate
    peft_model, peft_batch = None, {}
    try:
        loadgen(a.build, server.addr, **dict(common, requests=a.concurrency, concurrency=a.concurrency))
        for run in range(a.runs):
            for name, adapters, alpha in configs:
                extra = {"adapters": adapters, "alpha": alpha} if adapters else {}
                closed = loadgen(a.build, server.addr, concurrency=a.concurrency, seed=run + 1,
                                 **extra, **common)
                rows.append(dict(config=name, mode="closed", run=run, **closed))
                log(f"run {run} {name} closed: {closed['throughput_tok_s']:.1f} tok/s")
                if not a.poisson:
                    continue
                if rate <= 0:
                    # 70% (by default) of the base model's saturated request rate,
                    # fixed from the first run so every row sees the same arrivals.
                    rate = round(a.load * closed["requests"] / closed["wall_s"], 2)
                    log(f"Poisson rate {rate}/s")
                open_ = loadgen(a.build, server.addr, rate=rate, seed=run + 1, **extra, **common)
                rows.append(dict(config=name, mode="poisson", run=run, **open_))
                if name == a.long_prompt_config and a.long_prompt > 0:
                    # Same arrivals again, with one long prompt arriving mid-run.
                    inj = loadgen(a.build, server.addr, rate=rate, seed=run + 1,
                                  inject_prompt_len=a.long_prompt, inject_at_s=a.inject_at, **extra,
                                  **common)
                    rows.append(dict(config=name, mode=f"poisson + {a.long_prompt}-token prompt",
                                     run=run, **inj))
                    log(f"run {run} {name} long prompt: TTFT p99 {inj['ttft_p99_s']:.3f} s "
                        f"(without {open_['ttft_p99_s']:.3f} s), its own TTFT "
                        f"{inj['injected']['ttft_s']:.3f} s")
            for n in peft_counts:
                names = [f"t{i}" for i in range(n)]
                reqs = dump_workload(a.build, adapters=",".join(names), seed=run + 1, **common)
                if peft_model is None:
                    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
                    model.generation_config.eos_token_id = None
                    peft_model = PeftModel.from_pretrained(model, dirs[0], adapter_name="t0")
                    loaded = 1
                while loaded < n:
                    peft_model.load_adapter(dirs[loaded], adapter_name=f"t{loaded}")
                    loaded += 1
                if n not in peft_batch:
                    # PEFT's best static batch size for this workload, probed once.
                    probe = reqs[:max(a.peft_batches)]
                    rates = {b: peft_workload(peft_model, probe, b) for b in a.peft_batches}
                    peft_batch[n] = max(rates, key=rates.get)
                    log(f"PEFT batch probe n={n}: " + ", ".join(f"{b}: {r:.1f}" for b, r in rates.items()))
                tput = peft_workload(peft_model, reqs, peft_batch[n])
                peft_rows.append(dict(config=f"{n} uniform", run=run, batch=peft_batch[n], tput=tput))
                log(f"run {run} PEFT {n} uniform batch {peft_batch[n]}: {tput:.1f} tok/s")
    finally:
        server.stop()
    print(f"Serving workload on {a.model}, fp32, {a.threads} threads, rank-{a.rank} LoRA on all 7 "
          f"projections, prompts {a.prompt_min}-{a.prompt_max}, outputs {a.output_min}-{a.output_max}, "
          f"{a.requests} requests per point; closed loop at concurrency {a.concurrency}, Poisson at "
          f"{rate}/s ({a.load:.0%} of the base model's closed-loop request rate); medians of {a.runs} "
          f"runs:\n")
    print("| adapters | mode | tok/s | vs base | TTFT p50 s | TTFT p99 s | TPOT p50 s | TPOT p99 s | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = []
    for r in rows:
        if (r["config"], r["mode"]) not in keys:
            keys.append((r["config"], r["mode"]))
    base_tput, med_by = {}, {}
    for config, mode in sorted(keys, key=lambda k: (k[1] != "closed", keys.index(k))):
        sel = [r for r in rows if r["config"] == config and r["mode"] == mode]
        med = {k: statistics.median(r[k] for r in sel) for k in
               ("throughput_tok_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s")}
        med_by[(config, mode)] = med
        if config == "base":
            base_tput[mode] = med["throughput_tok_s"]
        # Under Poisson arrivals throughput follows the arrival rate; only the
        # closed loop's ratio to the base says anything.
        ratio = (f"{med['throughput_tok_s'] / base_tput[mode]:.2f}"
                 if mode == "closed" and base_tput.get(mode) else "-")
        print(f"| {config} | {mode} | {med['throughput_tok_s']:.1f} | {ratio} | "
              f"{med['ttft_p50_s']:.3f} | {med['ttft_p99_s']:.3f} | {med['tpot_p50_s']:.4f} | "
              f"{med['tpot_p99_s']:.4f} | {sum(r['errors'] for r in sel)} |")
    injected = [r["injected"]["ttft_s"] for r in rows if r["mode"].startswith("poisson +")]
    if injected:
        print(f"\nThe injected {a.long_prompt}-token prompt itself: TTFT median "
              f"{statistics.median(injected):.3f} s over {len(injected)} runs.")
    if peft_rows:
        print("\n| adapters | PEFT batch | PEFT tok/s | adapterd closed tok/s | adapterd / PEFT |")
        print("|---|---|---|---|---|")
        for config in dict.fromkeys(r["config"] for r in peft_rows):
            sel = [r for r in peft_rows if r["config"] == config]
            p = statistics.median(r["tput"] for r in sel)
            ours = med_by[(config, "closed")]["throughput_tok_s"]
            print(f"| {config} | {sel[0]['batch']} | {p:.1f} | {ours:.1f} | {ours / p:.2f}x |")
    print("\n" + json.dumps({"rate": rate, "rows": rows, "peft": peft_rows}))


def cmd_kinds(a):
    """Throughput of bottleneck adapters against LoRA at about equal parameter
    count: n concurrent greedy requests, each through its own adapter."""
    work = work_dir()
    base = ensure_model(work, "llama-100m", a.build)
    cfg = load_config(base)
    h, inter, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    lora_params = a.rank * L * (6 * h + 2 * kv + 3 * (h + inter))
    m = int(h // a.reduction_factor)
    bn_params = L * 2 * (2 * h * m + m + h)
    n = a.adapters
    lora = [write_lora(os.path.join(work, f"fast-llama-100m-r{a.rank}-{i}"), cfg, a.rank, 5000 + i)
            for i in range(n)]
    bns = [write_bottleneck(os.path.join(work, f"fast-llama-100m-bn{a.reduction_factor}-{i}"), cfg,
                            a.reduction_factor, 7000 + i) for i in range(n)]
    server = Server(a.build, [f"--model={base}", f"--threads={a.threads}"])
    server.register(lora, prefix="lora")
    server.register(bns, prefix="bn")
    ids = {"base": None, "lora": [f"lora{i}" for i in range(n)], "bottleneck": [f"bn{i}" for i in range(n)],
           "half and half": [f"lora{i}" if i % 2 == 0 else f"bn{i}" for i in range(n)]}
    common = dict(requests=n, warmup=0, concurrency=n, vocab=cfg["vocab_size"], prompt_min=16, prompt_max=16,
                  output_min=a.new_tokens, output_max=a.new_tokens)
    results = {k: [] for k in ids}
    try:
        loadgen(a.build, server.addr, **dict(common, output_min=8, output_max=8))
        for run in range(a.runs):
            for k, adapters in ids.items():
                extra = {"adapters": ",".join(adapters), "round_robin": "true"} if adapters else {}
                results[k].append(loadgen(a.build, server.addr, **extra, **common)["throughput_tok_s"])
            log("run %d: %s" % (run, {k: round(v[-1], 1) for k, v in results.items()}))
    finally:
        server.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{n} concurrent greedy requests on llama-100m, each through its own adapter, fp32, "
          f"{a.threads} threads, prompt 16, {a.new_tokens} new tokens; median of {a.runs} alternating runs. "
          f"LoRA: rank {a.rank} on all 7 projections, {lora_params / 1e6:.2f}M parameters per adapter. "
          f"Bottleneck: Houlsby (double_seq_bn, swish), reduction factor {a.reduction_factor} "
          f"(width {m}) after attention and after the MLP, {bn_params / 1e6:.2f}M parameters per adapter.\n")
    print("| adapters in the batch | tok/s | vs base |")
    print("|---|---|---|")
    for k in ids:
        print(f"| {k} | {med[k]:.1f} | {med[k] / med['base']:.2f} |")
    print("\n" + json.dumps({"medians": med, "runs": results}))


def cmd_text(a):
    """Tokenizer throughput beside HF tokenizers, and the streaming detokenizer's
    share of a decode step on the ~100M model (it runs on the engine thread,
    once per generated token)."""
    import text as text_bench
    res = text_bench.run(["--build", a.build, "--runs", str(a.runs), "--vocab", str(a.vocab)])
    work = work_dir()
    base = ensure_model(work, "llama-100m", a.build)
    server = Server(a.build, [f"--model={base}", f"--threads={a.threads}"])
    vocab = MODEL_100M["vocab"]
    rows = []
    try:
        for conc in (1, 32):
            common = dict(requests=conc * 2, warmup=0, concurrency=conc, vocab=vocab, prompt_min=16,
                          prompt_max=16, output_min=64, output_max=64)
            loadgen(a.build, server.addr, **dict(common, output_min=4, output_max=4))  # warm-up
            rates = [loadgen(a.build, server.addr, **common)["throughput_tok_s"] for _ in range(a.runs)]
            tok_s = statistics.median(rates)
            # Tokens per second times seconds of detokenization per token: the
            # fraction of the engine thread's time the detokenizer takes.
            rows.append((conc, tok_s, res["decode_us_per_token"] * 1e-6 * tok_s))
    finally:
        server.stop()
    print(f"\nStreaming detokenization as a share of decode on the ~100M Llama ({a.threads} threads, "
          f"greedy, 64 new tokens, median of {a.runs} runs; {res['decode_us_per_token']:.3f} µs per token):\n")
    print("| concurrent streams | decode tok/s | detokenizer share of the engine thread |")
    print("|---:|---:|---:|")
    for conc, tok_s, share in rows:
        print(f"| {conc} | {tok_s:.1f} | {100 * share:.4f}% |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--build", required=True, help="CMake build directory")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("decode", help="single-stream decode tokens/s vs transformers")
    d.add_argument("--runs", type=int, default=7)
    d.add_argument("--new-tokens", type=int, default=128)
    d.add_argument("--threads", type=int, default=os.cpu_count())
    lo = sub.add_parser("lora", help="base vs mixed distinct LoRA adapters, adapterd vs PEFT")
    lo.add_argument("--runs", type=int, default=5)
    lo.add_argument("--adapters", type=int, default=8)
    lo.add_argument("--rank", type=int, default=16)
    lo.add_argument("--new-tokens", type=int, default=128)
    lo.add_argument("--threads", type=int, default=os.cpu_count())
    lo.add_argument("--lora-dtype", default="auto", choices=["auto", "bfloat16", "float16"],
                    help="the server's --lora_dtype (bfloat16: float32 adapters kept rounded, half the bytes)")
    lo.add_argument("--skinny-gemm-rows", type=int, default=-1,
                    help="the server's --skinny_gemm_rows (0: LibTorch for every base product)")
    sv = sub.add_parser("serving", help="S-LoRA-style workload: n adapters, popularity, arrivals")
    sv.add_argument("--model", default="llama-100m", choices=["demo", "llama-100m"])
    sv.add_argument("--adapters", default="1,8,64,256")
    sv.add_argument("--rank", type=int, default=16)
    sv.add_argument("--requests", type=int, default=64)
    sv.add_argument("--concurrency", type=int, default=32)
    sv.add_argument("--rate", type=float, default=0,
                    help="Poisson arrivals/s (0 = --load times the base closed-loop request rate)")
    sv.add_argument("--load", type=float, default=0.7, help="Poisson rate as a fraction of saturation")
    sv.add_argument("--long-prompt", type=int, default=2000, help="injected prompt length (0 = none)")
    sv.add_argument("--long-prompt-config", default="64 uniform",
                    help="the row whose Poisson run is repeated with the long prompt")
    sv.add_argument("--inject-at", type=float, default=5.0, help="seconds into the Poisson run")
    sv.add_argument("--poisson", action=argparse.BooleanOptionalAction, default=True,
                    help="the open-loop (Poisson) runs after each closed one (--no-poisson: closed loop only)")
    sv.add_argument("--peft-adapters", default="8,64", help="adapter counts PEFT replays (uniform)")
    sv.add_argument("--peft-batches", type=lambda s: [int(x) for x in s.split(",")], default=[8, 16, 32],
                    help="PEFT batch sizes probed for its best throughput")
    sv.add_argument("--skew", type=float, default=0.3, help="power-law alpha for skewed popularity")
    sv.add_argument("--prompt-min", type=int, default=8)
    sv.add_argument("--prompt-max", type=int, default=64)
    sv.add_argument("--output-min", type=int, default=8)
    sv.add_argument("--output-max", type=int, default=64)
    sv.add_argument("--runs", type=int, default=3)
    sv.add_argument("--threads", type=int, default=os.cpu_count())
    sv.add_argument("--lora-dtype", default="auto", choices=["auto", "bfloat16", "float16"],
                    help="the server's --lora_dtype (bfloat16: float32 adapters kept rounded, half the bytes)")
    k = sub.add_parser("kinds", help="bottleneck adapters vs LoRA at about equal parameter count")
    k.add_argument("--runs", type=int, default=3)
    k.add_argument("--adapters", type=int, default=8)
    k.add_argument("--rank", type=int, default=16)
    k.add_argument("--reduction-factor", type=int, default=11)
    k.add_argument("--new-tokens", type=int, default=128)
    k.add_argument("--threads", type=int, default=os.cpu_count())
    t = sub.add_parser("text", help="tokenizer throughput vs HF tokenizers; detokenizer share of a decode step")
    t.add_argument("--runs", type=int, default=5)
    t.add_argument("--vocab", type=int, default=32000)
    t.add_argument("--threads", type=int, default=os.cpu_count())
    tiers.add_parser(sub, os.cpu_count())
    tiers.add_loader_nice_parser(sub, os.cpu_count())
    tiers.add_pair_parser(sub)
    http_bench.add_parser(sub, os.cpu_count())
    heads.add_parser(sub, os.cpu_count())
    prefix.add_parser(sub, os.cpu_count())
    scale.add_parser(sub, os.cpu_count())
    step.add_parser(sub, os.cpu_count())
    a = p.parse_args()
    if a.cmd == "http":
        http_bench.cmd_http(a)
        return
    if a.cmd == "heads":
        heads.cmd_heads(a)
        return
    if a.cmd == "prefix":
        prefix.cmd_prefix(a)
        return
    if a.cmd in ("tiers", "loader-nice", "tiers-pair"):
        {"tiers": tiers.cmd_tiers, "loader-nice": tiers.cmd_loader_nice,
         "tiers-pair": tiers.cmd_tiers_pair}[a.cmd](a)
        return
    {"decode": cmd_decode, "lora": cmd_lora, "serving": cmd_serving, "kinds": cmd_kinds,
     "text": cmd_text, "scale": scale.cmd_scale, "step": step.cmd_step}[a.cmd](a)


if __name__ == "__main__":
    main()
