#!/usr/bin/python3
"""Train a small GPT-2 on English prose (the Python documentation) and export it to models/prose-gpt.

A model that has learned something, so that reduced-precision (bf16, int8) accuracy can be
measured on real text: a GPT-2 of the Hugging Face layout Tessera's `gpt2` family loads (config.json
with GPT2Config's keys, model.safetensors with HF's names, Conv1D weights [in, out], the lm head
tied to wte), with GPT-2's own byte-level BPE vocabulary (50,257 tokens).

Data: the reStructuredText sources of the Python 3.11 documentation shipped by Debian's python3-doc
(/usr/share/doc/python3.11/html/_sources/**/*.rst.txt, 497 files), cleaned into prose: directive
lines (.. xxx::), their options, index/toctree/code blocks, literal blocks after "::", doctest
blocks, tables, comments, labels, footnotes and section adornments are dropped; roles
(:func:`x` -> x), literals, emphasis and links are reduced to their text; paragraphs are unwrapped
and separated by a blank line. Files are taken in sorted order; every file whose index % 50 == 7 is
held out (never trained on: 10 files). The held-out text (the first HELDOUT_CAP / 10 characters
of each held-out file, cut at a paragraph; 78 KB, about 18k tokens) is written to
models/prose-gpt/heldout.txt, so that tests need no python3-doc.

Tokenizer: a Python GPT-2 byte-level BPE (tests/data/tokenizers/gpt2/{vocab.json,merges.txt});
the pre-tokenizer is GPT-2's pattern with \\p{L}, \\p{N} and \\s spelled out as explicit character
classes from unicodedata (Python's re has no Unicode properties), \s as Tessera spells it for PCRE2
(with U+0085). --check-tokenizer compares its ids with `tessera tokenize` on the held-out text
(--check-all: and on every training document).

Model: n_embd 128, 4 layers, 4 heads, n_positions 256, gelu_new, eps 1e-5, dropout 0, trained on
random 128-token windows of the training text (documents joined by <|endoftext|>), batch 16,
AdamW (0.9, 0.95, weight decay 0.1 on matrices and embeddings), linear warmup then cosine decay to
10%, gradient clipping 1.0, a fixed number of steps, one thread, one seed.

Speed on one core: the 50,257-way lm head is most of the work. Tokens that never occur in the
training text keep one shared embedding row (initialized equal, they would receive identical
updates anyway: their gradients are equal and AdamW acts element-wise), so training computes their
part of the softmax as one class with an additive log(count) and divides that row's gradient by
the count (clipping counts it count times): the same loss, gradients and AdamW steps as the full
softmax, with the lm head only as wide as the tokens that occur (checked against the full softmax at
start-up). The cross-entropy and its gradients are computed in chunks of 128 rows, never as one
[tokens, vocabulary] tensor. The exported wte has all 50,257 rows; every evaluation uses the full
vocabulary. Debian's PyTorch is linked against libblas.so.3; if that is the reference (netlib)
BLAS, the script re-runs itself with OpenBLAS (libopenblas0-pthread, which python3-torch pulls in)
on one thread, when installed. About 2,900 tokens/s on one core here.

Held-out perplexity: heldout.txt tokenized as one text, cut into consecutive non-overlapping
128-token windows, each run alone; exp(mean -log p) over every token but each window's first.

    /usr/bin/python3 tools/train_prose_gpt.py                 # train, evaluate, export (~35 min, 1 core)
    /usr/bin/python3 tools/train_prose_gpt.py --heldout-only  # write heldout.txt only
    /usr/bin/python3 tools/train_prose_gpt.py --check-tokenizer --tessera build/tools/tessera
    /usr/bin/python3 tools/train_prose_gpt.py --eval-only [--tessera build/tools/tessera]
        # held-out perplexity of the shipped model (PyTorch; with --tessera also `tessera run`)
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import unicodedata
from functools import lru_cache

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

DOC_SOURCES = "/usr/share/doc/python3.11/html/_sources"
GPT2_TOKENIZER = os.path.join(_ROOT, "tests", "data", "tokenizers", "gpt2")
OUT_DIR = os.path.join(_ROOT, "models", "prose-gpt")
HELDOUT_MOD, HELDOUT_REM = 50, 7
HELDOUT_CAP = 100_000  # characters of held-out text kept in heldout.txt (split evenly over the files)
EOT = 50256  # <|endoftext|>
OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"


# ---------------------------------------------------------------------------------------------
# reStructuredText -> prose
# ---------------------------------------------------------------------------------------------
# Directives dropped with their whole block (arguments, options and content).
DROP_DIRECTIVES = {
    "index", "code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "testsetup",
    "testcleanup", "highlight", "productionlist", "toctree", "include", "literalinclude",
    "currentmodule", "tabularcolumns", "contents", "parsed-literal", "image", "figure", "raw",
    "miscnews", "limited-api-list", "audit-event-table", "audit-event", "sectionauthor",
    "moduleauthor", "list-table", "csv-table", "table", "only", "rubric", "availability",
    "highlightlang", "math",
}
# Object descriptions: the signature (and its continuation lines and options) is dropped, the
# described content is kept.
SIGNATURE_DIRECTIVES = {
    "function", "method", "class", "data", "attribute", "exception", "decorator", "decoratormethod",
    "classmethod", "staticmethod", "abstractmethod", "coroutinefunction", "coroutinemethod",
    "awaitablefunction", "awaitablemethod", "module", "cmdoption", "option", "envvar", "opcode",
    "pdbcommand", "describe", "object", "program", "c:function", "c:member", "c:type", "c:var",
    "c:macro", "c:struct", "c:data", "c:enum", "c:enumerator", "c:union", "fixer", "2to3fixer",
}
VERSION_DIRECTIVES = {
    "versionadded": "New in version {}", "versionchanged": "Changed in version {}",
    "deprecated": "Deprecated since version {}", "deprecated-removed": "Deprecated since version {}",
}

_DIRECTIVE = re.compile(r"^\.\.\s+([A-Za-z][\w:-]*)::(.*)$")
_OPTION = re.compile(r"^:[\w -]+:(\s|$)")
_ADORNMENT = re.compile(r"^([=\-~^*#\"'+`:._<>])\1{2,}$")
_SIMPLE_TABLE = re.compile(r"^=+( +=+)+$")
_BULLET = re.compile(r"^([*+\-\u2022]|#\.|\d+\.|\(\d+\)|\d+\))\s+")
_ROLE = re.compile(r":(?:[\w-]+:)*([\w-]+):`((?:[^`\\]|\\.)+?)`")
_LITERAL = re.compile(r"``(.+?)``")
_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?")
_REF = re.compile(r"`([^`]+?)`__?")
_DEFAULT_ROLE = re.compile(r"`([^`]+?)`")
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
_EMPH = re.compile(r"(?<![\w*\\])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")
_FOOTREF = re.compile(r"\s*\[(?:\d+|#\w*|\*)\]_")
_SUBST = re.compile(r"\|([\w -]+)\|")
_LETTER = re.compile(r"[^\W\d_]")
_SPACE = re.compile(r"\s")


def _role_text(m: re.Match) -> str:
    role, body = m.group(1).lower(), m.group(2).replace("\\", "")
    t = re.match(r"^(.*?)\s*<([^<>]*)>$", body, re.S)
    if t and t.group(1):
        return t.group(1)
    if t:
        body = t.group(2)
    if role == "abbr":
        return body.split(" (")[0]
    if role == "pep":
        return "PEP " + body
    if role == "rfc":
        return "RFC " + body
    body = body.lstrip("!")
    if body.startswith("~"):
        body = body[1:].split(".")[-1]
    return body


def clean_inline(text: str) -> str:
    text = _FOOTREF.sub("", text)
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(lambda m: m.group(1), text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _REF.sub(lambda m: m.group(1), text)
    text = _DEFAULT_ROLE.sub(lambda m: m.group(1), text)
    text = _STRONG.sub(lambda m: m.group(1), text)
    text = _EMPH.sub(lambda m: m.group(1), text)
    text = _SUBST.sub(lambda m: m.group(1), text)
    text = text.replace("\\ ", "")
    text = re.sub(r"\\(.)", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def _is_prose(p: str) -> bool:
    """A paragraph mostly of words (not code, a signature or a list of symbols)."""
    words = p.split()
    if len(words) < 2:
        return False
    letters = len(_LETTER.findall(p))
    nonspace = len(p) - len(_SPACE.findall(p))
    if letters < 0.75 * nonspace:
        return False
    return not p.startswith((">>>", "$ ", "%"))


def clean_rst(text: str) -> str:
    """One reStructuredText document -> prose paragraphs separated by a blank line."""
    lines = [ln.rstrip() for ln in text.expandtabs(8).split("\n")]
    paras: list[str] = []
    cur: list[str] = []
    cur_indent = -1  # text indent of the current paragraph
    cur_literal = False  # its last line ends with "::": an indented literal block follows
    skip_deeper = None  # skip blank lines and lines indented deeper than this
    skip_until_blank = False  # grid tables, doctest blocks, line blocks
    simple_table = 0  # border lines of a simple table seen so far
    pending = None  # a version directive's (indent, text alone, prefix of its content)
    cur_bullet = False  # the current paragraph is a list item

    def flush():
        nonlocal cur, cur_indent, cur_literal, skip_deeper
        if cur:
            p = " ".join(cur)
            if cur_literal:  # "text::" -> "text:", "text ::" and "::" -> "text", ""
                skip_deeper = cur_indent
                p = p[:-2].rstrip() if (p == "::" or p[-3].isspace()) else p[:-1]
            p = clean_inline(p)
            if p and _is_prose(p):
                paras.append(p)
        cur, cur_indent, cur_literal = [], -1, False

    def take_pending(indent):
        """The prefix for a paragraph at this indent: a version directive's, if it is its content."""
        nonlocal pending
        if pending is None:
            return []
        d_indent, alone, prefix = pending
        pending = None
        if indent > d_indent:
            return [prefix]
        paras.append(alone)
        return []

    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        i += 1
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if skip_until_blank:
            skip_until_blank = bool(stripped)
            continue
        if simple_table:
            if _SIMPLE_TABLE.match(stripped):
                simple_table += 1
                if simple_table >= 2 and (i >= n or not lines[i].strip()):
                    simple_table = 0
            continue
        if skip_deeper is not None:
            if not stripped or indent > skip_deeper:
                continue
            skip_deeper = None
        if not stripped:
            flush()
            continue
        if stripped.startswith(".. ") or stripped == "..":  # explicit markup
            flush()
            m = _DIRECTIVE.match(stripped)
            if m is None:  # a comment, label, footnote, citation or substitution definition
                skip_deeper = indent
                continue
            name, arg = m.group(1).lower(), m.group(2).strip()
            if pending is not None:
                take_pending(indent)
            if name in DROP_DIRECTIVES:
                skip_deeper = indent
            elif name in SIGNATURE_DIRECTIVES:
                while i < n and lines[i].strip():  # signature continuation lines, options
                    i += 1
            elif name in VERSION_DIRECTIVES:
                version, _, rest = arg.partition(" ")
                if name == "deprecated-removed":
                    rest = rest.partition(" ")[2]
                head = VERSION_DIRECTIVES[name].format(version)
                pending = (indent, head + ".", head + ":")
                if rest:
                    cur, cur_indent = take_pending(indent + 1) + [rest], indent + 3
            elif arg:  # an admonition's (note, seealso, ...) text on the directive line
                cur, cur_indent = [arg], indent + 3
            continue
        if _OPTION.match(stripped):
            continue
        if _ADORNMENT.match(stripped):
            flush()
            continue
        if stripped.startswith(("+-", "+=", ">>>", "| ")) or stripped == "|":
            flush()
            skip_until_blank = True
            continue
        if _SIMPLE_TABLE.match(stripped):
            flush()
            simple_table = 1
            continue
        # a list item starts a paragraph or follows another item (not a wrapped line's "- x")
        b = _BULLET.match(stripped) if (not cur or cur_bullet) else None
        if b or not cur or indent != cur_indent:
            flush()
            cur = take_pending(indent) + [stripped[b.end():] if b else stripped]
            cur_indent = indent + (b.end() if b else 0)
            cur_bullet = b is not None
        else:
            cur.append(stripped)
        cur_literal = stripped.endswith("::")
    flush()
    if pending is not None:
        paras.append(pending[1])
    return "\n\n".join(paras)


def source_files(src_dir: str = DOC_SOURCES) -> list:
    """The documentation's .rst.txt files, relative to src_dir, in sorted (byte) order."""
    files = sorted(os.path.relpath(p, src_dir) for p in glob.glob(os.path.join(src_dir, "**", "*.rst.txt"),
                                                                      recursive=True))
    if not files:
        raise SystemExit(f"no *.rst.txt under {src_dir}: install Debian's python3-doc (tools/setup.sh)")
    return files


def is_heldout(index: int) -> bool:
    return index % HELDOUT_MOD == HELDOUT_REM


def load_corpus(src_dir: str = DOC_SOURCES):
    """-> (training documents [(path, prose)], held-out documents [(path, prose)])."""
    train, held = [], []
    for k, rel in enumerate(source_files(src_dir)):
        with open(os.path.join(src_dir, rel), encoding="utf-8") as f:
            prose = clean_rst(f.read())
        if prose:
            (held if is_heldout(k) else train).append((rel, prose))
    return train, held


def heldout_text(held) -> str:
    """The held-out text: the first HELDOUT_CAP / len(held) characters of each held-out document
    (cut at a paragraph, at least one paragraph each), joined by a blank line."""
    per_doc = HELDOUT_CAP // len(held)
    out = []
    for _, prose in held:
        size = 0
        for p in prose.split("\n\n"):
            if size and size + len(p) + 2 > per_doc:
                break
            out.append(p)
            size += len(p) + 2
    return "\n\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# GPT-2 byte-level BPE
# ---------------------------------------------------------------------------------------------
def _char_class(pred) -> str:
    """A regex character class body of every code point for which pred(category) holds."""
    ranges, start, prev = [], None, None
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        if pred(unicodedata.category(chr(cp))):
            if start is None:
                start = cp
            elif cp != prev + 1:
                ranges.append((start, prev))
                start = cp
            prev = cp
    if start is not None:
        ranges.append((start, prev))
    esc = lambda c: "\\U%08x" % c  # noqa: E731
    return "".join(esc(a) if a == b else esc(a) + "-" + esc(b) for a, b in ranges)


@lru_cache(maxsize=1)
def gpt2_pattern() -> re.Pattern:
    """GPT-2's pre-tokenizer, as Tessera spells it for PCRE2 (engine/text/tokenizer_bpe.cpp):
    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
    with \\s = PCRE2's Unicode \\s (Z categories, \\t \\n \\v \\f \\r) and U+0085, as Oniguruma counts it."""
    letters = _char_class(lambda c: c[0] == "L")
    numbers = _char_class(lambda c: c[0] == "N")
    space = "\\t\\n\\x0b\\x0c\\r\\x85" + _char_class(lambda c: c in ("Zs", "Zl", "Zp"))
    return re.compile(
        rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{letters}]+| ?[{numbers}]+| ?[^{space}{letters}{numbers}]+"
        rf"|[{space}]+(?![^{space}])|[{space}]+")


def _bytes_to_unicode() -> dict:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Gpt2Tokenizer:
    """GPT-2's byte-level BPE from vocab.json + merges.txt (no special tokens in the text)."""

    def __init__(self, directory: str = GPT2_TOKENIZER):
        with open(os.path.join(directory, "vocab.json"), encoding="utf-8") as f:
            self.vocab = json.load(f)
        self.inverse = {v: k for k, v in self.vocab.items()}
        with open(os.path.join(directory, "merges.txt"), encoding="utf-8") as f:
            merges = [tuple(line.split()) for line in f.read().split("\n")
                      if line and not line.startswith("#version")]
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.byte_enc = _bytes_to_unicode()
        self.byte_dec = {v: k for k, v in self.byte_enc.items()}
        self.pattern = gpt2_pattern()
        self.cache = {}

    def _bpe(self, word: str) -> list:
        parts = list(word)
        while len(parts) > 1:
            best, best_rank = None, None
            for k in range(len(parts) - 1):
                r = self.ranks.get((parts[k], parts[k + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = k, r
            if best is None:
                break
            a, b = parts[best], parts[best + 1]
            merged, k = [], 0
            while k < len(parts):  # merge every occurrence of the pair, left to right
                if k < len(parts) - 1 and parts[k] == a and parts[k + 1] == b:
                    merged.append(a + b)
                    k += 2
                else:
                    merged.append(parts[k])
                    k += 1
            parts = merged
        return [self.vocab[p] for p in parts]

    def encode(self, text: str) -> list:
        ids = []
        for piece in self.pattern.findall(text):
            word = "".join(self.byte_enc[b] for b in piece.encode("utf-8"))
            got = self.cache.get(word)
            if got is None:
                got = self.cache[word] = self._bpe(word)
            ids.extend(got)
        return ids

    def decode(self, ids) -> str:
        text = "".join(self.inverse[int(i)] for i in ids)
        return bytes(self.byte_dec[c] for c in text).decode("utf-8", errors="replace")


def encode_documents(tok: Gpt2Tokenizer, docs) -> list:
    """Training token stream: each document's ids followed by <|endoftext|>."""
    ids = []
    for _, prose in docs:
        ids.extend(tok.encode(prose))
        ids.append(EOT)
    return ids


# ---------------------------------------------------------------------------------------------
# the model: GPT-2 (pre-LN, gelu_new, learned positions, tied lm head), Hugging Face's names
# ---------------------------------------------------------------------------------------------
def _torch():
    import torch  # noqa: F401  (imported late: --heldout-only and --check-tokenizer need no torch)
    return torch


class Config:
    def __init__(self, vocab=50257, n_embd=128, n_layer=4, n_head=4, n_positions=256, eps=1e-5):
        self.vocab, self.n_embd, self.n_layer, self.n_head = vocab, n_embd, n_layer, n_head
        self.n_positions, self.eps = n_positions, eps

    def hf(self) -> dict:
        """config.json: the keys Hugging Face's GPT2Config writes (dropout 0: an inference model)."""
        return {
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": self.vocab,
            "n_embd": self.n_embd, "n_layer": self.n_layer, "n_head": self.n_head,
            "n_positions": self.n_positions, "n_ctx": self.n_positions, "n_inner": None,
            "activation_function": "gelu_new", "layer_norm_epsilon": self.eps,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "initializer_range": 0.02,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "tie_word_embeddings": True, "use_cache": True,
            "bos_token_id": EOT, "eos_token_id": EOT, "torch_dtype": "float32",
        }


def make_body(cfg: Config, seed: int):
    """The parameters other than wte, by their HF names (Conv1D weights [in, out]), initialized as
    GPT-2 does: N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 n_layer)), LayerNorm 1/0."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    e = cfg.n_embd
    normal = lambda *shape, std=0.02: torch.randn(*shape, generator=g) * std  # noqa: E731
    proj_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    p = {"wpe.weight": normal(cfg.n_positions, e, std=0.01)}
    for i in range(cfg.n_layer):
        q = f"h.{i}."
        p[q + "ln_1.weight"], p[q + "ln_1.bias"] = torch.ones(e), torch.zeros(e)
        p[q + "attn.c_attn.weight"], p[q + "attn.c_attn.bias"] = normal(e, 3 * e), torch.zeros(3 * e)
        p[q + "attn.c_proj.weight"], p[q + "attn.c_proj.bias"] = normal(e, e, std=proj_std), torch.zeros(e)
        p[q + "ln_2.weight"], p[q + "ln_2.bias"] = torch.ones(e), torch.zeros(e)
        p[q + "mlp.c_fc.weight"], p[q + "mlp.c_fc.bias"] = normal(e, 4 * e), torch.zeros(4 * e)
        p[q + "mlp.c_proj.weight"], p[q + "mlp.c_proj.bias"] = normal(4 * e, e, std=proj_std), torch.zeros(e)
    p["ln_f.weight"], p["ln_f.bias"] = torch.ones(e), torch.zeros(e)
    return {k: v.requires_grad_() for k, v in p.items()}, g


def hidden_states(cfg: Config, p: dict, x):
    """x: token embeddings [B, T, E] -> final hidden states [B, T, E] (after ln_f)."""
    torch = _torch()
    F = torch.nn.functional
    b, t, e = x.shape
    h_, d = cfg.n_head, e // cfg.n_head
    x = x + p["wpe.weight"][:t]
    causal = torch.ones(t, t, dtype=torch.bool).triu(1)
    for i in range(cfg.n_layer):
        q = f"h.{i}."
        a = F.layer_norm(x, (e,), p[q + "ln_1.weight"], p[q + "ln_1.bias"], cfg.eps)
        qkv = torch.addmm(p[q + "attn.c_attn.bias"], a.reshape(b * t, e), p[q + "attn.c_attn.weight"])
        qh, kh, vh = (z.reshape(b, t, h_, d).transpose(1, 2) for z in qkv.reshape(b, t, 3 * e).split(e, dim=-1))
        s = torch.matmul(qh, kh.transpose(-1, -2)) * (1.0 / math.sqrt(d))
        s = s.masked_fill(causal, float("-inf"))
        o = torch.matmul(torch.softmax(s, dim=-1), vh).transpose(1, 2).reshape(b * t, e)
        x = x + torch.addmm(p[q + "attn.c_proj.bias"], o, p[q + "attn.c_proj.weight"]).view(b, t, e)
        a = F.layer_norm(x, (e,), p[q + "ln_2.weight"], p[q + "ln_2.bias"], cfg.eps)
        m = F.gelu(torch.addmm(p[q + "mlp.c_fc.bias"], a.reshape(b * t, e), p[q + "mlp.c_fc.weight"]),
                   approximate="tanh")
        x = x + torch.addmm(p[q + "mlp.c_proj.bias"], m, p[q + "mlp.c_proj.weight"]).view(b, t, e)
    return F.layer_norm(x, (e,), p["ln_f.weight"], p["ln_f.bias"], cfg.eps)


def full_logits(cfg: Config, p: dict, wte, ids):
    """ids [B, T] -> logits [B, T, V] with the full (exported) wte: what Tessera computes."""
    h = hidden_states(cfg, p, wte[ids])
    return h @ wte.t()


@lru_cache(maxsize=1)
def _pooled_cross_entropy():
    """An autograd Function: mean cross-entropy of logits [h @ active.T, h @ shared + log N] for
    targets in the active columns, computed (with its gradients) in chunks of rows so that no
    [tokens, vocabulary] tensor is ever made: the 19k-wide softmax of 2,048 tokens, made whole,
    costs more memory traffic than its matrix products on one core."""
    torch = _torch()

    class PooledCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, h, active, shared, tgt, log_n, chunk=128):
            n = h.shape[0]
            d_h, d_active = torch.empty_like(h), torch.zeros_like(active)
            d_shared = torch.zeros_like(shared)
            total = 0.0
            for s in range(0, n, chunk):
                hc, tc = h[s:s + chunk], tgt[s:s + chunk]
                rows = torch.arange(hc.shape[0])
                z = hc @ active.t()  # [c, A]
                m = z.max(dim=1).values
                if log_n is not None:
                    zp = hc @ shared + log_n  # [c]: the N shared rows as one class
                    m = torch.maximum(m, zp)
                z.sub_(m.unsqueeze(1))
                picked = z[rows, tc].clone()
                z.exp_()
                ssum = z.sum(dim=1)
                if log_n is not None:
                    pp = torch.exp(zp - m)
                    ssum = ssum + pp
                lse = torch.log(ssum)
                total += float((lse - picked).sum())
                z.div_(ssum.unsqueeze(1))  # softmax
                z[rows, tc] -= 1.0
                z.div_(n)  # d loss / d logits (the mean over all n)
                d_h[s:s + chunk] = z @ active
                d_active.addmm_(z.t(), hc)
                if log_n is not None:
                    g = pp / ssum / n  # d loss / d pooled logit
                    d_h[s:s + chunk].add_(g.unsqueeze(1) * shared)
                    d_shared.add_(g @ hc)
            ctx.save_for_backward(d_h, d_active, d_shared)
            return h.new_tensor(total / n)

        @staticmethod
        def backward(ctx, grad):
            d_h, d_active, d_shared = ctx.saved_tensors
            return d_h * grad, d_active * grad, d_shared * grad, None, None, None

    return PooledCrossEntropy


class PooledHead:
    """The lm head over the tokens that occur in training, plus one class for all others.

    wte = rows `active` (trainable, [A, E]) and one shared row (`shared`, [E]) for every other
    token. log-softmax over the full vocabulary: the shared row's N = V - A equal logits sum to
    one class with logit h.shared + log N. The shared row's gradient is divided by N after backward
    (scale_shared_grad): each of those rows' gradient in the full model; clip_grad_norm counts it N
    times.
    """

    def __init__(self, vocab: int, active_ids, n_embd: int, g):
        torch = _torch()
        self.vocab = vocab
        self.active_ids = torch.as_tensor(sorted(set(active_ids)), dtype=torch.long)
        self.remap = torch.full((vocab,), -1, dtype=torch.long)
        self.remap[self.active_ids] = torch.arange(len(self.active_ids))
        self.n_shared = vocab - len(self.active_ids)
        self.active = (torch.randn(len(self.active_ids), n_embd, generator=g) * 0.02).requires_grad_()
        self.shared = (torch.randn(n_embd, generator=g) * 0.02).requires_grad_()

    def full_wte(self):
        w = self.shared.detach().expand(self.vocab, -1).clone()
        w[self.active_ids] = self.active.detach()
        return w

    def loss(self, cfg: Config, p: dict, ids, targets):
        """Mean next-token cross-entropy over the full vocabulary (ids, targets: token ids that occur)."""
        h = hidden_states(cfg, p, self.active[self.remap[ids]])
        tgt = self.remap[targets.reshape(-1)]
        if bool((tgt < 0).any()):
            raise ValueError("a target outside the tokens the head was made for")
        return _pooled_cross_entropy().apply(h.reshape(-1, h.shape[-1]), self.active, self.shared, tgt,
                                             math.log(self.n_shared) if self.n_shared else None)

    def scale_shared_grad(self) -> None:
        """After backward: the shared row's gradient is the sum over its N rows; one row's is 1/N."""
        if self.n_shared and self.shared.grad is not None:
            self.shared.grad.div_(self.n_shared)

    def params(self):
        return [self.active, self.shared]


def clip_grad_norm(params, shared, n_shared: int, max_norm: float) -> float:
    """clip_grad_norm_ as the full model would compute it: the shared row counts n_shared times."""
    torch = _torch()
    sq = sum(float((q.grad.double() ** 2).sum()) for q in params if q.grad is not None)
    if shared.grad is not None and n_shared > 1:
        sq += (n_shared - 1) * float((shared.grad.double() ** 2).sum())
    norm = math.sqrt(sq)
    scale = max_norm / (norm + 1e-6)
    if scale < 1.0:
        with torch.no_grad():
            for q in params:
                if q.grad is not None:
                    q.grad.mul_(scale)
    return norm


def check_pooled_head(cfg: Config, p: dict, head: PooledHead, stream, g) -> float:
    """The pooled loss and gradients equal those of the full 50,257-way softmax: -> max rel diff."""
    torch = _torch()
    F = torch.nn.functional
    off = torch.randint(0, len(stream) - 33, (2,), generator=g)
    x = torch.stack([stream[o:o + 32] for o in off])
    y = torch.stack([stream[o + 1:o + 33] for o in off])
    wte = head.full_wte().requires_grad_()
    ref = F.cross_entropy(full_logits(cfg, p, wte, x).reshape(-1, cfg.vocab), y.reshape(-1))
    g_ref = torch.autograd.grad(ref, [wte] + list(p.values()))
    got = head.loss(cfg, p, x, y)
    g_got = list(torch.autograd.grad(got, head.params() + list(p.values())))
    g_got[1] = g_got[1] / max(1, head.n_shared)
    diffs = [abs(float(ref - got)) / abs(float(ref))]
    inactive = head.remap < 0
    pairs = [(g_ref[0][head.active_ids], g_got[0])] + list(zip(g_ref[1:], g_got[2:]))
    if head.n_shared:
        pairs.append((g_ref[0][inactive], g_got[1].unsqueeze(0).expand(head.n_shared, -1)))
    for a, b in pairs:
        diffs.append(float((a - b).abs().max()) / (float(a.abs().max()) + 1e-30))
    return max(diffs)


# ---------------------------------------------------------------------------------------------
# evaluation: held-out perplexity on non-overlapping windows, with PyTorch and with Tessera
# ---------------------------------------------------------------------------------------------
def windows(ids: list, length: int) -> list:
    """Consecutive non-overlapping windows of `length` tokens (the last one shorter)."""
    return [ids[k:k + length] for k in range(0, len(ids), length) if len(ids[k:k + length]) >= 2]


def window_nll(logits, ids) -> tuple:
    """logits [T, V] (numpy or torch) of one window -> (sum of -log p(ids[t+1] | ids[..t]), count)."""
    import numpy as np
    x = np.asarray(logits, dtype=np.float64)[:-1]
    m = x.max(axis=1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(x - m).sum(axis=1)))
    tgt = np.asarray(ids[1:])
    return float((lse - x[np.arange(len(tgt)), tgt]).sum()), len(tgt)


def load_shipped(model_dir: str):
    """-> (Config, params dict with HF names, wte [V, E]) from config.json + model.safetensors."""
    torch = _torch()
    import safetensors_io
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    cfg = Config(c["vocab_size"], c["n_embd"], c["n_layer"], c["n_head"], c["n_positions"], c["layer_norm_epsilon"])
    t = safetensors_io.load_file(os.path.join(model_dir, "model.safetensors"))
    p = {k: torch.from_numpy(v.copy()) for k, v in t.items() if k != "wte.weight"}
    return cfg, p, torch.from_numpy(t["wte.weight"].copy())


def torch_windows_logits(cfg, p, wte, wins):
    """Yields (window ids, logits [T, V] float32 numpy) for every window, PyTorch f32."""
    torch = _torch()
    with torch.no_grad():
        for w in wins:
            yield w, full_logits(cfg, p, wte, torch.tensor([w]))[0].numpy()


def tessera_windows_logits(tessera: str, model_dir: str, wins, batch=8, threads=1):
    """Yields (window ids, logits [T, V]) for every window from `tessera run` (batches of equal length)."""
    import numpy as np
    import safetensors_io
    with tempfile.TemporaryDirectory(prefix="prose-gpt-") as tmp:
        i_path, o_path = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
        k = 0
        while k < len(wins):
            group = [wins[k]]
            while k + len(group) < len(wins) and len(group) < batch and len(wins[k + len(group)]) == len(group[0]):
                group.append(wins[k + len(group)])
            k += len(group)
            safetensors_io.save_file({"input_ids": np.array(group, dtype=np.int64)}, i_path)
            r = subprocess.run([tessera, "run", "--model", model_dir, "--inputs", i_path, "--outputs", o_path,
                                "--threads", str(threads)], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"tessera run failed ({r.returncode}): {r.stderr.strip()}")
            logits = safetensors_io.load_file(o_path)["logits"]
            for j, w in enumerate(group):
                yield w, logits[j]


def evaluate(model_dir: str, heldout_ids: list, context: int, tessera: str = None, threads: int = 1) -> dict:
    """Held-out perplexity (PyTorch f32; with tessera also Tessera's, and max |logit diff|)."""
    import numpy as np
    cfg, p, wte = load_shipped(model_dir)
    wins = windows(heldout_ids, context)
    nll, count = 0.0, 0
    ref = {}
    for k, (w, lg) in enumerate(torch_windows_logits(cfg, p, wte, wins)):
        s, c = window_nll(lg, w)
        nll, count = nll + s, count + c
        if tessera:
            ref[k] = lg
    out = {"windows": len(wins), "context": context, "tokens": len(heldout_ids), "predicted": count,
           "ppl_torch": math.exp(nll / count), "nll_torch": nll / count}
    if tessera:
        nll_t, maxdiff, maxabs = 0.0, 0.0, 0.0
        for k, (w, lg) in enumerate(tessera_windows_logits(tessera, model_dir, wins, threads=threads)):
            s, _ = window_nll(lg, w)
            nll_t += s
            maxdiff = max(maxdiff, float(np.abs(lg - ref[k]).max()))
            maxabs = max(maxabs, float(np.abs(ref[k]).max()))
            del ref[k]
        out.update(ppl_tessera=math.exp(nll_t / count), nll_tessera=nll_t / count,
                   logits_max_abs_diff=maxdiff, logits_max_abs=maxabs)
    return out


def torch_greedy(model_dir: str, tok: Gpt2Tokenizer, prompt: str, n: int) -> str:
    torch = _torch()
    cfg, p, wte = load_shipped(model_dir)
    ids = tok.encode(prompt)
    with torch.no_grad():
        for _ in range(n):
            nxt = int(full_logits(cfg, p, wte, torch.tensor([ids[-cfg.n_positions:]]))[0, -1].argmax())
            if nxt == EOT:
                break
            ids.append(nxt)
    return tok.decode(ids)


def tessera_greedy(tessera: str, model_dir: str, prompt: str, n: int) -> str:
    r = subprocess.run([tessera, "generate", "--model", model_dir, "--max-new-tokens", str(n), "--threads", "1",
                        prompt], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"tessera generate failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout  # the CLI ends the text with a newline


def check_tokenizer(tessera: str, tok: Gpt2Tokenizer, text: str, quiet: bool = False) -> bool:
    """Python ids == `tessera tokenize` ids on `text` (one --jsonl line), and decoding gives it back."""
    r = subprocess.run([tessera, "tokenize", "--model", GPT2_TOKENIZER, "--jsonl"],
                       input=json.dumps({"text": text}) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"tessera tokenize failed ({r.returncode}): {r.stderr.strip()}")
    theirs = json.loads(r.stdout.splitlines()[0])["ids"]
    ours = tok.encode(text)
    same = theirs == ours
    k = next((j for j, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    if quiet and same and tok.decode(ours) == text:
        return True
    print(f"tokenizer: {len(ours)} ids (python) vs {len(theirs)} (tessera tokenize): "
          f"{'identical' if same else f'DIFFER at {k}'}; decode round trip "
          f"{'exact' if tok.decode(ours) == text else 'DIFFERS'}", file=sys.stderr)
    return same and tok.decode(ours) == text


# ---------------------------------------------------------------------------------------------
# training and export
# ---------------------------------------------------------------------------------------------
def use_openblas(args) -> None:
    """Re-run this script with OpenBLAS (one thread) if libblas.so.3 is the reference BLAS."""
    if args.blas != "auto" or os.environ.get("PROSE_GPT_BLAS"):
        return
    system = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
    if "openblas" in system or not os.path.exists(os.path.join(OPENBLAS_DIR, "libblas.so.3")):
        return
    path = OPENBLAS_DIR + (":" + os.environ["LD_LIBRARY_PATH"] if os.environ.get("LD_LIBRARY_PATH") else "")
    env = dict(os.environ, PROSE_GPT_BLAS=OPENBLAS_DIR, OPENBLAS_NUM_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads), LD_LIBRARY_PATH=path)
    print(f"libblas.so.3 is {system}: re-running with {OPENBLAS_DIR}/libblas.so.3", file=sys.stderr, flush=True)
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)


def export(out_dir: str, cfg: Config, p: dict, wte, tokenizer_dir: str) -> None:
    import shutil
    import safetensors_io
    os.makedirs(out_dir, exist_ok=True)
    tensors = {"wte.weight": wte.detach().contiguous().numpy()}
    tensors.update({k: v.detach().contiguous().numpy() for k, v in p.items()})
    safetensors_io.save_file(tensors, os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg.hf(), f, indent=2)
        f.write("\n")
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))


def _quote(text: str) -> str:
    """A Markdown block quote of generated text, its line breaks kept."""
    return "\n".join(("> " + line).rstrip() for line in text.rstrip("\n").split("\n"))


def write_record(out_dir: str, rec: dict) -> None:
    with open(os.path.join(out_dir, "training.json"), "w") as f:
        json.dump(rec, f, indent=2)
        f.write("\n")
    ev = rec.get("eval", {})
    lines = [
        "# prose-gpt: training record",
        "",
        "A GPT-2 (Hugging Face layout, `model_type: gpt2`) trained by `tools/train_prose_gpt.py` on the prose",
        "of the Python 3.11 documentation (Debian's python3-doc, reStructuredText sources cleaned to",
        "paragraphs), GPT-2's own BPE vocabulary. `heldout.txt`: the held-out text (files never trained on).",
        "",
        f"- command: `{rec['command']}`",
        f"- model: n_embd {rec['n_embd']}, {rec['n_layer']} layers, {rec['n_head']} heads, n_positions "
        f"{rec['n_positions']}, vocab {rec['vocab']} (tied lm head), {rec['parameters']:,} parameters, "
        f"model.safetensors f32 {rec['safetensors_bytes'] / 1e6:.1f} MB",
        f"- data: {rec['train_docs']} training documents, {rec['train_tokens']:,} tokens "
        f"({rec['active_tokens']:,} distinct); held out: {rec['heldout_docs']} documents "
        f"(sorted index % {HELDOUT_MOD} == {HELDOUT_REM}), heldout.txt {rec['heldout_chars']:,} characters, "
        f"{ev.get('tokens', 0):,} tokens",
        f"- training: {rec['steps']} steps x batch {rec['batch']} x context {rec['context']} = "
        f"{rec['tokens_seen']:,} tokens seen ({rec['tokens_seen'] / rec['train_tokens']:.2f} epochs), "
        f"AdamW lr {rec['lr']} (warmup {rec['warmup']}, cosine to {rec['min_lr_frac']:g}x), seed {rec['seed']}, "
        f"{rec['threads']} thread, BLAS {rec['blas']}",
        f"- wall time: training {rec['train_s'] / 60:.1f} min ({rec['tokens_per_s']:.0f} tokens/s), "
        f"whole run {rec['total_s'] / 60:.1f} min",
        f"- final training loss: {rec['final_loss']:.3f} (mean of the last 50 steps; last step "
        f"{rec['last_loss']:.3f})",
        f"- held-out perplexity, f32, non-overlapping {ev.get('context')}-token windows "
        f"({ev.get('windows')} windows, {ev.get('predicted', 0):,} predicted tokens):",
        f"  PyTorch {ev.get('ppl_torch', float('nan')):.2f} (loss {ev.get('nll_torch', float('nan')):.4f})",
    ]
    if "ppl_tessera" in ev:
        lines += [
            f"  Tessera (`tessera run` logits) {ev['ppl_tessera']:.2f} (loss {ev['nll_tessera']:.4f}); "
            f"logits max |Tessera - PyTorch| {ev['logits_max_abs_diff']:.2e} (max |logit| {ev['logits_max_abs']:.1f})",
        ]
    if rec.get("sample"):
        lines += ["", f"Greedy, `tessera generate --model models/prose-gpt --max-new-tokens "
                      f"{rec['sample_tokens']} \"{rec['prompt']}\"` (prompt included):", "",
                  _quote(rec["sample"]), "",
                  "PyTorch's greedy decoding gives " +
                  ("the same text." if rec["sample_torch"] == rec["sample"] else
                   "a different text: " + rec["sample_torch"].replace("\n", " "))]
    elif rec.get("sample_torch"):
        lines += ["", f"Greedy (PyTorch), {rec['sample_tokens']} tokens after \"{rec['prompt']}\":", "",
                  _quote(rec["sample_torch"])]
    with open(os.path.join(out_dir, "TRAINING.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def train(args, tok: Gpt2Tokenizer, train_docs, cfg: Config, t_start: float) -> dict:
    torch = _torch()
    import numpy as np
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    stream_list = encode_documents(tok, train_docs)
    stream = torch.tensor(stream_list, dtype=torch.long)
    print(f"training text: {len(train_docs)} documents, {len(stream):,} tokens "
          f"({time.time() - t0:.0f}s to tokenize)", file=sys.stderr, flush=True)
    p, g = make_body(cfg, args.seed)
    head = PooledHead(cfg.vocab, stream_list, cfg.n_embd, g)
    n_params = cfg.vocab * cfg.n_embd + sum(v.numel() for v in p.values())
    print(f"model: {n_params:,} parameters; lm head over {len(head.active_ids):,} tokens that occur + 1 class "
          f"for the {head.n_shared:,} others", file=sys.stderr, flush=True)
    diff = check_pooled_head(cfg, p, head, stream, torch.Generator().manual_seed(args.seed + 1))
    print(f"pooled head == full softmax: max relative difference of loss and gradients {diff:.1e}",
          file=sys.stderr, flush=True)
    if diff > 1e-4:
        raise SystemExit("the pooled lm head disagrees with the full softmax")

    decay = [head.active, head.shared] + [v for k, v in p.items() if v.dim() == 2]
    no_decay = [v for k, v in p.items() if v.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    all_params = decay + no_decay

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        q = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * q)))

    data_g = torch.Generator().manual_seed(args.seed + 2)
    T, B = args.context, args.batch_size
    losses = []
    t_train = time.time()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        off = torch.randint(0, len(stream) - T - 1, (B,), generator=data_g)
        idx = off.unsqueeze(1) + torch.arange(T + 1)
        chunk = stream[idx]
        loss = head.loss(cfg, p, chunk[:, :-1], chunk[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        head.scale_shared_grad()
        gnorm = clip_grad_norm(all_params, head.shared, head.n_shared, 1.0)
        opt.step()
        losses.append(float(loss))
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps or step < 3:
            el = time.time() - t_train
            print(f"step {step + 1:5d}/{args.steps}  loss {np.mean(losses[-args.log_every:]):.4f}  "
                  f"lr {lr_at(step):.2e}  |g| {gnorm:.2f}  {(step + 1) * B * T / el:.0f} tokens/s  "
                  f"elapsed {el:.0f}s (run {time.time() - t_start:.0f}s)", file=sys.stderr, flush=True)
    train_s = time.time() - t_train
    wte = head.full_wte()
    return {"p": p, "wte": wte, "train_s": train_s, "tokens_per_s": args.steps * B * T / train_s,
            "final_loss": float(np.mean(losses[-50:])), "last_loss": losses[-1], "train_tokens": len(stream),
            "active_tokens": len(head.active_ids), "parameters": n_params, "tokens_seen": args.steps * B * T}


def main(argv=None) -> int:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    ap.add_argument("--src", default=DOC_SOURCES, help="the documentation's reStructuredText sources")
    ap.add_argument("--out", default=OUT_DIR, help="model directory to write")
    ap.add_argument("--tokenizer", default=GPT2_TOKENIZER, help="directory with GPT-2's vocab.json + merges.txt")
    ap.add_argument("--tessera", default=None,
                    help="a tessera binary: check the tokenizer, held-out logits/perplexity and greedy "
                         "generation of the exported model against it")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--heldout-only", action="store_true",
                      help="write OUT/heldout.txt from the documentation and exit (no torch, no training)")
    mode.add_argument("--check-tokenizer", action="store_true",
                      help="compare the Python BPE with `tessera tokenize` (needs --tessera) on OUT/heldout.txt "
                           "(or the training text with --check-all) and exit")
    mode.add_argument("--eval-only", action="store_true",
                      help="evaluate the model in OUT (held-out perplexity; with --tessera also Tessera's, the "
                           "logits difference and a greedy sample) and rewrite TRAINING.md's numbers")
    ap.add_argument("--check-all", action="store_true", help="with --check-tokenizer: every training document too")
    ap.add_argument("--steps", type=int, default=2400, help="optimizer steps (about 30 min on one core)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--context", type=int, default=128, help="training (and evaluation) window in tokens")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--min-lr-frac", type=float, default=0.1, help="final learning rate / peak")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-positions", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--blas", choices=("auto", "system"), default="auto",
                    help="auto: use OpenBLAS when libblas.so.3 is the (slow) reference BLAS; system: as linked")
    ap.add_argument("--prompt", default="The list type", help="prompt of the greedy sample")
    ap.add_argument("--sample-tokens", type=int, default=40)
    ap.add_argument("--no-export", action="store_true", help="train and evaluate only (a speed test)")
    args = ap.parse_args(argv)
    t_start = time.time()
    tessera = os.path.abspath(args.tessera) if args.tessera else None
    if args.check_tokenizer and not tessera:
        ap.error("--check-tokenizer needs --tessera")
    heldout_path = os.path.join(args.out, "heldout.txt")

    if args.heldout_only:
        _, held = load_corpus(args.src)
        os.makedirs(args.out, exist_ok=True)
        with open(heldout_path, "w", encoding="utf-8") as f:
            f.write(heldout_text(held))
        print(f"wrote {heldout_path}: {os.path.getsize(heldout_path):,} bytes from {[r for r, _ in held]}")
        return 0

    tok = Gpt2Tokenizer(args.tokenizer)
    if args.check_tokenizer:
        with open(heldout_path, encoding="utf-8") as f:
            ok = check_tokenizer(tessera, tok, f.read())
        if args.check_all:
            train_docs, _ = load_corpus(args.src)
            bad = [r for r, prose in train_docs if not check_tokenizer(tessera, tok, prose, quiet=True)]
            print(f"training documents: {len(train_docs) - len(bad)}/{len(train_docs)} identical {bad[:5]}",
                  file=sys.stderr)
            ok = ok and not bad
        return 0 if ok else 1

    use_openblas(args)
    torch = _torch()
    torch.set_num_threads(args.threads)
    rec_path = os.path.join(args.out, "training.json")
    if args.eval_only:
        with open(heldout_path, encoding="utf-8") as f:
            held_ids = tok.encode(f.read())
        with open(rec_path) as f:
            rec = json.load(f)
    else:
        train_docs, held = load_corpus(args.src)
        text = heldout_text(held)
        held_ids = tok.encode(text)
        cfg = Config(50257, args.n_embd, args.n_layer, args.n_head, args.n_positions)
        r = train(args, tok, train_docs, cfg, t_start)
        rec = {k: v for k, v in r.items() if k not in ("p", "wte")}
        command = "/usr/bin/python3 tools/train_prose_gpt.py " + " ".join(argv if argv is not None else sys.argv[1:])
        rec.update(command=command.strip(),
                   n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head, n_positions=cfg.n_positions,
                   vocab=cfg.vocab, train_docs=len(train_docs), heldout_docs=len(held),
                   heldout_files=[x for x, _ in held], heldout_chars=len(text), steps=args.steps,
                   batch=args.batch_size, context=args.context, lr=args.lr, warmup=args.warmup,
                   min_lr_frac=args.min_lr_frac, seed=args.seed, threads=args.threads,
                   blas=os.environ.get("PROSE_GPT_BLAS") and "OpenBLAS" or
                   os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3"))
        out = args.out if not args.no_export else tempfile.mkdtemp(prefix="prose-gpt-")
        export(out, cfg, r["p"], r["wte"], args.tokenizer)
        with open(os.path.join(out, "heldout.txt"), "w", encoding="utf-8") as f:
            f.write(text)
        args.out = out
        rec["safetensors_bytes"] = os.path.getsize(os.path.join(out, "model.safetensors"))
        rec["total_s"] = time.time() - t_start
    if tessera:
        with open(os.path.join(args.out, "heldout.txt"), encoding="utf-8") as f:
            if not check_tokenizer(tessera, tok, f.read()):
                raise SystemExit("the Python tokenizer disagrees with tessera tokenize")
    ev = evaluate(args.out, held_ids, rec["context"], tessera)
    rec["eval"] = ev
    print("held-out: " + json.dumps(ev), file=sys.stderr, flush=True)
    rec["prompt"], rec["sample_tokens"] = args.prompt, args.sample_tokens
    rec["sample_torch"] = torch_greedy(args.out, tok, args.prompt, args.sample_tokens)
    print(f"greedy (PyTorch): {rec['sample_torch']!r}", file=sys.stderr)
    if tessera:
        rec["sample"] = args.prompt + tessera_greedy(tessera, args.out, args.prompt, args.sample_tokens)
        print(f"greedy (tessera generate): {rec['sample']!r}", file=sys.stderr)
    else:
        rec["sample"] = None
    write_record(args.out, rec)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
