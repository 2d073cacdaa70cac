"""`./x bench prefix` (bench/prefix.py): shared KV blocks, side by side in one run.

Prefix caching: n LoRA adapters (rank 16, all projections), each with its
own system prompt of --system-tokens tokens that every request through it
starts with (adapterd_loadgen --system_prompt_len), then a short user tail.
Two servers that differ only in --prefix_caching serve the same closed-loop
workload, adapters round-robin, runs alternating between them; each run's
first n requests (one per adapter, not measured) let the cache-on server
see each system prompt once. TTFT and throughput, medians over runs.

Prefix tuning: one batch of n concurrent greedy decodes, each through its
own prefix-tuning adapter (--virtual-tokens per layer), against n rank-16
LoRAs on all projections and the base alone, on the ~100M Llama.
"""
import json
import os
import statistics

from common import MODEL_100M, Server, _save_adapter, ensure_model, load_config, loadgen, log, work_dir, write_lora


def add_parser(sub, cpus):
    p = sub.add_parser("prefix", help="prefix caching on vs off; prefix-tuning decode vs LoRA")
    p.add_argument("--model", default="demo", help="checkpoint of the caching part: demo or llama-100m")
    p.add_argument("--adapters", type=int, default=64)
    p.add_argument("--system-tokens", type=int, default=1000)
    p.add_argument("--tail-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--requests", type=int, default=128, help="measured requests per run")
    p.add_argument("--kv-mb", type=int, default=384)
    p.add_argument("--decode-adapters", type=int, default=8)
    p.add_argument("--virtual-tokens", type=int, default=20)
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=cpus)


def write_prefix_tuning(path, cfg, virtual_tokens, seed):
    """A PEFT-layout PREFIX_TUNING adapter: prompt_embeddings [V, layers * 2 * kv_heads * head_dim]."""
    import torch
    if os.path.exists(os.path.join(path, "adapter_model.safetensors")):
        return path
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    width = cfg["num_key_value_heads"] * hd
    layers = cfg["num_hidden_layers"]
    g = torch.Generator().manual_seed(seed)
    tensors = {"prompt_embeddings": torch.randn(virtual_tokens, layers * 2 * width, generator=g)}
    config = {"peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": virtual_tokens,
              "num_layers": layers, "token_dim": width, "num_attention_heads": cfg["num_key_value_heads"],
              "num_transformer_submodules": 1, "prefix_projection": False}
    return _save_adapter(path, "adapter_model.safetensors", tensors, config, metadata={"format": "pt"})


def loadgen_run(a, addr, **flags):
    return loadgen(a.build, addr, **flags)


def caching_part(a, work):
    base = ensure_model(work, a.model, a.build)
    cfg = load_config(base)
    dirs = [write_lora(os.path.join(work, f"{a.model}-lora-r16-{i}"), cfg, 16, 2000 + i) for i in range(a.adapters)]
    vocab = cfg["vocab_size"]
    common = dict(concurrency=a.concurrency, requests=a.requests, warmup=a.adapters, vocab=vocab,
                  prompt_min=a.tail_tokens, prompt_max=a.tail_tokens, output_min=a.new_tokens,
                  output_max=a.new_tokens, round_robin="true", system_prompt_len=a.system_tokens,
                  adapters=",".join(f"t{i}" for i in range(a.adapters)))
    args = [f"--model={base}", f"--threads={a.threads}", f"--kv_cache_mb={a.kv_mb}"]
    servers = {"off": Server(a.build, args), "on": Server(a.build, args + ["--prefix_caching=true"])}
    res = {"on": [], "off": []}
    try:
        for s in servers.values():
            s.register(dirs)
        for run in range(a.runs):
            for kind in (("on", "off") if run % 2 == 0 else ("off", "on")):
                res[kind].append(loadgen_run(a, servers[kind].addr, seed=run + 1, **common))
            log(f"caching run {run}: " + ", ".join(
                f"{k} TTFT p50 {v[-1]['ttft_p50_s'] * 1000:.1f} ms, {v[-1]['throughput_tok_s']:.1f} tok/s"
                for k, v in res.items()))
    finally:
        for s in servers.values():
            s.stop()
    return res


def decode_part(a, work):
    base = ensure_model(work, "llama-100m", a.build)
    cfg = load_config(base)
    n = a.decode_adapters
    prefix = [write_prefix_tuning(os.path.join(work, f"prefix-v{a.virtual_tokens}-{i}"), cfg, a.virtual_tokens,
                                  3000 + i) for i in range(n)]
    lora = [write_lora(os.path.join(work, f"llama-100m-lora-r16-{i}"), cfg, 16, 4000 + i) for i in range(n)]
    common = dict(concurrency=n, requests=n, warmup=0, vocab=MODEL_100M["vocab"], prompt_min=16, prompt_max=16,
                  output_min=a.decode_tokens, output_max=a.decode_tokens, round_robin="true")
    server = Server(a.build, [f"--model={base}", f"--threads={a.threads}"])
    rates = {"base": [], "lora": [], "prefix": []}
    try:
        server.register(prefix, prefix="p")
        server.register(lora, prefix="l")
        loadgen_run(a, server.addr, **dict(common, output_min=8, output_max=8))  # warm-up
        for run in range(a.runs):
            for kind in (("prefix", "lora", "base") if run % 2 == 0 else ("base", "lora", "prefix")):
                ids = {"base": "", "lora": ",".join(f"l{i}" for i in range(n)),
                       "prefix": ",".join(f"p{i}" for i in range(n))}[kind]
                rates[kind].append(loadgen_run(a, server.addr, adapters=ids, **common)["throughput_tok_s"])
            log(f"decode run {run}: " + ", ".join(f"{k} {v[-1]:.1f} tok/s" for k, v in rates.items()))
    finally:
        server.stop()
    return rates


def cmd_prefix(a):
    work = work_dir()
    res = caching_part(a, work)
    rates = decode_part(a, work)
    med = {}
    for k, runs in res.items():
        for f in ("ttft_p50_s", "ttft_p99_s", "throughput_tok_s"):
            med[f"{f}_{k}"] = statistics.median(r[f] for r in runs)
    med.update({f"decode_{k}": statistics.median(v) for k, v in rates.items()})
    ratios = [off["ttft_p50_s"] / on["ttft_p50_s"] for on, off in zip(res["on"], res["off"])]
    print(f"Prefix caching: {a.adapters} rank-16 LoRA adapters on the {a.model} model, each with its own "
          f"{a.system_tokens}-token system prompt, then {a.tail_tokens} tokens of user prompt and "
          f"{a.new_tokens} new tokens; {a.requests} requests per run, round-robin, concurrency "
          f"{a.concurrency}, {a.threads} threads, fp32; two servers differing only in --prefix_caching, "
          f"median of {a.runs} alternating runs:\n")
    print("| --prefix_caching | TTFT p50 (ms) | TTFT p99 (ms) | tok/s |")
    print("|---|---|---|---|")
    for k in ("off", "on"):
        print(f"| {k} | {med[f'ttft_p50_s_{k}'] * 1000:.1f} | {med[f'ttft_p99_s_{k}'] * 1000:.1f} | "
              f"{med[f'throughput_tok_s_{k}']:.1f} |")
    print(f"\nTTFT p50 off / on: {med['ttft_p50_s_off'] / med['ttft_p50_s_on']:.1f}x "
          f"(per run: {', '.join(f'{r:.1f}' for r in ratios)}); throughput on / off: "
          f"{med['throughput_tok_s_on'] / med['throughput_tok_s_off']:.2f}x\n")
    n = a.decode_adapters
    print(f"Decode: one batch of {n} concurrent greedy requests (prompt 16, {a.decode_tokens} new tokens) on the "
          f"~100M Llama, each through its own adapter: prefix tuning with {a.virtual_tokens} virtual tokens, "
          f"rank-16 LoRA on all projections, and the base alone; median of {a.runs} alternating runs:\n")
    print("| batch | tok/s | vs base |")
    print("|---|---|---|")
    for k, label in (("base", "base alone"), ("lora", f"{n} rank-16 LoRAs"),
                     ("prefix", f"{n} prefix-tuning adapters ({a.virtual_tokens} virtual tokens)")):
        print(f"| {label} | {med[f'decode_{k}']:.1f} | {med[f'decode_{k}'] / med['decode_base']:.2f} |")
    print(f"\nprefix tuning / LoRA: {med['decode_prefix'] / med['decode_lora']:.2f}")
    print("\n" + json.dumps({"medians": med, "caching": res, "decode": rates}))
