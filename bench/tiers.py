"""`./x bench tiers`: thousands of registered adapters under byte budgets.

The S-LoRA-style curve: one server with 2,000 LoRAs registered (ranks 8, 16,
32 and 64 in turn, on q/k/v/o_proj of the demo model, saved in
--adapter-dtype), device and host
budgets far smaller than all of them, and closed-loop throughput with the
workload drawn from the first n in {8, 128, 2000} under skewed (power-law)
popularity, the same load at every n. A second server with the same
adapters and no budgets (every adapter resident) runs the same workloads, so
the cost of more distinct adapters per batch shows apart from the tiers'.
Runs alternate between the n values and the two servers; medians are
reported with the ratio to n = 8 measured in the same run.

Then whether cold loads pause running streams: hot streams on 8 resident
adapters beside a second client whose every request goes to a resident
adapter (control) or to a different cold one.

Then cold-load latency of a rank-16 adapter: on a second server whose
device budget holds one such adapter, TTFT of a one-token request whose
adapter is on the device (hot), in the host tier, or on disk only, and the
server's own load time by source tier (adapterd_adapter_tier_load_seconds).
"""
import json
import threading
import os
import statistics
import urllib.request

from common import ATTN_PROJ, Server, ensure_model, load_config, loadgen, log, work_dir, write_lora

RANKS = (8, 16, 32, 64)
TARGETS = ATTN_PROJ


def write_tier_adapters(work, cfg, n, dtype, model="demo"):
    """The first n of the benchmark's adapters (ranks RANKS in turn), written once and reused."""
    tag = ("" if model == "demo" else model + "-") + ("" if dtype == "float32" else dtype + "-")
    return [write_lora(os.path.join(work, f"tier-{tag}r{RANKS[i % 4]}-{i}"), cfg, RANKS[i % 4], 9000 + i,
                       TARGETS, dtype)
            for i in range(n)]


def adapter_bytes_per_rank(cfg, dtype):
    """Bytes of a rank-1 LoRA on TARGETS of the model `cfg` describes, saved in `dtype`."""
    h = cfg["hidden_size"]
    kv = cfg["num_key_value_heads"] * (cfg.get("head_dim") or h // cfg["num_attention_heads"])
    elem = 4 if dtype == "float32" else 2
    return (2 * (h + h) + 2 * (h + kv)) * elem * cfg["num_hidden_layers"]


# The demo model's default budgets (MiB, whatever the adapters' dtype): with
# bf16 adapters about 7.5% and 30% of the 2,000 adapters' bytes. Another
# model's defaults hold the same shares of its registry.
DEMO_BUDGET_MB = (64, 256)
DEMO_CFG = dict(hidden_size=256, num_attention_heads=8, num_key_value_heads=4, num_hidden_layers=4)


def scrape(server):
    with open(os.path.join(server.tmp, "ready.json")) as f:
        metrics = json.load(f)["metrics"]
    return urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10).read().decode()


def metric_sum(text, name, labels=""):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + ("{" + labels if labels else "")) or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def prepare(a):
    """The model, its config, the adapters' directories and the budgets (filled into `a`)."""
    work = work_dir()
    base = ensure_model(work, a.model, a.build)
    cfg = load_config(base)
    n_max = max(int(x) for x in a.adapters.split(","))
    log(f"writing {n_max} adapters for {a.model} (ranks {RANKS}, {a.adapter_dtype})")
    dirs = write_tier_adapters(work, cfg, n_max, a.adapter_dtype, a.model)
    # Unless given, the budgets hold the same share of the registry as the
    # demo model's 64 and 256 MiB hold of its bf16 adapters.
    share = 1.0 if a.model == "demo" else (adapter_bytes_per_rank(cfg, a.adapter_dtype) /
                                           adapter_bytes_per_rank(DEMO_CFG, "bfloat16"))
    if a.device_mb is None:
        a.device_mb = round(DEMO_BUDGET_MB[0] * share)
    if a.host_mb is None:
        a.host_mb = round(DEMO_BUDGET_MB[1] * share)
    log(f"budgets: {a.device_mb} MiB device, {a.host_mb} MiB host; "
        f"{sum(adapter_bytes_per_rank(cfg, a.adapter_dtype) * RANKS[i % 4] for i in range(n_max)) / 2**20:.0f} MiB "
        f"of adapters registered")
    return base, cfg, dirs


def cmd_tiers(a):
    base, cfg, dirs = prepare(a)
    counts = [int(x) for x in a.adapters.split(",")]
    n_max = max(counts)
    device_bytes, host_bytes = a.device_mb << 20, a.host_mb << 20
    server_args = [f"--model={base}", f"--threads={a.threads}", f"--max_batch_size={a.concurrency}"]
    server = Server(a.build, server_args + [f"--adapter_device_bytes={device_bytes}",
                                            f"--adapter_host_bytes={host_bytes}",
                                            f"--adapter_loader_nice={a.loader_nice}"])
    # The control: the same adapters, every one resident (no budgets), so the
    # cost of more distinct adapters per batch shows apart from the tiers'.
    control = Server(a.build, server_args) if a.control else None
    common = dict(requests=a.requests, warmup=0, vocab=cfg["vocab_size"], prompt_min=a.prompt_min,
                  prompt_max=a.prompt_max, output_min=a.output_min, output_max=a.output_max,
                  concurrency=a.concurrency, alpha=a.skew)
    rows, pause_rows = [], []
    servers = [("budgets", server)] + ([("all resident", control)] if control else [])
    try:
        for label, s in servers:
            log(f"registering {n_max} adapters ({label})")
            s.register(dirs)
            loadgen(a.build, s.addr, **dict(common, requests=a.concurrency,
                                            adapters=",".join(f"t{i}" for i in range(8))))
        text = scrape(server)
        dev = metric_sum(text, "adapterd_adapter_tier_adapters", 'tier="device"')
        host = metric_sum(text, "adapterd_adapter_tier_adapters", 'tier="host"')
        log(f"registered: {dev:.0f} on the device tier, {host:.0f} in host memory")
        for run in range(a.runs):
            # Odd runs go in reverse order, so a drift in the machine's speed
            # over a run weighs on every n and both servers alike.
            order = [(n, label, s) for n in counts for label, s in servers]
            for n, label, s in (order if run % 2 == 0 else order[::-1]):
                before = scrape(s)
                r = loadgen(a.build, s.addr, seed=run + 1,
                            adapters=",".join(f"t{i}" for i in range(n)), **common)
                after = scrape(s)

                def delta(name, labels=""):
                    return metric_sum(after, name, labels) - metric_sum(before, name, labels)
                r.update(n=n, run=run, server=label, hits=delta("adapterd_adapter_cache_hits_total"),
                         misses_host=delta("adapterd_adapter_cache_misses_total", 'source_tier="host"'),
                         misses_disk=delta("adapterd_adapter_cache_misses_total", 'source_tier="disk"'),
                         evictions=delta("adapterd_adapter_evictions_total"),
                         loads=delta("adapterd_adapter_tier_load_seconds_count"),
                         load_s=delta("adapterd_adapter_tier_load_seconds_sum"),
                         device_bytes=metric_sum(after, "adapterd_adapter_tier_bytes", 'tier="device"'),
                         host_bytes=metric_sum(after, "adapterd_adapter_tier_bytes", 'tier="host"'))
                rows.append(r)
                log(f"run {run} n={n} {label}: {r['throughput_tok_s']:.1f} tok/s, hits {r['hits']:.0f}, "
                    f"misses host {r['misses_host']:.0f} disk {r['misses_disk']:.0f}, errors {r['errors']}")
        if control:
            control.stop()
            control = None
        # Do cold loads pause the streams already running? Hot streams on 8
        # resident adapters, beside a second client whose requests go to
        # resident adapters (control) or each to a different cold one.
        hot = dict(common, requests=a.pause_requests, concurrency=8, alpha=1.0, round_robin="true",
                   output_min=64, output_max=64, adapters=",".join(f"t{i}" for i in range(8)))
        side = dict(common, requests=a.pause_requests // 2, concurrency=2, alpha=1.0, round_robin="true",
                    output_min=16, output_max=16)
        cold_ids = [f"t{i}" for i in range(n_max // 2, n_max)]
        loadgen(a.build, server.addr, **dict(hot, requests=16))
        for run in range(a.runs):
            for mode in ("resident", "cold"):
                ids = "t8,t9" if mode == "resident" else ",".join(cold_ids[run * len(cold_ids) // a.runs:])
                out = {}

                def drive(key, flags):
                    out[key] = loadgen(a.build, server.addr, seed=run + 1, **flags)
                t = threading.Thread(target=drive, args=("side", dict(side, adapters=ids)))
                before = scrape(server)
                t.start()
                drive("hot", hot)
                t.join()
                after = scrape(server)
                loads = [metric_sum(after, m) - metric_sum(before, m) for m in
                         ("adapterd_adapter_tier_load_seconds_count", "adapterd_adapter_tier_load_seconds_sum")]
                pause_rows.append(dict(mode=mode, run=run, hot=out["hot"], side=out["side"], loads=loads[0],
                                       load_s=loads[1]))
                log(f"run {run} beside {mode}: hot TPOT p50 {out['hot']['tpot_p50_s']:.4f} p99 "
                    f"{out['hot']['tpot_p99_s']:.4f} s")
    finally:
        server.stop()
        if control:
            control.stop()

    # Cold loads of one rank-16 adapter: a device budget that holds one.
    r16 = [d for i, d in enumerate(dirs) if RANKS[i % 4] == 16][:2]
    one = 16 * adapter_bytes_per_rank(cfg, a.adapter_dtype)
    cold = Server(a.build, [f"--model={base}", f"--threads={a.threads}",
                            f"--adapter_device_bytes={int(one * 1.5)}", "--adapter_host_bytes=0"])
    ttft = {"device": [], "host": [], "disk": []}
    single = dict(requests=1, warmup=0, concurrency=1, vocab=cfg["vocab_size"], prompt_min=16, prompt_max=16,
                  output_min=1, output_max=1)
    try:
        cold.register(r16, prefix="c")
        for run in range(a.cold_runs):
            # disk: offloaded, so the request reads its files back.
            cold.ctl("unload", "--id=c0", "--keep_on_disk")
            ttft["disk"].append(loadgen(a.build, cold.addr, adapters="c0", seed=run + 1, **single)["ttft_p50_s"])
            ttft["device"].append(loadgen(a.build, cold.addr, adapters="c0", seed=run + 1, **single)["ttft_p50_s"])
            # c1 evicts c0 to the host tier (its files were kept by the disk read).
            loadgen(a.build, cold.addr, adapters="c1", seed=run + 1, **single)
            ttft["host"].append(loadgen(a.build, cold.addr, adapters="c0", seed=run + 1, **single)["ttft_p50_s"])
        text = scrape(cold)
        load_s = {}
        for src in ("host", "disk"):
            s = metric_sum(text, "adapterd_adapter_tier_load_seconds_sum", f'source_tier="{src}"')
            c = metric_sum(text, "adapterd_adapter_tier_load_seconds_count", f'source_tier="{src}"')
            load_s[src] = (s / c if c else float("nan"), int(c))
    finally:
        cold.stop()

    print(f"Tiered residency on the {a.model} model, fp32, {a.threads} threads: {n_max} LoRAs registered "
          f"(ranks {'/'.join(map(str, RANKS))} in turn on {', '.join(TARGETS)}, saved in {a.adapter_dtype}), device budget {a.device_mb} MiB, "
          f"host budget {a.host_mb} MiB, loader nice {a.loader_nice}; closed loop at concurrency {a.concurrency}, {a.requests} requests per "
          f"point, prompts {a.prompt_min}-{a.prompt_max}, outputs {a.output_min}-{a.output_max}, power-law "
          f"popularity alpha {a.skew}; medians of {a.runs} runs:\n")
    print("| adapters in the workload | server | tok/s | vs n = " + str(counts[0]) +
          " | paired ratio | device hits | misses from host | misses from disk | evictions | mean load ms |"
          " TTFT p50 s | TPOT p50 s | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ref = {}
    for n in counts:
        for label in dict.fromkeys(r["server"] for r in rows):
            sel = [r for r in rows if r["n"] == n and r["server"] == label]
            med = {k: statistics.median(r[k] for r in sel) for k in
                   ("throughput_tok_s", "ttft_p50_s", "tpot_p50_s", "hits", "misses_host", "misses_disk",
                    "evictions")}
            loads = sum(r["loads"] for r in sel)
            med["load_ms"] = 1000 * sum(r["load_s"] for r in sel) / loads if loads else None
            ref.setdefault(label, med["throughput_tok_s"])
            # Per run, this n over the first n of the same server in the same run.
            first = {r["run"]: r["throughput_tok_s"] for r in rows if r["n"] == counts[0] and r["server"] == label}
            paired = statistics.median(r["throughput_tok_s"] / first[r["run"]] for r in sel)
            load_ms = "-" if med["load_ms"] is None else f"{med['load_ms']:.1f}"
            print(f"| {n} | {label} | {med['throughput_tok_s']:.1f} | {med['throughput_tok_s'] / ref[label]:.3f} | "
                  f"{paired:.3f} | {med['hits']:.0f} | {med['misses_host']:.0f} | {med['misses_disk']:.0f} | "
                  f"{med['evictions']:.0f} | {load_ms} | "
                  f"{med['ttft_p50_s']:.3f} | {med['tpot_p50_s']:.4f} | {sum(r['errors'] for r in sel)} |")
    print(f"\nHot streams (8 clients, 8 resident adapters, 64-token outputs) beside a second client (2 at a "
          f"time, 16-token outputs) whose every request goes to a resident adapter, or to a different cold one "
          f"(registered, on disk); medians of {a.runs} runs:\n")
    print("| second client's adapters | hot TPOT p50 s | hot TPOT p99 s | hot tok/s | second client's TTFT p50 s |"
          " loads | mean load ms |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("resident", "cold"):
        sel = [r for r in pause_rows if r["mode"] == mode]
        if not sel:
            continue
        med = lambda f: statistics.median(f(r) for r in sel)  # noqa: E731
        print(f"| {mode} | {med(lambda r: r['hot']['tpot_p50_s']):.4f} | {med(lambda r: r['hot']['tpot_p99_s']):.4f} | "
              f"{med(lambda r: r['hot']['throughput_tok_s']):.1f} | {med(lambda r: r['side']['ttft_p50_s']):.4f} | "
              f"{sum(r['loads'] for r in sel):.0f} | "
              + (f"{1000 * sum(r['load_s'] for r in sel) / sum(r['loads'] for r in sel):.1f}"
                 if sum(r['loads'] for r in sel) else "-") + " |")
    print(f"\nCold load of a rank-16 adapter ({a.cold_runs} runs, one-token requests with 16-token prompts):\n")
    print("| adapter was on | TTFT median s | server load time, mean s (loads) |")
    print("|---|---|---|")
    for tier in ("device", "host", "disk"):
        lt = load_s.get(tier)
        print(f"| {tier} | {statistics.median(ttft[tier]):.4f} | "
              + (f"{lt[0]:.4f} ({lt[1]})" if lt else "-") + " |")
    print("\n" + json.dumps({"rows": rows, "pause": pause_rows, "ttft": ttft, "load_s": load_s}))


def add_workload_args(t, model, runs):
    """The model, adapters, budgets and closed-loop workload flags both tiers commands take."""
    t.add_argument("--adapters", default="8,128,2000")
    t.add_argument("--model", default=model, choices=["demo", "llama-100m"])
    t.add_argument("--device-mb", type=int, default=None,
                   help="device budget (default: 64 for the demo model's bf16 adapters, the same share otherwise)")
    t.add_argument("--host-mb", type=int, default=None,
                   help="host budget (default: 256 for the demo model's bf16 adapters, the same share otherwise)")
    t.add_argument("--requests", type=int, default=256)
    t.add_argument("--concurrency", type=int, default=16)
    t.add_argument("--skew", type=float, default=0.3, help="power-law alpha (loadgen --alpha)")
    t.add_argument("--prompt-min", type=int, default=8)
    t.add_argument("--prompt-max", type=int, default=32)
    t.add_argument("--output-min", type=int, default=16)
    t.add_argument("--output-max", type=int, default=64)
    t.add_argument("--runs", type=int, default=runs)


def add_parser(sub, cpu_count):
    t = sub.add_parser("tiers", help="2,000 adapters under byte budgets: throughput vs n, cold-load latency")
    add_workload_args(t, model="demo", runs=3)
    t.add_argument("--cold-runs", type=int, default=7)
    t.add_argument("--control", type=int, default=1, help="also run a server with every adapter resident")
    t.add_argument("--pause-requests", type=int, default=64, help="hot-stream requests per pause run")
    t.add_argument("--threads", type=int, default=cpu_count)
    t.add_argument("--loader-nice", type=int, default=5, help="the budgeted server's --adapter_loader_nice")
    t.add_argument("--adapter-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype the adapters are saved in (half precision stays so on the fp32 base)")


def cmd_loader_nice(a):
    """Side by side: a server with every adapter resident and budgeted servers
    that differ only in --adapter_loader_nice, each under the workload over
    the first 8 and over all registered adapters."""
    if a.adapters <= 8:
        raise SystemExit("loader-nice: --adapters must be more than 8 (it is compared with the workload over 8)")
    work = work_dir()
    base = ensure_model(work, "demo", a.build)
    cfg = load_config(base)
    dirs = write_tier_adapters(work, cfg, a.adapters, a.adapter_dtype)
    budgets = [f"--adapter_device_bytes={a.device_mb << 20}", f"--adapter_host_bytes={a.host_mb << 20}"]
    configs = [("all resident", [])] + [(f"nice {n}", budgets + [f"--adapter_loader_nice={n}"])
                                        for n in (int(x) for x in a.nice.split(","))]
    common = dict(requests=a.requests, warmup=0, vocab=cfg["vocab_size"], prompt_min=8, prompt_max=32,
                  output_min=16, output_max=64, concurrency=16, alpha=a.skew)
    workloads = {"8": ",".join(f"t{i}" for i in range(8)),
                 str(a.adapters): ",".join(f"t{i}" for i in range(a.adapters))}
    servers, res = [], {}
    try:
        for label, extra in configs:
            s = Server(a.build, [f"--model={base}", f"--threads={a.threads}", "--max_batch_size=16"] + extra)
            servers.append((label, s))
            log(f"registering {a.adapters} adapters ({label})")
            s.register(dirs)
            loadgen(a.build, s.addr, **dict(common, requests=32, adapters=workloads["8"]))
        for run in range(a.runs):
            for label, s in servers:
                for n, ids in workloads.items():
                    r = loadgen(a.build, s.addr, seed=run + 1, adapters=ids, **common)
                    res.setdefault((label, n), []).append(r)
                    log(f"run {run} {label} n={n}: {r['throughput_tok_s']:.1f} tok/s, TTFT p50 {r['ttft_p50_s']:.4f}")
    finally:
        for _, s in servers:
            s.stop()
    n8, nn = workloads
    print(f"Loader priority on the demo model, {a.threads} threads: {a.adapters} LoRAs registered (ranks "
          f"{'/'.join(map(str, RANKS))}, saved in {a.adapter_dtype}); budgets {a.device_mb} MiB device and "
          f"{a.host_mb} MiB host; closed loop at concurrency 16, {a.requests} requests per point, power-law alpha "
          f"{a.skew}; medians of {a.runs} runs, the servers side by side in each:\n")
    print(f"| server | tok/s, n = {n8} | tok/s, n = {nn} | paired ratio | TTFT p50 s, n = {nn} | errors |")
    print("|---|---|---|---|---|---|")
    for label, _ in servers:
        a8, an = res[(label, n8)], res[(label, nn)]
        med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
        ratio = statistics.median(y["throughput_tok_s"] / x["throughput_tok_s"] for x, y in zip(a8, an))
        print(f"| {label} | {med(a8, 'throughput_tok_s'):.1f} | {med(an, 'throughput_tok_s'):.1f} | {ratio:.3f} | "
              f"{med(an, 'ttft_p50_s'):.4f} | {sum(r['errors'] for r in a8 + an)} |")
    print("\n" + json.dumps({f"{k[0]} n={k[1]}": v for k, v in res.items()}))


def add_loader_nice_parser(sub, cpu_count):
    t = sub.add_parser("loader-nice", help="budgeted servers that differ only in --adapter_loader_nice, side by side")
    t.add_argument("--nice", default="0,5,10")
    t.add_argument("--adapters", type=int, default=250)
    t.add_argument("--device-mb", type=int, default=8)
    t.add_argument("--host-mb", type=int, default=32)
    t.add_argument("--requests", type=int, default=256)
    t.add_argument("--skew", type=float, default=0.3)
    t.add_argument("--runs", type=int, default=4)
    t.add_argument("--threads", type=int, default=cpu_count)
    t.add_argument("--adapter-dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])


def cmd_tiers_pair(a):
    """The tiers curve measured side by side, so that the machine's speed
    changes weigh on both sides of each ratio at once.

    Two identical servers, each confined to one CPU (taskset, --threads=1),
    serve at the same moment: one the workload over the first 8 adapters,
    the other the workload over the first n; then they swap. The ratio for a
    run is the geometric mean of the two simultaneous ratios, which also
    cancels any difference between the two CPUs. Budgeted servers first,
    then (with --control) two servers with every adapter resident.
    """
    base, cfg, dirs = prepare(a)
    counts = [int(x) for x in a.adapters.split(",")]
    if counts[0] != 8 or len(counts) < 2:
        raise SystemExit("tiers-pair: --adapters must start with 8 and name at least one more n")
    ncpu = os.cpu_count() or 1
    if ncpu < 2:
        raise SystemExit("tiers-pair: needs two CPUs")
    common = dict(requests=a.requests, warmup=0, vocab=cfg["vocab_size"], prompt_min=a.prompt_min,
                  prompt_max=a.prompt_max, output_min=a.output_min, output_max=a.output_max,
                  concurrency=a.concurrency, alpha=a.skew)
    ids = lambda n: ",".join(f"t{i}" for i in range(n))  # noqa: E731
    budgets = [f"--adapter_device_bytes={a.device_mb << 20}", f"--adapter_host_bytes={a.host_mb << 20}",
               f"--adapter_loader_nice={a.loader_nice}"]
    kinds = [("budgets", budgets)] + ([("all resident", [])] if a.control else [])
    results = []  # dict(kind, run, n, slot, n8=loadgen result at n = 8, nn=loadgen result at n)
    for kind, extra in kinds:
        pair = []
        try:
            for cpu in (0, 1):
                pair.append(Server(a.build, [f"--model={base}", "--threads=1", f"--max_batch_size={a.concurrency}"]
                                   + extra, cpus=cpu))
            for i, s in enumerate(pair):
                log(f"registering {len(dirs)} adapters ({kind}, CPU {i})")
                s.register(dirs)
                loadgen(a.build, s.addr, **dict(common, requests=a.concurrency, adapters=ids(8)))
            for run in range(a.runs):
                for n in counts[1:]:
                    # slot 0: CPU 0 serves n = 8 while CPU 1 serves n; slot 1 swaps them.
                    for slot in (0, 1):
                        out = {}

                        def drive(cpu, workload):
                            before = scrape(pair[cpu])
                            r = loadgen(a.build, pair[cpu].addr, seed=run + 1, adapters=ids(workload), **common)
                            after = scrape(pair[cpu])
                            for key, name in (("loads", "adapterd_adapter_tier_load_seconds_count"),
                                              ("load_s", "adapterd_adapter_tier_load_seconds_sum")):
                                r[key] = metric_sum(after, name) - metric_sum(before, name)
                            out[cpu] = r
                        wl = {slot: 8, 1 - slot: n}
                        t = threading.Thread(target=drive, args=(1, wl[1]))
                        t.start()
                        drive(0, wl[0])
                        t.join()
                        r8, rn = out[slot], out[1 - slot]
                        results.append(dict(kind=kind, run=run, n=n, slot=slot, n8=r8, nn=rn))
                        log(f"run {run} {kind} slot {slot}: n=8 {r8['throughput_tok_s']:.1f} tok/s (CPU {slot}), "
                            f"n={n} {rn['throughput_tok_s']:.1f} tok/s (CPU {1 - slot}), errors "
                            f"{r8['errors'] + rn['errors']}")
        finally:
            for s in pair:
                s.stop()

    print(f"Tiers side by side on the {a.model} model, fp32: two servers, each on one CPU with --threads=1, "
          f"{len(dirs)} LoRAs registered in each (ranks {'/'.join(map(str, RANKS))} in turn on {', '.join(TARGETS)}, "
          f"saved in {a.adapter_dtype}); budgets {a.device_mb} MiB device and {a.host_mb} MiB host, loader nice "
          f"{a.loader_nice}; closed loop at concurrency {a.concurrency}, {a.requests} requests per point, prompts "
          f"{a.prompt_min}-{a.prompt_max}, outputs {a.output_min}-{a.output_max}, power-law alpha {a.skew}. In each "
          f"run, one server serves n = 8 while the other serves n, then they swap; the run's ratio is the geometric "
          f"mean of the two simultaneous ratios. {a.runs} runs:\n")
    print("| server | n | ratio to n = 8, median | per run | tok/s at n = 8 (median) | tok/s at n (median) | "
          "TTFT p50 s at n = 8 / n | loads at n (median) | mean load ms at n | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for kind, _ in kinds:
        for n in counts[1:]:
            sel = [r for r in results if r["kind"] == kind and r["n"] == n]
            per_run = []
            for run in range(a.runs):
                rs = [r for r in sel if r["run"] == run]
                prod = 1.0
                for r in rs:
                    prod *= r["nn"]["throughput_tok_s"] / r["n8"]["throughput_tok_s"]
                per_run.append(prod ** (1 / len(rs)))
            med = statistics.median(per_run)
            summary[f"{kind} n={n}"] = dict(median=med, per_run=per_run)
            m = lambda side, k: statistics.median(r[side][k] for r in sel)  # noqa: E731
            loads = sum(r["nn"]["loads"] for r in sel)
            mean_load_ms = f"{1000 * sum(r['nn']['load_s'] for r in sel) / loads:.1f}" if loads else "-"
            print(f"| {kind} | {n} | {med:.3f} | {', '.join(f'{x:.3f}' for x in per_run)} | "
                  f"{m('n8', 'throughput_tok_s'):.1f} | {m('nn', 'throughput_tok_s'):.1f} | "
                  f"{m('n8', 'ttft_p50_s'):.3f} / {m('nn', 'ttft_p50_s'):.3f} | {m('nn', 'loads'):.0f} | "
                  f"{mean_load_ms} | {sum(r['n8']['errors'] + r['nn']['errors'] for r in sel)} |")
    print("\n" + json.dumps({"summary": summary, "results": results}))


def add_pair_parser(sub):
    t = sub.add_parser("tiers-pair", help="the tiers curve from two one-CPU servers serving side by side")
    add_workload_args(t, model="llama-100m", runs=4)
    t.add_argument("--control", type=int, default=1, help="also the pair with every adapter resident")
    t.add_argument("--loader-nice", type=int, default=5)
    t.add_argument("--adapter-dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
