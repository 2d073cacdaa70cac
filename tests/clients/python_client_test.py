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
   3 attempts (counted by a client interceptor).

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
import socket
import subprocess
import sys
import tempfile
import threading
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


def expect_error(cls, fn, *a, **kw):
    """Runs fn and returns the error it raised, which must be exactly a `cls`."""
    try:
        r = fn(*a, **kw)
        if hasattr(r, "__next__"):  # a stream: errors come from the iteration
            list(r)
    except Exception as e:  # noqa: BLE001
        if type(e) is not cls:
            raise AssertionError("expected %s, got %s: %s" % (cls.__name__, type(e).__name__, e)) from e
        return e
    raise AssertionError("expected %s, the call succeeded" % cls.__name__)


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


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
        import grpc

        import adapterd_client as ac
        from adapterd_client import Client, admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc

        if not os.path.realpath(ac.__file__).startswith(os.path.realpath(sys.prefix)):
            raise AssertionError("adapterd_client was imported from %s, not the venv %s" % (ac.__file__, sys.prefix))
        ok("adapterd_client imported from the venv (%s)" % os.path.dirname(ac.__file__))

        # ---------------- in-test servers: metadata, upload stream, errors, retries
        class FakeInference(inference_pb2_grpc.InferenceServicer):
            def __init__(self):
                self.calls = []  # (method, metadata dict, request)
                self.script = []  # actions for the next calls: ("abort", code), ("mid", code), ("sleep", s)
                self.lock = threading.Lock()

            def _take(self, name, request, context):
                with self.lock:
                    self.calls.append((name, dict(context.invocation_metadata()), request))
                    return self.script.pop(0) if self.script else ("ok",)

            def Generate(self, request, context):
                action = self._take("Generate", request, context)
                if action[0] in ("abort", "mid"):
                    context.abort(action[1], "fake " + action[1].name)
                if action[0] == "sleep":
                    time.sleep(action[1])
                return inference_pb2.GenerateResponse(token_ids=[7, 8], request_id="fake")

            def GenerateStream(self, request, context):
                action = self._take("GenerateStream", request, context)
                if action[0] == "abort":
                    context.abort(action[1], "fake " + action[1].name)
                yield inference_pb2.GenerateStreamResponse(token_ids=[7])
                if action[0] == "mid":
                    context.abort(action[1], "fake " + action[1].name)
                yield inference_pb2.GenerateStreamResponse(token_ids=[8], finish_reason=inference_pb2.FINISH_REASON_LENGTH)

            def Classify(self, request, context):
                self._take("Classify", request, context)
                return inference_pb2.ClassifyResponse()

            def Tokenize(self, request, context):
                self._take("Tokenize", request, context)
                return inference_pb2.TokenizeResponse(token_ids=[1])

        class FakeAdmin(admin_pb2_grpc.AdminServicer):
            def __init__(self):
                self.calls = []
                self.upload = []

            def _take(self, name, request, context):
                self.calls.append((name, dict(context.invocation_metadata()), request))

            def LoadAdapter(self, request, context):
                self._take("LoadAdapter", request, context)
                return admin_pb2.AdapterInfo(adapter_id=request.adapter_id)

            def UploadAdapter(self, request_iterator, context):
                self.upload = list(request_iterator)
                self._take("UploadAdapter", None, context)
                return admin_pb2.AdapterInfo(adapter_id=self.upload[0].header.adapter_id)

            def UnloadAdapter(self, request, context):
                self._take("UnloadAdapter", request, context)
                return admin_pb2.UnloadAdapterResponse()

            def ListAdapters(self, request, context):
                self._take("ListAdapters", request, context)
                return admin_pb2.ListAdaptersResponse(adapters=[admin_pb2.AdapterInfo(adapter_id="x")])

            def GetAdapter(self, request, context):
                self._take("GetAdapter", request, context)
                return admin_pb2.AdapterInfo(adapter_id=request.adapter_id)

        from concurrent import futures

        def fake_server(add, servicer):
            s = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
            add(servicer, s)
            port = s.add_insecure_port("127.0.0.1:0")
            s.start()
            fakes.append(s)
            return "127.0.0.1:%d" % port

        finf, fadm = FakeInference(), FakeAdmin()
        inf_addr = fake_server(inference_pb2_grpc.add_InferenceServicer_to_server, finf)
        adm_addr = fake_server(admin_pb2_grpc.add_AdminServicer_to_server, fadm)
        c = Client(inf_addr, token="inftok", admin_target=adm_addr, admin_token="admtok", timeout=10)
        c.wait_until_ready(10)

        def last(fake, method):
            calls = [x for x in fake.calls if x[0] == method]
            assert calls, "%s never reached the fake server" % method
            return calls[-1]

        c.generate("a1", prompt_token_ids=[1], max_new_tokens=1)
        _, md, req = last(finf, "Generate")
        eq(md.get("x-adapter-id"), "a1", "Generate x-adapter-id")
        eq(md.get("authorization"), "Bearer inftok", "Generate authorization")
        eq((req.adapter_id, list(req.prompt_token_ids), req.sampling.max_new_tokens), ("a1", [1], 1), "request")
        eq([r.token_ids[0] for r in c.generate_stream("a2", prompt_text="hi", max_new_tokens=2)], [7, 8], "stream")
        _, md, req = last(finf, "GenerateStream")
        eq(md.get("x-adapter-id"), "a2", "GenerateStream x-adapter-id")
        eq(req.prompt_text, b"hi", "prompt_text")
        c.classify("a3", prompt_token_ids=[1, 2])
        eq(last(finf, "Classify")[1].get("x-adapter-id"), "a3", "Classify x-adapter-id")
        c.generate(prompt_token_ids=[1], max_new_tokens=1, adapters=[("c1", 0.5), "c2"])
        _, md, req = last(finf, "Generate")
        eq(md.get("x-adapter-id"), "c1", "a composition's x-adapter-id (its first adapter)")
        eq([(a.adapter_id, a.HasField("weight"), a.weight) for a in req.adapters],
           [("c1", True, 0.5), ("c2", False, 0.0)], "adapters")
        c.generate(prompt_token_ids=[1], max_new_tokens=1, request_id="my-req-1")
        _, md, _ = last(finf, "Generate")
        eq("x-adapter-id" in md, False, "the base model sends no x-adapter-id")
        eq(md.get("x-request-id"), "my-req-1", "x-request-id")
        c.tokenize("hello")
        eq("x-adapter-id" in last(finf, "Tokenize")[1], False, "Tokenize sends no x-adapter-id")
        ok("inference calls send x-adapter-id (the adapter, a composition's first) and the bearer token")

        updir = os.path.join(work, "upload-src")
        os.makedirs(updir)
        blobs = {"adapter_config.json": b'{"peft_type": "LORA"}',
                 "adapter_model.safetensors": os.urandom((5 << 20) // 2), "config.json": b"{}"}
        for name, data in blobs.items():
            with open(os.path.join(updir, name), "wb") as f:
                f.write(data)
        eq(c.upload_adapter("u1", updir, replace=True, pin=True).adapter_id, "u1", "upload response")
        c.load_adapter("l1", "/srv/adapters/l1", replace=True)
        c.unload_adapter("n1", keep_on_disk=True)
        eq(c.get_adapter("g1").adapter_id, "g1", "get")
        eq([a.adapter_id for a in c.list_adapters()], ["x"], "list")
        for method, want in (("UploadAdapter", "u1"), ("LoadAdapter", "l1"), ("UnloadAdapter", "n1"),
                             ("GetAdapter", "g1"), ("ListAdapters", None)):
            md = last(fadm, method)[1]
            eq(md.get("x-adapter-id"), want, method + " x-adapter-id")
            eq(md.get("authorization"), "Bearer admtok", method + " authorization")
        eq([x[0] for x in finf.calls if "Adapter" in x[0]], [], "Admin calls on the inference target")
        r = last(fadm, "LoadAdapter")[2]
        eq((r.path, r.replace, r.pin), ("/srv/adapters/l1", True, False), "LoadAdapterRequest")
        eq(last(fadm, "UnloadAdapter")[2].keep_on_disk, True, "keep_on_disk")
        msgs = fadm.upload
        eq(msgs[0].WhichOneof("part"), "header", "the upload's first message")
        eq((msgs[0].header.adapter_id, msgs[0].header.replace, msgs[0].header.pin), ("u1", True, True), "header")
        eq({m.WhichOneof("part") for m in msgs[1:]}, {"chunk"}, "the messages after the header")
        order = []
        got = {}
        for m in msgs[1:]:
            assert len(m.chunk.data) <= 1 << 20, "chunk of %d bytes" % len(m.chunk.data)
            if not order or order[-1] != m.chunk.file_name:
                order.append(m.chunk.file_name)
            got[m.chunk.file_name] = got.get(m.chunk.file_name, b"") + m.chunk.data
        eq(order, ["adapter_config.json", "adapter_model.safetensors", "config.json"], "upload file order")
        eq(got == blobs, True, "uploaded bytes equal the files")
        eq(len(msgs), 1 + 1 + 3 + 1, "upload messages (header, config, 3 weight chunks, config.json)")
        ok("admin calls go to admin_target with the admin token and x-adapter-id; the upload stream is "
           "a header, then each file in order in chunks of at most 1 MiB")

        for code, cls in sorted(ac.errors.ERRORS_BY_CODE.items(), key=lambda kv: kv[0].value[0]):
            finf.script = [("abort", code)]
            e = expect_error(cls, c.generate, "a1", prompt_token_ids=[1], max_new_tokens=1)
            eq((e.code, e.message, isinstance(e, ac.AdapterdError)), (code, "fake " + code.name, True), cls.__name__)
        for code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNIMPLEMENTED):
            finf.script = [("abort", code)]
            eq(expect_error(ac.AdapterdError, c.generate, "a1", prompt_token_ids=[1], max_new_tokens=1).code,
               code, "code")
        finf.script = [("sleep", 2.0)]
        expect_error(ac.DeadlineExceededError, c.generate, "a1", prompt_token_ids=[1], max_new_tokens=1, timeout=0.2)
        finf.script = [("abort", grpc.StatusCode.NOT_FOUND)]
        expect_error(ac.NotFoundError, c.generate_stream, "a1", prompt_token_ids=[1], max_new_tokens=1)
        finf.script = [("mid", grpc.StatusCode.INTERNAL)]
        seen = []
        try:
            for r in c.generate_stream("a1", prompt_token_ids=[1], max_new_tokens=2):
                seen.append(list(r.token_ids))
            raise AssertionError("the stream ended without an error")
        except ac.InternalError as e:
            eq((seen, e.message), ([[7]], "fake INTERNAL"), "mid-stream error")
        ok("each gRPC code raises its class (others AdapterdError), from unary calls and from streams, "
           "mid-stream included; a timeout raises DeadlineExceededError")

        def count(fake, method):
            return sum(1 for x in fake.calls if x[0] == method)

        rc = Client(inf_addr, retries=2, backoff_initial=0.01, timeout=10)
        U, RE = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED
        n = count(finf, "Generate")
        finf.script = [("abort", U), ("abort", U)]
        eq(list(rc.generate("a1", prompt_token_ids=[1], max_new_tokens=1).token_ids), [7, 8], "retried generate")
        eq(count(finf, "Generate") - n, 3, "generate attempts after 2 UNAVAILABLE")
        n = count(finf, "Generate")
        finf.script = [("abort", U)] * 3
        eq(expect_error(ac.UnavailableError, rc.generate, "a1", prompt_token_ids=[1], max_new_tokens=1).attempts, 3,
           "attempts")
        eq(count(finf, "Generate") - n, 3, "generate attempts with retries=2")
        for code in (RE, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
            n = count(finf, "Generate")
            finf.script = [("abort", code)]
            expect_error(ac.errors.error_class(code), rc.generate, "a1", prompt_token_ids=[1], max_new_tokens=1)
            eq(count(finf, "Generate") - n, 1, "%s is not retried" % code.name)
        finf.script = []
        rc_re = Client(inf_addr, retries=2, backoff_initial=0.01, retry_resource_exhausted=True)
        n = count(finf, "Generate")
        finf.script = [("abort", RE)]
        rc_re.generate("a1", prompt_token_ids=[1], max_new_tokens=1)
        eq(count(finf, "Generate") - n, 2, "RESOURCE_EXHAUSTED retried with retry_resource_exhausted")
        n = count(finf, "GenerateStream")
        finf.script = [("abort", U)]
        eq(len(list(rc.generate_stream("a1", prompt_token_ids=[1], max_new_tokens=2))), 2, "retried stream")
        eq(count(finf, "GenerateStream") - n, 2, "stream attempts after UNAVAILABLE before any response")
        n = count(finf, "GenerateStream")
        finf.script = [("mid", U)]
        e = expect_error(ac.UnavailableError, rc.generate_stream, "a1", prompt_token_ids=[1], max_new_tokens=2)
        eq((count(finf, "GenerateStream") - n, e.attempts), (1, 1), "a stream that sent a response is not retried")
        ok("retries: UNAVAILABLE retried up to retries times (generate, stream before its first response); "
           "RESOURCE_EXHAUSTED only when asked; other codes and mid-stream failures never")

        # ---------------- a dead port: attempts counted by a client interceptor
        class Counter(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                      grpc.StreamUnaryClientInterceptor):
            def __init__(self):
                self.n = {}

            def _count(self, details):
                name = details.method.rsplit("/", 1)[-1]
                self.n[name] = self.n.get(name, 0) + 1

            def intercept_unary_unary(self, continuation, details, request):
                self._count(details)
                return continuation(details, request)

            def intercept_unary_stream(self, continuation, details, request):
                self._count(details)
                return continuation(details, request)

            def intercept_stream_unary(self, continuation, details, request_iterator):
                self._count(details)
                return continuation(details, request_iterator)

        dead = "127.0.0.1:%d" % free_port()
        counter = Counter()
        dc = Client(dead, retries=2, backoff_initial=0.05, timeout=10, interceptors=[counter])
        t0 = time.monotonic()
        e = expect_error(ac.UnavailableError, dc.list_adapters)
        eq((counter.n.get("ListAdapters"), e.attempts), (3, 3), "list_adapters attempts on a dead port")
        assert time.monotonic() - t0 >= 0.05 * 0.5 + 0.1 * 0.5, "no backoff between attempts"
        expect_error(ac.UnavailableError, dc.generate, "a1", prompt_token_ids=[1], max_new_tokens=1)
        eq(counter.n.get("Generate"), 3, "generate attempts on a dead port")
        expect_error(ac.UnavailableError, dc.generate_stream, "a1", prompt_token_ids=[1], max_new_tokens=1)
        eq(counter.n.get("GenerateStream"), 3, "generate_stream attempts on a dead port")
        expect_error(ac.UnavailableError, dc.get_adapter, "a1")
        eq(counter.n.get("GetAdapter"), 3, "get_adapter attempts on a dead port")
        expect_error(ac.UnavailableError, dc.load_adapter, "a1", "/x")
        expect_error(ac.UnavailableError, dc.unload_adapter, "a1")
        expect_error(ac.UnavailableError, dc.upload_adapter, "a1", updir)
        eq((counter.n.get("LoadAdapter"), counter.n.get("UnloadAdapter"), counter.n.get("UploadAdapter")), (1, 1, 1),
           "load/unload/upload attempts (never retried)")
        counter0 = Counter()
        expect_error(ac.UnavailableError, Client(dead, interceptors=[counter0]).list_adapters)
        eq(counter0.n.get("ListAdapters"), 1, "attempts with retries=0")
        ok("a dead port with retries=2: UnavailableError after 3 attempts (get, list, generate, stream); "
           "load, unload and upload tried once")

        # ---------------- the real server
        a.wait_ready()
        ok("adapterd ready: gRPC %s, Admin %s" % (a.grpc, a.admin))
        s = Client(a.grpc, admin_target=a.admin, timeout=60)
        ids = {x.adapter_id for x in s.list_adapters()}
        assert {"demo-qv-r4", "demo-all-r8"} <= ids, "demo adapters missing from %s" % sorted(ids)
        demo = s.get_adapter("demo-qv-r4")
        demo_dir = demo.source
        if not os.path.isfile(os.path.join(demo_dir, "adapter_config.json")):
            found = glob.glob(os.path.join(cache, "**", "demo-qv-r4", "adapter_config.json"), recursive=True)
            assert found, "no demo-qv-r4 directory under %s" % cache
            demo_dir = os.path.dirname(found[0])
        ok("list_adapters has the demo adapters; demo-qv-r4 is %s" % demo_dir)

        info = s.upload_adapter("py-up", demo_dir)
        eq((info.adapter_id, info.state, info.type, list(info.ranks), info.source),
           ("py-up", admin_pb2.ADAPTER_STATE_READY, "lora", [4], "upload"), "uploaded AdapterInfo")
        e = expect_error(ac.AlreadyExistsError, s.upload_adapter, "py-up", demo_dir)
        eq(e.code, grpc.StatusCode.ALREADY_EXISTS, "code")
        eq(s.upload_adapter("py-up", demo_dir, replace=True).adapter_id, "py-up", "upload with replace")
        ok("upload_adapter; a second upload without replace raises AlreadyExistsError; replace=True swaps")

        info = s.load_adapter("py-path", demo_dir)
        eq((info.adapter_id, info.source, list(info.ranks)), ("py-path", demo_dir, [4]), "path load AdapterInfo")
        expect_error(ac.AlreadyExistsError, s.load_adapter, "py-path", demo_dir)
        ids = {x.adapter_id for x in s.list_adapters()}
        assert {"py-up", "py-path"} <= ids, sorted(ids)
        eq(s.get_adapter("py-path").source, demo_dir, "get_adapter source")
        ok("load_adapter by path, list_adapters, get_adapter")

        greedy = dict(prompt_token_ids=[1, 2, 3, 4, 5, 6], max_new_tokens=8, temperature=0.0, ignore_eos=True)
        r = s.generate("py-up", **greedy)
        eq((len(r.token_ids), r.finish_reason, r.usage.completion_tokens, r.usage.prompt_tokens),
           (8, inference_pb2.FINISH_REASON_LENGTH, 8, 6), "Generate")
        assert r.request_id, "no request_id"
        chunks = list(s.generate_stream("py-up", **greedy))
        streamed = [t for ch in chunks for t in ch.token_ids]
        eq(streamed, list(r.token_ids), "GenerateStream tokens vs Generate")
        eq((chunks[-1].finish_reason, chunks[-1].usage.completion_tokens), (inference_pb2.FINISH_REASON_LENGTH, 8),
           "the stream's last message")
        eq(list(s.generate("py-path", **greedy).token_ids), list(r.token_ids), "py-path vs py-up (same files)")
        eq(list(s.generate("demo-qv-r4", **greedy).token_ids), list(r.token_ids), "demo-qv-r4 vs py-up")
        ok("generate and generate_stream give the same greedy tokens %s" % list(r.token_ids))

        e = expect_error(ac.NotFoundError, s.generate, "no-such-adapter", **greedy)
        eq(e.code, grpc.StatusCode.NOT_FOUND, "code")
        expect_error(ac.NotFoundError, s.generate_stream, "no-such-adapter", **greedy)
        expect_error(ac.NotFoundError, s.get_adapter, "no-such-adapter")
        expect_error(ac.NotFoundError, s.unload_adapter, "no-such-adapter")
        ok("an unknown adapter raises NotFoundError (generate, generate_stream, get, unload)")

        expect_error(ac.InvalidArgumentError, s.upload_adapter, "bad id!", demo_dir)
        expect_error(ac.InvalidArgumentError, s.load_adapter, "../escape", demo_dir)
        expect_error(ac.InvalidArgumentError, s.generate, "py-up", prompt_token_ids=[1], max_new_tokens=0)
        expect_error(ac.FailedPreconditionError, s.classify, "py-up", prompt_token_ids=[1, 2, 3])
        ok("a bad id or request raises InvalidArgumentError; Classify through a causal-LM adapter "
           "FailedPreconditionError")

        s.unload_adapter("py-up")
        expect_error(ac.NotFoundError, s.get_adapter, "py-up")
        expect_error(ac.NotFoundError, s.generate, "py-up", **greedy)
        eq(list(s.generate("py-path", **greedy).token_ids), list(r.token_ids), "py-path after unloading py-up")
        ok("unload_adapter; the id then raises NotFoundError")

        # ---------------- a server that requires tokens
        b.wait_ready()
        tiny = dict(prompt_token_ids=[1, 2, 3], max_new_tokens=2)
        expect_error(ac.UnauthenticatedError, Client(b.grpc, timeout=60).list_adapters)
        expect_error(ac.UnauthenticatedError, Client(b.grpc, token="wrong", timeout=60).list_adapters)
        expect_error(ac.UnauthenticatedError, Client(b.grpc, timeout=60).generate, **tiny)
        expect_error(ac.PermissionDeniedError, Client(b.grpc, token=inf_tok, timeout=60).list_adapters)
        good = Client(b.grpc, token=inf_tok, admin_token=admin_tok, timeout=60)
        eq(good.list_adapters(), [], "adapters on the token server")
        eq(len(good.generate(**tiny).token_ids), 2, "generate with the inference token")
        ok("tokens: none or a wrong one raises UnauthenticatedError, the inference token on Admin "
           "PermissionDeniedError; admin_token and token are sent to their services")

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
