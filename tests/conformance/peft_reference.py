#!/usr/bin/env python3
"""Hugging Face PEFT reference for adapterd's LoRA / IA3 / prompt-tuning conformance tests.

This script is NOT part of the server. It only produces test fixtures and ground
truth that the C++ tests compare against, computed live with `peft`:

  make-lora   wrap a checkpoint made by hf_reference.py make-model in a LoRA
              (optionally rsLoRA / DoRA / rank and alpha patterns / layer subset /
              fp16 or bf16 tensors),
              fill every adapter tensor from a seeded generator so the delta is
              clearly non-zero, and save it (adapter_config.json +
              adapter_model.safetensors). Also with modules_to_save (lm_head,
              embed_tokens), trainable_token_indices, LoRA on embed_tokens, trained
              biases (--bias all|lora_only, --lora-bias): every extra tensor is moved
              away from the base's value.
  make-ia3    the same for an (IA)^3 adapter: every ia3_l vector is 1 + 0.5 N(0, 1).
  make-prompt-tuning
              the same for prompt tuning: V virtual-token embeddings, random
              with the spread of the model's embedding rows.
  reference   load the base in float32 plus several adapters and, for each
              adapter (and `__base__`) and each prompt (batch 1, no padding),
              record {NAME}.r{i}.last_logits, .greedy and .step_logits (for
              prompt tuning: at real tokens only, the virtual ones excluded).
              Adapters of different PEFT types (and each prompt-tuning adapter)
              get their own PeftModel over a fresh copy of the base. With
              --mixed (LoRA adapters only), also one left-padded mixed-adapter
              batch through PEFT's `adapter_names` API (mixed.r{i}.last_logits,
              mixed.r{i}.greedy); PEFT refuses DoRA adapters there.
  make-cls    a SEQ_CLS LoRA on the checkpoint loaded as *ForSequenceClassification,
              with N labels: random LoRA and a random `score` head (saved through
              modules_to_save); optionally the model's config.json beside it
              (label names, pad_token_id), as PretrainedConfig.save_pretrained
              writes it.
  make-adalora
              an AdaLoRA adapter whose ranks PEFT's rank allocation has pruned:
              a few training steps on random tokens, update_and_allocate at each,
              until the final budget is fixed (so ranks differ per module); saved
              sliced to the kept ranks, or (--keep-masked) at init_r with the
              pruned singular values zeroed.
  reference   (also) SEQ_CLS adapters: {NAME}.r{i}.cls_logits, the logits of the
              PeftModel over *ForSequenceClassification for each prompt (batch 1);
              AdaLoRA adapters: {NAME}.ranks, the distinct ranks left after pruning
              (non-zero singular values per module, counted in the PeftModel).
  self-check  exercise both of the above in a temporary directory.

Nothing is written to stdout except by self-check; callers read the files.
Runs offline: nothing is ever downloaded.
"""
import argparse
import json
import os
import sys
import tempfile
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import transformers  # noqa: E402
import peft  # noqa: E402
from peft import (AdaLoraConfig, IA3Config, LoraConfig, PeftModel, PromptTuningConfig,  # noqa: E402
                  PromptTuningInit, get_peft_model)
from peft.tuners.ia3 import IA3Layer  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: E402

import hf_reference  # noqa: E402

BASE = "__base__"
GAIN = 0.5  # |scaling * B A x| ~ GAIN * |W x|: greedy tokens usually change
# PEFT drops the position ids that generate() derives from the (real-token) mask for
# prompt tuning; the model then numbers virtual + real tokens 0.. (checked by self-check).
warnings.filterwarnings("ignore", message="Position ids are not supported")


def fail(msg):
    print(f"peft_reference.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


hf_reference.fail = fail  # its helpers (load_prompts) report with our name


def warn(msg):
    print(f"peft_reference.py: warning: {msg}", file=sys.stderr)


def json_arg(text, what, kinds):
    val = json.loads(text)  # invalid JSON: a one-line error from main()
    if not isinstance(val, kinds):
        fail(f"{what} has the wrong JSON type")
    return val


def load_base(model_dir):
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        fail(f"{model_dir} has no config.json")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.generation_config.eos_token_id = None  # greedy must never stop at EOS
    return model.eval()


def lora_config_args(a, targets, task_type):
    tokens = None
    if a.trainable_tokens:
        tokens = json.loads(a.trainable_tokens) if a.trainable_tokens.startswith("{") else \
            [int(x) for x in a.trainable_tokens.split(",")]
    return dict(
        r=a.r, lora_alpha=int(a.alpha) if a.alpha.is_integer() else a.alpha, use_rslora=a.rslora,
        target_modules=targets, rank_pattern=json_arg(a.rank_pattern, "--rank-pattern", dict),
        alpha_pattern=json_arg(a.alpha_pattern, "--alpha-pattern", dict),
        layers_to_transform=[int(x) for x in a.layers.split(",")] if a.layers else None,
        exclude_modules=json_arg(a.exclude, "--exclude", (list, str)) if a.exclude else None,
        use_dora=a.dora, fan_in_fan_out=a.fan_in_fan_out, init_lora_weights=False,
        lora_dropout=0.0, bias=a.bias, lora_bias=a.lora_bias, task_type=task_type,
        modules_to_save=[m for m in a.modules_to_save.split(",") if m] or None,
        trainable_token_indices=tokens)


def randomize_lora(model, gen):
    """Every LoRA (Linear and Embedding) module of `model`: A and B random, the delta about
    GAIN times the base output; DoRA magnitudes perturbed; lora_B biases random."""
    layers = sorted((n, m) for n, m in model.named_modules()
                    if isinstance(m, LoraLayer) and ("default" in m.lora_A or "default" in m.lora_embedding_A))
    if not layers:
        fail("no module matched the target selection")
    with torch.no_grad():
        for _, m in layers:
            s = m.scaling["default"]
            if "default" in m.lora_embedding_A:  # A [r, vocab], B [hidden, r]; rows of std EMBED_STD
                A, B = m.lora_embedding_A["default"], m.lora_embedding_B["default"]
                A.copy_(torch.randn(A.shape, generator=gen))
                B.copy_(torch.randn(B.shape, generator=gen) / A.shape[0] ** 0.5 * (GAIN * 0.1 / s))
                continue
            A, B = m.lora_A["default"].weight, m.lora_B["default"].weight
            A.copy_(torch.randn(A.shape, generator=gen) / A.shape[1] ** 0.5)
            B.copy_(torch.randn(B.shape, generator=gen) / A.shape[0] ** 0.5 * (GAIN / s))
            if m.lora_B["default"].bias is not None:  # lora_bias: scaled with the delta
                bias = m.lora_B["default"].bias
                bias.copy_(0.2 * torch.randn(bias.shape, generator=gen) / s)
            if m.use_dora.get("default", False):  # ||W + s B A|| per output row, perturbed
                mag = m.lora_magnitude_vector["default"].weight
                norm = torch.linalg.norm(m.get_base_layer().weight.float() + s * (B @ A), dim=1)
                mag.copy_(norm * (1 + 0.1 * torch.randn(mag.shape, generator=gen)))
    return layers


def randomize_extras(model, gen, bias):
    """Moves every trained tensor outside LoRA away from the base: modules_to_save copies,
    trainable token rows and, for bias "all"/"lora_only", the biases PEFT will save."""
    with torch.no_grad():
        for n, m in sorted(model.named_modules()):
            if type(m).__name__ == "ModulesToSaveWrapper" and "default" in m.modules_to_save:
                w = m.modules_to_save["default"].weight
                w.add_(float(w.std()) * torch.randn(w.shape, generator=gen))
            if type(m).__name__ == "TrainableTokensLayer" and "default" in m.trainable_tokens_delta:
                d = m.trainable_tokens_delta["default"]
                d.add_(max(float(d.std()), 0.1) * 2 * torch.randn(d.shape, generator=gen))
        for n, p in sorted(model.named_parameters()):
            wrapped = n.endswith("base_layer.bias")
            if n.endswith("bias") and not n.endswith("lora_B.default.bias") and (
                    bias == "all" or (bias == "lora_only" and wrapped)):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))


def cmd_make_lora(a):
    targets = a.targets_regex or (a.targets if a.targets == "all-linear" else
                                  [t for t in a.targets.split(",") if t])
    cfg = LoraConfig(**lora_config_args(a, targets, "CAUSAL_LM"))
    model = get_peft_model(load_base(a.model), cfg)
    gen = torch.Generator().manual_seed(a.seed)
    layers = randomize_lora(model, gen)
    randomize_extras(model, gen, a.bias)
    if a.dtype != "float32":  # saved in half precision, as adapters trained in it are
        for _, m in layers:
            for part in (m.lora_A, m.lora_B, getattr(m, "lora_magnitude_vector", {})):
                if "default" in part:
                    part["default"].to(getattr(torch, a.dtype))
    save_adapter(model, a.out, 2 * len(layers))
    if a.fan_in_fan_out:  # PEFT resets it for nn.Linear (with a warning); keep the request on disk
        path = os.path.join(a.out, "adapter_config.json")
        with open(path) as f:
            doc = dict(json.load(f), fan_in_fan_out=True)
        with open(path, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)


def save_adapter(model, out, min_tensors):
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    files = set(os.listdir(out))  # PEFT also writes a README.md model card
    if not {"adapter_config.json", "adapter_model.safetensors"} <= files:
        fail(f"unexpected files in {out}: {sorted(files)}")
    with safe_open(os.path.join(out, "adapter_model.safetensors"), "pt") as f:
        if len(list(f.keys())) < min_tensors:
            fail("saved adapter lacks tensors")


def cmd_make_cls(a):
    names = [x for x in a.label_names.split(",") if x] if a.label_names else None
    if names and len(names) != a.labels:
        fail("--label-names must name every label")
    kw = dict(num_labels=a.labels)
    if names:
        kw.update(id2label=dict(enumerate(names)), label2id={x: i for i, x in enumerate(names)})
    if a.pad_token_id is not None:
        kw["pad_token_id"] = a.pad_token_id
    base = AutoModelForSequenceClassification.from_pretrained(a.model, dtype=torch.float32, **kw)
    targets = [t for t in a.targets.split(",") if t]
    model = get_peft_model(base, LoraConfig(**lora_config_args(a, targets, "SEQ_CLS")))
    gen = torch.Generator().manual_seed(a.seed)
    layers = randomize_lora(model, gen)
    with torch.no_grad():
        head = model.base_model.model.score.modules_to_save["default"].weight  # [labels, hidden]
        head.copy_(torch.randn(head.shape, generator=gen) / head.shape[1] ** 0.5)
    save_adapter(model, a.out, 2 * len(layers) + 1)
    if a.save_config:  # the fine-tuned model's config: id2label, pad_token_id
        model.base_model.model.config.save_pretrained(a.out)


def cmd_make_adalora(a):
    targets = [t for t in a.targets.split(",") if t]
    steps = 4  # tinit 1: steps 2-3 prune towards target_r, step 3 fixes the budget
    cfg = AdaLoraConfig(init_r=a.init_r, target_r=a.target_r, lora_alpha=a.alpha, tinit=1, tfinal=1,
                        deltaT=1, total_step=steps, target_modules=targets, lora_dropout=0.0,
                        init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(load_base(a.model), cfg)
    gen = torch.Generator().manual_seed(a.seed)
    layers = [m for _, m in sorted(model.named_modules()) if hasattr(m, "lora_E") and "default" in m.lora_E]
    if not layers:
        fail("no module matched the target selection")
    with torch.no_grad():
        for m in layers:
            A, E, B = m.lora_A["default"], m.lora_E["default"], m.lora_B["default"]
            factor = m.scaling["default"] / (float(m.ranknum["default"]) + 1e-5)
            A.copy_(torch.randn(A.shape, generator=gen) / A.shape[1] ** 0.5)
            E.copy_((0.5 + torch.rand(E.shape, generator=gen)) * torch.sign(torch.randn(E.shape, generator=gen)))
            B.copy_(torch.randn(B.shape, generator=gen) / A.shape[0] ** 0.5 * (GAIN / factor))
    model.train()
    vocab = model.config.vocab_size
    for step in range(1, steps):  # up to total_step - tfinal, where the final mask is fixed
        ids = torch.randint(0, vocab, (2, 12), generator=gen)
        model(input_ids=ids, labels=ids).loss.backward()
        model.base_model.update_and_allocate(step)
        model.zero_grad()
    model.eval()
    kept = sorted({int((m.lora_E["default"] != 0).sum()) for m in layers})
    if len(kept) < 2 or min(kept) >= a.init_r:
        fail(f"rank allocation left ranks {kept}; expected pruned ranks that differ per module")
    if a.keep_masked:  # no rank_pattern: init_r tensors, pruned singular values zero
        model.peft_config["default"].rank_pattern = None
    save_adapter(model, a.out, 3 * len(layers))


def cmd_make_ia3(a):
    cfg = IA3Config(target_modules=[t for t in a.targets.split(",") if t],
                    feedforward_modules=[t for t in a.feedforward.split(",") if t],
                    init_ia3_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(load_base(a.model), cfg)
    gen = torch.Generator().manual_seed(a.seed)
    layers = sorted((n, m) for n, m in model.named_modules()
                    if isinstance(m, IA3Layer) and "default" in m.ia3_l)
    if not layers:
        fail("no module matched the target selection")
    with torch.no_grad():
        for _, m in layers:  # (1, in) for feed-forward modules, (out, 1) otherwise
            v = m.ia3_l["default"]
            v.copy_(1 + 0.5 * torch.randn(v.shape, generator=gen))
    save_adapter(model, a.out, len(layers))


def cmd_make_prompt_tuning(a):
    base = load_base(a.model)
    std = float(base.get_input_embeddings().weight.float().std())
    cfg = PromptTuningConfig(num_virtual_tokens=a.virtual_tokens, task_type="CAUSAL_LM",
                             prompt_tuning_init=PromptTuningInit.RANDOM)
    model = get_peft_model(base, cfg)
    emb = model.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        emb.copy_(std * torch.randn(emb.shape, generator=torch.Generator().manual_seed(a.seed)))
    save_adapter(model, a.out, 1)


def run_rows(model, prompts, n, **gen_kwargs):
    """Per prompt (batch 1): last logits, greedy tokens and per-step logits."""
    out = []
    for i, p in enumerate(prompts):
        ids = torch.tensor([p], dtype=torch.long)
        mask = torch.ones_like(ids)
        last = model(input_ids=ids, attention_mask=mask).logits[0, -1].float().clone()
        g = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                           max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0,
                           output_logits=True, return_dict_in_generate=True, **gen_kwargs)
        greedy = g.sequences[0, len(p):].to(torch.int64).contiguous()
        steps = torch.stack([s[0].float() for s in g.logits]).contiguous()
        if (g.sequences.shape[1] != len(p) + n or len(g.logits) != n
                or not torch.equal(steps.argmax(-1), greedy)):
            fail(f"prompt {i}: greedy tokens are not the {n} argmaxes of the step logits")
        out.append({"last_logits": last, "greedy": greedy, "step_logits": steps})
    return out


def run_mixed(model, prompts, names, n):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    last = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                 adapter_names=names).logits[:, -1].float()
    g = model.generate(input_ids=ids, attention_mask=mask, adapter_names=names, do_sample=False,
                       max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0)
    return last, g[:, width:].to(torch.int64)


def plain_lora(cfg):
    """A LoRA that changes nothing but the linear projections (it can share a PeftModel)."""
    targets = cfg.get("target_modules") or []
    return (cfg.get("peft_type") == "LORA" and not cfg.get("modules_to_save")
            and not cfg.get("trainable_token_indices") and cfg.get("bias", "none") == "none"
            and not cfg.get("lora_bias") and cfg.get("task_type") != "SEQ_CLS"
            and not (isinstance(targets, list) and "embed_tokens" in targets))


def adapter_groups(adapters):
    """{key: [(name, dir)]}, one PeftModel each: plain LoRA adapters share one, IA3 adapters
    another; every other adapter (prompt learning, heads, trained biases that PEFT loads over
    the base's, AdaLoRA, SEQ_CLS) gets its own."""
    groups = {}
    for name, d in adapters:
        with open(os.path.join(d, "adapter_config.json")) as f:
            cfg = json.load(f)
        kind = cfg.get("peft_type")
        if kind == "LORA" and not plain_lora(cfg):
            kind = "SEQ_CLS" if cfg.get("task_type") == "SEQ_CLS" else "LORA+"
        groups.setdefault(kind if kind in ("LORA", "IA3") else f"{kind}/{name}", []).append((name, d))
    return groups


def classify_rows(model_dir, adapter_dir, prompts):
    """Logits of a SEQ_CLS adapter over *ForSequenceClassification for each prompt (batch 1)."""
    if os.path.isfile(os.path.join(adapter_dir, "config.json")):
        kw = dict(config=AutoConfig.from_pretrained(adapter_dir))
    else:
        with safe_open(os.path.join(adapter_dir, "adapter_model.safetensors"), "pt") as f:
            kw = dict(num_labels=f.get_slice("base_model.model.score.weight").get_shape()[0])
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32, **kw)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    return [{"cls_logits": model(input_ids=torch.tensor([p])).logits[0].float().clone()} for p in prompts]


def adalora_ranks(model):
    """Distinct ranks that serve after pruning: non-zero singular values per module."""
    ranks = {int((m.lora_E[k] != 0).sum()) for m in model.modules() if hasattr(m, "lora_E") for k in m.lora_E}
    return torch.tensor(sorted(r for r in ranks if r > 0), dtype=torch.int64)


def cmd_reference(a):
    prompts = hf_reference.load_prompts(a.prompts)
    adapters = [x.split("=", 1) for x in a.adapters.split(",") if x]
    if not adapters or any(len(x) != 2 or not x[0] or x[0] in (BASE, "mixed") for x in adapters):
        fail("--adapters must be NAME=DIR[,NAME=DIR...] (names other than __base__, mixed)")
    if len({n for n, _ in adapters}) != len(adapters):
        fail("--adapters names must be unique")
    missing = [d for _, d in adapters if not os.path.isfile(f"{d}/adapter_config.json")]
    if missing:
        fail(f"no adapter_config.json in {missing[0]}")
    groups = adapter_groups(adapters)
    names = a.mixed.split(",") if a.mixed else []
    lora = {BASE} | {n for n, _ in groups.get("LORA", [])}
    if a.mixed and (len(names) != len(prompts) or not set(names) <= lora):
        fail("--mixed needs one LoRA adapter name (or __base__) per prompt")
    base = load_base(a.model)
    vocab = base.config.vocab_size
    if not all(p and all(isinstance(t, int) and 0 <= t < vocab for t in p) for p in prompts):
        fail(f"prompts must be non-empty lists of token ids in [0, {vocab})")
    res, tensors = {}, {}
    with torch.no_grad():
        res[BASE] = run_rows(base, prompts, a.new_tokens)
        for key, group in groups.items():  # each PeftModel wraps (and alters) a fresh base
            if key.startswith("SEQ_CLS/"):
                res[group[0][0]] = classify_rows(a.model, group[0][1], prompts)
                continue
            base = base if base is not None else load_base(a.model)
            model = PeftModel.from_pretrained(base, group[0][1], adapter_name=group[0][0])
            base = None
            for name, d in group[1:]:
                model.load_adapter(d, adapter_name=name)
            model.eval()
            kept = {p.dtype for n, p in model.named_parameters() if "lora_" in n} - {torch.float32}
            if kept:  # half-precision adapters must be widened, so that the reference is fp32
                fail(f"PEFT kept adapter weights in {sorted(map(str, kept))}")
            for name, _ in group:
                model.set_adapter(name)
                res[name] = run_rows(model, prompts, a.new_tokens)
                if key.startswith("ADALORA/"):
                    tensors[f"{name}.ranks"] = adalora_ranks(model)
            if key != "LORA" or not a.mixed:
                continue
            last, greedy = run_mixed(model, prompts, names, a.new_tokens)  # PEFT refuses DoRA
            for i, x in enumerate(names):
                tensors[f"mixed.r{i}.last_logits"] = last[i].clone()
                tensors[f"mixed.r{i}.greedy"] = greedy[i].contiguous()
                d = float((last[i] - res[x][i]["last_logits"]).abs().max())
                if d > 1e-4:
                    warn(f"mixed row {i} ({x}) differs from single-row logits by {d:.3g}")
                if not torch.equal(greedy[i], res[x][i]["greedy"]):
                    warn(f"mixed row {i} ({x}) greedy differs from single-row greedy")
    tensors.update({f"{k}.r{i}.{f}": v for k, rows in res.items()
                    for i, r in enumerate(rows) for f, v in r.items()})
    gap = hf_reference.min_top2_gap([r for rows in res.values() for r in rows if "step_logits" in r])
    if gap < 1e-3:
        warn(f"near-tie in greedy logits (gap {gap:.3g})")
    meta = {"transformers_version": transformers.__version__, "torch_version": torch.__version__,
            "peft_version": peft.__version__, "adapters": ",".join(n for n, _ in adapters),
            "mixed": a.mixed or ""}
    save_file(tensors, a.out, metadata=meta)


def independent_checks(base_dir, tmp, st, prompts):
    """IA3 "d" as base weights scaled by ia3_l (rows, or columns for feed-forward modules);
    prompt tuning "e" as inputs_embeds [virtual; real] numbered 0.. (and, to show the check
    is sensitive, with the real tokens numbered from 0 instead)."""
    model, ia3, ia3_d = load_base(base_dir), load_file(f"{tmp}/d/adapter_model.safetensors"), 0.0
    with torch.no_grad():
        for k, v in ia3.items():  # base_model.model.<module path>.ia3_l
            model.get_submodule(k[len("base_model.model."):-len(".ia3_l")]).weight.mul_(v)
        for i, p in enumerate(prompts):
            got = model(input_ids=torch.tensor([p])).logits[0, -1]
            ia3_d = max(ia3_d, float((got - st[f"d.r{i}.last_logits"]).abs().max()))
        model = load_base(base_dir)
        virt = load_file(f"{tmp}/e/adapter_model.safetensors")["prompt_embeddings"]
        nv, pt_d, alt_d = virt.shape[0], 0.0, float("inf")
        for i, p in enumerate(prompts):
            ids = torch.tensor(p + st[f"e.r{i}.greedy"][:-1].tolist())
            emb = torch.cat([virt, model.get_input_embeddings()(ids)])[None]
            want = st[f"e.r{i}.step_logits"]
            for pos in (torch.arange(emb.shape[1]), torch.cat([torch.arange(nv), torch.arange(len(ids))])):
                got = model(inputs_embeds=emb, position_ids=pos[None]).logits[0, nv + len(p) - 1:]
                d = max(float((got - want).abs().max()),
                        float((got[0] - st[f"e.r{i}.last_logits"]).abs().max()))
                if pos[nv] == nv:
                    pt_d = max(pt_d, d)
                else:
                    alt_d = min(alt_d, d)
    return ia3_d, pt_d, alt_d


def cmd_self_check(a):
    def run(*argv):
        (args := parser().parse_args(list(argv))).func(args)

    def maxdiff(pairs):
        return max(float((x - y).abs().max()) for x, y in pairs)

    with tempfile.TemporaryDirectory() as tmp:
        base, pj, out = (os.path.join(tmp, x) for x in ("base", "prompts.json", "ref.safetensors"))
        hf_reference.build_model("llama", seed=1234).save_pretrained(base, safe_serialization=True)
        for name, seed, extra in [("a", 11, "--r 4 --targets q_proj,v_proj"),
                                  ("b", 12, "--r 8 --targets all-linear --rslora"),
                                  ("c", 13, "--r 4 --targets q_proj,k_proj,v_proj,o_proj --dora")]:
            patterns = ["--rank-pattern", '{"q_proj": 2}', "--alpha-pattern", '{"v_proj": 3}']
            run("make-lora", "--model", base, "--out", f"{tmp}/{name}", "--seed", str(seed),
                *extra.split(), *(patterns if name == "b" else []))
        run("make-ia3", "--model", base, "--out", f"{tmp}/d", "--seed", "14")
        run("make-prompt-tuning", "--model", base, "--out", f"{tmp}/e", "--seed", "15",
            "--virtual-tokens", "5")
        prompts = [[1, 2, 3, 4, 5], [7, 100, 42, 9, 250, 17, 3, 88], [9, 8, 7], [200, 31, 5, 6]]
        with open(pj, "w") as f:
            json.dump(prompts, f)
        names = ["a", BASE, "b", "a"]  # PEFT rejects DoRA adapters (c) in mixed batches
        run("reference", "--model", base, "--adapters", ",".join(f"{x}={tmp}/{x}" for x in "abcde"),
            "--prompts", pj, "--out", out, "--new-tokens", "12", "--mixed", ",".join(names))
        st, rows = load_file(out), range(len(prompts))
        mixed_d = maxdiff((st[f"mixed.r{i}.last_logits"], st[f"{x}.r{i}.last_logits"])
                          for i, x in enumerate(names))
        step_d = maxdiff((st[f"{x}.r{i}.step_logits"][0], st[f"{x}.r{i}.last_logits"])
                         for x in (BASE, *"abcde") for i in rows)
        if mixed_d > 1e-4 or step_d > 1e-4:
            fail(f"self-check: logits disagree (mixed {mixed_d:.3g}, step 0 {step_d:.3g})")
        if any(not torch.equal(st[f"mixed.r{i}.greedy"], st[f"{x}.r{i}.greedy"])
               for i, x in enumerate(names)):
            fail("self-check: mixed-batch greedy differs from single-row greedy")
        delta = {x: maxdiff((st[f"{x}.r{i}.last_logits"], st[f"{BASE}.r{i}.last_logits"])
                            for i in rows) for x in "abcde"}
        changed = {x: sum(not torch.equal(st[f"{x}.r{i}.greedy"], st[f"{BASE}.r{i}.greedy"])
                          for i in rows) for x in "abcde"}
        if min(delta.values()) < 1e-2:
            fail(f"self-check: an adapter barely changes the logits: {delta}")
        ia3_d, pt_d, alt_d = independent_checks(base, tmp, st, prompts)
        if ia3_d > 1e-4 or pt_d > 1e-4 or alt_d < 1e-2:
            fail(f"self-check: IA3 / prompt tuning disagree with the manual forward "
                 f"({ia3_d:.3g}, {pt_d:.3g}; other positions {alt_d:.3g})")
        print(f"self-check ok: peft {peft.__version__}, transformers {transformers.__version__}, "
              f"torch {torch.__version__}; max |adapter - base| last logits "
              f"{ {k: round(v, 3) for k, v in delta.items()} }, greedy changed in {changed} of "
              f"{len(prompts)} prompts; mixed {names} vs single rows max diff {mixed_d:.2e}, "
              f"step 0 vs last logits max diff {step_d:.2e}; IA3 vs scaled weights {ia3_d:.2e}; "
              f"prompt tuning vs [virtual; real] at positions 0.. {pt_d:.2e} (real from 0: "
              f"{alt_d:.2f})")


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-lora", help="create a seeded random LoRA adapter for a checkpoint")
    for flag, kw in [("--model", dict(required=True)), ("--out", dict(required=True)),
                     ("--seed", dict(type=int, required=True)), ("--r", dict(type=int, default=8)),
                     ("--alpha", dict(type=float, default=16.0)),
                     ("--rank-pattern", dict(default="{}", help='JSON, e.g. {"q_proj": 2}')),
                     ("--alpha-pattern", dict(default="{}", help='JSON, e.g. {"v_proj": 3}')),
                     ("--layers", dict(help="comma list of layer indices (layers_to_transform)")),
                     ("--exclude", dict(help="JSON list of names or regex (exclude_modules)")),
                     ("--dtype", dict(default="float32", choices=["float32", "float16", "bfloat16"],
                                      help="dtype of the saved tensors"))]:
        m.add_argument(flag, **kw)
    for flag in ("--rslora", "--dora", "--fan-in-fan-out"):
        m.add_argument(flag, action="store_true")
    t = m.add_mutually_exclusive_group()
    t.add_argument("--targets", default="q_proj,v_proj", help="comma list, or all-linear")
    t.add_argument("--targets-regex", help="full-match regex over module names")
    m.set_defaults(func=cmd_make_lora)
    c = sub.add_parser("make-cls", help="create a seeded random SEQ_CLS LoRA with its score head")
    for flag, kw in [("--labels", dict(type=int, required=True)),
                     ("--label-names", dict(help="comma list: id2label in the saved config.json")),
                     ("--pad-token-id", dict(type=int, help="the classifier's pad_token_id")),
                     ("--targets", dict(default="q_proj,v_proj", help="comma list"))]:
        c.add_argument(flag, **kw)
    c.add_argument("--save-config", action="store_true", help="save the model's config.json beside it")
    c.set_defaults(func=cmd_make_cls, targets_regex=None)
    ad = sub.add_parser("make-adalora", help="create an AdaLoRA adapter with ranks pruned by PEFT")
    for flag, kw in [("--model", dict(required=True)), ("--out", dict(required=True)),
                     ("--seed", dict(type=int, required=True)), ("--init-r", dict(type=int, default=6)),
                     ("--target-r", dict(type=int, default=3)), ("--alpha", dict(type=int, default=12)),
                     ("--targets", dict(default="q_proj,v_proj,down_proj", help="comma list"))]:
        ad.add_argument(flag, **kw)
    ad.add_argument("--keep-masked", action="store_true",
                    help="save at init_r with zeroed singular values (no rank_pattern)")
    ad.set_defaults(func=cmd_make_adalora)
    for sp in (m, c):  # LoraConfig options both makers share
        for flag, kw in [("--modules-to-save", dict(default="", help="comma list (modules_to_save)")),
                         ("--trainable-tokens", dict(help="comma list of ids, or a JSON object")),
                         ("--bias", dict(default="none", choices=["none", "all", "lora_only"]))]:
            sp.add_argument(flag, **kw)
        sp.add_argument("--lora-bias", action="store_true")
    for flag, kw in [("--model", dict(required=True)), ("--out", dict(required=True)),
                     ("--seed", dict(type=int, required=True)), ("--r", dict(type=int, default=8)),
                     ("--alpha", dict(type=float, default=16.0)), ("--rank-pattern", dict(default="{}")),
                     ("--alpha-pattern", dict(default="{}")), ("--layers", dict()), ("--exclude", dict()),
                     ("--dtype", dict(default="float32"))]:
        c.add_argument(flag, **kw)
    c.set_defaults(rslora=False, dora=False, fan_in_fan_out=False)
    i = sub.add_parser("make-ia3", help="create a seeded random (IA)^3 adapter")
    for flag, kw in [("--model", dict(required=True)), ("--out", dict(required=True)),
                     ("--seed", dict(type=int, required=True)),
                     ("--targets", dict(default="k_proj,v_proj,down_proj", help="comma list")),
                     ("--feedforward", dict(default="down_proj", help="comma subset of --targets"))]:
        i.add_argument(flag, **kw)
    i.set_defaults(func=cmd_make_ia3)
    pt = sub.add_parser("make-prompt-tuning", help="create a seeded random prompt-tuning adapter")
    for flag, kw in [("--model", dict(required=True)), ("--out", dict(required=True)),
                     ("--seed", dict(type=int, required=True)),
                     ("--virtual-tokens", dict(type=int, default=5))]:
        pt.add_argument(flag, **kw)
    pt.set_defaults(func=cmd_make_prompt_tuning)
    r = sub.add_parser("reference", help="compute reference logits and greedy tokens")
    for flag in ("--model", "--adapters", "--prompts", "--out"):
        r.add_argument(flag, required=True)  # NAME=DIR[,...]; JSON [[ids]]; .safetensors
    r.add_argument("--new-tokens", type=int, default=32)
    r.add_argument("--mixed", help="adapter name (or __base__) per prompt, comma-separated")
    r.set_defaults(func=cmd_reference)
    sub.add_parser("self-check", help="build a model and adapters, run reference, verify"
                   ).set_defaults(func=cmd_self_check)
    return p


def main():
    a = parser().parse_args()
    if a.cmd == "reference" and a.new_tokens < 1:
        fail("--new-tokens must be at least 1")
    if a.cmd in ("make-lora", "make-cls") and (a.r < 1 or a.alpha <= 0):
        fail("--r must be at least 1 and --alpha positive")
    if a.cmd == "make-prompt-tuning" and a.virtual_tokens < 1:
        fail("--virtual-tokens must be at least 1")
    try:
        a.func(a)
    except Exception as e:  # one line, exit 1
        fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


if __name__ == "__main__":
    main()
