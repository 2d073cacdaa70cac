#!/usr/bin/env python3
"""Static checks of deploy/: the kustomize base and GPU overlay build and are
valid Kubernetes 1.32 objects (strict schemas, offline), promtool accepts the
Prometheus config and rules, the Grafana dashboard is well formed, and HAProxy
accepts haproxy.cfg in every mode its header documents.

    manifests_test.py --source SOURCE_DIR --ref_python PYTHON

PYTHON is the reference venv's interpreter, which has kubernetes_validate
($ADAPTERD_REF_PYTHON overrides it). A missing tool is a failure, never a skip.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None


def run(argv, env=None, cwd=None):
    """Runs argv; fails the test with its output unless it exits 0. Returns stdout."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    except FileNotFoundError:
        raise AssertionError("%s is not installed (needed by this test)" % argv[0])
    if p.returncode != 0:
        raise AssertionError("%s exited %d:\n%s%s" % (" ".join(argv), p.returncode, p.stdout,
                                                      p.stderr))
    return p.stdout


def tool(name):
    path = shutil.which(name)
    if path is None:
        raise AssertionError("%s is not on PATH (needed by this test)" % name)
    return path


class ManifestsTest(unittest.TestCase):
    def deploy(self, *parts):
        return os.path.join(ARGS.source, "deploy", *parts)

    def test_kustomize_builds_validate_strictly(self):
        py = os.environ.get("ADAPTERD_REF_PYTHON") or ARGS.ref_python
        self.assertTrue(py and os.path.exists(py),
                        "the reference python (with kubernetes_validate) is missing: %r" % py)
        run([py, "-c", "import kubernetes_validate"])
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("base", "overlays/gpu"):
                out = run([tool("kustomize"), "build", self.deploy("kubernetes", name)])
                path = os.path.join(tmp, name.replace("/", "-") + ".yaml")
                with open(path, "w") as f:
                    f.write(out)
                # --quiet: only failures and warnings; a warning (e.g. an unknown kind) fails too.
                report = run([py, "-m", "kubernetes_validate", "--kubernetes-version", "1.32.0",
                              "--strict", "--quiet", path])
                self.assertEqual(report.strip(), "", "%s:\n%s" % (name, report))
                kinds = {line.split(":", 1)[1].strip() for line in out.splitlines()
                         if line.startswith("kind:")}
                self.assertTrue({"Deployment", "Service", "PersistentVolumeClaim",
                                 "PodDisruptionBudget", "ConfigMap"} <= kinds, kinds)
                if name == "overlays/gpu":
                    self.assertIn("nvidia.com/gpu: 1", out)

    def test_promtool(self):
        promtool = tool("promtool")
        run([promtool, "check", "config", "prometheus.yml"], cwd=self.deploy("prometheus"))
        run([promtool, "check", "rules", "alerts.yml"], cwd=self.deploy("prometheus"))

    def test_grafana_dashboard(self):
        with open(self.deploy("grafana", "adapterd.json")) as f:
            dash = json.load(f)
        names = [v["name"] for v in dash["templating"]["list"]]
        self.assertIn("datasource", names)
        self.assertTrue(dash["panels"])
        for panel in dash["panels"]:
            self.assertEqual(panel["datasource"]["uid"], "${datasource}", panel["title"])
            self.assertTrue(panel["targets"], panel["title"])
            for target in panel["targets"]:
                self.assertTrue(target.get("expr", "").strip(),
                                "%s/%s has no expr" % (panel["title"], target.get("refId")))

    def test_haproxy_accepts_every_mode(self):
        haproxy = tool("haproxy")
        fixed = {}
        for n in (1, 2, 3):
            fixed["ADAPTERD_REPLICA_%d_GRPC" % n] = "127.0.0.1:%d" % (50050 + n)
            fixed["ADAPTERD_REPLICA_%d_HTTP" % n] = "127.0.0.1:%d" % (8000 + n)
            fixed["ADAPTERD_REPLICA_%d_HTTP_PORT" % n] = str(8000 + n)
        service = {"ADAPTERD_SERVICE": "adapterd-replicas.default.svc.cluster.local"}
        base = {k: v for k, v in os.environ.items()
                if not k.startswith("ADAPTERD_REPLICA_") and k != "ADAPTERD_SERVICE"}
        for routing in ("affinity", "roundrobin"):
            for replicas in (fixed, service):
                env = dict(base, ADAPTERD_ROUTING=routing, **replicas)
                with self.subTest(routing=routing, service="ADAPTERD_SERVICE" in replicas):
                    run([haproxy, "-c", "-f", self.deploy("haproxy", "haproxy.cfg")], env=env)

    def test_haproxy_health_checks_go_to_each_replicas_http_port(self):
        """Every server, gRPC ones included, is checked on its replica's HTTP
        listener (GET /health over HTTP/1.1), read from HAProxy's own state
        through a stats socket that a second config file adds. An unquoted
        ${VAR} is not expanded (check port 0: the gRPC port itself). A gRPC
        server line without check-proto h1 would check over HTTP/2, which the
        HTTP listener refuses: the live tests catch that (no server comes UP)."""
        haproxy = tool("haproxy")
        with tempfile.TemporaryDirectory() as work:
            sock = os.path.join(work, "stats.sock")
            extra = os.path.join(work, "stats.cfg")
            with open(extra, "w") as f:
                f.write("global\n  stats socket %s level admin\n" % sock)
            env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTERD_")}
            ports = {}
            for n in (1, 2, 3):
                ports[n] = (41000 + n, 42000 + n)  # nothing listens: the checks fail, the state is what counts
                env["ADAPTERD_REPLICA_%d_GRPC" % n] = "127.0.0.1:%d" % ports[n][0]
                env["ADAPTERD_REPLICA_%d_HTTP" % n] = "127.0.0.1:%d" % ports[n][1]
                env["ADAPTERD_REPLICA_%d_HTTP_PORT" % n] = str(ports[n][1])
            for k, port in (("GRPC", 43001), ("HTTP", 43002), ("STATS", 43003)):
                env["ADAPTERD_ROUTER_" + k] = "127.0.0.1:%d" % port
            proc = subprocess.Popen([haproxy, "-db", "-n", "1000", "-f", self.deploy("haproxy", "haproxy.cfg"),
                                     "-f", extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                state = self._servers_state(sock, proc)
            finally:
                proc.kill()
                proc.wait()
        header = state[0].lstrip("# ").split()
        rows = [dict(zip(header, line.split())) for line in state[1:]]
        checked = {(r["be_name"], r["srv_name"]): int(r["srv_check_port"]) for r in rows}
        expect = {}
        for n, (_, http) in ports.items():
            expect[("adapterd_grpc", "r%d" % n)] = http
            expect[("adapterd_http", "r%d" % n)] = 0  # 0: the server's own port, the HTTP listener
        self.assertEqual(checked, expect)

    @staticmethod
    def _servers_state(sock, proc):
        deadline = time.monotonic() + 30
        while True:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(sock)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("haproxy did not open its stats socket")
                time.sleep(0.05)
        with s:
            s.sendall(b"show servers state\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        lines = [l for l in out.decode().splitlines() if l.strip()]
        return lines[1:]  # the first line is the state file's version


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--ref_python", default="")
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
