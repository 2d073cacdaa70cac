#!/usr/bin/env python3
"""adapterd's decode throughput on one device against the device's own
bandwidth bound and against PEFT, measured in the same run.

  - The bound: the device's copy bandwidth (a large tensor copied on the
    device; read plus written bytes over time), and per step the bytes a
    decode step must read: the weights (the embedding table excepted, of
    which a step reads one row per sequence) plus the KV cache of every
    sequence at its mean context. Tokens/s at batch b is bounded by
    b / (bytes per step / bandwidth).
  - adapterd: closed-loop greedy decode through adapterd_loadgen (prompt 16,
    --new-tokens new tokens, EOS ignored) at batch 1 and 32 through the
    base; at batch 32 with 32 distinct rank-16 LoRAs on all 7 projections
    (round robin); and at batch 32 over 8 and over --many adapters with the
    adapter device tier limited to --device-budget-mb (the same 8 weight
    files loaded under many ids, each id its own adapter to the server).
  - PEFT: `generate(adapter_names=...)` on the same 32-adapter batch, on the
    same device and dtype.
  - CUDA graphs: the runs above serve with --cuda_graphs=auto (decode
    steps replayed from graphs per batch bucket on a CUDA device of a build
    that has them); base at batch 1 and 32 and the 32 LoRAs at batch 32 are
    measured again with --cuda_graphs=off, and the report gives both.

--size picks the checkpoint: `1b` (Llama-shaped, ~1.1B parameters, made
here from a fixed seed) for the device, `100m` or `tiny` for a rehearsal on
the CPU. Prints a table and writes --out (JSON).

  python3 bench/gpu/bench.py --build build --device cpu --size tiny --out bench.json
"""
import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "conformance"))
from common import MODEL_100M, Server, device_sync, loadgen, log, peft_batch_rate, write_lora  # noqa: E402

SIZES = {
    "1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, vocab=32000, max_pos=2048),
    "100m": MODEL_100M,
    "tiny": dict(hidden=128, layers=2, heads=4, kv_heads=2, intermediate=256, vocab=512, max_pos=512),
}
PROMPT = 16


def copy_bandwidth(device, mib=1024, reps=10):
    """Bytes read plus written per second by a device-to-device copy."""
    import torch
    src = torch.empty(mib << 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    device_sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        dst.copy_(src)
        device_sync(device)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() / statistics.median(times)


def make_checkpoint(path, size, dtype):
    import torch
    import hf_reference
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    model = hf_reference.build_model("llama", seed=100, **SIZES[size])
    model.to(getattr(torch, dtype)).save_pretrained(path, safe_serialization=True)
    return path


def step_bytes(cfg, dtype, batch, new_tokens):
    h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    per_layer = h * h * 2 + 2 * kv * h + 3 * h * cfg["intermediate_size"]
    elem = 4 if dtype == "float32" else 2
    weights = (layers * per_layer + vocab * h) * elem
    mean_ctx = PROMPT + new_tokens / 2
    kv_bytes = batch * mean_ctx * layers * 2 * kv * elem
    return weights + kv_bytes


def lora_bytes(cfg, rank, dtype):
    """Bytes of a LoRA of `rank` on all 7 projections of every layer."""
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    hd = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    in_out = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + inter) + (inter + h)
    return cfg["num_hidden_layers"] * rank * in_out * (4 if dtype == "float32" else 2)


def decode_rate(build, server, cfg, batch, new_tokens, names=None, requests=None):
    flags = dict(concurrency=batch, requests=requests or batch, warmup=0, vocab=cfg["vocab_size"],
                 prompt_min=PROMPT, prompt_max=PROMPT, output_min=new_tokens, output_max=new_tokens)
    if names:
        flags.update(adapters=",".join(names), round_robin="true")
    return loadgen(build, server.addr, **flags)["throughput_tok_s"]


def peft_rate(base, dirs, dtype, device, batch, new_tokens):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    dt = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dt)
    model.generation_config.eos_token_id = None
    names = [f"a{i}" for i in range(len(dirs))]
    model = PeftModel.from_pretrained(model, dirs[0], adapter_name=names[0])
    for n, d in zip(names[1:], dirs[1:]):
        model.load_adapter(d, adapter_name=n)
    model = model.to(device=device, dtype=dt).eval()
    vocab = model.config.vocab_size
    prompts = [[(7 * i + 13 * r + 3) % vocab for i in range(PROMPT)] for r in range(batch)]
    rows = [names[r % len(names)] for r in range(batch)]
    peft_batch_rate(model, prompts, rows, 4, device)  # warm-up
    rate = peft_batch_rate(model, prompts, rows, new_tokens, device)
    del model
    return rate


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--size", default="1b", choices=sorted(SIZES))
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--many", type=int, default=1000, help="adapters in the many-adapter run")
    p.add_argument("--device-budget-mb", type=int, default=2048, help="--adapter_device_bytes in MiB there")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "adapterd-gpu-bench"))
    p.add_argument("--out", required=True)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    base = make_checkpoint(os.path.join(a.work, f"llama-{a.size}-{a.dtype}"), a.size, a.dtype)
    with open(os.path.join(base, "config.json")) as f:
        cfg = json.load(f)
    dirs = [write_lora(os.path.join(a.work, f"lora-{a.size}-{i}"), cfg, 16, 9000 + i, dtype=a.dtype)
            for i in range(32)]
    bw = copy_bandwidth(a.device)
    log(f"copy bandwidth {bw / 1e9:.1f} GB/s")
    report = {"device": a.device, "dtype": a.dtype, "size": a.size, "new_tokens": a.new_tokens,
              "copy_bandwidth_gb_s": bw / 1e9}
    common = [f"--model={base}", f"--device={a.device}", f"--dtype={a.dtype}", f"--threads={a.threads}",
              "--max_batch_size=64"]
    server = Server(a.build, common)
    try:
        server.register(dirs, prefix="a")
        names = [f"a{i}" for i in range(32)]
        decode_rate(a.build, server, cfg, 8, 8)  # warm-up
        runs = {"base_b1": [], "base_b32": [], "lora32_b32": []}
        for _ in range(a.runs):
            runs["base_b1"].append(decode_rate(a.build, server, cfg, 1, a.new_tokens))
            runs["base_b32"].append(decode_rate(a.build, server, cfg, 32, a.new_tokens))
            runs["lora32_b32"].append(decode_rate(a.build, server, cfg, 32, a.new_tokens, names))
            log({k: round(v[-1], 1) for k, v in runs.items()})
        # A capture that failed left the steps eager and said so once.
        graph_failures = server.log_lines("decode steps run without CUDA graphs")
    finally:
        server.stop()
    med = {k: statistics.median(v) for k, v in runs.items()}
    for b in (1, 32):
        bound = b * bw / step_bytes(cfg, a.dtype, b, a.new_tokens)
        report[f"base_b{b}"] = dict(tok_s=med[f"base_b{b}"], bound_tok_s=bound, share=med[f"base_b{b}"] / bound)
    report["lora32_b32"] = dict(tok_s=med["lora32_b32"], vs_base=med["lora32_b32"] / med["base_b32"])
    # The same 32 adapters with the deltas as LibTorch products (no kernels of ours).
    server = Server(a.build, common + ["--delta_backend=aten"])
    try:
        server.register(dirs, prefix="a")
        decode_rate(a.build, server, cfg, 8, 8, names[:8])  # warm-up
        runs["lora32_b32_aten"] = [decode_rate(a.build, server, cfg, 32, a.new_tokens, names) for _ in range(a.runs)]
    finally:
        server.stop()
    aten = statistics.median(runs["lora32_b32_aten"])
    report["lora32_b32_aten"] = dict(tok_s=aten, vs_base=aten / med["base_b32"])
    # The same runs with every decode step launched as it comes (no graphs).
    server = Server(a.build, common + ["--cuda_graphs=off"])
    off = {"base_b1": [], "base_b32": [], "lora32_b32": []}
    try:
        server.register(dirs, prefix="a")
        decode_rate(a.build, server, cfg, 8, 8)  # warm-up
        for _ in range(a.runs):
            off["base_b1"].append(decode_rate(a.build, server, cfg, 1, a.new_tokens))
            off["base_b32"].append(decode_rate(a.build, server, cfg, 32, a.new_tokens))
            off["lora32_b32"].append(decode_rate(a.build, server, cfg, 32, a.new_tokens, names))
            log({f"{k} graphs off": round(v[-1], 1) for k, v in off.items()})
    finally:
        server.stop()
    report["cuda_graphs"] = {k: dict(auto_tok_s=med[k], off_tok_s=statistics.median(v),
                                     auto_over_off=med[k] / statistics.median(v)) for k, v in off.items()}
    report["cuda_graphs"]["capture_failures"] = graph_failures
    runs.update({f"{k}_graphs_off": v for k, v in off.items()})

    # The LoRA slot pool holds as many rank-16 adapters as the budget does.
    slots = max(1, (a.device_budget_mb << 20) // lora_bytes(cfg, 16, a.dtype))
    server = Server(a.build, common + [f"--adapter_device_bytes={a.device_budget_mb << 20}",
                                       f"--adapter_slots={slots}", "--adapter_slot_rank=16"])
    try:
        ids = [f"m{i}" for i in range(a.many)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: server.ctl("load", f"--id={ids[i]}", f"--path={dirs[i % 8]}"), range(a.many)))
        many = {"8": [], str(a.many): []}
        decode_rate(a.build, server, cfg, 32, 8, ids[:8])
        for _ in range(a.runs):
            many["8"].append(decode_rate(a.build, server, cfg, 32, a.new_tokens, ids[:8]))
            many[str(a.many)].append(decode_rate(a.build, server, cfg, 32, a.new_tokens, ids, requests=64))
            log({k: round(v[-1], 1) for k, v in many.items()})
    finally:
        server.stop()
    m8, mn = statistics.median(many["8"]), statistics.median(many[str(a.many)])
    report["many_adapters_b32"] = {"adapters_8_tok_s": m8, f"adapters_{a.many}_tok_s": mn, "drop": 1 - mn / m8,
                                   "device_budget_mb": a.device_budget_mb, "adapter_slots": slots}
    peft = peft_rate(base, dirs, a.dtype, a.device, 32, a.new_tokens)
    report["peft_lora32_b32"] = dict(tok_s=peft, adapterd_over_peft=med["lora32_b32"] / peft)
    report["runs"] = {**runs, **{f"many_{k}": v for k, v in many.items()}}
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"| measure ({a.size}, {a.dtype}, {a.device}) | tok/s | against |")
    print("|---|---:|---|")
    for b in (1, 32):
        r = report[f"base_b{b}"]
        print(f"| base, batch {b} | {r['tok_s']:.1f} | {100 * r['share']:.0f}% of the bandwidth bound "
              f"({r['bound_tok_s']:.1f}) |")
    print(f"| 32 distinct rank-16 LoRAs, batch 32 | {med['lora32_b32']:.1f} | "
          f"{report['lora32_b32']['vs_base']:.2f}x the base |")
    print(f"| the same, deltas as LibTorch products (--delta_backend=aten) | {aten:.1f} | "
          f"{report['lora32_b32_aten']['vs_base']:.2f}x the base |")
    print(f"| 8 -> {a.many} adapters, batch 32, device tier {a.device_budget_mb} MiB in {slots} slots | "
          f"{m8:.1f} -> {mn:.1f} | "
          f"drop {100 * (1 - mn / m8):.1f}% |")
    print(f"| PEFT generate(adapter_names), 32 adapters, batch 32 | {peft:.1f} | adapterd "
          f"{report['peft_lora32_b32']['adapterd_over_peft']:.2f}x |")
    for k, label in (("base_b1", "base, batch 1"), ("base_b32", "base, batch 32"),
                     ("lora32_b32", "32 distinct rank-16 LoRAs, batch 32")):
        r = report["cuda_graphs"][k]
        print(f"| {label}, --cuda_graphs=off | {r['off_tok_s']:.1f} | --cuda_graphs=auto "
              f"{r['auto_over_off']:.2f}x |")
    if graph_failures:
        print(f"| CUDA graph capture failed, steps ran eagerly | - | {graph_failures[0]} |")


if __name__ == "__main__":
    main()
