"""`./x bench step` (bench/step.py): the batched step against the machine's
own ceilings, measured in the same run.

Ceilings, with the LibTorch build adapterd links (Debian's python3-torch
wraps the same libtorch), on --threads threads, for each dtype, the faster
of LibTorch's linear and oneDNN on weights packed once:
  - matmul: the products of one forward of the ~100M Llama as the server
    runs them (q/k/v as one, o, gate/up as one, down per layer, and the LM
    head) at batch 64, as GFLOP/s;
  - GEMV: the same products at batch 1, as GB/s of weights streamed;
  - read: a plain read of 1 GiB (a float32 sum), as GB/s: what bounds a
    step's adapter work, which reads every distinct adapter's A and B once.
Then adapterd on the same model and dtype: closed-loop decode at batch 1, 8,
32 and 64 (prompt 16, --new-tokens new tokens, each stream through the base
or through its own rank-16 LoRA on all projections), as tok/s and as a share
of the ceiling: model FLOPs per token times tok/s against the matmul
ceiling, and at batch 1 weight bytes per token times tok/s against the GEMV
rate. The ceilings are measured again before each round of runs (one round
per --runs), and each run is judged against the ones just before it: the
machine's speed drifts with its neighbours. Each run's step breakdown
comes from the server's
adapterd_step_seconds_total{part} (gemm, attention, adapters, sampling,
other), read before and after the run. For the adapter rows it also prints
the adapters' bytes per step, the rate the adapters part read them at, and
the adapters / base ratio that a read at the read ceiling would allow: the
base run's step time over that plus the adapters' bytes at that rate.
"""
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

from common import MODEL_100M, Server, ensure_model, load_config, loadgen, log, work_dir, write_lora

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
PARTS = ("gemm", "attention", "adapters", "sampling", "other")


def add_parser(sub, cpus):
    p = sub.add_parser("step", help="matmul/GEMV ceilings, then decode at batch 1-64 as a share of them")
    p.add_argument("--threads", type=int, default=cpus)
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--adapters", type=int, default=64)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--adapter-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype the adapters' files are saved in")
    p.add_argument("--lora-dtype", default="auto", choices=["auto", "bfloat16", "float16"],
                   help="the server's --lora_dtype (applies to the fp32 server only)")
    p.add_argument("--skinny-gemm-rows", type=int, default=-1,
                   help="the server's --skinny_gemm_rows (0: LibTorch for every base product)")
    p.add_argument("--prepack-weights", choices=["true", "false"], default="true",
                   help="the server's --prepack_weights (false: no packed copy of the base's weights)")
    p.add_argument("--keep-freed-mb", type=int, default=1024,
                   help="the server's --keep_freed_mb (0: freed step memory goes back to the kernel)")
    p.add_argument("--kinds", default="base,adapters",
                   help="which streams to run: through the base, through distinct adapters, or both")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=3)


def linear_shapes(cfg):
    """[(out, in)] of one forward's linear layers, the LM head included."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    hd = h // cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * hd
    layer = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]
    return layer * cfg["num_hidden_layers"] + [(cfg["vocab_size"], h)]


def gemm_shapes(cfg):
    """[(out, in)] of the products one forward runs: the server concatenates
    q/k/v and gate/up at load, so each layer is four GEMMs; the LM head last."""
    shapes = linear_shapes(cfg)
    (q, h), (k, _), (v, _), o, (g, _), (u, _), down = shapes[:7]
    return [(q + k + v, h), o, (g + u, h), down] * cfg["num_hidden_layers"] + shapes[-1:]


def ceilings(cfg, dtype, threads, reps=5, blocks=2):
    """(matmul GFLOP/s at batch 64, GEMV GB/s at batch 1) over the products
    the server's step runs (gemm_shapes).

    Each is the faster of two ways LibTorch runs the products: its linear
    (OpenBLAS or oneDNN, whichever it picks for the dtype), and oneDNN on a
    copy of the weights packed once (mkldnn's _reorder_linear_weight and
    _linear_pointwise, what the server's --prepack_weights calls), where this
    build has it. Both are reported; the faster is the ceiling.

    Each way is timed in blocks of `reps` passes after 0.2 s of warm-up
    passes, and the blocks of the two ways alternate. A pass of one way
    right after the other's would be timed against the other library's idle
    workers, which spin on the cores for a while after each call (OpenBLAS's after linear,
    OpenMP's after oneDNN): timed pass by pass alternately, oneDNN's packed
    float32 product ran at 80-190 GFLOP/s against 400-450 on its own on a
    2-core EPYC. The server has no such fight: OpenBLAS runs its jobs on
    ATen's pool there (server/common/compute_threads.cc).
    """
    import torch
    torch.set_num_threads(threads)
    dt = getattr(torch, DTYPES[dtype])
    shapes = gemm_shapes(cfg)
    weights = [torch.randn(o, i, dtype=dt) * 0.02 for o, i in shapes]
    ways = {"linear": (weights, torch.nn.functional.linear)}
    try:
        packed = [torch.ops.mkldnn._reorder_linear_weight(w, 64) for w in weights]
        ways["packed"] = (packed, lambda x, w: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""))
    except (AttributeError, RuntimeError):
        pass
    out = {}
    for batch in (64, 1):
        xs = [torch.randn(batch, i, dtype=dt) for _, i in shapes]
        best = {}
        with torch.inference_mode():
            for _ in range(blocks):  # the ways' blocks alternate
                for name, (ws, fn) in ways.items():
                    t_warm = time.perf_counter()
                    while time.perf_counter() - t_warm < 0.2:  # warm-up: the other way's workers go idle
                        for x, w in zip(xs, ws):
                            fn(x, w)
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        for x, w in zip(xs, ws):
                            fn(x, w)
                        best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
        if batch == 64:
            rates = {n: sum(2 * 64 * o * i for o, i in shapes) / t / 1e9 for n, t in best.items()}
            out["matmul_gflops"] = max(rates.values())
            out["matmul_gflops_by_way"] = rates
        else:
            rates = {n: sum(w.numel() * w.element_size() for w in weights) / t / 1e9 for n, t in best.items()}
            out["gemv_gbs"] = max(rates.values())
            out["gemv_gbs_by_way"] = rates
    out["read_gbs"] = read_rate(threads)
    return out


def ceilings_apart(cfg, dtype, threads):
    """ceilings() in a process of its own. LibTorch's and OpenBLAS's workers
    spin on the cores for a while after their last call; in this process
    they would take cores from the server's next run (a batch-1 run lasts a
    quarter of a second). The child's workers end with it."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import step; "
            "print(json.dumps(step.ceilings(json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]))))")
    out = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__)), json.dumps(cfg),
                          dtype, str(threads)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def read_rate(threads, reps=5):
    """GB/s of the fastest of `reps` plain reads (a float32 sum over
    `threads` threads) of 1 GiB, several times the last-level cache."""
    import torch
    torch.set_num_threads(threads)
    buf = torch.ones(1 << 28, dtype=torch.float32)
    best = float("inf")
    with torch.inference_mode():
        buf.sum()
        for _ in range(reps):
            t0 = time.perf_counter()
            buf.sum()
            best = min(best, time.perf_counter() - t0)
    return buf.numel() * buf.element_size() / best / 1e9


def adapter_bytes(cfg, rank, itemsize):
    """Bytes of one rank-`rank` LoRA on every projection of every layer
    (A and B), with elements of `itemsize` bytes."""
    return sum(rank * (o + i) for o, i in linear_shapes(cfg)[:-1]) * itemsize


def adapter_itemsize(a, dtype):
    """Bytes per element of the adapters' A and B as the server holds them."""
    if dtype != "fp32" or a.lora_dtype != "auto":
        return 2  # the model's dtype, or --lora-dtype's half precision
    return 4 if a.adapter_dtype == "float32" else 2


def model_cost(cfg, dtype, context):
    """(FLOPs per generated token, weight bytes read per step) of the linear layers and attention."""
    shapes = linear_shapes(cfg)
    flops = sum(2 * o * i for o, i in shapes)
    flops += 4 * cfg["num_hidden_layers"] * cfg["hidden_size"] * context  # q.k and p.v
    per = 4 if dtype == "fp32" else 2
    return flops, sum(o * i for o, i in shapes) * per


def request_flops(cfg, prompt, new_tokens):
    """FLOPs of one request's whole forward work, prefill included: the
    prompt's rows and every generated token but the last go through the
    layers, each generated token through the LM head, and each row's
    attention covers the positions up to its own."""
    shapes = linear_shapes(cfg)
    layer_flops = sum(2 * o * i for o, i in shapes[:-1])
    head_flops = 2 * shapes[-1][0] * shapes[-1][1]
    rows = prompt + new_tokens - 1
    attention = 4 * cfg["num_hidden_layers"] * cfg["hidden_size"] * rows * (rows + 1) // 2
    return rows * layer_flops + new_tokens * head_flops + attention


def step_seconds(metrics_addr):
    """{part: seconds} of adapterd_step_seconds_total, and the step count."""
    with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=10) as r:
        text = r.read().decode()
    parts, steps = {}, 0.0
    for line in text.splitlines():
        if line.startswith("adapterd_step_seconds_total{"):
            part = line.split('part="', 1)[1].split('"', 1)[0]
            parts[part] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("adapterd_steps_total "):
            steps = float(line.rsplit(" ", 1)[1])
    return parts, steps


def minor_faults(pid):
    """Minor page faults of process `pid` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def metrics_address(server):
    with open(os.path.join(server.tmp, "ready.json")) as f:
        return json.load(f)["metrics"]


def serve_runs(a, base, cfg, dtype, dirs):
    """{(batch, kind): [run results]} for one dtype's server."""
    lora_dtype = a.lora_dtype if dtype == "fp32" else "auto"
    server = Server(a.build, [f"--model={base}", f"--threads={a.threads}", f"--dtype={DTYPES[dtype]}",
                              "--max_batch_size=64", "--kv_cache_mb=512", f"--lora_dtype={lora_dtype}",
                              f"--skinny_gemm_rows={a.skinny_gemm_rows}",
                              f"--prepack_weights={a.prepack_weights}", f"--keep_freed_mb={a.keep_freed_mb}"])
    metrics = metrics_address(server)
    res, ceils = {}, []
    try:
        server.register(dirs, prefix="s")
        names = [f"s{i}" for i in range(len(dirs))]
        common = dict(warmup=0, vocab=cfg["vocab_size"], prompt_min=16, prompt_max=16,
                      output_min=a.new_tokens, output_max=a.new_tokens)
        loadgen(a.build, server.addr, requests=8, concurrency=8, **dict(common, output_min=4, output_max=4))
        for run in range(a.runs):
            # The machine's speed drifts with its neighbours: each round of
            # runs is judged against a ceiling measured just before it.
            ceils.append(ceilings_apart(cfg, dtype, a.threads))
            log(f"{dtype} run {run} ceilings: {ceils[-1]}")
            for b in [int(x) for x in a.batches.split(",")]:
                for kind in a.kinds.split(","):
                    extra = {"adapters": ",".join(names[:max(b, 1)]), "round_robin": "true"} if kind == "adapters" else {}
                    before, steps0 = step_seconds(metrics)
                    faults0 = minor_faults(server.proc.pid)
                    r = loadgen(a.build, server.addr, requests=b, concurrency=b, seed=run + 1, **extra, **common)
                    r["faults"] = minor_faults(server.proc.pid) - faults0
                    after, steps1 = step_seconds(metrics)
                    r["parts"] = {p: after.get(p, 0) - before.get(p, 0) for p in PARTS}
                    r["steps"] = steps1 - steps0
                    r["ceiling"] = ceils[-1]
                    res.setdefault((b, kind), []).append(r)
                    log(f"{dtype} run {run} batch {b} {kind}: {r['throughput_tok_s']:.1f} tok/s, "
                        f"{r['steps']:.0f} steps")
    finally:
        server.stop()
    return res, ceils


def median_ceiling(ceils):
    """The per-round ceilings' medians, each figure on its own."""
    out = {k: statistics.median(c[k] for c in ceils) for k in ("matmul_gflops", "gemv_gbs", "read_gbs")}
    for k in ("matmul_gflops_by_way", "gemv_gbs_by_way"):
        out[k] = {w: statistics.median(c[k][w] for c in ceils) for w in ceils[0][k]}
    return out


def report(a, cfg, dtype, ceil, res):
    flops, weight_bytes = model_cost(cfg, dtype, 16 + a.new_tokens // 2)
    ways = ", ".join(f"{n} {v:.1f}" for n, v in ceil["matmul_gflops_by_way"].items())
    gemv_ways = ", ".join(f"{n} {v:.2f}" for n, v in ceil["gemv_gbs_by_way"].items())
    print(f"\n{dtype}: matmul ceiling {ceil['matmul_gflops']:.1f} GFLOP/s at batch 64 ({ways}), GEMV "
          f"{ceil['gemv_gbs']:.2f} GB/s at batch 1 ({gemv_ways}) (the model's own shapes, {a.threads} threads), "
          f"read {ceil['read_gbs']:.1f} GB/s\n")
    per_request = request_flops(cfg, 16, a.new_tokens)
    print("| batch | streams through | tok/s | share of ceiling | share, prefill included | adapters / base | gemm | "
          "attention | adapters | sampling | other | page faults / step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = {}
    for (b, kind), runs in sorted(res.items(), key=lambda kv: (kv[0][0], kv[0][1] != "base")):
        tok_s = statistics.median(r["throughput_tok_s"] for r in runs)
        if b == 1:
            share = statistics.median(r["throughput_tok_s"] * weight_bytes / 1e9 / r["ceiling"]["gemv_gbs"]
                                      for r in runs)
        else:
            share = statistics.median(r["throughput_tok_s"] * flops / 1e9 / r["ceiling"]["matmul_gflops"]
                                      for r in runs)
        # All the model arithmetic a run did, its prompts' prefill included,
        # per second of its wall time.
        share_all = statistics.median(r["requests"] * per_request / r["wall_s"] / 1e9
                                      / r["ceiling"]["matmul_gflops"] for r in runs)
        parts = {p: sum(r["parts"][p] for r in runs) for p in PARTS}
        total = sum(parts.values()) or 1.0
        faults = statistics.median(r["faults"] / max(r["steps"], 1.0) for r in runs)
        rows[(b, kind)] = dict(tok_s=tok_s, share=share, share_with_prefill=share_all,
                               parts={p: v / total for p, v in parts.items()})
        ratio = f"{tok_s / rows[(b, 'base')]['tok_s']:.2f}" if kind == "adapters" and (b, "base") in rows else ""
        print(f"| {b} | {f'{b} distinct rank-{a.rank} LoRAs' if kind == 'adapters' else 'base'} | "
              f"{tok_s:.1f} | {share * 100:.0f}% {'GEMV' if b == 1 else 'matmul'} | "
              f"{'' if b == 1 else f'{share_all * 100:.0f}% matmul'} | {ratio} | "
              + " | ".join(f"{parts[p] / total * 100:.0f}%" for p in PARTS) + f" | {faults:.0f} |")
    report_adapter_reads(a, cfg, dtype, res, rows)
    return rows


def report_adapter_reads(a, cfg, dtype, res, rows):
    """The adapter rows' reads against the read ceiling, run by run (each
    adapters run paired with the base run of its round and batch)."""
    pairs = [(b, list(zip(res[(b, "base")], runs))) for (b, kind), runs in sorted(res.items())
             if kind == "adapters" and (b, "base") in res]
    if not pairs:
        return
    print(f"\nAdapter reads ({dtype}; A and B in {adapter_itemsize(a, dtype)}-byte elements):\n")
    print("| batch | A and B per step | adapters part per step | read at | read ceiling | adapters / base | "
          "adapters / base the read ceiling allows |")
    print("|---|---|---|---|---|---|---|")
    for b, runs in pairs:
        nbytes = b * adapter_bytes(cfg, a.rank, adapter_itemsize(a, dtype))
        vals = []
        for base, ad in runs:
            t_base = sum(base["parts"].values()) / max(base["steps"], 1)
            t_ad = ad["parts"]["adapters"] / max(ad["steps"], 1)
            ceiling = ad["ceiling"]["read_gbs"] * 1e9
            vals.append(dict(t_ad=t_ad, rate=nbytes / t_ad if t_ad > 0 else 0.0, ceiling=ceiling,
                             ratio=ad["throughput_tok_s"] / base["throughput_tok_s"],
                             bound=t_base / (t_base + nbytes / ceiling)))
        med = {k: statistics.median(v[k] for v in vals) for k in vals[0]}
        rows[(b, "adapters")]["reads"] = dict(bytes_per_step=nbytes, **med)
        print(f"| {b} | {nbytes / 1e6:.0f} MB | {med['t_ad'] * 1e3:.1f} ms | {med['rate'] / 1e9:.1f} GB/s | "
              f"{med['ceiling'] / 1e9:.1f} GB/s | {med['ratio']:.2f} | {med['bound']:.2f} |")


def cmd_step(a):
    if not set(a.kinds.split(",")) <= {"base", "adapters"}:
        raise SystemExit(f"--kinds: expected base and/or adapters, got {a.kinds!r}")
    work = work_dir()
    base = ensure_model(work, "llama-100m", a.build)
    cfg = load_config(base)
    suffix = "" if a.adapter_dtype == "float32" else f"-{a.adapter_dtype}"
    dirs = [write_lora(os.path.join(work, f"step-r{a.rank}-{i}{suffix}"), cfg, a.rank, 7000 + i,
                       dtype=a.adapter_dtype)
            for i in range(a.adapters)]
    out = {}
    for dtype in a.dtypes.split(","):
        res, ceils = serve_runs(a, base, cfg, dtype, dirs)
        ceil = median_ceiling(ceils)
        out[dtype] = dict(ceiling=ceil, ceilings=ceils, runs={f"{b}-{k}": v for (b, k), v in res.items()})
        out[dtype]["rows"] = {f"{b}-{k}": v for (b, k), v in report(a, cfg, dtype, ceil, res).items()}
    print(f"\nThe ~100M Llama ({MODEL_100M['layers']} layers, hidden {MODEL_100M['hidden']}), prompt 16, "
          f"{a.new_tokens} new tokens, closed loop with as many streams as the batch, {a.threads} threads, "
          f"adapters saved in {a.adapter_dtype} (fp32 server: --lora_dtype={a.lora_dtype}), "
          f"--skinny_gemm_rows={a.skinny_gemm_rows}, --prepack_weights={a.prepack_weights}, "
          f"--keep_freed_mb={a.keep_freed_mb}, "
          f"median of {a.runs} runs; share of ceiling = model FLOPs (linear layers and attention) x tok/s "
          f"over the matmul ceiling, at batch 1 weight bytes x tok/s over the GEMV rate; share, prefill included = "
          f"each request's forward arithmetic (prompt rows and every new token but the last through the layers, "
          f"every new token through the LM head, attention up to each row's position) x requests over the run's "
          f"wall time, over the matmul ceiling; each run against the "
          f"ceilings measured just before its round (the ceilings printed are their medians); the step "
          f"breakdown sums adapterd_step_seconds_total over the runs; page faults / step = the server's minor "
          f"page faults during a run over its steps (median over the runs); adapter reads: every step reads each "
          f"distinct adapter's A and B once, and the ratio allowed is the base step's time over itself plus "
          f"those bytes at the read ceiling (medians over the runs, each against its own round).")
    if "fp32" in out and "bf16" in out and "64-base" in out["fp32"]["rows"] and "64-base" in out["bf16"]["rows"]:
        f, b = out["fp32"], out["bf16"]
        mm = b["ceiling"]["matmul_gflops"] / f["ceiling"]["matmul_gflops"]
        serve = b["rows"]["64-base"]["tok_s"] / f["rows"]["64-base"]["tok_s"]
        target = (f"target: at least 0.6 x the ceiling ratio, {0.6 * mm:.2f}x" if mm > 1 else
                  "no target here: bf16 matmul is not faster than fp32 on this machine")
        print(f"\nbf16 / fp32 at batch 64: matmul ceiling {mm:.2f}x, serving {serve:.2f}x ({target})")
    print("\nPer-run values:\n\n```json\n" + json.dumps(out) + "\n```")
