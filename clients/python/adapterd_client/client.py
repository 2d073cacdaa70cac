"""A thin client for adapterd's Inference and Admin gRPC services.

Calls take the request's proto fields as keyword arguments and return the
response proto messages (see README.md for the list). Failures raise the
typed errors of adapterd_client.errors.
"""

import os
import random
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import grpc

from ._proto.adapterd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from .errors import UnavailableError, from_rpc_error

# The metadata key a router hashes on to send all requests for one adapter to
# the same replica: it cannot read adapter_id out of the protobuf body.
ADAPTER_ID_KEY = "x-adapter-id"
REQUEST_ID_KEY = "x-request-id"
# Upload chunk size: 1 MiB messages stay well under the server's
# --max_message_mb (4 MiB by default).
UPLOAD_CHUNK_BYTES = 1 << 20
# The files an adapter directory may hold, in the order they are sent.
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILES = ("adapter_model.safetensors", "adapter.safetensors")  # PEFT, AdapterHub
MODEL_CONFIG_FILE = "config.json"

_UNAVAILABLE = frozenset([grpc.StatusCode.UNAVAILABLE])
_UNAVAILABLE_OR_EXHAUSTED = frozenset([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])

Metadata = List[Tuple[str, str]]
ChatLike = Union[inference_pb2.Chat, Sequence[Union[inference_pb2.ChatMessage, Mapping[str, Any], Tuple[str, Any]]]]
AdaptersLike = Union[Mapping[str, float], Sequence[Union[str, Tuple[str, float], inference_pb2.AdapterWeight]]]


def _utf8(value: Union[str, bytes]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _header_value(value: str) -> Optional[str]:
    # gRPC metadata values are printable ASCII; an id that is not (and can
    # therefore never be valid) is left out so that the server, not the
    # transport, refuses it with INVALID_ARGUMENT.
    if value and all(0x20 <= ord(c) <= 0x7E for c in value):
        return value
    return None


def _chat(chat: ChatLike, add_generation_prompt: bool) -> inference_pb2.Chat:
    if isinstance(chat, inference_pb2.Chat):
        return chat
    out = inference_pb2.Chat(add_generation_prompt=add_generation_prompt)
    for m in chat:
        if isinstance(m, inference_pb2.ChatMessage):
            out.messages.append(m)
        elif isinstance(m, Mapping):
            out.messages.add(role=m["role"], content=_utf8(m["content"]))
        else:
            role, content = m
            out.messages.add(role=role, content=_utf8(content))
    return out


def _adapters(adapters: AdaptersLike) -> List[inference_pb2.AdapterWeight]:
    items = adapters.items() if isinstance(adapters, Mapping) else adapters
    out = []
    for a in items:
        if isinstance(a, inference_pb2.AdapterWeight):
            out.append(a)
        elif isinstance(a, str):
            out.append(inference_pb2.AdapterWeight(adapter_id=a))
        else:
            adapter_id, weight = a
            out.append(inference_pb2.AdapterWeight(adapter_id=adapter_id, weight=weight))
    return out


class Client:
    """A connection to one adapterd server (or a router in front of several).

    target: "host:port" of the gRPC listener (--listen).
    token: bearer token sent as "authorization: Bearer <token>" on every call.
    tls: use TLS; root_certificates (PEM bytes, or a path to a PEM file)
        replaces the system roots, private_key/certificate_chain (PEM bytes
        or paths) present a client certificate.
    timeout: default per-attempt deadline in seconds (None: no deadline);
        every method also takes timeout=.
    retries: how many times an idempotent call is tried again after
        UNAVAILABLE, with exponential backoff (see README.md, "Retries").
    admin_target: "host:port" of a separate Admin listener (--admin_listen);
        Admin calls go to target when it is not given.
    admin_token: the token for Admin calls when it differs from token (the
        server's --admin_token_file and --inference_token_file).
    retry_resource_exhausted: also retry RESOURCE_EXHAUSTED on inference
        calls (a full queue); off by default, see README.md.
    backoff_initial, backoff_max: the first retry waits about
        backoff_initial seconds, each next one twice as long, at most
        backoff_max (with jitter).
    options: extra grpc channel options; interceptors: grpc client
        interceptors wrapped around both channels.
    """

    def __init__(
        self,
        target: str,
        token: Optional[str] = None,
        tls: bool = False,
        root_certificates: Optional[Union[bytes, str]] = None,
        timeout: Optional[float] = None,
        retries: int = 0,
        *,
        admin_target: Optional[str] = None,
        admin_token: Optional[str] = None,
        private_key: Optional[Union[bytes, str]] = None,
        certificate_chain: Optional[Union[bytes, str]] = None,
        retry_resource_exhausted: bool = False,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        options: Optional[Sequence[Tuple[str, Any]]] = None,
        interceptors: Optional[Sequence[Any]] = None,
    ):
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self._token = token
        self._admin_token = admin_token if admin_token is not None else token
        self._timeout = timeout
        self._retries = int(retries)
        self._retry_exhausted = retry_resource_exhausted
        self._backoff_initial = float(backoff_initial)
        self._backoff_max = float(backoff_max)
        creds = None
        if tls:
            creds = grpc.ssl_channel_credentials(
                root_certificates=self._pem(root_certificates),
                private_key=self._pem(private_key),
                certificate_chain=self._pem(certificate_chain),
            )
        opts = list(options or [])
        self._channels = []
        self._channel = self._open(target, creds, opts, interceptors)
        self._admin_channel = self._open(admin_target, creds, opts, interceptors) if admin_target else self._channel
        self.inference = inference_pb2_grpc.InferenceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminStub(self._admin_channel)

    # --- lifecycle -------------------------------------------------------------

    @staticmethod
    def _pem(value: Optional[Union[bytes, str]]) -> Optional[bytes]:
        if value is None or isinstance(value, bytes):
            return value
        with open(value, "rb") as f:
            return f.read()

    def _open(self, target, creds, opts, interceptors) -> grpc.Channel:
        ch = grpc.secure_channel(target, creds, opts) if creds is not None else grpc.insecure_channel(target, opts)
        self._channels.append(ch)
        if interceptors:
            ch = grpc.intercept_channel(ch, *interceptors)
        return ch

    def close(self) -> None:
        for ch in self._channels:
            ch.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_until_ready(self, timeout: float) -> None:
        """Blocks until the channel(s) connect; UnavailableError after timeout seconds."""
        for ch in self._channels:
            try:
                grpc.channel_ready_future(ch).result(timeout=timeout)
            except grpc.FutureTimeoutError:
                raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "not connected after %ss" % timeout) from None

    # --- plumbing --------------------------------------------------------------

    def _metadata(self, adapter_id: Optional[str], token: Optional[str], request_id: Optional[str] = None) -> Metadata:
        md = []
        value = _header_value(adapter_id or "")
        if value is not None:
            md.append((ADAPTER_ID_KEY, value))
        if token:
            md.append(("authorization", "Bearer " + token))
        if request_id:
            md.append((REQUEST_ID_KEY, request_id))
        return md

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        return self._timeout if timeout is None else timeout

    def _sleep_before_retry(self, attempt: int) -> None:
        # Exponential, bounded by backoff_max, with "equal jitter": between
        # half and all of the step, so that clients spread out.
        step = min(self._backoff_max, self._backoff_initial * (2 ** attempt))
        time.sleep(step / 2 + random.uniform(0, step / 2))

    def _unary(self, fn: Callable[..., Any], request: Any, metadata: Metadata, timeout: Optional[float],
               retry_codes: frozenset) -> Any:
        attempt = 0
        while True:
            try:
                return fn(request, metadata=metadata, timeout=self._deadline(timeout))
            except grpc.RpcError as e:
                err = from_rpc_error(e, attempts=attempt + 1)
                cause = e
            if attempt >= self._retries or err.code not in retry_codes:
                raise err from cause
            self._sleep_before_retry(attempt)
            attempt += 1

    def _once(self, fn: Callable[..., Any], request: Any, metadata: Metadata, timeout: Optional[float]) -> Any:
        return self._unary(fn, request, metadata, timeout, frozenset())

    def _inference_retry_codes(self) -> frozenset:
        return _UNAVAILABLE_OR_EXHAUSTED if self._retry_exhausted else _UNAVAILABLE

    # --- Admin -----------------------------------------------------------------

    def upload_adapter(self, adapter_id: str, directory: str, replace: bool = False, pin: bool = False, *,
                       timeout: Optional[float] = None) -> admin_pb2.AdapterInfo:
        """Sends a local adapter directory's files (Admin.UploadAdapter); returns its AdapterInfo.

        The stream is a header (id, replace, pin), then adapter_config.json,
        then the weights (adapter_model.safetensors, else adapter.safetensors)
        and config.json when the directory has one, each in 1 MiB chunks.
        Never retried.
        """
        weights = next((w for w in WEIGHTS_FILES if os.path.isfile(os.path.join(directory, w))), WEIGHTS_FILES[0])
        names = [CONFIG_FILE, weights]
        if os.path.isfile(os.path.join(directory, MODEL_CONFIG_FILE)):
            names.append(MODEL_CONFIG_FILE)
        for name in names:  # fail before opening the stream, as adapterctl does
            if not os.path.isfile(os.path.join(directory, name)):
                raise FileNotFoundError("cannot read %s" % os.path.join(directory, name))

        def messages() -> Iterator[admin_pb2.UploadAdapterRequest]:
            yield admin_pb2.UploadAdapterRequest(
                header=admin_pb2.UploadHeader(adapter_id=adapter_id, replace=replace, pin=pin))
            for name in names:
                with open(os.path.join(directory, name), "rb") as f:
                    while True:
                        data = f.read(UPLOAD_CHUNK_BYTES)
                        if not data:
                            break
                        yield admin_pb2.UploadAdapterRequest(chunk=admin_pb2.FileChunk(file_name=name, data=data))

        try:
            return self.admin.UploadAdapter(messages(), metadata=self._metadata(adapter_id, self._admin_token),
                                            timeout=self._deadline(timeout))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from e

    def load_adapter(self, adapter_id: str, path: str, replace: bool = False, pin: bool = False, *,
                     timeout: Optional[float] = None) -> admin_pb2.AdapterInfo:
        """Loads an adapter from a directory on the server (Admin.LoadAdapter). Never retried."""
        req = admin_pb2.LoadAdapterRequest(adapter_id=adapter_id, path=path, replace=replace, pin=pin)
        return self._once(self.admin.LoadAdapter, req, self._metadata(adapter_id, self._admin_token), timeout)

    def unload_adapter(self, adapter_id: str, keep_on_disk: bool = False, *, timeout: Optional[float] = None) -> None:
        """Admin.UnloadAdapter. Never retried."""
        req = admin_pb2.UnloadAdapterRequest(adapter_id=adapter_id, keep_on_disk=keep_on_disk)
        self._once(self.admin.UnloadAdapter, req, self._metadata(adapter_id, self._admin_token), timeout)

    def list_adapters(self, *, timeout: Optional[float] = None) -> List[admin_pb2.AdapterInfo]:
        """Admin.ListAdapters: the AdapterInfo of every adapter. Retried on UNAVAILABLE."""
        resp = self._unary(self.admin.ListAdapters, admin_pb2.ListAdaptersRequest(),
                           self._metadata(None, self._admin_token), timeout, _UNAVAILABLE)
        return list(resp.adapters)

    def get_adapter(self, adapter_id: str, *, timeout: Optional[float] = None) -> admin_pb2.AdapterInfo:
        """Admin.GetAdapter. Retried on UNAVAILABLE."""
        return self._unary(self.admin.GetAdapter, admin_pb2.GetAdapterRequest(adapter_id=adapter_id),
                           self._metadata(adapter_id, self._admin_token), timeout, _UNAVAILABLE)

    # --- Inference -------------------------------------------------------------

    @staticmethod
    def generate_request(
        adapter_id: Optional[str] = None,
        prompt_token_ids: Optional[Iterable[int]] = None,
        prompt_text: Optional[Union[str, bytes]] = None,
        chat: Optional[ChatLike] = None,
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 0.0,
        seed: int = 0,
        stop_token_ids: Iterable[int] = (),
        ignore_eos: bool = False,
        return_logprobs: bool = False,
        stop: Iterable[str] = (),
        include_stop_string: bool = False,
        skip_special_tokens: Optional[bool] = None,
        add_special_tokens: Optional[bool] = None,
        add_generation_prompt: bool = True,
        adapters: Optional[AdaptersLike] = None,
    ) -> inference_pb2.GenerateRequest:
        """The GenerateRequest that generate() and generate_stream() send for these arguments."""
        req = inference_pb2.GenerateRequest(
            adapter_id=adapter_id or "",
            sampling=inference_pb2.SamplingParams(
                max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                stop_token_ids=list(stop_token_ids), ignore_eos=ignore_eos, return_logprobs=return_logprobs,
                stop=list(stop), include_stop_string=include_stop_string),
        )
        if prompt_token_ids is not None:
            req.prompt_token_ids.extend(prompt_token_ids)
        if prompt_text is not None:
            req.prompt_text = _utf8(prompt_text)
        if chat is not None:
            req.chat.CopyFrom(_chat(chat, add_generation_prompt))
        if skip_special_tokens is not None:
            req.skip_special_tokens = skip_special_tokens
        if add_special_tokens is not None:
            req.add_special_tokens = add_special_tokens
        if adapters is not None:
            req.adapters.extend(_adapters(adapters))
        return req

    @staticmethod
    def _routing_id(req: inference_pb2.GenerateRequest) -> str:
        # A composition is routed by its first adapter.
        return req.adapter_id or (req.adapters[0].adapter_id if req.adapters else "")

    def generate(self, adapter_id: Optional[str] = None, prompt_token_ids: Optional[Iterable[int]] = None,
                 prompt_text: Optional[Union[str, bytes]] = None, chat: Optional[ChatLike] = None, *,
                 request: Optional[inference_pb2.GenerateRequest] = None, request_id: Optional[str] = None,
                 timeout: Optional[float] = None, **fields: Any) -> inference_pb2.GenerateResponse:
        """Inference.Generate; returns the GenerateResponse.

        Keyword fields are those of generate_request() (max_new_tokens is
        required); or pass a ready GenerateRequest as request=. request_id is
        proposed to the server as x-request-id. Retried on UNAVAILABLE (and
        RESOURCE_EXHAUSTED with retry_resource_exhausted).
        """
        req = request if request is not None else self.generate_request(
            adapter_id, prompt_token_ids, prompt_text, chat, **fields)
        md = self._metadata(self._routing_id(req), self._token, request_id)
        return self._unary(self.inference.Generate, req, md, timeout, self._inference_retry_codes())

    def generate_stream(self, adapter_id: Optional[str] = None, prompt_token_ids: Optional[Iterable[int]] = None,
                        prompt_text: Optional[Union[str, bytes]] = None, chat: Optional[ChatLike] = None, *,
                        request: Optional[inference_pb2.GenerateRequest] = None, request_id: Optional[str] = None,
                        timeout: Optional[float] = None,
                        **fields: Any) -> Iterator[inference_pb2.GenerateStreamResponse]:
        """Inference.GenerateStream: an iterator of GenerateStreamResponse.

        The call starts at the first next(); errors, mid-stream ones included,
        are raised from the iteration. Closing the iterator (or leaving a for
        loop over it with break) cancels the call. Retried like generate(), but
        only while no response has arrived.
        """
        req = request if request is not None else self.generate_request(
            adapter_id, prompt_token_ids, prompt_text, chat, **fields)
        md = self._metadata(self._routing_id(req), self._token, request_id)
        return self._stream(req, md, timeout)

    def _stream(self, req, md, timeout) -> Iterator[inference_pb2.GenerateStreamResponse]:
        retry_codes = self._inference_retry_codes()
        attempt = 0
        while True:
            call = self.inference.GenerateStream(req, metadata=md, timeout=self._deadline(timeout))
            received = False
            try:
                for resp in call:
                    received = True
                    yield resp
                return
            except grpc.RpcError as e:
                err = from_rpc_error(e, attempts=attempt + 1)
                if received or attempt >= self._retries or err.code not in retry_codes:
                    raise err from e
            finally:
                call.cancel()  # a no-op once the call has finished
            self._sleep_before_retry(attempt)
            attempt += 1

    def classify(self, adapter_id: str, prompt_token_ids: Optional[Iterable[int]] = None,
                 prompt_text: Optional[Union[str, bytes]] = None, *, add_special_tokens: Optional[bool] = None,
                 request_id: Optional[str] = None, timeout: Optional[float] = None) -> inference_pb2.ClassifyResponse:
        """Inference.Classify through a SEQ_CLS adapter. Retried like generate()."""
        req = inference_pb2.ClassifyRequest(adapter_id=adapter_id)
        if prompt_token_ids is not None:
            req.prompt_token_ids.extend(prompt_token_ids)
        if prompt_text is not None:
            req.prompt_text = _utf8(prompt_text)
        if add_special_tokens is not None:
            req.add_special_tokens = add_special_tokens
        md = self._metadata(adapter_id, self._token, request_id)
        return self._unary(self.inference.Classify, req, md, timeout, self._inference_retry_codes())

    def tokenize(self, text: Optional[Union[str, bytes]] = None, chat: Optional[ChatLike] = None, *,
                 add_special_tokens: Optional[bool] = None, add_generation_prompt: bool = True,
                 timeout: Optional[float] = None) -> inference_pb2.TokenizeResponse:
        """Inference.Tokenize (the base model's tokenizer; no adapter). Retried on UNAVAILABLE."""
        req = inference_pb2.TokenizeRequest()
        if text is not None:
            req.text = _utf8(text)
        if chat is not None:
            req.chat.CopyFrom(_chat(chat, add_generation_prompt))
        if add_special_tokens is not None:
            req.add_special_tokens = add_special_tokens
        return self._unary(self.inference.Tokenize, req, self._metadata(None, self._token), timeout, _UNAVAILABLE)

    def detokenize(self, token_ids: Iterable[int], *, skip_special_tokens: Optional[bool] = None,
                   timeout: Optional[float] = None) -> inference_pb2.DetokenizeResponse:
        """Inference.Detokenize. Retried on UNAVAILABLE."""
        req = inference_pb2.DetokenizeRequest(token_ids=list(token_ids))
        if skip_special_tokens is not None:
            req.skip_special_tokens = skip_special_tokens
        return self._unary(self.inference.Detokenize, req, self._metadata(None, self._token), timeout, _UNAVAILABLE)

