"""Three replicas behind HAProxy (deploy/haproxy/haproxy.cfg as-is) sharing
one adapter store, on the demo model, through the Python client:

  affinity     64 adapters uploaded through the router, Zipf-skewed traffic:
               after warm-up >= 90% of requests find their adapter resident
               (on the device tier, not fetched from the store), read from
               each replica's metrics; the same run in round robin is lower.
  failover     kill -9 of one replica mid-run: retrying clients finish every
               request, every acknowledged adapter is still there through
               each survivor, and the restarted replica rejoins and serves;
               right after a kill, clients that do not retry get every
               answer too (HAProxy retries refused connections elsewhere).
  store        an upload on A is served by B; an unload on A is NOT_FOUND on
               B within --adapter_store_sync_seconds; concurrent uploads of
               one id to A and B leave one whole version, served by both.

Usage: scale_out_test.py --adapterd BIN --source DIR. Loopback only.
"""
import argparse
import concurrent.futures
import os
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as cluster_mod  # noqa: E402
import fixtures  # noqa: E402

N_ADAPTERS = 64
DEVICE_SLOTS = 36   # adapters each replica's device tier holds (of 64)
SYNC_SECONDS = 1
PROMPT = [1, 17, 42, 99, 7, 3]
client_mod = None   # adapterd_client, installed by main()


def counters(replica):
    """(resident, total) lease outcomes so far on one replica."""
    m = replica.metrics()
    get = lambda name: sum(v for (n, _), v in m.items() if n == name)
    hits = get("adapterd_adapter_cache_hits_total")
    misses = get("adapterd_adapter_cache_misses_total")
    store = get("adapterd_adapter_store_misses_total")
    return hits - store, hits + misses


def run_load(router, ids, weights, n, workers=6, retries=0, seed=1, on_progress=None):
    """n Generate calls through the router, adapters drawn by weight; returns the errors."""
    rng = random.Random(seed)
    picks = rng.choices(ids, weights=weights, k=n)
    errors = []
    done = [0]
    lock = threading.Lock()
    with client_mod.Client(router, retries=retries, timeout=60, backoff_initial=0.2) as c:
        def one(adapter):
            try:
                c.generate(adapter, PROMPT, max_new_tokens=4)
            except client_mod.AdapterdError as e:
                with lock:
                    errors.append((adapter, e))
            with lock:
                done[0] += 1
                if on_progress:
                    on_progress(done[0])
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, picks))
    return errors


def resident_fraction(cl, ids, weights, warmup, measured):
    assert not run_load(cl.router_grpc, ids, weights, warmup, seed=2), "warm-up requests failed"
    before = [counters(r) for r in cl.replicas]
    errors = run_load(cl.router_grpc, ids, weights, measured, seed=3)
    assert not errors, errors[:3]
    after = [counters(r) for r in cl.replicas]
    resident = sum(a[0] - b[0] for a, b in zip(after, before))
    total = sum(a[1] - b[1] for a, b in zip(after, before))
    per_replica = [a[1] - b[1] for a, b in zip(after, before)]
    return resident / max(total, 1), total, per_replica


def make_cluster(args, work, routing, size):
    return cluster_mod.Cluster(
        args.adapterd, args.source, os.path.join(work, routing), routing=routing, prometheus=False,
        replica_args=["--cache_dir=" + os.path.join(work, "cache"), "--demo_trained=false", "--demo_adapters=false",
                      "--adapter_store_sync_seconds=%d" % SYNC_SECONDS,
                      "--adapter_device_bytes=%d" % (DEVICE_SLOTS * size), "--adapter_host_bytes=%d" % (4 * size)])


def upload_all(cl, ids, dirs):
    with client_mod.Client(cl.router_grpc, timeout=60) as c:
        for i, d in zip(ids, dirs):
            c.upload_adapter(i, d)


def test_affinity_and_failover(args, work, ids, dirs, size):
    weights = fixtures.zipf_weights(N_ADAPTERS, 0.8)
    fractions = {}
    for routing in ("roundrobin", "affinity"):
        with make_cluster(args, work, routing, size) as cl:
            upload_all(cl, ids, dirs)
            frac, total, per = resident_fraction(cl, ids, weights, warmup=400, measured=600)
            fractions[routing] = frac
            print("%s: %.3f of %d requests found their adapter resident; per replica %s" % (routing, frac, total, per))
            if routing == "affinity":
                test_failover(cl, ids, weights)
                test_store(cl, dirs)
    assert fractions["affinity"] >= 0.90, fractions
    assert fractions["roundrobin"] <= fractions["affinity"] - 0.10, fractions


def test_failover(cl, ids, weights):
    victim = cl.replicas[1]
    killed = threading.Event()

    def kill_midway(done):
        if done == 150 and not killed.is_set():
            killed.set()
            victim.kill9()
    errors = run_load(cl.router_grpc, ids, weights, 400, retries=8, seed=4, on_progress=kill_midway)
    assert killed.is_set()
    assert not errors, "retrying clients lost %d requests: %s" % (len(errors), errors[:3])
    for r in cl.replicas:
        if r is victim:
            continue
        with client_mod.Client(r.grpc, timeout=60) as c:
            missing = []
            for i in ids:
                try:
                    c.get_adapter(i)
                except client_mod.NotFoundError:
                    missing.append(i)
            assert not missing, "replica %d lost acknowledged adapters %s" % (r.index, missing[:5])
    victim.restart()
    cl.wait_router_up(timeout=30)
    # The router itself retries what never reached an engine: right after a
    # kill, before any health check has noticed, clients that do not retry
    # still get every answer (HAProxy redispatches the refused connections).
    victim.kill9()
    errors = run_load(cl.router_grpc, ids, [1.0] * len(ids), 64, workers=1, retries=0, seed=6)
    assert not errors, "the router did not retry on another replica: %s" % errors[:3]
    victim.restart()
    cl.wait_router_up(timeout=30)
    before = counters(victim)[1]
    assert not run_load(cl.router_grpc, ids, weights, 200, retries=2, seed=5)
    served = counters(victim)[1] - before
    assert served > 0, "the restarted replica served nothing"
    print("failover: every request finished; the restarted replica served %d of 200" % served)


def test_store(cl, dirs):
    a, b = cl.replicas[0], cl.replicas[2]
    with client_mod.Client(a.grpc, timeout=60) as ca, client_mod.Client(b.grpc, timeout=60) as cb:
        ca.upload_adapter("store-x", dirs[0])
        out_a = list(ca.generate("store-x", PROMPT, max_new_tokens=8).token_ids)
        assert list(cb.generate("store-x", PROMPT, max_new_tokens=8).token_ids) == out_a
        ca.unload_adapter("store-x")
        start = time.monotonic()
        while True:
            try:
                cb.generate("store-x", PROMPT, max_new_tokens=1)
            except client_mod.NotFoundError:
                break
            assert time.monotonic() - start < SYNC_SECONDS + 2, "b still serves an adapter unloaded on a"
            time.sleep(0.05)
        print("store: unload on A was NOT_FOUND on B after %.2f s" % (time.monotonic() - start))
        for round_ in range(4):
            rid = "race-%d" % round_
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                results = list(pool.map(lambda cd: _try_upload(cd[0], rid, cd[1]),
                                        [(ca, dirs[1]), (cb, dirs[2])]))
            ok = [r for r in results if r is None]
            assert len(ok) == 1, results
            assert all(r is None or isinstance(r, client_mod.AlreadyExistsError) for r in results), results
            winner = dirs[1] if results[0] is None else dirs[2]
            with client_mod.Client(a.grpc, timeout=60) as check:
                check.upload_adapter("winner-%d" % round_, winner)
                expect = list(check.generate("winner-%d" % round_, PROMPT, max_new_tokens=8).token_ids)
            for c in (ca, cb):
                assert list(c.generate(rid, PROMPT, max_new_tokens=8).token_ids) == expect, rid


def _try_upload(client, adapter_id, directory):
    try:
        client.upload_adapter(adapter_id, directory)
        return None
    except client_mod.AdapterdError as e:
        return e


def main():
    global client_mod
    p = argparse.ArgumentParser()
    p.add_argument("--adapterd", required=True)
    p.add_argument("--source", required=True)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="adapterd-scale-") as work:
        client_mod = fixtures.install_client(args.source, work)
        model = fixtures.demo_checkpoint(args.adapterd, os.path.join(work, "cache"))
        dirs = fixtures.make_adapters(args.source, model, os.path.join(work, "adapters"), N_ADAPTERS)
        ids = ["a%02d" % i for i in range(N_ADAPTERS)]
        size = fixtures.adapter_bytes(dirs[0])
        try:
            test_affinity_and_failover(args, work, ids, dirs, size)
        except BaseException:
            for log in sorted(os.popen("ls %s/*/replica-*/adapterd.log %s/*/haproxy.log 2>/dev/null" % (work, work)).read().split()):
                print("==> %s <==\n%s" % (log, cluster_mod._tail(log, 30)))
            raise
    print("PASS")


if __name__ == "__main__":
    main()
