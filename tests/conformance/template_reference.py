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

  cases   --cases FILE --templates-dir DIR --out FILE
          Input: {"cases": [{"name", "template" (a file name in the templates
          directory), "messages", "add_generation_prompt", "bos_token",
          "eos_token", "tools" (optional)}]}. Output: a JSON list with, per
          case, {"name", "output"} or {"name", "error_type", "error"} when
          transformers raised.
  random  --count N --seed S --out FILE
          Generates N random templates (expressions over a fixed context with
          operators, filters, tests and methods; statement programs with set,
          namespaces, nested loops, loop controls, block sets and macros;
          whitespace control and comments in random layouts) and renders each with the jinja2
          environment transformers compiles chat templates with
          (chat_template_utils._compile_jinja_template). Output:
          {"context", "cases": [{"source", "output"} or {"source",
          "error_type", "error"}]}.

Runs offline: nothing is ever downloaded.
"""
import argparse
import copy
import json
import os
import random
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jinja2  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, models  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402
from transformers.utils.chat_template_utils import _compile_jinja_template  # noqa: E402

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


# The fixed context the random templates see.
RANDOM_CONTEXT = {
    "m": {"role": "user", "content": "Hi there"}, "xs": [3, 1, 2], "s": "Hello, World", "n": 7, "f": 2.5,
    "d": {"b": 1, "a": 2}, "e": "", "z": None, "u": "ÅßΣ ǅ", "nested": {"a": {"b": [1, {"c": "deep"}]}},
    "ms": [{"role": "system", "content": "S"}, {"role": "user", "content": "U u"}],
}
ATOMS = ["0", "1", "-3", "7", "300", "2.5", "0.1", "1e16", "2.675", "-0.0", "1e-5", "''", "'a'", "'Hello World'",
         "' x '", "'é'", "'a,b,,c'", "'ABC'", "none", "true", "false", "[]", "[1, 2]", "['b', 'a']", "{}", "{'k': 1}",
         "(1,)", "(1, 'x')", "m", "xs", "s", "n", "f", "d", "e", "z", "u", "ms", "missing", "m.role", "m['content']",
         "xs[0]", "xs[-1]", "xs[1:]", "s[::-1]", "s[2:5]", "nested.a.b[1].c", "d.a", "ms[1].content", "m.nope",
         "range(4)", "d.keys()", "d.items()"]
FILTERS = ["trim", "upper", "lower", "title", "capitalize", "length", "count", "string", "int", "float", "first",
           "last", "list", "reverse", "sort", "unique", "abs", "round", "tojson", "e", "safe", "wordcount", "items",
           "dictsort", "join", "join(', ')", "default('D')", "d('x', true)", "replace('l', 'L')", "indent(2)",
           "center(9)", "map('upper')", "map(attribute='role')", "select('odd')", "reject('none')",
           "selectattr('role')", "rejectattr('role', 'eq', 'user')", "tojson(indent=1)", "round(1, 'floor')",
           "int(5)", "float(1.5)", "max", "min", "sum", "list|length", "sort(reverse=true)", "title|trim",
           "format(1)", "format(x=2)"]
# Python prints generators with their address, which no other renderer can
# match: the random templates always consume them.
FILTERS = [f + "|list" if f.split("(")[0] in ("map", "select", "reject", "selectattr", "rejectattr", "unique",
                                               "items", "reverse") else f for f in FILTERS]
TESTS = ["defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "mapping", "iterable",
         "sequence", "odd", "even", "divisibleby 3", "equalto 1", "eq 'a'", "true", "false", "lower", "upper",
         "in [1, 2]"]
METHODS = ["strip()", "upper()", "lower()", "split()", "split(',')", "startswith('H')", "endswith('d')",
           "replace('o', '0')", "title()", "find('l')", "count('l')", "lstrip('H')", "rstrip('d')", "splitlines()",
           "isdigit()", "isalpha()", "capitalize()", "format(1)", "get('a')", "items()", "keys()", "values()",
           "index(1)", "count(1)", "append(1)"]
FORMATS = ["'%s'", "'%r|%s'", "'%5d|%-5d|%05d|%+d'", "'%x %X %#x %o %#o'", "'%.2f %e %g %10.3f'", "'%(a)s'",
           "'%c'", "'%%'", "'%.3s|%5s|%-5s|'", "'%5.1f%%'", "'%05.3d'", "'%i'", "'plain'", "'%s %s'"]
OPERATORS = ["+", "-", "*", "/", "//", "%", "~", "and", "or", "==", "!=", "<", "<=", ">", ">=", "in", "not in"]
TEXT = ["a", "b c", " ", "  ", "\n", "\n\n", "\t", " \n", "\n  ", "x\n", "\u3000", "\r\n", "{", "}", "%", "#"]


def random_expression(rng, depth=0):
    r = rng.random()
    if depth > 2 or r < 0.3:
        return rng.choice(ATOMS)
    if r < 0.45:
        return "%s|%s" % (random_expression(rng, depth + 1), rng.choice(FILTERS))
    if r < 0.55:
        return "%s is %s%s" % (random_expression(rng, depth + 1), rng.choice(["", "not "]), rng.choice(TESTS))
    if r < 0.65:
        return "%s.%s" % (rng.choice(["s", "d", "xs", "u", "e", "m", "'a b'", "[1, 2, 1]"]), rng.choice(METHODS))
    if r < 0.72:
        return "not %s" % random_expression(rng, depth + 1)
    if r < 0.78:
        return "(%s if %s else %s)" % tuple(random_expression(rng, depth + 1) for _ in range(3))
    if r < 0.82:
        return "-%s" % random_expression(rng, depth + 1)
    if r < 0.85:
        return "(%s %% %s)" % (rng.choice(FORMATS), random_expression(rng, depth + 1))
    return "(%s %s %s)" % (random_expression(rng, depth + 1), rng.choice(OPERATORS), random_expression(rng, depth + 1))


def random_layout(rng, depth=0):
    def mod():
        return rng.choice(["", "", "-", "+"])
    parts = []
    for _ in range(rng.randint(1, 6)):
        r = rng.random()
        if r < 0.45:
            parts.append(rng.choice(TEXT))
        elif r < 0.6:
            parts.append("{{%s 'v' %s}}" % (rng.choice(["", "-"]), rng.choice(["", "-"])))
        elif r < 0.7:
            parts.append("{#%s c %s#}" % (mod(), mod()))
        elif r < 0.75:
            parts.append("{%%%s raw %s%%}r{{ }}%s{%%%s endraw %s%%}" % (mod(), rng.choice(["", "-"]),
                                                                      rng.choice(TEXT), mod(), mod()))
        elif depth < 3 and r < 0.85:
            parts.append("{%%%s if %s %s%%}" % (mod(), rng.choice(["true", "false"]), mod()) + random_layout(rng, depth + 1)
                         + "{%%%s endif %s%%}" % (mod(), mod()))
        elif depth < 3:
            parts.append("{%%%s for i in [1, 2] %s%%}" % (mod(), mod()) + random_layout(rng, depth + 1)
                         + "{%%%s endfor %s%%}" % (mod(), mod()))
    return "".join(parts)


def random_program(rng, depth=0, in_loop=False):
    """Statements over a few names: set (scoping), namespaces, loops with loop.*, controls, macros."""
    def small():
        return rng.choice(["x", "y", "ns.a", "ns.b", "i", "loop.index", "loop.first", "loop.length", "loop.previtem",
                           "1", "'s'", "x ~ y", "(x or 0) + 1", "ns.a * 2", "[x, y]", "i is defined", "m(i)",
                           "x if y else 'n'", "xs|length", "loop.revindex0", "loop.cycle('p', 'q')"])
    parts = []
    for _ in range(rng.randint(1, 5)):
        r = rng.random()
        if r < 0.2:
            parts.append("{{ %s }}," % small())
        elif r < 0.32:
            parts.append("{%% set %s = %s %%}" % (rng.choice(["x", "y"]), small()))
        elif r < 0.42:
            parts.append("{%% set ns.%s = %s %%}" % (rng.choice(["a", "b"]), small()))
        elif r < 0.58 and depth < 3:
            loop = "{%% for i in %s%s %%}" % (rng.choice(["xs", "[1, 2, 3]", "range(3)", "'ab'", "[]", "d"]),
                                              rng.choice(["", "", " if i != 2"]))
            body = random_program(rng, depth + 1, True)
            if rng.random() < 0.3:
                body += "{%% if %s %%}{%% %s %%}{%% endif %%}" % (rng.choice(["loop.index == 2", "i == 1", "x"]),
                                                               rng.choice(["break", "continue"]))
            tail = "{% else %}E" + random_program(rng, depth + 1) if rng.random() < 0.3 else ""
            parts.append(loop + body + tail + "{% endfor %}")
        elif r < 0.7 and depth < 3:
            parts.append("{%% if %s %%}%s{%% elif %s %%}%s{%% else %%}%s{%% endif %%}" % (
                small(), random_program(rng, depth + 1, in_loop), small(), random_program(rng, depth + 1, in_loop),
                random_program(rng, depth + 1, in_loop)))
        elif r < 0.78 and depth < 2:
            parts.append("{%% set blk %%}%s{%% endset %%}[{{ blk }}]" % random_program(rng, depth + 1, in_loop))
        elif r < 0.85 and in_loop:
            parts.append("{%% if %s %%}{%% %s %%}{%% endif %%}" % (small(), rng.choice(["break", "continue"])))
        elif r < 0.9:
            parts.append(rng.choice([
                "{% for k, v in d.items() %}{{ k }}={{ v }}{{ x }}{% set x = v %}{% endfor %}",
                "{% macro mm(a) %}{% set x = a %}{{ x }}{{ loop is defined }}{{ i is defined }}{% endmacro %}{{ mm(y) }}",
                "{% set x, y = [y, x] %}",
                "{% set ns.b = ns.b ~ (loop.index if loop is defined else '-') %}",
                "{{ m(x, w=y) }}{{ m(w=1, v=2) }}",
            ]))
        else:
            parts.append(rng.choice(["a", "\n", " ", "{# c #}"]))
    return "".join(parts)


PROGRAM_PRELUDE = ("{% set ns = namespace(a=0, b='') %}{% set x = 1 %}"
                   "{% macro m(v, w=2) %}<{{ v }}:{{ w }}:{{ x }}>{% set x = 5 %}{% endmacro %}")


def random_template(rng):
    r = rng.random()
    if r < 0.25:
        return PROGRAM_PRELUDE + random_program(rng) + "|{{ x }}|{{ y }}|{{ ns.a }}|{{ ns.b }}"
    if r < 0.45:
        return random_layout(rng)
    if r < 0.45:
        return ("{%% for x in %s %%}[{{ loop.index }}{{ x }}{{ loop.last }}]{%% else %%}E{%% endfor %%}"
                % random_expression(rng))
    return "{{ %s }}" % random_expression(rng)


def random_cases(count, seed):
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        source = random_template(rng)
        if " - " in source and any(view in source for view in ("keys()", "values()", "items()")):
            continue  # set operations on dict views are outside the subset
        try:  # a fresh context each time: some filters change lists in place
            output = _compile_jinja_template(source).render(**copy.deepcopy(RANDOM_CONTEXT))
        except (MemoryError, RecursionError):
            continue
        except Exception as e:  # noqa: BLE001 -- every error is an expected result
            cases.append({"source": source, "error_type": type(e).__name__, "error": str(e)})
            continue
        if len(output) <= 20000:
            cases.append({"source": source, "output": output})
    return {"context": RANDOM_CONTEXT, "cases": cases}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cases", help="render templates with conversations through apply_chat_template")
    c.add_argument("--cases", required=True, help="JSON file of cases")
    c.add_argument("--templates-dir", required=True, help="directory of the templates the cases name")
    c.add_argument("--out", required=True, help="where to write the results (JSON)")
    r = sub.add_parser("random", help="render random templates with transformers' jinja2 environment")
    r.add_argument("--count", type=int, required=True)
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "random":
        result = random_cases(args.count, args.seed)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, ensure_ascii=False)
        return
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
