"""What the deployment tests and `./x bench scale` need besides the cluster:
the Python client installed from clients/python, the demo checkpoint in a
cache directory, and PEFT adapters for it. Standard library only."""
import glob
import json
import os
import shutil
import subprocess
import sys
import time

REFERENCE_PYTHON = "/opt/adapterd-refvenv/bin/python"


def install_client(source_dir, workdir):
    """pip-installs clients/python into workdir/client-lib and imports it.
    Fails (never skips) when it cannot be built or imported."""
    # Built from a copy, so that the build leaves nothing in the source tree.
    src = os.path.join(workdir, "client-src")
    shutil.copytree(os.path.join(source_dir, "clients", "python"), os.path.join(src, "clients", "python"),
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "_proto", "__pycache__"))
    shutil.copytree(os.path.join(source_dir, "proto"), os.path.join(src, "proto"))
    target = os.path.join(workdir, "client-lib")
    # The reference venv has setuptools for the build; the package itself
    # runs on this interpreter's grpcio and protobuf.
    subprocess.run([REFERENCE_PYTHON, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                    "--no-index", "--target", target, os.path.join(src, "clients", "python")],
                   check=True, cwd=workdir)
    sys.path.insert(0, target)
    import adapterd_client  # noqa: F401
    return adapterd_client


def demo_checkpoint(adapterd, cache_dir, timeout=120.0):
    """Starts adapterd once on cache_dir so that it writes the random demo
    checkpoint there, and returns the checkpoint's directory."""
    found = _find_checkpoint(cache_dir)
    if found:
        return found
    ready = os.path.join(cache_dir, "ready.json")
    os.makedirs(cache_dir, exist_ok=True)
    with open(os.path.join(cache_dir, "first-start.log"), "w") as log:
        proc = subprocess.Popen([adapterd, "--cache_dir=" + cache_dir, "--demo_trained=false",
                                 "--demo_adapters=false", "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                                 "--plaintext", "--admin_auth=none", "--ready_file=" + ready],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not os.path.exists(ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("adapterd did not start on %s (see first-start.log)" % cache_dir)
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(30)
    found = _find_checkpoint(cache_dir)
    if not found:
        raise RuntimeError("no demo checkpoint under " + cache_dir)
    return found


def _find_checkpoint(cache_dir):
    for config in sorted(glob.glob(os.path.join(cache_dir, "*", "config.json"))):
        with open(config) as f:
            if json.load(f).get("model_type") == "llama":
                return os.path.dirname(config)
    return None


def make_adapters(source_dir, model_dir, out_dir, n, rank=8, targets="q_proj,v_proj"):
    """N PEFT LoRAs (tests/deploy/make_adapters.py); returns their directories, by index."""
    dirs = [os.path.join(out_dir, "lora-%d" % i) for i in range(n)]
    if all(os.path.exists(os.path.join(d, "adapter_config.json")) for d in dirs):
        return dirs
    if not os.path.exists(REFERENCE_PYTHON):
        raise RuntimeError(REFERENCE_PYTHON + " is missing: run ./x setup")
    subprocess.run([REFERENCE_PYTHON, os.path.join(source_dir, "tests/deploy/make_adapters.py"), model_dir,
                    out_dir, str(n), "--rank=%d" % rank, "--targets=" + targets], check=True)
    return dirs


def adapter_bytes(directory):
    """The adapter's tensor bytes: its safetensors file less the header."""
    path = os.path.join(directory, "adapter_model.safetensors")
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    return os.path.getsize(path) - 8 - header


def zipf_weights(n, s):
    """Request weights of n adapters under a Zipf law of exponent s (adapter 0 the hottest)."""
    w = [1.0 / (i + 1) ** s for i in range(n)]
    total = sum(w)
    return [x / total for x in w]
