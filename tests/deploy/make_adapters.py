"""Makes N LoRA adapters for a Llama checkpoint with PEFT itself, one base
model load for all of them: make_adapters.py MODEL_DIR OUT_DIR N [--first K].
Adapter i is OUT_DIR/lora-<i>, rank --rank (8) on --targets (q_proj,v_proj)
with random (not zero) B matrices, seeded by i, so that every adapter
changes the output."""
import argparse
import os

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("n", type=int)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", default="q_proj,v_proj")
    args = p.parse_args()
    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=args.targets.split(","),
                        init_lora_weights=False)
    model = get_peft_model(base, config, adapter_name="lora-%d" % args.first)
    for i in range(args.first, args.first + args.n):
        name = "lora-%d" % i
        if i != args.first:
            model.add_adapter(name, config)
        torch.manual_seed(i)
        for n, w in model.named_parameters():
            if ".%s." % name in n and "lora_" in n:
                with torch.no_grad():
                    w.normal_(0.0, 0.05)
        model.save_pretrained(args.out, selected_adapters=[name])
        model.delete_adapter(name) if i != args.first else None
    # save_pretrained writes a named adapter into OUT/<name>.
    missing = [i for i in range(args.first, args.first + args.n)
               if not os.path.exists(os.path.join(args.out, "lora-%d" % i, "adapter_config.json"))]
    if missing:
        raise SystemExit("adapters not written: %s" % missing[:5])


if __name__ == "__main__":
    main()
