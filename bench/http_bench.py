"""`./x bench http` (bench/http_bench.py): the same closed-loop workload through gRPC and through the
OpenAI-compatible HTTP API (SSE), side by side on one server.

One adapterd process serves the demo model (or the ~100M Llama) with n
rank-16 LoRAs on all seven projections, over gRPC and HTTP at once.
adapterd_loadgen drives it with the workload drawn from one seed (prompts as
token ids, greedy, EOS ignored, adapters round-robin): once over gRPC
(GenerateStream) and once with --http (streamed /v1/completions, one
keep-alive connection per client, token ids returned so tokens are counted
exactly). Runs alternate between the two and medians are reported.
"""
import json
import os
import statistics

from common import Server, ensure_model, load_config, loadgen, log, work_dir, write_lora


def add_parser(sub, cpus):
    p = sub.add_parser("http", help="gRPC vs HTTP/SSE: the same closed-loop workload, alternating")
    p.add_argument("--model", default="demo", choices=["demo", "llama-100m"])
    p.add_argument("--adapters", type=int, default=64)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--prompt-min", type=int, default=16)
    p.add_argument("--prompt-max", type=int, default=64)
    p.add_argument("--output-min", type=int, default=32)
    p.add_argument("--output-max", type=int, default=64)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=cpus)
    p.add_argument("--http-threads", type=int, default=2)


def cmd_http(a):
    work = work_dir()
    base = ensure_model(work, a.model, a.build)
    cfg = load_config(base)
    dirs = [write_lora(os.path.join(work, f"fast-{a.model}-r{a.rank}-{i}"), cfg, a.rank, 5000 + i)
            for i in range(a.adapters)]
    server = Server(a.build, [f"--model={base}", f"--threads={a.threads}", f"--max_batch_size={a.concurrency}",
                              "--http_listen=127.0.0.1:0", f"--http_threads={a.http_threads}"])
    try:
        server.register(dirs)
        common = dict(concurrency=a.concurrency, requests=a.requests, warmup=a.concurrency, vocab=cfg["vocab_size"],
                      prompt_min=a.prompt_min, prompt_max=a.prompt_max, output_min=a.output_min,
                      output_max=a.output_max, round_robin="true",
                      adapters=",".join(f"t{i}" for i in range(a.adapters)))
        rows = []
        for run in range(a.runs):
            # Alternate which transport goes first, so drift hits both alike.
            order = ["grpc", "http"] if run % 2 == 0 else ["http", "grpc"]
            for transport in order:
                extra = {"http": server.http} if transport == "http" else {}
                r = loadgen(a.build, server.addr, seed=run + 1, **extra, **common)
                rows.append(dict(transport=transport, run=run, **r))
                log(f"run {run} {transport}: {r['throughput_tok_s']:.1f} tok/s, TTFT p50 "
                    f"{r['ttft_p50_s'] * 1000:.2f} ms, errors {r['errors']}")
    finally:
        server.stop()
    keys = ("throughput_tok_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s")
    med = {t: {k: statistics.median(r[k] for r in rows if r["transport"] == t) for k in keys}
           for t in ("grpc", "http")}
    print(f"gRPC vs HTTP/SSE on {a.model}, fp32, {a.threads} compute threads, {a.http_threads} HTTP I/O threads, "
          f"{a.adapters} rank-{a.rank} LoRAs (all 7 projections) round-robin, closed loop at concurrency "
          f"{a.concurrency}, {a.requests} requests per run, prompts {a.prompt_min}-{a.prompt_max}, outputs "
          f"{a.output_min}-{a.output_max}, greedy; medians of {a.runs} alternating runs:\n")
    print("| transport | tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for t in ("grpc", "http"):
        m = med[t]
        errors = sum(r["errors"] for r in rows if r["transport"] == t)
        print(f"| {t} | {m['throughput_tok_s']:.1f} | {m['ttft_p50_s'] * 1000:.2f} | {m['ttft_p99_s'] * 1000:.2f} | "
              f"{m['tpot_p50_s'] * 1000:.2f} | {m['tpot_p99_s'] * 1000:.2f} | {errors} |")
    ratio = med["http"]["throughput_tok_s"] / med["grpc"]["throughput_tok_s"]
    ttft = (med["http"]["ttft_p50_s"] - med["grpc"]["ttft_p50_s"]) * 1000
    # The runs are paired (same seed, back to back): their ratios say more than the medians' ratio.
    paired = [next(r for r in rows if r["transport"] == "http" and r["run"] == run)["throughput_tok_s"] /
              next(r for r in rows if r["transport"] == "grpc" and r["run"] == run)["throughput_tok_s"]
              for run in range(a.runs)]
    print(f"\nHTTP / gRPC throughput: {ratio:.3f} (target >= 0.97); paired per run: "
          + ", ".join(f"{p:.3f}" for p in paired) + f" (median {statistics.median(paired):.3f}); "
          f"TTFT p50 difference: {ttft:+.2f} ms (target within 2 ms)")
    print("\n" + json.dumps({"medians": med, "paired_ratios": paired, "runs": rows}))
