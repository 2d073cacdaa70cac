#!/usr/bin/env python3
"""End-to-end conformance of a running adapterd on one device against the
reference libraries on the same device, computed live.

For each architecture (a tiny Llama and a tiny Qwen2, made by
tests/conformance/hf_reference.py) and each dtype, the adapters are made by
the libraries themselves (PEFT: LoRA, DoRA, IA3; AdapterHub `adapters`: a
Houlsby bottleneck adapter; the Qwen2 model gets the LoRA only). The
reference is each library's own model on --device in that dtype: greedy
decoding, recording at every step the log-probability of the chosen token
and the gap between the two largest logits.

adapterd serves the same checkpoint with --device and --dtype, every
adapter loaded by path. Each case is sent over the OpenAI HTTP API
(/v1/completions, token ids in and out, temperature 0, logprobs) once on
its own, then all cases of the model at once (a mixed batch: the base and
every adapter kind in the same steps). A case passes when
  - its tokens equal the reference's up to the first step whose top-2 gap
    is below the tolerance (after it, greedy may differ and is not
    compared), and
  - every compared step's logprob is within the tolerance: 1e-3 absolute
    in float32, 2e-2 relative (of max(1, |logprob|)) in bfloat16.

Writes a JSON report (--out) and prints one line per case; exits non-zero
when any case fails or cannot run (a missing library is a failure, never a
skip).

  python3 bench/gpu/conformance.py --build build --device cpu --out conf.json
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
CONFORMANCE = os.path.join(SRC, "tests", "conformance")
sys.path.insert(0, os.path.join(SRC, "bench"))
from common import Server  # noqa: E402

TOL = {"float32": ("abs", 1e-3), "bfloat16": ("rel", 2e-2)}
PROMPTS = [[1, 17, 42, 99, 7, 123, 64, 5, 200, 31, 77, 12], [1, 250, 3, 3, 90, 180, 11, 60]]
NEW_TOKENS = 8


def run_script(script, *args):
    subprocess.run([sys.executable, os.path.join(CONFORMANCE, script), *args], check=True)


def make_fixtures(work, arch):
    """(base dir, {case: (kind, adapter dir or None)}, {case: error}) for
    `arch`; a case whose adapter cannot be made is an error, not a skip."""
    base = os.path.join(work, arch)
    run_script("hf_reference.py", "make-model", "--arch", arch, "--out", base, "--seed", "7")
    makers = {"lora": ("peft", "peft_reference.py", ["make-lora", "--seed", "11", "--targets", "all-linear"])}
    if arch == "llama":
        makers.update(
            dora=("peft", "peft_reference.py", ["make-lora", "--seed", "12", "--targets", "all-linear", "--dora"]),
            ia3=("peft", "peft_reference.py", ["make-ia3", "--seed", "13"]),
            bottleneck=("adapters", "adapters_reference.py",
                        ["make-bottleneck", "--seed", "14", "--config", "double_seq_bn"]))
    cases, errors = {"base": ("base", None)}, {}
    for case, (kind, script, args) in makers.items():
        out = os.path.join(work, f"{arch}-{case}")
        try:
            run_script(script, args[0], "--model", base, "--out", out, *args[1:])
            cases[case] = (kind, out)
        except subprocess.CalledProcessError as e:
            errors[case] = f"making the adapter failed: {e}"
    return base, cases, errors


def reference_model(base, kind, adapter, dtype, device):
    import torch
    from transformers import AutoModelForCausalLM
    dt = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dt)
    if kind == "peft":
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter)
    elif kind == "adapters":
        import adapters
        adapters.init(model)
        info = {}
        model.load_adapter(adapter, load_as="bn", with_head=False, use_safetensors=True, loading_info=info)
        if info.get("missing_keys") or info.get("unexpected_keys"):
            raise ValueError(f"the adapter in {adapter} does not fit the model: {info}")
        model.set_active_adapters("bn")
    return model.to(device=device, dtype=dt).eval()


def reference_greedy(model, prompt, device):
    """[(token, logprob, top-2 gap)] for NEW_TOKENS greedy steps, full recompute each step."""
    import torch
    ids = list(prompt)
    steps = []
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            x = torch.tensor([ids], dtype=torch.long, device=device)
            logits = model(input_ids=x).logits[0, -1].float()
            top = torch.topk(logits, 2)
            tok = int(top.indices[0])
            lp = float(torch.log_softmax(logits, -1)[tok])
            steps.append((tok, lp, float(top.values[0] - top.values[1])))
            ids.append(tok)
    return steps


def complete(http, model, prompt):
    body = {"model": model, "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0,
            "logprobs": 0, "return_token_ids": True, "ignore_eos": True}
    req = urllib.request.Request(f"http://{http}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        choice = json.load(resp)["choices"][0]
    return choice["token_ids"], choice["logprobs"]["token_logprobs"]


def compare(ref, got_tokens, got_lps, dtype):
    """(ok, compared steps, worst error, message)."""
    kind, tol = TOL[dtype]
    worst, compared = 0.0, 0
    for i, (tok, lp, gap) in enumerate(ref):
        if i >= len(got_tokens):
            return False, compared, worst, f"only {len(got_tokens)} tokens"
        err = abs(got_lps[i] - lp) / (max(1.0, abs(lp)) if kind == "rel" else 1.0)
        worst = max(worst, err)
        compared += 1
        if err > tol:
            return False, compared, worst, f"step {i}: logprob {got_lps[i]:.6f} vs {lp:.6f}"
        if got_tokens[i] != tok:
            if gap < tol:
                return True, compared, worst, f"near tie at step {i} (gap {gap:.2e}); stopped comparing"
            return False, compared, worst, f"step {i}: token {got_tokens[i]} vs {tok} (gap {gap:.3f})"
        if gap < tol:
            return True, compared, worst, f"near tie at step {i} (gap {gap:.2e}); stopped comparing"
    return True, compared, worst, ""


def run_model(fixtures, arch, dtype, a):
    base, cases, errors = fixtures
    cases, errors = dict(cases), dict(errors)
    refs = {}
    for case, (kind, adapter) in list(cases.items()):
        try:
            model = reference_model(base, kind, adapter, dtype, a.ref_device)
            refs[case] = [reference_greedy(model, p, a.ref_device) for p in PROMPTS]
            del model
        except Exception as e:  # noqa: BLE001 - reported as the case's failure
            errors[case] = f"the reference failed: {type(e).__name__}: {e}"
            del cases[case]
    results = [dict(arch=arch, dtype=dtype, case=c, prompt=-1, mode="-", ok=False, compared_steps=0,
                    worst_error=0.0, message=msg) for c, msg in errors.items()]
    server = Server(a.build, [f"--model={base}", f"--device={a.device}", f"--dtype={dtype}",
                              f"--threads={a.threads}", "--http_listen=127.0.0.1:0",
                              f"--delta_backend={a.delta_backend}"])
    try:
        for case, (_, adapter) in cases.items():
            if adapter:
                server.ctl("load", f"--id={arch}-{case}", f"--path={adapter}")
        name = {c: (f"{arch}-{c}" if adapter else "base") for c, (_, adapter) in cases.items()}
        if "base" in name:
            name["base"] = json.load(urllib.request.urlopen(f"http://{server.http}/v1/models"))["data"][0]["id"]
        jobs = [(c, i) for c in cases for i in range(len(PROMPTS))]
        for mode in ("alone", "mixed"):
            if mode == "alone":
                outs = [complete(server.http, name[c], PROMPTS[i]) for c, i in jobs]
            else:
                with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
                    outs = list(pool.map(lambda j: complete(server.http, name[j[0]], PROMPTS[j[1]]), jobs))
            for (c, i), (toks, lps) in zip(jobs, outs):
                ok, n, worst, msg = compare(refs[c][i], toks, lps, dtype)
                results.append(dict(arch=arch, dtype=dtype, case=c, prompt=i, mode=mode, ok=ok,
                                    compared_steps=n, worst_error=worst, message=msg))
    finally:
        server.stop()
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", required=True, help="build tree (or unpacked bundle) with server/adapterd")
    p.add_argument("--device", default="cuda", help="adapterd's --device")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--delta-backend", default="auto", help="adapterd's --delta_backend (auto: the CUDA kernels on a GPU)")
    p.add_argument("--out", required=True, help="JSON report")
    a = p.parse_args()
    a.ref_device = a.device
    import torch
    torch.manual_seed(0)
    results, errors = [], []
    with tempfile.TemporaryDirectory(prefix="adapterd-gpu-conf-") as work:
        for arch in ("llama", "qwen2"):
            try:
                fixtures = make_fixtures(work, arch)  # the same files for every dtype
            except Exception as e:  # noqa: BLE001 - a model that cannot be made is a failure, reported
                errors.append(f"{arch}: {type(e).__name__}: {e}")
                continue
            for dtype in a.dtypes.split(","):
                try:
                    results += run_model(fixtures, arch, dtype, a)
                except Exception as e:  # noqa: BLE001 - a case that cannot run is a failure, reported
                    errors.append(f"{arch} {dtype}: {type(e).__name__}: {e}")
    for r in results:
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['arch']:6} {r['dtype']:9} {r['case']:10} prompt {r['prompt']} "
              f"{r['mode']:5} steps {r['compared_steps']} worst {r['worst_error']:.2e} {r['message']}")
    for e in errors:
        print(f"FAIL {e}")
    print(f"adapterd --delta_backend={a.delta_backend}")
    passed = not errors and all(r["ok"] for r in results) and results
    with open(a.out, "w") as f:
        json.dump({"device": a.device, "delta_backend": a.delta_backend, "torch": torch.__version__,
                   "passed": bool(passed),
                   "errors": errors, "cases": results}, f, indent=1)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
