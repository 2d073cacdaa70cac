"""What every benchmark shares: the adapterd server process, adapterctl and
adapterd_loadgen, the bench checkpoints, and the adapter writers.

Checkpoints and adapters are generated once, from fixed seeds, under
$ADAPTERD_CACHE_DIR/bench, and reused while they exist.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
CONFORMANCE = os.path.join(SRC, "tests", "conformance")

# The ~100M-parameter Llama-shaped random checkpoint ("llama-100m").
MODEL_100M = dict(hidden=768, layers=8, heads=12, kv_heads=4, intermediate=2048, vocab=32000,
                  max_pos=2048)
# PEFT module names and their paths in a Llama layer, in PEFT's order.
PROJ_PATHS = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
              "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
              "down_proj": "mlp.down_proj"}
ALL_PROJ = tuple(PROJ_PATHS)
ATTN_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def work_dir():
    """$ADAPTERD_CACHE_DIR/bench (or /tmp/bench), created if missing."""
    work = os.path.join(os.environ.get("ADAPTERD_CACHE_DIR", "/tmp"), "bench")
    os.makedirs(work, exist_ok=True)
    return work


class Server:
    """A real adapterd process on 127.0.0.1 with OS-chosen ports."""

    def __init__(self, build, args, cpus=None):
        """`cpus`: a taskset CPU list the server is confined to (default: all)."""
        self.build = build
        self.tmp = tempfile.mkdtemp(prefix="adapterd-bench-")
        ready = os.path.join(self.tmp, "ready.json")
        self.log = open(os.path.join(self.tmp, "server.log"), "w")
        cmd = ([] if cpus is None else ["taskset", "-c", str(cpus)]) + [
               os.path.join(build, "server", "adapterd"), "--listen=127.0.0.1:0",
               "--metrics_listen=127.0.0.1:0", f"--ready_file={ready}", "--log_level=warning",
               # Loopback only: plaintext, an open Admin API, path loads from the bench cache.
               "--plaintext", "--admin_auth=none", "--adapter_roots=/"] + args
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        for _ in range(6000):
            if self.proc.poll() is not None:
                raise RuntimeError(f"adapterd exited: see {self.log.name}")
            if os.path.exists(ready):
                with open(ready) as f:
                    addrs = json.load(f)
                self.addr = addrs["grpc"]
                self.http = addrs.get("http", "")
                return
            time.sleep(0.05)
        raise RuntimeError("adapterd did not become ready")

    def ctl(self, *args):
        """Runs adapterctl against this server; a failure raises."""
        subprocess.run([os.path.join(self.build, "server", "adapterctl"), f"--addr={self.addr}", *args],
                       check=True, capture_output=True)

    def register(self, dirs, prefix="t"):
        """Loads dirs[i] by path as adapter f"{prefix}{i}"."""
        for i, d in enumerate(dirs):
            self.ctl("load", f"--id={prefix}{i}", f"--path={d}")

    def log_lines(self, text):
        """The lines of the server's log so far that contain `text`."""
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return [line.rstrip("\n") for line in f if text in line]

    def stop(self):
        """Stops the server; its temporary directory (log included) goes with
        it, unless the server had already exited: then the log stays, and
        the exit status and the log's path are printed."""
        died = self.proc.poll()
        if died is None:
            self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()
        if died is not None:
            log(f"adapterd had exited with status {died} before it was stopped; its log: {self.log.name}")
            return
        shutil.rmtree(self.tmp, ignore_errors=True)


def loadgen(build, addr, **flags):
    """One adapterd_loadgen run against `addr`; its JSON result."""
    cmd = [os.path.join(build, "bench", "adapterd_loadgen"), f"--addr={addr}"]
    cmd += [f"--{k}={v}" for k, v in flags.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stdout.strip()} {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def device_sync(device):
    """Waits for the work queued on `device` (a no-op on the CPU)."""
    if str(device).startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def peft_batch_rate(model, prompts, names, new_tokens, device="cpu"):
    """Tokens/s of one batched greedy generate over `prompts` (equal lengths)
    on `device`, through PEFT's adapter_names when `names` is given."""
    import torch
    ids = torch.tensor(prompts, dtype=torch.long, device=device)
    kwargs = {"adapter_names": names} if names else {}
    device_sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             eos_token_id=None, pad_token_id=0, **kwargs)
    device_sync(device)
    elapsed = time.perf_counter() - start
    return (out.shape[1] - ids.shape[1]) * ids.shape[0] / elapsed


def dump_workload(build, **flags):
    """The requests adapterd_loadgen would send with `flags`, one dict each."""
    cmd = [os.path.join(build, "bench", "adapterd_loadgen"), "--dump_workload"]
    cmd += [f"--{k}={v}" for k, v in flags.items()]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def ensure_model(work, name, build):
    """The directory of checkpoint `name` ("demo" or "llama-100m"), created once."""
    path = os.path.join(work, name)
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    if name == "demo":
        # The server generates the demo checkpoint into its cache directory.
        s = Server(build, [f"--cache_dir={work}/demo-cache", "--demo_trained=false"])
        s.stop()
        os.symlink(os.path.join(work, "demo-cache", "demo-llama-v1"), path)
    else:
        if CONFORMANCE not in sys.path:
            sys.path.insert(0, CONFORMANCE)
        import hf_reference
        log(f"creating the ~100M checkpoint in {path}")
        model = hf_reference.build_model("llama", seed=100, **MODEL_100M)
        model.save_pretrained(path, safe_serialization=True)
    return path


def load_config(base):
    with open(os.path.join(base, "config.json")) as f:
        return json.load(f)


def make_peft_adapters(work, base, prefix, n, make_args):
    """n seeded adapters made by PEFT itself through peft_reference.py
    (`make_args`: its subcommand and flags, e.g. ["make-cls", "--labels", "4"]),
    in work/{prefix}-{i}; each is made once and reused."""
    dirs = []
    for i in range(n):
        d = os.path.join(work, f"{prefix}-{i}")
        if not os.path.exists(os.path.join(d, "adapter_model.safetensors")):
            subprocess.run([sys.executable, os.path.join(CONFORMANCE, "peft_reference.py"), *make_args,
                            "--model", base, "--out", d, "--seed", str(1000 + i)], check=True)
        dirs.append(d)
    return dirs


def make_peft_loras(work, base, n, rank):
    """n seeded rank-`rank` LoRA adapters on all 7 projections, created by PEFT itself (cached)."""
    return make_peft_adapters(work, base, f"lora-r{rank}", n,
                              ["make-lora", "--r", str(rank), "--alpha", str(2 * rank), "--targets", "all-linear"])


def _save_adapter(path, weights_file, tensors, config, metadata=None):
    """Writes both files into `path` through a temporary directory, so that a
    directory holding the weights file is always complete."""
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    tmp = path + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
        json.dump(config, f)
    save_file(tensors, os.path.join(tmp, weights_file), metadata=metadata)
    os.rename(os.path.join(tmp, "adapter_config.json"), os.path.join(path, "adapter_config.json"))
    os.rename(os.path.join(tmp, weights_file), os.path.join(path, weights_file))
    os.rmdir(tmp)
    return path


def write_lora(path, cfg, rank, seed, modules=ALL_PROJ, dtype="float32"):
    """A PEFT-layout rank-`rank` LoRA on `modules` of every layer of the
    model `cfg` describes, saved in `dtype` and written directly with
    safetensors (PEFT itself is too slow for thousands of adapters). Reused
    when it exists."""
    import torch
    if os.path.exists(os.path.join(path, "adapter_model.safetensors")):
        return path
    h, inter = cfg["hidden_size"], cfg.get("intermediate_size")
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    dims = {"q_proj": (h, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, h),
            "gate_proj": (inter, h), "up_proj": (inter, h), "down_proj": (h, inter)}
    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype)
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for mod in modules:
            out, inp = dims[mod]
            key = f"base_model.model.model.layers.{layer}.{PROJ_PATHS[mod]}"
            tensors[key + ".lora_A.weight"] = (torch.randn(rank, inp, generator=g) / inp ** 0.5).to(dt)
            tensors[key + ".lora_B.weight"] = (torch.randn(out, rank, generator=g) * 0.01).to(dt)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
              "target_modules": list(modules), "bias": "none"}
    return _save_adapter(path, "adapter_model.safetensors", tensors, config, metadata={"format": "pt"})


def write_bottleneck(path, cfg, reduction_factor, seed):
    """An AdapterHub-layout Houlsby (double_seq_bn, swish) bottleneck adapter,
    written directly with safetensors in the layout save_adapter() produces.
    Reused when it exists."""
    import torch
    if os.path.exists(os.path.join(path, "adapter.safetensors")):
        return path
    h = cfg["hidden_size"]
    m = int(h // reduction_factor)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for loc in ("attention_adapters", "output_adapters"):
            key = f"model.layers.{layer}.{loc}.adapters.bn"
            tensors[key + ".adapter_down.0.weight"] = torch.randn(m, h, generator=g) / h ** 0.5
            tensors[key + ".adapter_down.0.bias"] = torch.randn(m, generator=g) * 0.01
            tensors[key + ".adapter_up.weight"] = torch.randn(h, m, generator=g) * 0.01
            tensors[key + ".adapter_up.bias"] = torch.randn(h, generator=g) * 0.01
    config = {"mh_adapter": True, "output_adapter": True, "reduction_factor": reduction_factor,
              "non_linearity": "swish", "original_ln_before": False, "original_ln_after": True,
              "residual_before_ln": True, "adapter_residual_before_ln": False, "ln_before": False,
              "ln_after": False, "is_parallel": False, "scaling": 1.0, "use_gating": False,
              "leave_out": [], "phm_layer": False, "inv_adapter": None}
    return _save_adapter(path, "adapter.safetensors", tensors,
                         {"config": config, "hidden_size": h, "model_class": "LlamaForCausalLM",
                          "model_type": "llama", "name": "bn", "version": "adapters.1.3.0"})
