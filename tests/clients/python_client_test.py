#!/usr/bin/env python3
"""The Python client (clients/python), installed and run against a real server.

    python_client_test.py --adapterd BUILD/server/adapterd --source SRC

1. Copies clients/python and proto/ (the layout setup.py expects) into a
   temporary directory, makes a venv with --system-site-packages there and
   pip-installs the client offline (--no-build-isolation --no-deps
   --no-index), which proves it installs and generates its stubs.
2. Runs itself again with the venv's python (--inner) and checks, against a
   real adapterd on 127.0.0.1 (ports chosen by the server, read from
   --ready_file): upload, load by path, list, get, Generate and
   GenerateStream agreeing on a greedy request, unload, and the typed errors
   the server gives (NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT,
   FAILED_PRECONDITION, and UNAUTHENTICATED / PERMISSION_DENIED from a
   second server that requires tokens). Against in-test gRPC servers it
   checks the metadata each call sends (x-adapter-id, authorization), the
   upload's message sequence, the separate Admin target, every error class,
   mid-stream errors, and retries; against a dead port, that retries=2 makes
   3 attempts (counted by a client interceptor). The checks themselves are
   in python_client_checks.py.

Every wait has a deadline, and the servers are killed at the end, also on
failure. A missing grpc module or a failed install fails the test; nothing
is skipped.
"""

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

INSTALL_TIMEOUT_S = 300
INNER_TIMEOUT_S = 600
READY_TIMEOUT_S = 180


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# Outer phase: make the venv and install the client.
# --------------------------------------------------------------------------


def run(cmd, timeout, **kw):
    log("$ " + " ".join(cmd))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                       timeout=timeout, **kw)
    if p.returncode != 0:
        log(p.stdout)
        raise SystemExit("FAIL: %s exited with %d" % (cmd[0], p.returncode))
    return p.stdout


def outer(args):
    try:
        import grpc  # noqa: F401
        import google.protobuf  # noqa: F401
    except ImportError as e:
        log("FAIL: the client's runtime dependencies are missing (%s); install python3-grpcio and "
            "python3-protobuf" % e)
        return 1
    if not os.access(args.adapterd, os.X_OK):
        log("FAIL: %s is not an executable" % args.adapterd)
        return 1
    work = tempfile.mkdtemp(prefix="python_client_test.")
    ok = False
    try:
        src = os.path.join(work, "src")
        shutil.copytree(os.path.join(args.source, "clients", "python"), os.path.join(src, "clients", "python"),
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "_proto", "__pycache__"))
        shutil.copytree(os.path.join(args.source, "proto"), os.path.join(src, "proto"))
        venv = os.path.join(work, "venv")
        py = os.path.join(venv, "bin", "python")
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
        run([sys.executable, "-m", "venv", "--system-site-packages", venv], 120)
        # --no-build-isolation builds with the venv's setuptools. Debian's
        # python3-venv ships it only as a wheel (python3-setuptools-whl), which
        # installs offline; a system setuptools, where present, is used as is.
        if subprocess.run([py, "-c", "import setuptools.build_meta"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=60).returncode != 0:
            wheels = sorted(glob.glob("/usr/share/python-wheels/setuptools-*.whl"))
            if not wheels:
                log("FAIL: no setuptools in the venv and no setuptools wheel in /usr/share/python-wheels")
                return 1
            run([py, "-m", "pip", "install", "-q", "--no-index", wheels[-1]], INSTALL_TIMEOUT_S, env=env)
        run([py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
             os.path.join(src, "clients", "python")], INSTALL_TIMEOUT_S, env=env, cwd=work)
        log("ok: pip installed clients/python into a venv (offline)")
        try:
            # The servers are started before gRPC is imported, so that no
            # fork happens under gRPC's threads; its fork handlers are off too.
            rc = subprocess.run([py, os.path.abspath(__file__), "--inner", "--adapterd", os.path.abspath(args.adapterd),
                                 "--workdir", work], cwd=work, timeout=INNER_TIMEOUT_S,
                                env=dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="false")).returncode
        except subprocess.TimeoutExpired:
            log("FAIL: the checks did not finish within %ds" % INNER_TIMEOUT_S)
            return 1
        ok = rc == 0
        return rc
    finally:
        if ok or not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log("kept %s" % work)


# --------------------------------------------------------------------------
# Inner phase: runs in the venv, with the installed client.
# --------------------------------------------------------------------------


def _die_with_parent(libc=[]):
    # Runs in the forked child, before exec: no imports there.
    PR_SET_PDEATHSIG = 1
    libc[0].prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _load_libc():
    import ctypes

    _die_with_parent.__defaults__[0].append(ctypes.CDLL(None))


class Server:
    """One adapterd process on 127.0.0.1 with ports it picks."""

    def __init__(self, binary, workdir, name, cache, extra):
        self.name = name
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir)
        self.ready_file = os.path.join(self.dir, "ready.json")
        self.log_path = os.path.join(self.dir, "server.log")
        argv = [binary, "--demo_trained=false", "--listen=127.0.0.1:0", "--http_listen=127.0.0.1:0",
                "--metrics_listen=127.0.0.1:0", "--plaintext", "--ready_file=" + self.ready_file, "--threads=2",
                "--cache_dir=" + cache] + extra
        log("$ " + " ".join(argv))
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)
        self.grpc = self.admin = None

    def wait_ready(self, timeout=READY_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s during start-up" % (self.name, self.proc.returncode))
            if os.path.exists(self.ready_file):
                with open(self.ready_file) as f:
                    j = json.load(f)  # written to a temporary name, then renamed
                self.grpc, self.admin = j["grpc"], j["admin"]
                return
            time.sleep(0.05)
        raise AssertionError("%s not ready within %ds" % (self.name, timeout))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def log_tail(self, n=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


def inner(args):
    work = args.workdir
    servers = []
    passed = [0]

    def ok(what):
        passed[0] += 1
        log("ok: " + what)

    # Both real servers start first, before gRPC is imported (forking under
    # gRPC's threads is unsafe), and come up while the in-test checks run.
    # Each has its own cache: two first starts would race on the demo model.
    _load_libc()
    admin_tok, inf_tok = "admin-secret-0123456789", "inference-secret-0123456789"
    tokdir = os.path.join(work, "tokens")
    os.makedirs(tokdir, mode=0o700)
    for name, tok in (("admin", admin_tok), ("inference", inf_tok)):
        fd = os.open(os.path.join(tokdir, name), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, tok.encode() + b"\n")
        os.close(fd)
    cache = os.path.join(work, "cache-open")
    try:
        a = Server(args.adapterd, work, "server-open", cache, ["--admin_auth=none", "--adapter_roots=" + work])
        servers.append(a)
        b = Server(args.adapterd, work, "server-token", os.path.join(work, "cache-token"),
                   ["--admin_auth=token", "--admin_token_file=" + os.path.join(tokdir, "admin"),
                    "--inference_token_file=" + os.path.join(tokdir, "inference"), "--demo_adapters=false"])
        servers.append(b)
    except Exception:
        for srv in servers:
            srv.stop()
        raise

    fakes = []
    try:
        import python_client_checks as checks

        client_dir = os.path.dirname(os.path.realpath(checks.ac.__file__))
        if not client_dir.startswith(os.path.realpath(sys.prefix)):
            raise AssertionError("adapterd_client was imported from %s, not the venv %s" % (client_dir, sys.prefix))
        ok("adapterd_client imported from the venv (%s)" % client_dir)
        checks.check_fakes(ok, work, fakes)
        checks.check_real_server(ok, a, cache)
        checks.check_tokens(ok, b, admin_tok, inf_tok)
        log("PASS: %d groups of checks" % passed[0])
        return 0
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        for srv in servers:
            log("---- %s log (tail) ----\n%s" % (srv.name, srv.log_tail()))
        log("FAIL")
        return 1
    finally:
        for srv in servers:
            srv.stop()
        for f in fakes:
            f.stop(grace=None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapterd", required=True, help="the adapterd binary")
    ap.add_argument("--source", help="the repository root (outer phase)")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory when the test fails")
    args = ap.parse_args()
    if args.inner:
        return inner(args)
    if not args.source:
        ap.error("--source is required")
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
