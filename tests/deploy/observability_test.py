#!/usr/bin/env python3
"""Every query that deploy/ ships runs against a live loopback deployment.

Three replicas of the random demo behind HAProxy (deploy/haproxy/haproxy.cfg),
scraped by Prometheus (deploy/prometheus/prometheus.yml with alerts.yml),
serve completions for the demo adapters and the base model through the
router. Then:
  - Prometheus has scraped every replica and HAProxy (up == 1 for each);
  - every rule is loaded and evaluates without error, every recording rule
    returns data, and every alert expression is empty (healthy), with no
    alert pending or firing;
  - every target of deploy/grafana/adapterd.json, with Grafana's variables
    substituted, is a valid query that returns data with a finite value,
    except the targets listed in MAY_BE_EMPTY, which may return nothing.

    observability_test.py --adapterd BIN --source SOURCE_DIR --workdir DIR

Routing is round robin, and each replica's device tier holds one demo adapter
(--adapter_device_bytes), so that every replica serves every model and
adapters move between tiers: the cache-miss, eviction and tier-load series
then exist. Bounded: about a minute, three at most.
"""
import argparse
import glob
import json
import math
import os
import re
import shutil
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402

ARGS = None

# Dashboard targets that may be empty in a healthy run, by the metric they read.
MAY_BE_EMPTY = {
    "adapterd_requests_total": "gRPC calls by code: this test sends HTTP only",
    "adapterd_adapter_load_failures_total": "exists once a load has failed",
    "adapterd_adapter_store_sync_changes_total": "exists once another replica has unloaded or "
                                                 "replaced an adapter that this one holds",
}
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m", "${__rate_interval}": "1m", "$__interval": "15s",
    "${__interval}": "15s", "$__range": "5m", "${__range}": "5m",
}
# One replica's device tier holds demo-all-r8 or demo-qv-r4, not both.
DEVICE_BYTES = 600000
TIMEOUT = 150.0


def grafana_expr(expr):
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    left = re.findall(r"\$\{?\w+", expr)
    if left:
        raise AssertionError("unsubstituted Grafana variable %s in %r" % (left, expr))
    return expr


def finite(result):
    return any(math.isfinite(float(s["value"][1])) for s in result)


def post_json(address, path, body):
    req = urllib.request.Request("http://%s%s" % (address, path), method="POST",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


class Traffic:
    """Completions through the router from a few threads until stop(); counts them."""

    def __init__(self, router, models, threads=2):
        self.router, self.models = router, models
        self.done = 0
        self.errors = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _run(self, offset):
        # A cycle of seven: round robin over three replicas then gives each replica every model.
        m = self.models
        cycle = [m[0], m[1], m[0], m[1], m[2], m[3], m[3]]
        i = offset
        while not self._stop.is_set():
            model = cycle[i % len(cycle)]
            i += 1
            try:
                body = post_json(self.router, "/v1/completions",
                                 {"model": model, "prompt": [1, 2, 3, 4, 5], "max_tokens": 8,
                                  "ignore_eos": True})
                assert body["usage"]["completion_tokens"] == 8, body
                with self._lock:
                    self.done += 1
            except Exception as e:  # noqa: BLE001 — reported by the test
                with self._lock:
                    self.errors.append("%s: %r" % (model, e))
                self._stop.wait(0.5)


class ObservabilityTest(unittest.TestCase):
    def test_every_shipped_query_against_a_live_deployment(self):
        deadline = time.monotonic() + TIMEOUT
        shutil.rmtree(ARGS.workdir, ignore_errors=True)
        c = cluster.Cluster(ARGS.adapterd, ARGS.source, ARGS.workdir, replicas=3,
                            routing="roundrobin", haproxy_cfg=ARGS.haproxy_cfg or None,
                            replica_args=["--demo_trained=false", "--adapter_store_sync_seconds=1",
                                          "--adapter_roots=" + ARGS.workdir,
                                          "--adapter_device_bytes=%d" % DEVICE_BYTES])
        with c:
            try:
                self.check(c, deadline)
            except BaseException:
                print("\nworkdir: %s\n%s" % (ARGS.workdir, c.logs()), file=sys.stderr)
                raise

    def check(self, c, deadline):
        models = json.loads(cluster.http_get("http://%s/v1/models" % c.router_http))["data"]
        base = [m["id"] for m in models if m["parent"] is None]
        self.assertEqual(len(base), 1, models)
        served = ["demo-qv-r4", "demo-all-r8", base[0]]
        self.assertTrue(set(served) <= {m["id"] for m in models}, models)
        # An adapter loaded through the first replica only: the others load it from the
        # shared store when the traffic first names it (adapterd_adapter_store_*).
        demo = sorted(glob.glob(os.path.join(ARGS.workdir, "cache", "**", "adapter_config.json"), recursive=True))
        self.assertTrue(demo, "no demo adapter under the cache")
        req = urllib.request.Request("http://%s/v1/load_lora_adapter" % c.replicas[0].http, method="POST",
                                     data=json.dumps({"lora_name": "shared-lora",
                                                      "lora_path": os.path.dirname(demo[0])}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            self.assertEqual(r.status, 200)
        served.append("shared-lora")

        with Traffic(c.router_http, served) as traffic:
            self.wait_scraped(c, deadline)
            dashboard = self.dashboard_queries()
            # Rates need two scrapes of the traffic; wait until every target that must have
            # data has it, then check everything once more.
            missing = None
            while time.monotonic() < deadline:
                missing = [(title, expr) for title, expr, may_be_empty in dashboard
                           if not may_be_empty and not finite(c.query(expr))]
                if not missing:
                    break
                time.sleep(1.0)
            self.assertEqual(missing, [], "dashboard targets without data (traffic: %d done, "
                             "errors %s)" % (traffic.done, traffic.errors[:5]))
            for title, expr, may_be_empty in dashboard:
                result = c.query(expr)  # raises on an invalid query
                if not may_be_empty:
                    self.assertTrue(finite(result), "%s: %s -> %s" % (title, expr, result))
            self.check_rules(c, deadline)
        self.assertGreater(traffic.done, 0)
        self.assertEqual(traffic.errors, [])

    def wait_scraped(self, c, deadline):
        want = {("adapterd", r.metrics_address) for r in c.replicas}
        want.add(("haproxy", c.router_stats))
        got = None
        while time.monotonic() < deadline:
            got = {(s["metric"]["job"], s["metric"]["instance"]) for s in c.query("up == 1")}
            if want <= got:
                return
            time.sleep(0.5)
        self.fail("Prometheus has not scraped every target: want %s, up %s" % (want, got))

    def dashboard_queries(self):
        """[(panel title, expr, may be empty)] for every target of the dashboard."""
        with open(os.path.join(ARGS.source, "deploy/grafana/adapterd.json")) as f:
            dash = json.load(f)
        out = []
        for panel in dash["panels"]:
            for target in panel["targets"]:
                expr = grafana_expr(target["expr"])
                names = set(re.findall(r"\b(adapterd_\w+?|haproxy_\w+?)(?:_bucket|_count|_sum)?\b",
                                       expr))
                out.append((panel["title"], expr, bool(names & set(MAY_BE_EMPTY))))
        return out

    def check_rules(self, c, deadline):
        groups = json.loads(cluster.http_get(c.prometheus_url + "/api/v1/rules"))["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        self.assertTrue(any(r["type"] == "recording" for r in rules), groups)
        self.assertTrue(any(r["type"] == "alerting" for r in rules), groups)
        for rule in rules:
            self.assertEqual(rule["health"], "ok", rule)
            if rule["type"] == "recording":
                self.assertTrue(c.query(rule["query"]), "recording rule %s: no data" % rule["name"])
                # Its series exists once the group has been evaluated with data.
                while not c.query(rule["name"]) and time.monotonic() < deadline:
                    time.sleep(1.0)
                self.assertTrue(c.query(rule["name"]), "no series %s" % rule["name"])
            else:
                self.assertEqual(c.query(rule["query"]), [],
                                 "alert %s holds in a healthy deployment" % rule["name"])
        alerts = json.loads(cluster.http_get(c.prometheus_url + "/api/v1/alerts"))["data"]["alerts"]
        self.assertEqual(alerts, [])


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapterd", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--haproxy_cfg", default="",
                        help="another HAProxy config than the shipped one (for diagnosis)")
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
