#!/usr/bin/env python3
"""Chat template reference for adapterd's conformance tests.

This script is NOT part of the server. It renders chat templates with
`transformers` itself, live: for every case it builds a PreTrainedTokenizerFast
around a tiny in-memory `tokenizers` Tokenizer, sets the case's template as
its chat_template and calls

    tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                  add_generation_prompt=...)

so the output is exactly what transformers (and its jinja2 environment)
produce. The C++ test renders the same cases with adapterd and compares the
text byte for byte.

Input (--cases): {"templates_dir": optional, "cases": [{"name", "template"
(a file name in the templates directory), "messages", "add_generation_prompt",
"bos_token", "eos_token", "tools" (optional)}]}.
Output (--out): a JSON list with, per case, {"name", "output"} or
{"name", "error_type", "error"} when transformers raised.
Runs offline: nothing is ever downloaded.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jinja2  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, models  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

transformers.utils.logging.set_verbosity_error()


def make_tokenizer(bos_token, eos_token, chat_template):
    """A tokenizer whose only special tokens are bos and eos, as the server sees them."""
    vocab = {"<unk>": 0, bos_token or "<bos>": 1, eos_token or "<eos>": 2}
    inner = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok = PreTrainedTokenizerFast(tokenizer_object=inner, bos_token=bos_token, eos_token=eos_token)
    tok.chat_template = chat_template
    return tok


def render(case, templates_dir):
    with open(os.path.join(templates_dir, case["template"]), encoding="utf-8") as f:
        source = f.read()
    tok = make_tokenizer(case["bos_token"], case["eos_token"], source)
    kwargs = {"tokenize": False, "add_generation_prompt": case["add_generation_prompt"]}
    if "tools" in case:
        kwargs["tools"] = case["tools"]
    try:
        return {"name": case["name"], "output": tok.apply_chat_template(case["messages"], **kwargs)}
    except jinja2.exceptions.TemplateError as e:
        return {"name": case["name"], "error_type": type(e).__name__, "error": str(e)}
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as e:
        return {"name": case["name"], "error_type": type(e).__name__, "error": str(e)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", required=True, help="JSON file of cases")
    parser.add_argument("--templates-dir", required=True, help="directory of the templates the cases name")
    parser.add_argument("--out", required=True, help="where to write the results (JSON)")
    args = parser.parse_args()
    with open(args.cases, encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    results = [render(case, args.templates_dir) for case in cases]
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, ensure_ascii=False, indent=1)
    errors = sum(1 for r in results if "error" in r)
    print(f"transformers {transformers.__version__}, jinja2 {jinja2.__version__}: "
          f"{len(results)} cases, {errors} raised", file=sys.stderr)


if __name__ == "__main__":
    main()
