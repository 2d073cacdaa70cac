#!/usr/bin/env python3
"""Drives adapterd's HTTP API with the real `openai` Python client.

  openai_client_check.py BASE_URL API_KEY REQUESTS OUT

REQUESTS is a JSON object: {"models": [...], "max_tokens": N,
"completions": [prompt, ...], "chats": [[{role, content}, ...], ...]}. For
every model and request it calls completions.create / chat.completions.create
greedily (temperature 0, EOS ignored through vLLM's extra field), whole and
streamed, and records the text, the finish reason and the usage; it also
records models.list(), what an unknown model raises, and what a wrong API key
raises. OUT receives the results as JSON; the C++ test compares them with the
gRPC API's. The client is used exactly as applications use it.
"""
import json
import sys

import openai


def completion(client, model, prompt, max_tokens):
    whole = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                      extra_body={"ignore_eos": True})
    stream = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                       stream=True, stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True})
    pieces, finish, usage, chunks = [], None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for c in chunk.choices:
            pieces.append(c.text)
            finish = c.finish_reason or finish
    return {"text": whole.choices[0].text, "finish_reason": whole.choices[0].finish_reason,
            "usage": whole.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}),
            "model": whole.model, "object": whole.object,
            "stream_text": "".join(pieces), "stream_finish_reason": finish, "stream_chunks": chunks,
            "stream_usage": {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
            if usage else None}


def chat(client, model, messages, max_tokens):
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                                           extra_body={"ignore_eos": True})
    stream = client.chat.completions.create(model=model, messages=messages, max_completion_tokens=max_tokens,
                                            temperature=0, stream=True, extra_body={"ignore_eos": True})
    pieces, finish, roles, first_finish = [], None, [], []
    for chunk in stream:
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            if c.delta.content:
                pieces.append(c.delta.content)
            first_finish.append(c.finish_reason)
            finish = c.finish_reason or finish
    m = whole.choices[0].message
    return {"text": m.content, "role": m.role, "finish_reason": whole.choices[0].finish_reason,
            "usage": whole.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}),
            "object": whole.object, "stream_text": "".join(pieces), "stream_finish_reason": finish,
            "stream_roles": roles, "finish_null_until_last": all(f is None for f in first_finish[:-1])}


def error_name(fn):
    try:
        fn()
    except openai.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "body": e.body}
    return {"class": None}


def main():
    base_url, api_key, requests_path, out_path = sys.argv[1:5]
    with open(requests_path, encoding="utf-8") as f:
        req = json.load(f)
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
    out = {"completions": {}, "chats": {}}
    for model in req["models"]:
        out["completions"][model] = [completion(client, model, p, req["max_tokens"]) for p in req["completions"]]
        out["chats"][model] = [chat(client, model, m, req["max_tokens"]) for m in req["chats"]]
    listed = client.models.list()
    out["models"] = [{"id": m.id, "owned_by": m.owned_by, "parent": getattr(m, "parent", None)} for m in listed.data]
    out["retrieve"] = client.models.retrieve(req["models"][-1]).id
    out["unknown_model"] = error_name(lambda: client.completions.create(model="no-such-model", prompt="x", max_tokens=2))
    bad = openai.OpenAI(base_url=base_url, api_key="not-the-key", max_retries=0, timeout=60)
    out["bad_key"] = error_name(lambda: bad.chat.completions.create(
        model=req["models"][0], messages=[{"role": "user", "content": "hi"}], max_tokens=2))
    out["bad_request"] = error_name(lambda: client.completions.create(model=req["models"][0], prompt="x",
                                                                      max_tokens=-4))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
