"""Reference tokenizers and encodings for adapterd's text layer.

Trains small tokenizers offline with the `tokenizers` and `sentencepiece`
packages on a generated multilingual corpus, saves each one the way
transformers does (tokenizer.json or tokenizer.model, with a
tokenizer_config.json), and writes what the reference libraries make of a
fixed set of test strings and id sequences:

  OUT/<name>/reference.json = {
    "kind": "json" | "sentencepiece",
    "encode": [{"text", "ids", "ids_plain", "decode", "decode_skip"}],
    "decode": [{"ids", "decode", "decode_skip"}]}

`ids` is with special tokens, `ids_plain` without; the decodes are of `ids`
(or of the random id sequences), with and without skip_special_tokens.

The references are transformers' AutoTokenizer (fast) for tokenizer.json and
sentencepiece.SentencePieceProcessor for tokenizer.model: encode, plus BOS
when add_bos_token (default true) and EOS when add_eos_token (default false);
decode of the ids, or, when skipping special tokens, of the ids that are
neither control nor unknown pieces.

Everything is deterministic (fixed seeds) and nothing is downloaded.

  python tokenizer_reference.py OUT [--strings N] [--only NAME,...]
"""

import argparse
import json
import logging
import os
import random
import sys
import tempfile

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import sentencepiece as spm  # noqa: E402
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers  # noqa: E402
from tokenizers import pre_tokenizers, processors, trainers  # noqa: E402

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

NAMES = ["gpt2", "llama3", "qwen2", "llama2_metaspace", "llama2_legacy", "sp_bpe", "sp_unigram"]

# ---------------------------------------------------------------------------
# Text generation


def ranges(*pairs):
    out = []
    for a, b in pairs:
        out.extend(chr(c) for c in range(a, b + 1))
    return out


LATIN = "abcdefghijklmnopqrstuvwxyz"
CJK = ranges((0x4E00, 0x4FFF), (0x3041, 0x3096), (0x30A1, 0x30FA), (0xAC00, 0xAD00))
ARABIC = ranges((0x0621, 0x064A))
ARABIC_MARKS = ranges((0x064B, 0x0652))
DEVANAGARI = ranges((0x0915, 0x0939))
DEVANAGARI_SIGNS = ranges((0x093E, 0x094D))
THAI = ranges((0x0E01, 0x0E2E))
THAI_MARKS = ranges((0x0E31, 0x0E31), (0x0E34, 0x0E3A), (0x0E47, 0x0E4E))
CYRILLIC = ranges((0x0430, 0x044F))
GREEK = ranges((0x03B1, 0x03C9))
COMBINING = ranges((0x0300, 0x036F))
EMOJI = ranges((0x1F600, 0x1F64F), (0x1F300, 0x1F3FF), (0x1F680, 0x1F6FF))
SKIN = ranges((0x1F3FB, 0x1F3FF))
ZWJ_SEQUENCES = ["\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466", "\U0001F3F3\uFE0F\u200D\U0001F308",
                 "\U0001F469\u200D\U0001F4BB", "\U0001F1FA\U0001F1F8", "\U0001F1EF\U0001F1F5",
                 "\u2764\uFE0F\u200D\U0001F525", "\U0001F44D\U0001F3FD", "\U0001F9D1\U0001F3FF\u200D\U0001F9B1"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re", "'VE", "n't", "N'T"]
PUNCT = list(".,;:!?-()[]{}\"'/\\@#$%^&*_+=<>|~`") + ["...", "--", "\u2014", "\u00BF", "\u00A1", "\u3002", "\uFF0C"]
SPACES = [" ", "  ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00A0", "\u3000", "\u2003", "\u200B", "\x0b", "\x0c", "\u2028"]


def word(rng):
    kind = rng.random()
    if kind < 0.45:
        w = "".join(rng.choice(LATIN) for _ in range(rng.randint(1, 9)))
        r = rng.random()
        if r < 0.15:
            w = w.capitalize()
        elif r < 0.2:
            w = w.upper()
        return w
    if kind < 0.55:
        return "".join(rng.choice(CJK) for _ in range(rng.randint(1, 4)))
    if kind < 0.62:
        return "".join(rng.choice(ARABIC) + (rng.choice(ARABIC_MARKS) if rng.random() < 0.2 else "")
                       for _ in range(rng.randint(2, 7)))
    if kind < 0.69:
        return "".join(rng.choice(DEVANAGARI) + (rng.choice(DEVANAGARI_SIGNS) if rng.random() < 0.5 else "")
                       for _ in range(rng.randint(1, 5)))
    if kind < 0.75:
        return "".join(rng.choice(THAI) + (rng.choice(THAI_MARKS) if rng.random() < 0.3 else "")
                       for _ in range(rng.randint(2, 8)))
    if kind < 0.81:
        return "".join(rng.choice(CYRILLIC) for _ in range(rng.randint(2, 9)))
    if kind < 0.85:
        return "".join(rng.choice(GREEK) for _ in range(rng.randint(2, 8)))
    if kind < 0.91:
        return str(rng.randint(0, 10 ** rng.randint(1, 8)))
    if kind < 0.95:
        return rng.choice(PUNCT)
    if kind < 0.97:
        return rng.choice(EMOJI) + (rng.choice(SKIN) if rng.random() < 0.3 else "")
    return rng.choice(LATIN) + rng.choice(COMBINING) + rng.choice(LATIN)


def sentence(rng, n_words=None):
    n = n_words if n_words is not None else rng.randint(3, 25)
    parts = []
    for i in range(n):
        parts.append(word(rng))
        if rng.random() < 0.08:
            parts.append(rng.choice(CONTRACTIONS))
        if i + 1 < n:
            parts.append(" " if rng.random() < 0.9 else rng.choice(SPACES))
    return "".join(parts)


def corpus(seed=1234, lines=60000):
    rng = random.Random(seed)
    return [sentence(rng) for _ in range(lines)]


def random_codepoint(rng):
    while True:
        r = rng.random()
        if r < 0.3:
            c = rng.randint(0x20, 0x7E)
        elif r < 0.4:
            c = rng.randint(0, 0x1F)
        elif r < 0.7:
            c = rng.randint(0x80, 0x2FFF)
        elif r < 0.9:
            c = rng.randint(0x3000, 0xFFFD)
        else:
            c = rng.randint(0x10000, 0x10FFFF)
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def test_strings(specials, n, seed=99):
    """n strings covering every category the conformance test asks for."""
    rng = random.Random(seed)
    fixed = ["", " ", "  ", "\n", "\t", "a", "Hello world", " Hello", "Hello ", "hello  world", "\u00e9", "e\u0301",
             "\u1100\u1161\u11a8", "\ufb01", "\u2460", "<0x41>", "\u2581", "\u2581\u2581a", "\u0120hello", "\x00",
             "I'M HERE, YOU'RE THERE, SHE'S, WE'LL, THEY'VE, I'D", "don't can't won't", "1234567890" * 7,
             " . , ! ? hello . world !", "a ' b 's n't 've 're 'm", "x" * 1500, "\u4e2d" * 1200,
             "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466" * 3]
    for s in specials:
        fixed += [s, s + s, "a" + s + "b", " " + s + " ", "hello " + s + " world", s + "hello", "hello" + s]
    out = list(fixed)
    generators = [
        lambda: sentence(rng),
        lambda: "".join(rng.choice(CJK) for _ in range(rng.randint(1, 40))),
        lambda: " ".join(word(rng) for _ in range(rng.randint(1, 6))) + rng.choice(["", " ", "\n"]),
        lambda: "".join(rng.choice(ARABIC) + rng.choice(ARABIC_MARKS) for _ in range(rng.randint(1, 12))),
        lambda: "".join(rng.choice(DEVANAGARI) + rng.choice(DEVANAGARI_SIGNS) for _ in range(rng.randint(1, 12))),
        lambda: "".join(rng.choice(THAI) + rng.choice(THAI_MARKS) for _ in range(rng.randint(1, 12))),
        lambda: "".join(rng.choice(LATIN) + "".join(rng.choice(COMBINING) for _ in range(rng.randint(1, 3)))
                        for _ in range(rng.randint(1, 8))),
        lambda: " ".join(rng.choice(ZWJ_SEQUENCES) + rng.choice(["", rng.choice(EMOJI)]) for _ in range(rng.randint(1, 5))),
        lambda: word(rng) + "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 12))) + word(rng),
        lambda: "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 30))),
        lambda: str(rng.randint(0, 10 ** 18)) * rng.randint(1, 6),
        lambda: " ".join(rng.choice(["I", "you", "He", "SHE", "we", "They", "it"]) + rng.choice(CONTRACTIONS)
                         for _ in range(rng.randint(1, 6))),
        lambda: sentence(rng, 4) + (rng.choice(specials) if specials else "") + sentence(rng, 3),
        lambda: "".join(random_codepoint(rng) for _ in range(rng.randint(1, 40))),
        lambda: "".join(rng.choice(PUNCT) + rng.choice(["", " "]) for _ in range(rng.randint(1, 15))),
        lambda: sentence(rng, rng.randint(30, 80)),
    ]
    while len(out) < n:
        out.append(rng.choice(generators)())
    for k in range(40):  # very long words and texts
        unit = rng.choice([lambda: rng.choice(LATIN), lambda: rng.choice(CJK), lambda: rng.choice(DEVANAGARI),
                           lambda: random_codepoint(rng), lambda: rng.choice("0123456789")])
        text = "".join(unit() for _ in range(rng.randint(1001, 3000)))
        if len(fixed) + k * 7 < len(out):
            out[len(fixed) + k * 7] = text
    return out


# ---------------------------------------------------------------------------
# Tokenizers


def byte_level_tokenizer(corpus_lines, vocab_size, pattern, normalizer, ignore_merges, specials):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    if pattern is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(corpus_lines, trainer)
    tok.add_special_tokens(specials)
    return tok


def save_fast(tok, out_dir, cls, **kwargs):
    fast = cls(tokenizer_object=tok, **kwargs)
    fast.save_pretrained(out_dir)


def build_gpt2(out_dir, lines, vocab_size):
    from transformers import GPT2TokenizerFast
    tok = byte_level_tokenizer(lines, vocab_size, None, None, False, ["<|endoftext|>"])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    save_fast(tok, out_dir, GPT2TokenizerFast, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
              unk_token="<|endoftext|>", clean_up_tokenization_spaces=True)
    # Older files store merges as "a b" strings; tokenizers still reads them.
    path = os.path.join(out_dir, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)


def build_llama3(out_dir, lines, vocab_size):
    from transformers import PreTrainedTokenizerFast
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    specials += [f"<|reserved_special_token_{i}|>" for i in range(8)]
    tok = byte_level_tokenizer(lines, vocab_size, LLAMA3_PATTERN, None, True, specials)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    save_fast(tok, out_dir, PreTrainedTokenizerFast, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
              clean_up_tokenization_spaces=True, model_input_names=["input_ids", "attention_mask"])


def build_qwen2(out_dir, lines, vocab_size):
    from transformers import Qwen2TokenizerFast
    tok = byte_level_tokenizer(lines, vocab_size, QWEN2_PATTERN, normalizers.NFC(), False,
                               ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=True),
                    AddedToken("hello", special=False, normalized=True, single_word=True)])
    tok.add_special_tokens([AddedToken("<mask>", special=True, normalized=False, lstrip=True, rstrip=True)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    save_fast(tok, out_dir, Qwen2TokenizerFast, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
              bos_token=None, clean_up_tokenization_spaces=False)


def train_sentencepiece(lines, prefix, model_type, vocab_size, byte_fallback):
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=prefix, model_type=model_type, vocab_size=vocab_size,
        byte_fallback=byte_fallback, character_coverage=0.9995, split_digits=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=2, minloglevel=2, seed_sentencepiece_size=200000,
        input_sentence_size=len(lines), shuffle_input_sentence=False, max_sentence_length=8192)
    return prefix + ".model"


def build_llama2(out_dir, model_file, legacy):
    """tokenizer.json from a SentencePiece BPE model, as transformers' LlamaConverter builds it."""
    from transformers import LlamaTokenizerFast
    from transformers.convert_slow_tokenizer import SentencePieceExtractor
    sp = spm.SentencePieceProcessor(model_file=model_file)
    vocab_scores = [(sp.id_to_piece(i), 0.0 if i < 3 else sp.get_score(i)) for i in range(sp.get_piece_size())]
    _, merges = SentencePieceExtractor(model_file).extract(vocab_scores)
    bpe_vocab = {piece: i for i, (piece, _) in enumerate(vocab_scores)}
    tok = Tokenizer(models.BPE(bpe_vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True, dropout=None))
    tok.add_tokens([AddedToken(sp.id_to_piece(i), normalized=False, special=True)
                    for i in range(sp.get_piece_size()) if sp.is_control(i)])
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1)])
    save_fast(tok, out_dir, LlamaTokenizerFast, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
              add_bos_token=True, add_eos_token=legacy, legacy=legacy, clean_up_tokenization_spaces=False)


def build_sentencepiece(out_dir, model_file, add_eos):
    os.makedirs(out_dir, exist_ok=True)
    with open(model_file, "rb") as f, open(os.path.join(out_dir, "tokenizer.model"), "wb") as g:
        g.write(f.read())
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": add_eos,
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "clean_up_tokenization_spaces": False,
              "chat_template": [{"name": "default", "template": "{{ messages }}"}]}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)


# ---------------------------------------------------------------------------
# References


def random_id_sequences(rng, vocab_size, byte_ids, special_ids, n):
    out = []
    for _ in range(n):
        seq = []
        for _ in range(rng.randint(1, 24)):
            r = rng.random()
            if byte_ids and r < 0.35:
                seq.append(rng.choice(byte_ids))
            elif special_ids and r < 0.45:
                seq.append(rng.choice(special_ids))
            else:
                seq.append(rng.randrange(vocab_size))
        out.append(seq)
    return out


def reference_fast(out_dir, strings, n_random):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(out_dir)
    cases = []
    for text in strings:
        ids = tok(text, add_special_tokens=True)["input_ids"]
        plain = tok(text, add_special_tokens=False)["input_ids"]
        cases.append({"text": text, "ids": ids, "ids_plain": plain,
                      "decode": tok.decode(ids, skip_special_tokens=False),
                      "decode_skip": tok.decode(ids, skip_special_tokens=True)})
    vocab = tok.get_vocab()
    byte_ids = [i for t, i in vocab.items() if len(t) == 6 and t.startswith("<0x") and t.endswith(">")]
    rng = random.Random(7)
    decodes = []
    for seq in random_id_sequences(rng, len(tok), byte_ids, list(tok.all_special_ids), n_random):
        decodes.append({"ids": seq, "decode": tok.decode(seq, skip_special_tokens=False),
                        "decode_skip": tok.decode(seq, skip_special_tokens=True)})
    return {"kind": "json", "vocab_size": len(tok), "encode": cases, "decode": decodes}


def reference_sentencepiece(out_dir, strings, n_random):
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out_dir, "tokenizer.model"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    add_bos, add_eos = config.get("add_bos_token", True), config.get("add_eos_token", False)
    special = lambda i: sp.is_control(i) or sp.is_unknown(i)  # noqa: E731

    def decodes(ids):
        return sp.decode(ids), sp.decode([i for i in ids if not special(i)])

    cases = []
    for text in strings:
        plain = sp.encode(text)
        ids = ([sp.bos_id()] if add_bos else []) + plain + ([sp.eos_id()] if add_eos else [])
        d, ds = decodes(ids)
        cases.append({"text": text, "ids": ids, "ids_plain": plain, "decode": d, "decode_skip": ds})
    n = sp.get_piece_size()
    byte_ids = [i for i in range(n) if sp.is_byte(i)]
    rng = random.Random(7)
    out = []
    for seq in random_id_sequences(rng, n, byte_ids, [i for i in range(n) if special(i)], n_random):
        d, ds = decodes(seq)
        out.append({"ids": seq, "decode": d, "decode_skip": ds})
    return {"kind": "sentencepiece", "vocab_size": n, "encode": cases, "decode": out}


def specials_of(name):
    return {"gpt2": ["<|endoftext|>"],
            "llama3": ["<|begin_of_text|>", "<|eot_id|>", "<|reserved_special_token_3|>"],
            "qwen2": ["<|im_start|>", "<|im_end|>", "<tool_call>", "<mask>", "hello"],
            }.get(name, ["<s>", "</s>", "<unk>"])


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--strings", type=int, default=10000)
    ap.add_argument("--random-decodes", type=int, default=2000)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--only", default=",".join(NAMES))
    args = ap.parse_args(argv)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in NAMES:
            raise SystemExit(f"unknown tokenizer {n}; known: {NAMES}")
    lines = corpus()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sp_models = {}
        for n in names:
            d = os.path.join(args.out, n)
            os.makedirs(d, exist_ok=True)
            if n == "gpt2":
                build_gpt2(d, lines, args.vocab)
            elif n == "llama3":
                build_llama3(d, lines, args.vocab)
            elif n == "qwen2":
                build_qwen2(d, lines, args.vocab)
            else:
                kind = "unigram" if n == "sp_unigram" else "bpe"
                if kind not in sp_models:
                    sp_models[kind] = train_sentencepiece(lines[:30000], os.path.join(tmp, kind), kind, 8000,
                                                          byte_fallback=(kind == "bpe"))
                if n == "llama2_metaspace":
                    build_llama2(d, sp_models[kind], legacy=False)
                elif n == "llama2_legacy":
                    build_llama2(d, sp_models[kind], legacy=True)
                else:
                    build_sentencepiece(d, sp_models[kind], add_eos=(n == "sp_unigram"))
            strings = test_strings(specials_of(n), args.strings)
            if n.startswith("sp_"):
                ref = reference_sentencepiece(d, strings, args.random_decodes)
            else:
                ref = reference_fast(d, strings, args.random_decodes)
            with open(os.path.join(d, "reference.json"), "w", encoding="utf-8") as f:
                json.dump(ref, f, ensure_ascii=False)
            print(f"{n}: {len(ref['encode'])} strings, {len(ref['decode'])} id sequences, vocab {ref['vocab_size']}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
