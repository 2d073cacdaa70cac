"""The checks python_client_test.py's inner phase runs with the installed client.

Against in-test gRPC servers (fakes): the metadata each call sends
(x-adapter-id, authorization), the upload's message sequence, the separate
Admin target, every error class, mid-stream errors, and retries; against a
dead port, that retries=2 makes 3 attempts (counted by a client
interceptor); then against the real adapterd servers. This module imports
gRPC: the inner phase imports it only after its servers have started, so
that no fork happens under gRPC's threads.
"""

import glob
import os
import threading
import time
from concurrent import futures

import grpc

import adapterd_client as ac
from adapterd_client import Client, admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from python_client_support import eq, expect_error, free_port


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


def fake_server(add, servicer, fakes):
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    add(servicer, s)
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    fakes.append(s)
    return "127.0.0.1:%d" % port


def last(fake, method):
    calls = [x for x in fake.calls if x[0] == method]
    assert calls, "%s never reached the fake server" % method
    return calls[-1]


def count(fake, method):
    return sum(1 for x in fake.calls if x[0] == method)


def check_fakes(ok, work, fakes):
    """Every check against the fakes and a dead port; `ok` reports each group
    of checks, and `fakes` collects the servers for the caller to stop."""
    finf, fadm = FakeInference(), FakeAdmin()
    inf_addr = fake_server(inference_pb2_grpc.add_InferenceServicer_to_server, finf, fakes)
    adm_addr = fake_server(admin_pb2_grpc.add_AdminServicer_to_server, fadm, fakes)
    c = Client(inf_addr, token="inftok", admin_target=adm_addr, admin_token="admtok", timeout=10)
    c.wait_until_ready(10)
    check_metadata(ok, c, finf)
    updir = check_admin_calls(ok, work, c, finf, fadm)
    check_error_classes(ok, c, finf)
    check_retries(ok, inf_addr, finf)
    check_dead_port(ok, updir)


def check_metadata(ok, c, finf):
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


def check_admin_calls(ok, work, c, finf, fadm):
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
    return updir


def check_error_classes(ok, c, finf):
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


def check_retries(ok, inf_addr, finf):
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


def check_dead_port(ok, updir):
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


def check_real_server(ok, a, cache):
    """Upload, load by path, list, get, Generate and GenerateStream agreeing
    on a greedy request, unload, and the typed errors, against adapterd."""
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


def check_tokens(ok, b, admin_tok, inf_tok):
    """UNAUTHENTICATED and PERMISSION_DENIED from a server that requires tokens."""
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
