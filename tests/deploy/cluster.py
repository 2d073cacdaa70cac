"""A loopback deployment for tests: N adapterd replicas, HAProxy in front of
them with deploy/haproxy/haproxy.cfg as-is, and optionally Prometheus with
deploy/prometheus/prometheus.yml as-is. Standard library only.

    with Cluster(adapterd, source_dir, workdir, replica_args=["--demo_trained=false"]) as c:
        post(c.router_http, ...); c.query("up")

Contracts:
  - Every listener is on 127.0.0.1, on a port chosen once here and kept: a
    replica restarted with restart() comes back on the same ports, so
    HAProxy's fixed server lines and Prometheus' targets find it again.
  - haproxy.cfg names exactly three fixed replicas (r1..r3), so HAProxy needs
    replicas=3; with another count start() refuses to start it.
  - Replicas share one --cache_dir (the first one makes the demo model, the
    others start after it) and, with store=True, one --adapter_store.
  - Everything lives under workdir (logs, ready files, Prometheus' TSDB, its
    targets files), which is kept after stop() for failure messages.
  - stop() ends every process this object started, also when start() fails
    (the context manager calls it on any exception), and every child dies
    with this process (PR_SET_PDEATHSIG).
"""
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

_used_ports = set()


def free_port():
    """A port nothing listens on now, never returned twice by this process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port


def _spawn(argv, log_path, env=None, nofile=None):
    """Starts argv with its output appended to log_path; it dies with this process, and gets
    RLIMIT_NOFILE soft limit nofile when given."""
    def child():
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    log = open(log_path, "ab")
    log.write(("\n==== %s: %s\n" % (time.strftime("%H:%M:%S"), " ".join(argv))).encode())
    log.flush()
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, preexec_fn=child)
    finally:
        log.close()


def _end(proc, timeout=10.0):
    """SIGTERM, then SIGKILL after timeout; reaps the process."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return "(no log: %s)" % e


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    """Prometheus text exposition -> {(name, frozenset((label, value), ...)): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError("unparsable metrics line: %r" % line)
        name, labels, value = m.groups()
        pairs = []
        rest = labels or ""
        while rest.strip():
            lm = _LABEL.match(rest)
            if not lm:
                raise ValueError("unparsable labels in %r" % line)
            v = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), lm.group(2))
            pairs.append((lm.group(1), v))
            rest = rest[lm.end():]
        out[(name, frozenset(pairs))] = float(value)
    return out


def _fd_limit():
    """The file descriptor hard limit (what a child may raise its soft limit to)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return hard if hard != resource.RLIM_INFINITY else 1 << 20


class ClusterError(RuntimeError):
    pass


class Replica:
    """One adapterd process on fixed loopback ports: grpc, http, metrics_address (its
    --metrics_listen, which metrics() reads) and admin (the same as grpc)."""

    def __init__(self, cluster, index):
        self.index = index  # 1-based, as HAProxy's server r<index>
        self._cluster = cluster
        self.dir = os.path.join(cluster.workdir, "replica-%d" % index)
        os.makedirs(self.dir, exist_ok=True)
        self.grpc = "127.0.0.1:%d" % free_port()
        self.http = "127.0.0.1:%d" % free_port()
        self.metrics_address = "127.0.0.1:%d" % free_port()
        self.admin = self.grpc  # Admin is served on --listen (loopback)
        self.log_path = os.path.join(self.dir, "adapterd.log")
        self._ready = os.path.join(self.dir, "ready.json")
        self._proc = None
        self.pid = None

    @property
    def http_port(self):
        return int(self.http.rsplit(":", 1)[1])

    def argv(self):
        c = self._cluster
        argv = [c.adapterd, "--listen=" + self.grpc, "--http_listen=" + self.http,
                "--metrics_listen=" + self.metrics_address, "--plaintext", "--admin_auth=none",
                "--ready_file=" + self._ready]
        given = lambda flag: any(a.split("=", 1)[0] == flag for a in c.replica_args)
        if not given("--cache_dir"):
            argv.append("--cache_dir=" + os.path.join(c.workdir, "cache"))
        if not given("--threads"):
            argv.append("--threads=2")
        if c.store:
            argv.append("--adapter_store=" + os.path.join(c.workdir, "store"))
        return argv + list(c.replica_args)

    def spawn(self):
        if os.path.exists(self._ready):
            os.remove(self._ready)
        self._proc = _spawn(self.argv(), self.log_path)
        self.pid = self._proc.pid

    def wait_ready(self, timeout):
        """Waits for the ready file; checks it names this replica's ports."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ClusterError("replica %d exited (%s) during start-up:\n%s"
                                   % (self.index, self._proc.returncode, _tail(self.log_path)))
            if os.path.exists(self._ready):
                with open(self._ready) as f:
                    ready = json.load(f)
                if (ready["grpc"], ready["http"], ready["metrics"]) != (self.grpc, self.http,
                                                                         self.metrics_address):
                    raise ClusterError("replica %d bound %s, not its ports" % (self.index, ready))
                self.pid = ready["pid"]
                return
            time.sleep(0.05)
        raise ClusterError("replica %d not ready in %.0f s:\n%s" % (self.index, timeout,
                                                                   _tail(self.log_path)))

    def start(self, timeout=120.0):
        self.spawn()
        self.wait_ready(timeout)

    def alive(self):
        return self._proc is not None and self._proc.poll() is None

    def kill9(self):
        """SIGKILL, and reaps it: its ports are free when this returns."""
        if self.alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait()

    def stop(self, timeout=10.0):
        _end(self._proc, timeout)

    def restart(self, timeout=120.0):
        """Ends the process if it runs (SIGTERM) and starts it again with the same flags and ports."""
        self.stop()
        deadline = time.monotonic() + timeout
        while True:
            self.spawn()
            try:
                return self.wait_ready(max(1.0, deadline - time.monotonic()))
            except ClusterError:
                # A port can stay busy for a moment after the old process died.
                if time.monotonic() >= deadline or "in use" not in _tail(self.log_path, 5):
                    raise
                self._proc.wait()
                time.sleep(0.2)

    def metrics(self):
        return parse_metrics(http_get("http://%s/metrics" % self.metrics_address))

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


class Cluster:
    def __init__(self, adapterd, source_dir, workdir, replicas=3, routing="affinity",
                 replica_args=(), store=True, prometheus=True, haproxy_cfg=None):
        if routing not in ("affinity", "roundrobin"):
            raise ValueError("routing must be 'affinity' or 'roundrobin'")
        self.adapterd = os.path.abspath(adapterd)
        self.source_dir = os.path.abspath(source_dir)
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.routing = routing
        self.replica_args = list(replica_args)
        self.store = store
        self.prometheus = prometheus
        self.haproxy_cfg = haproxy_cfg or os.path.join(self.source_dir, "deploy/haproxy/haproxy.cfg")
        self.replicas = [Replica(self, i + 1) for i in range(replicas)]
        self.router_grpc = "127.0.0.1:%d" % free_port()
        self.router_http = "127.0.0.1:%d" % free_port()
        self.router_stats = "127.0.0.1:%d" % free_port()
        self.prometheus_url = None
        self._haproxy = None
        self._prometheus = None
        self.haproxy_log = os.path.join(self.workdir, "haproxy.log")
        self.prometheus_log = os.path.join(self.workdir, "prometheus.log")

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self, timeout=180.0):
        deadline = time.monotonic() + timeout
        left = lambda: max(1.0, deadline - time.monotonic())
        first, rest = self.replicas[0], self.replicas[1:]
        first.start(left())  # makes the demo model in the shared cache
        for r in rest:
            r.spawn()
        for r in rest:
            r.wait_ready(left())
        self._start_haproxy(min(30.0, left()))
        if self.prometheus:
            self._start_prometheus(min(60.0, left()))

    def _start_haproxy(self, timeout):
        if len(self.replicas) != 3:
            raise ClusterError("haproxy.cfg serves exactly 3 fixed replicas, not %d"
                               % len(self.replicas))
        env = dict(os.environ, ADAPTERD_ROUTER_GRPC=self.router_grpc,
                   ADAPTERD_ROUTER_HTTP=self.router_http, ADAPTERD_ROUTER_STATS=self.router_stats,
                   ADAPTERD_ROUTING=self.routing)
        env.pop("ADAPTERD_SERVICE", None)
        for r in self.replicas:
            env["ADAPTERD_REPLICA_%d_GRPC" % r.index] = r.grpc
            env["ADAPTERD_REPLICA_%d_HTTP" % r.index] = r.http
            env["ADAPTERD_REPLICA_%d_HTTP_PORT" % r.index] = str(r.http_port)
        # -n lowers the config's maxconn (20000, which needs about twice as many
        # file descriptors) to what this environment's limit allows.
        fds = _fd_limit()
        maxconn = max(256, min(20000, (fds - 100) // 2))
        self._haproxy = _spawn(["haproxy", "-db", "-n", str(maxconn), "-f", self.haproxy_cfg],
                               self.haproxy_log, env, nofile=fds)
        self.wait_router_up(timeout)

    def router_servers(self):
        """{(backend, server): state} for every server HAProxy's stats report, state as in the
        haproxy_server_status label whose value is 1 (UP, DOWN, MAINT, ...)."""
        states = {}
        for (name, labels), value in parse_metrics(
                http_get("http://%s/metrics" % self.router_stats)).items():
            if name == "haproxy_server_status" and value == 1:
                d = dict(labels)
                states[(d["proxy"], d["server"])] = d["state"]
        return states

    def wait_router_up(self, timeout=30.0):
        """Waits until HAProxy reports every server of both backends UP."""
        deadline = time.monotonic() + timeout
        states = "(no stats yet)"
        while time.monotonic() < deadline:
            if self._haproxy.poll() is not None:
                raise ClusterError("haproxy exited (%s):\n%s" % (self._haproxy.returncode,
                                                                 _tail(self.haproxy_log)))
            try:
                states = self.router_servers()
                if len(states) == 2 * len(self.replicas) and set(states.values()) == {"UP"}:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise ClusterError("HAProxy servers not all UP in %.0f s: %s\n%s"
                           % (timeout, states, _tail(self.haproxy_log)))

    def _start_prometheus(self, timeout):
        # prometheus.yml reads its file_sd targets and rule files relative to its own
        # directory: the shipped files are linked into pdir, the targets written there.
        pdir = os.path.join(self.workdir, "prometheus")
        shutil.rmtree(os.path.join(pdir, "data"), ignore_errors=True)  # no series of an earlier run
        os.makedirs(os.path.join(pdir, "targets"), exist_ok=True)
        for name in ("prometheus.yml", "alerts.yml"):
            link = os.path.join(pdir, name)
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(os.path.join(self.source_dir, "deploy/prometheus", name), link)
        targets = {
            "adapterd.json": [{"targets": [r.metrics_address for r in self.replicas]}],
            "haproxy.json": [{"targets": [self.router_stats]}],
        }
        for name, content in targets.items():
            tmp = os.path.join(pdir, "targets", name + ".tmp")
            with open(tmp, "w") as f:
                json.dump(content, f)
            os.rename(tmp, os.path.join(pdir, "targets", name))
        listen = "127.0.0.1:%d" % free_port()
        self.prometheus_url = "http://" + listen
        self._prometheus = _spawn(
            ["prometheus", "--config.file=" + os.path.join(pdir, "prometheus.yml"),
             "--storage.tsdb.path=" + os.path.join(pdir, "data"), "--web.listen-address=" + listen,
             "--log.level=warn"], self.prometheus_log)
        self.wait_targets_up(timeout)

    def targets(self):
        """Prometheus' active targets: [{"job", "instance", "health"}]."""
        data = json.loads(http_get(self.prometheus_url + "/api/v1/targets?state=active"))
        return [{"job": t["labels"].get("job"), "instance": t["labels"].get("instance"),
                 "health": t["health"]} for t in data["data"]["activeTargets"]]

    def wait_targets_up(self, timeout=60.0):
        """Waits until Prometheus has scraped every replica and HAProxy successfully."""
        deadline = time.monotonic() + timeout
        targets = "(no answer yet)"
        while time.monotonic() < deadline:
            if self._prometheus.poll() is not None:
                raise ClusterError("prometheus exited (%s):\n%s" % (self._prometheus.returncode,
                                                                    _tail(self.prometheus_log)))
            try:
                targets = self.targets()
                if (len(targets) == len(self.replicas) + 1
                        and all(t["health"] == "up" for t in targets)):
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise ClusterError("Prometheus targets not all up in %.0f s: %s\n%s"
                           % (timeout, targets, _tail(self.prometheus_log)))

    def query(self, expr, time_=None):
        """Instant query: the result list of /api/v1/query; raises on a query error."""
        params = {"query": expr}
        if time_ is not None:
            params["time"] = str(time_)
        url = self.prometheus_url + "/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            body = json.loads(http_get(url, timeout=10.0))
        except urllib.error.HTTPError as e:
            raise ClusterError("query %r: HTTP %d: %s" % (expr, e.code, e.read().decode()))
        if body.get("status") != "success":
            raise ClusterError("query %r: %s" % (expr, body))
        return body["data"]["result"]

    def stop(self):
        _end(self._prometheus)
        _end(self._haproxy)
        for r in self.replicas:
            r.stop()

    def logs(self, lines=40):
        """The tail of every log, for failure messages."""
        parts = ["--- replica %d (%s)\n%s" % (r.index, r.log_path, _tail(r.log_path, lines))
                 for r in self.replicas]
        parts.append("--- haproxy\n" + _tail(self.haproxy_log, lines))
        if self.prometheus:
            parts.append("--- prometheus\n" + _tail(self.prometheus_log, lines))
        return "\n".join(parts)


def _smoke(argv):
    """python3 cluster.py ADAPTERD SOURCE_DIR WORKDIR [HAPROXY_CFG]: starts three replicas of the
    random demo behind HAProxy and Prometheus, sends one completion through the router, and stops."""
    adapterd, source_dir, workdir = argv[:3]
    with Cluster(adapterd, source_dir, workdir, replica_args=["--demo_trained=false"],
                 haproxy_cfg=argv[3] if len(argv) > 3 else None) as c:
        req = urllib.request.Request(
            "http://%s/v1/completions" % c.router_http, method="POST",
            headers={"Content-Type": "application/json"},
            data=json.dumps({"model": "demo-qv-r4", "prompt": [1, 2, 3], "max_tokens": 4}).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            body = json.loads(r.read())
        assert body["usage"]["completion_tokens"] == 4, body
        print("router:", c.router_http, "replicas:", [r.http for r in c.replicas])
        print("completion:", body)
        print("up:", [(s["metric"]["instance"], s["value"][1]) for s in c.query("up")])
    print("smoke: OK")


if __name__ == "__main__":
    import sys
    _smoke(sys.argv[1:])
