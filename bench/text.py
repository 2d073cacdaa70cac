#!/usr/bin/env python3
"""Tokenizer throughput: adapterd's text layer beside Hugging Face tokenizers.

  python bench/text.py --build build [--vocab 32000] [--runs 5] [--corpus-mb 4]

Trains one byte-level BPE tokenizer with the Llama 3 settings (Split on the
Llama 3 pattern, ByteLevel, ignore_merges) on the generated multilingual
corpus of tests/conformance/tokenizer_reference.py, saves it as
transformers does, and encodes a separate generated corpus one document at a
time on one thread with both: adapterd (build/bench/adapterd_text_bench) and
`tokenizers.Tokenizer.encode` (RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM
off). Each side runs one warm-up and then --runs timed passes; medians are
reported. Also reports streaming detokenization cost per token: adapterd's
IncrementalDecoder and tokenizers' DecodeStream. The ids of both sides are
compared. Prints a Markdown table, then the raw JSON.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "conformance"))

import tokenizer_reference as ref  # noqa: E402


def bench_corpus(mb, seed=2024):
    rng = random.Random(seed)
    docs, size = [], 0
    while size < mb * 1e6:
        doc = "\n".join(ref.sentence(rng) for _ in range(rng.randint(5, 40)))
        docs.append(doc)
        size += len(doc.encode("utf-8"))
    return docs


def hf_encode(tok, docs, runs):
    total = sum(len(d.encode("utf-8")) for d in docs)
    rates, ids = [], None
    for run in range(runs + 1):
        start = time.perf_counter()
        ids = [tok.encode(d, add_special_tokens=False).ids for d in docs]
        secs = time.perf_counter() - start
        if run > 0:
            rates.append(total / secs / 1e6)
    return rates, ids


def hf_stream(tok, ids, runs):
    from tokenizers.decoders import DecodeStream
    n = sum(len(v) for v in ids)
    costs = []
    for run in range(runs + 1):
        start = time.perf_counter()
        for v in ids:
            stream = DecodeStream(skip_special_tokens=False)
            for i in v:
                stream.step(tok, i)
        secs = time.perf_counter() - start
        if run > 0:
            costs.append(secs * 1e6 / max(n, 1))
    return costs


def run(argv):
    """Runs the benchmark, prints its tables, and returns its medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--corpus-mb", type=float, default=4.0)
    a = ap.parse_args(argv)
    from tokenizers import Tokenizer
    binary = os.path.join(a.build, "bench", "adapterd_text_bench")
    if not os.path.exists(binary):
        raise SystemExit(f"{binary} is missing; build the adapterd_text_bench target first")
    with tempfile.TemporaryDirectory() as tmp:
        tdir = os.path.join(tmp, "llama3")
        start = time.perf_counter()
        ref.build_llama3(tdir, ref.corpus(), a.vocab)
        train_secs = time.perf_counter() - start
        docs = bench_corpus(a.corpus_mb)
        corpus_path = os.path.join(tmp, "corpus.bin")
        with open(corpus_path, "wb") as f:
            f.write(b"\0".join(d.encode("utf-8") for d in docs))
        ours = json.loads(subprocess.run([binary, f"--tokenizer={tdir}", f"--corpus={corpus_path}", f"--runs={a.runs}"],
                                         check=True, capture_output=True, text=True).stdout)
        tok = Tokenizer.from_file(os.path.join(tdir, "tokenizer.json"))
        vocab = tok.get_vocab_size(with_added_tokens=True)
        hf_rates, hf_ids = hf_encode(tok, docs, a.runs)
        hf_costs = hf_stream(tok, hf_ids, a.runs)
    mismatched = sum(1 for x, y in zip(ours["ids"], hf_ids) if x != y)
    ours_mb, hf_mb = ours["encode_mb_s_median"], statistics.median(hf_rates)
    ours_us, hf_us = ours["decode_us_per_token_median"], statistics.median(hf_costs)
    print(f"Llama 3 style byte-level BPE, vocab {vocab} (trained in {train_secs:.0f} s); corpus "
          f"{ours['bytes'] / 1e6:.1f} MB in {ours['documents']} documents, {ours['tokens']} tokens; one thread; "
          f"median of {a.runs} runs after a warm-up; documents whose ids differ: {mismatched}\n")
    print("| | adapterd | HF tokenizers | adapterd / HF |")
    print("|---|---:|---:|---:|")
    print(f"| encode, MB/s | {ours_mb:.2f} | {hf_mb:.2f} | {ours_mb / hf_mb:.2f} |")
    print(f"| streaming decode, µs/token (IncrementalDecoder; DecodeStream) | {ours_us:.3f} | {hf_us:.3f} | "
          f"{ours_us / hf_us:.2f} |")
    print()
    raw = {k: v for k, v in ours.items() if k != "ids"}
    print(json.dumps({"adapterd": raw, "hf": {"encode_mb_s": hf_rates, "decode_us_per_token": hf_costs},
                      "vocab": vocab, "mismatched_documents": mismatched}))
    return {"encode_mb_s": ours_mb, "hf_encode_mb_s": hf_mb, "decode_us_per_token": ours_us,
            "mismatched_documents": mismatched}


def main(argv):
    return 1 if run(argv)["mismatched_documents"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
