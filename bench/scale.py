"""`./x bench scale` (bench/scale.py): three replicas behind HAProxy
(deploy/haproxy/haproxy.cfg as-is), one shared adapter store, affinity
hashing against round robin, side by side in one run.

--adapters PEFT LoRAs (rank --rank on q/k/v/o of the demo model) are made
once and uploaded once through the router into a store both clusters share;
each replica has --device-mib of device budget. adapterd_loadgen sends a
skewed closed-loop workload (--alpha) through the router's gRPC frontend,
with the x-adapter-id metadata the router hashes on. Each routing mode runs
on freshly started replicas: --warmup-requests fill the tiers, then the
measured requests follow. Runs alternate, and medians are reported:
throughput, TTFT p50/p99, and adapter loads per measured request (loads from
the shared store plus loads onto the device tier from host or disk, summed
over the replicas' metrics).
"""
import json
import os
import statistics
import sys

from common import loadgen, log, work_dir

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "deploy"))
import cluster as cluster_mod  # noqa: E402
import fixtures  # noqa: E402


def add_parser(sub, cpus):
    p = sub.add_parser("scale", help="3 replicas behind HAProxy: adapter affinity vs round robin")
    p.add_argument("--adapters", type=int, default=2000)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--device-mib", type=int, default=256)
    p.add_argument("--host-mib", type=int, default=64)
    p.add_argument("--alpha", type=float, default=0.25,
                   help="loadgen skew: adapter = floor(n * U^(1/alpha)); below 1 favours low ids")
    p.add_argument("--concurrency", type=int, default=12)
    p.add_argument("--warmup-requests", type=int, default=2000,
                   help="sent first on fresh replicas, not measured (fills the tiers)")
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--runs", type=int, default=2)


def loads(replica):
    m = replica.metrics()
    total = lambda name: sum(v for (n, _), v in m.items() if n == name)
    return (total("adapterd_adapter_store_loads_total") + total("adapterd_adapter_cache_misses_total"),
            total("adapterd_adapter_store_loads_total"))


def one_run(a, build, work, routing, store, ids):
    cl = cluster_mod.Cluster(
        os.path.join(build, "server", "adapterd"), os.path.join(HERE, ".."), os.path.join(work, routing),
        routing=routing, store=False, prometheus=False,
        replica_args=["--cache_dir=" + os.path.join(work, "cache"), "--demo_trained=false",
                      "--demo_adapters=false", "--adapter_store=" + store, "--adapter_store_sync_seconds=5",
                      "--log_level=warning", "--threads=1",
                      "--adapter_device_bytes=%d" % (a.device_mib << 20),
                      "--adapter_host_bytes=%d" % (a.host_mib << 20)])
    workload = dict(concurrency=a.concurrency, warmup=0, adapters=",".join(ids), alpha=a.alpha, prompt_min=16,
                    prompt_max=16, output_min=a.new_tokens, output_max=a.new_tokens)
    with cl:
        loadgen(build, cl.router_grpc, requests=a.warmup_requests, seed=6, **workload)
        before = [loads(rep) for rep in cl.replicas]
        r = loadgen(build, cl.router_grpc, requests=a.requests, seed=7, **workload)
        after = [loads(rep) for rep in cl.replicas]
    r["loads_per_request"] = sum(x[0] - y[0] for x, y in zip(after, before)) / a.requests
    r["store_loads"] = sum(x[1] - y[1] for x, y in zip(after, before))
    return r


def cmd_scale(a):
    build = a.build
    work = os.path.join(work_dir(), "scale")
    os.makedirs(work, exist_ok=True)
    adapterd = os.path.join(build, "server", "adapterd")
    client = fixtures.install_client(os.path.join(HERE, ".."), os.path.join(work, "client-%d" % os.getpid()))
    model = fixtures.demo_checkpoint(adapterd, os.path.join(work, "cache"))
    log(f"making {a.adapters} rank-{a.rank} adapters with PEFT (once)")
    dirs = fixtures.make_adapters(os.path.join(HERE, ".."), model, os.path.join(work, f"adapters-r{a.rank}"),
                                  a.adapters, rank=a.rank, targets="q_proj,k_proj,v_proj,o_proj")
    ids = ["s%04d" % i for i in range(a.adapters)]
    store = os.path.join(work, f"store-r{a.rank}-{a.adapters}")
    if not os.path.exists(os.path.join(store, ids[-1], "manifest.json")):
        log(f"uploading {a.adapters} adapters through the router into {store}")
        cl = cluster_mod.Cluster(adapterd, os.path.join(HERE, ".."), os.path.join(work, "upload"), store=False,
                                 prometheus=False,
                                 replica_args=["--cache_dir=" + os.path.join(work, "cache"), "--demo_trained=false",
                                               "--demo_adapters=false", "--adapter_store=" + store,
                                               "--adapter_store_sync_seconds=5", "--log_level=warning"])
        with cl, client.Client(cl.router_grpc, timeout=120) as c:
            for i, d in zip(ids, dirs):
                c.upload_adapter(i, d, replace=True)
    res = {"affinity": [], "roundrobin": []}
    for run in range(a.runs):
        for routing in ("affinity", "roundrobin"):
            r = one_run(a, build, work, routing, store, ids)
            res[routing].append(r)
            log(f"run {run + 1} {routing}: {r['throughput_tok_s']:.1f} tok/s, TTFT p50 {r['ttft_p50_s'] * 1000:.1f} ms, "
                f"p99 {r['ttft_p99_s'] * 1000:.1f} ms, {r['loads_per_request']:.3f} loads/request")
    size = fixtures.adapter_bytes(dirs[0])
    print(f"Scale-out: 3 replicas behind HAProxy (deploy/haproxy/haproxy.cfg), one shared adapter store of "
          f"{a.adapters} rank-{a.rank} LoRAs on q/k/v/o of the demo model ({size / 2**20:.2f} MiB each), "
          f"--adapter_device_bytes {a.device_mib} MiB and --adapter_host_bytes {a.host_mib} MiB per replica "
          f"(--threads=1 each), adapterd_loadgen through the router: {a.warmup_requests} warm-up requests "
          f"(not measured), then {a.requests} measured ones, concurrency {a.concurrency}, prompt 16, "
          f"{a.new_tokens} new tokens, alpha {a.alpha} (adapter = floor(n * U^(1/alpha))); replicas started "
          f"fresh for every run, median of {a.runs} alternating runs:\n")
    print("| routing | tok/s | TTFT p50 (ms) | TTFT p99 (ms) | adapter loads / request |")
    print("|---|---|---|---|---|")
    med = {}
    for k in ("affinity", "roundrobin"):
        m = {f: statistics.median(r[f] for r in res[k])
             for f in ("throughput_tok_s", "ttft_p50_s", "ttft_p99_s", "loads_per_request")}
        med[k] = m
        print(f"| {k} | {m['throughput_tok_s']:.1f} | {m['ttft_p50_s'] * 1000:.1f} | {m['ttft_p99_s'] * 1000:.1f} | "
              f"{m['loads_per_request']:.3f} |")
    print(f"\naffinity / round robin: throughput {med['affinity']['throughput_tok_s'] / med['roundrobin']['throughput_tok_s']:.2f}x, "
          f"TTFT p99 {med['roundrobin']['ttft_p99_s'] / med['affinity']['ttft_p99_s']:.2f}x lower, loads per request "
          f"{med['roundrobin']['loads_per_request'] / max(med['affinity']['loads_per_request'], 1e-9):.1f}x fewer\n")
    print("Per-run values:\n\n```json\n" + json.dumps({"medians": med, "runs": res}) + "\n```")
