#!/usr/bin/python3
"""`tessera generate` on the demo model: every decoding method, its flags, and bad flags.

Runs the binary on models/demo-dates (a date normaliser: "Nov 26, 2026" -> "2026-11-26") and
checks:

* greedy: one prompt, several prompts (in order), prompts from stdin, --max-new-tokens,
  --batch-size not changing the results, the stderr line "tokens N, prefill X ms, decode Y
  tokens/s" (N = the tokens printed plus one eos per sequence);
* sample: the same --seed gives the same output, another seed changes some output over many
  prompts at a high temperature, --top-k 1 equals greedy, --n-best N prints N lines per prompt,
  --batch-size does not change the samples;
* beam: --n-best lines per prompt with --scores (non-increasing), one beam equals greedy;
* --stop (the stop string ends the output and is kept), --repetition-penalty, --ids (ids in, ids
  out: the same result as text), --jsonl;
* a random-weight gpt2 checkpoint (tools/make_hf_checkpoint.py, numpy only): ids in and out,
  ragged prompts in one batch equal to each alone, beam, seeded sampling;
* a random gpt2 with GPT-2's real vocabulary and tokenizer files: text in, streamed text out
  equal to decoding the --ids path's output (greedy, beam, seeded sampling; emoji and CJK
  prompts), the stats line, the n_positions limit; a gpt2 whose weights force " 日本語 😀" (byte
  tokens splitting the characters) streams it whole;
* bad flags and inputs: exit code 2, one line on stderr naming the flag or the limit, nothing
  on stdout.

    generate_cli.py --tessera build/tools/tessera [--model models/demo-dates]

Prints one line per check; exit code 1 if any fails.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATS = re.compile(r"^tokens (\d+), prefill [0-9.]+ ms, decode [0-9.]+ tokens/s$")
DATES = ["the 26th of November 2026", "Nov 26, 2026", "26/11/2026", "Thursday, November 26, 2026",
         "3 Jan 1999", "march 4th, 2001", "12.10.2010"]
WANT = ["2026-11-26", "2026-11-26", "2026-11-26", "2026-11-26", "1999-01-03", "2001-03-04",
        "2010-10-12"]

failures: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'}: {name}" + (f" ({detail})" if detail and not ok else ""))
    if not ok:
        failures.append(name)


class Run:
    def __init__(self, args, flags, prompts=None, stdin=None, model=None):
        cmd = [args.tessera, "generate", "--model", model or args.model, "--threads", "1"] + flags
        cmd += list(prompts or [])
        p = subprocess.run(cmd, input=stdin if stdin is not None else "", capture_output=True,
                           text=True, encoding="utf-8", timeout=300)
        self.rc, self.out, self.err = p.returncode, p.stdout, p.stderr
        self.lines = self.out.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.cmd = " ".join(cmd[1:])

    def ok(self) -> bool:
        err = self.err.strip().split("\n")
        return self.rc == 0 and len(err) == 1 and STATS.match(err[0]) is not None

    def why(self) -> str:
        return f"`{self.cmd}` exited {self.rc}, stdout {self.out[:200]!r}, stderr {self.err[:300]!r}"


def gpt2_checks(args, tmp: str) -> None:
    """A random-weight GPT-2 (tools/make_hf_checkpoint.py): ids in and out, ragged prompts."""
    g = os.path.join(tmp, "gpt2")
    subprocess.run([sys.executable, os.path.join(_ROOT, "tools", "make_hf_checkpoint.py"), "gpt2", g,
                    "--vocab", "50", "--positions", "32", "--seed", "3"], check=True, capture_output=True)
    prompts = ["1 2 3", "4 5 6 7 8 9", "10", "11 12"]
    base = ["--ids", "--max-new-tokens", "8"]
    r = Run(args, base, prompts, model=g)
    alone = [Run(args, base, [p], model=g) for p in prompts]
    check("gpt2: greedy on ragged prompts in one batch equals each prompt alone",
          r.ok() and len(r.lines) == 4 and all(a.ok() and a.lines == [x] for a, x in zip(alone, r.lines)), r.why())
    b = Run(args, base + ["--method", "beam", "--num-beams", "1", "--length-penalty", "0"], prompts, model=g)
    check("gpt2: one beam equals greedy", b.ok() and b.lines == r.lines, b.why())
    b = Run(args, base + ["--method", "beam", "--num-beams", "3", "--n-best", "3", "--scores"], prompts, model=g)
    ok = b.ok() and len(b.lines) == 12
    for p in range(4 if ok else 0):
        scores = [float(x.split("\t")[1]) for x in b.lines[3 * p:3 * p + 3]]
        ok = ok and scores == sorted(scores, reverse=True)
    check("gpt2: beam 3-best per prompt, best first", ok, b.why())
    hot = base + ["--method", "sample", "--temperature", "3", "--seed", "5"]
    s1, s2 = Run(args, hot, prompts, model=g), Run(args, hot + ["--batch-size", "1"], prompts, model=g)
    check("gpt2: sampling is reproducible and independent of --batch-size",
          s1.ok() and s2.ok() and s1.lines == s2.lines and len(s1.lines) == 4, s2.why())
    for flags, prompt, word in [([], "1 2", "--ids"),
                                (["--ids", "--max-new-tokens", "30"], "1 2 3", "maximum of 32 positions"),
                                (["--ids"], "1 50", "token id 50 is out of range")]:
        r = Run(args, flags, [prompt], model=g)
        err = r.err.strip().split("\n")
        check(f"gpt2 bad: {' '.join(flags) or '(text)'} -> exit 2 naming {word!r}",
              r.rc == 2 and r.out == "" and len(err) == 1 and word in err[0], r.why())


def gpt2_byte_decoder(vocab_path: str):
    """ids -> text as GPT-2 decodes them: vocab strings -> bytes (the byte-level alphabet) -> UTF-8,
    invalid sequences replaced by U+FFFD."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_of = {chr(c): b for b, c in zip(bs, cs)}
    with open(vocab_path, encoding="utf-8") as f:
        token = {i: t for t, i in json.load(f).items()}
    return lambda ids: bytes(byte_of[ch] for i in ids for ch in token[i]).decode("utf-8", errors="replace")


def gpt2_text_checks(args, tmp: str) -> None:
    """A random-weight GPT-2 with the real vocabulary (50257) and GPT-2's vocab.json + merges.txt:
    text in, streamed text out, equal to decoding the ids the --ids path prints for the same
    prompt ids (the tokenizer's reference ids, tests/data/tokenizers/gpt2/cases.jsonl)."""
    g = os.path.join(tmp, "gpt2-text")
    subprocess.run([sys.executable, os.path.join(_ROOT, "tools", "make_hf_checkpoint.py"), "gpt2", g,
                    "--vocab", "50257", "--positions", "64", "--hidden", "32", "--heads", "2", "--layers", "2",
                    "--seed", "7"], check=True, capture_output=True)
    data = os.path.join(_ROOT, "tests", "data", "tokenizers", "gpt2")
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(data, f), g)
    decode = gpt2_byte_decoder(os.path.join(g, "vocab.json"))
    with open(os.path.join(data, "cases.jsonl"), encoding="utf-8") as f:
        ref = {c["text"]: c["ids"] for c in map(json.loads, f)}
    texts = ["Hello world", " this is 🦙.cpp"]
    cjk = [t for t in ref if re.search("[\u4e00-\u9fff]", t) and 0 < len(ref[t]) <= 32]
    check("gpt2 text: the reference cases hold a CJK prompt", bool(cjk))
    texts += cjk[:1]
    ids = [" ".join(map(str, ref[t])) for t in texts]
    for t, i in zip(texts, ids):
        for name, flags in [("greedy", []), ("seeded sampling", ["--method", "sample", "--temperature", "5",
                                                                 "--seed", "9"])]:
            flags = flags + ["--max-new-tokens", "24"]
            a, b = Run(args, flags, [t], model=g), Run(args, ["--ids"] + flags, [i], model=g)
            got = [int(x) for x in b.lines[0].split()] if b.ok() and len(b.lines) == 1 else None
            check(f"gpt2 text {name} {t!r}: streamed text = decode(--ids output)",
                  a.ok() and got is not None and len(got) > 0 and a.out == decode(got) + "\n",
                  a.why() + " / " + b.why())
            m = STATS.match(a.err.strip())
            check(f"gpt2 text {name} {t!r}: stats line counts the generated tokens",
                  m is not None and got is not None and int(m.group(1)) == len(got) + (len(got) < 24), a.why())
    beam = ["--method", "beam", "--num-beams", "3", "--n-best", "2", "--max-new-tokens", "12"]
    a, b = Run(args, beam, texts, model=g), Run(args, ["--ids"] + beam, ids, model=g)
    check("gpt2 text beam (3 prompts, 2-best): text = decode(--ids output)",
          a.ok() and b.ok() and len(a.lines) == 6 and len(b.lines) == 6 and
          all(x == decode([int(v) for v in y.split()]) for x, y in zip(a.lines, b.lines)), a.why() + " / " + b.why())
    hot = ["--method", "sample", "--temperature", "8", "--seed", "3", "--max-new-tokens", "30"]
    a, b = Run(args, hot + ["--jsonl"], texts, model=g), Run(args, ["--ids"] + hot, ids, model=g)
    objs = [json.loads(x) for x in a.lines] if a.ok() else []
    check("gpt2 text sampling, a batch, --jsonl: text = decode(ids) and ids = the --ids path's",
          len(objs) == 3 and b.ok() and all(o["text"] == decode(o["ids"]) for o in objs) and
          [o["ids"] for o in objs] == [[int(v) for v in y.split()] for y in b.lines], a.why() + " / " + b.why())
    r = Run(args, ["--max-new-tokens", "70"], ["Hello world"], model=g)
    err = r.err.strip().split("\n")
    check("gpt2 text: --max-new-tokens past n_positions -> exit 2 naming the limit",
          r.rc == 2 and r.out == "" and len(err) == 1 and "maximum of 64 positions" in err[0], r.why())

    # A model that must say " 日本語 😀" after "Hi" (then eos): a bigram table in the weights
    # (attention and MLP outputs zeroed, no positions, lm_head rows aimed at the next token's
    # embedding). GPT-2 spells these characters as byte tokens that split them, so the stream
    # must hold the partial bytes back: any U+FFFD in the output is a bug.
    sys.path.insert(0, os.path.join(_ROOT, "tools"))
    import numpy as np
    import safetensors_io
    f = os.path.join(tmp, "gpt2-forced")
    subprocess.run([sys.executable, os.path.join(_ROOT, "tools", "make_hf_checkpoint.py"), "gpt2", f,
                    "--vocab", "50257", "--positions", "64", "--hidden", "64", "--heads", "2", "--layers", "1",
                    "--lm-head", "--seed", "8"], check=True, capture_output=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(data, name), f)
    want = " 日本語 😀"
    tok = subprocess.run([args.tessera, "tokenize", "--model", f, "Hi", want], capture_output=True, text=True,
                         encoding="utf-8", check=True).stdout.split("\n")
    chain = [int(x) for x in tok[0].split()] + [int(x) for x in tok[1].split()] + [50256]
    check("gpt2 forced: the chain of tokens is distinct and splits characters",
          len(set(chain)) == len(chain) and any("\ufffd" in decode([t]) for t in chain[1:-1]), str(chain))
    path = os.path.join(f, "model.safetensors")
    w = {k: np.array(v, dtype=np.float32) for k, v in safetensors_io.load_file(path).items()}
    for k in w:
        if ".c_proj." in k or k == "wpe.weight" or k == "ln_f.bias":
            w[k][...] = 0
    w["ln_f.weight"][...] = 1
    for i, t in enumerate(chain[:-1]):
        u = np.zeros(64, np.float32)
        u[2 * i], u[2 * i + 1] = 1, -1
        w["wte.weight"][t] = u
        w["lm_head.weight"][chain[i + 1]] = 10 * u
    safetensors_io.save_file(w, path)
    r = Run(args, [], ["Hi"], model=f)
    check("gpt2 forced: ' 日本語 😀' split across byte tokens streams whole, no U+FFFD",
          r.ok() and r.out == want + "\n" and STATS.match(r.err.strip()).group(1) == str(len(chain) - 1), r.why())
    r = Run(args, ["--ids"], [tok[0]], model=f)
    check("gpt2 forced: the --ids path prints the chain", r.ok() and r.lines == [" ".join(map(str, chain[1:-1]))],
          r.why())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--model", default=os.path.join(_ROOT, "models", "demo-dates"))
    args = ap.parse_args(argv)
    with open(os.path.join(args.model, "tokenizer.json"), encoding="utf-8") as f:
        tokens = json.load(f)["tokens"]
    tok_id = {t: i for i, t in enumerate(tokens)}
    eos = 2

    # --- greedy ---------------------------------------------------------------------------
    r = Run(args, [], [DATES[0]])
    check("greedy, one prompt", r.ok() and r.out == WANT[0] + "\n", r.why())
    m = STATS.match(r.err.strip())
    check("stats line counts the tokens printed plus the eos", m is not None and int(m.group(1)) == len(WANT[0]) + 1,
          r.why())
    r = Run(args, [], DATES)
    check("greedy, several prompts in input order", r.ok() and r.lines == WANT, r.why())
    m = STATS.match(r.err.strip())
    check("stats line over a batch", m is not None and int(m.group(1)) == sum(len(w) + 1 for w in WANT), r.why())
    r = Run(args, [], stdin="".join(d + "\n" for d in DATES))
    check("greedy, prompts from stdin", r.ok() and r.lines == WANT, r.why())
    r = Run(args, ["--batch-size", "2"], DATES)
    check("greedy, --batch-size 2 gives the same results", r.ok() and r.lines == WANT, r.why())
    r = Run(args, ["--max-new-tokens", "4", "--scores"], DATES[:2])
    check("--max-new-tokens 4 ends with finish reason 'length'",
          r.ok() and [line.split("\t")[0] for line in r.lines] == ["2026", "2026"]
          and all(line.endswith("\tlength") for line in r.lines), r.why())
    r = Run(args, ["--scores"], DATES[:2])
    check("--scores: text, score, 'eos'", r.ok() and all(re.fullmatch(r"[0-9-]+\t-?[0-9.]+\teos", x) for x in r.lines),
          r.why())

    # --- sample ---------------------------------------------------------------------------
    hot = ["--method", "sample", "--temperature", "2.5", "--seed", "11"]
    a = Run(args, hot, DATES)
    b = Run(args, hot, DATES)
    check("sample: same seed, same output", a.ok() and b.ok() and a.lines == b.lines and len(a.lines) == len(DATES),
          a.why())
    c = Run(args, ["--method", "sample", "--temperature", "2.5", "--seed", "12"], DATES)
    check("sample: another seed, another output (temperature 2.5)", c.ok() and c.lines != a.lines, c.why())
    d = Run(args, hot + ["--batch-size", "3"], DATES)
    check("sample: --batch-size does not change the samples", d.ok() and d.lines == a.lines, d.why())
    r = Run(args, ["--method", "sample", "--top-k", "1", "--temperature", "3", "--seed", "5"], DATES)
    check("sample: --top-k 1 equals greedy", r.ok() and r.lines == WANT, r.why())
    r = Run(args, ["--method", "sample", "--top-p", "0.9", "--top-k", "10", "--seed", "1", "--n-best", "3"],
            DATES[:2])
    check("sample: --n-best 3 prints 3 lines per prompt", r.ok() and len(r.lines) == 6, r.why())
    one = Run(args, hot, [DATES[0]])  # streamed: one prompt, the same random stream as row 0
    check("sample: a streamed single prompt equals its row in the batch", one.ok() and one.lines == a.lines[:1],
          one.why())

    # --- beam -----------------------------------------------------------------------------
    r = Run(args, ["--method", "beam", "--num-beams", "4", "--n-best", "3", "--scores"], DATES[:3])
    ok = r.ok() and len(r.lines) == 9
    if ok:
        for p in range(3):
            rows = [line.split("\t") for line in r.lines[3 * p:3 * p + 3]]
            scores = [float(x[1]) for x in rows]
            ok = ok and rows[0][0] == WANT[p] and scores == sorted(scores, reverse=True) and len(set(x[0] for x in rows)) == 3
    check("beam: 3-best per prompt, best first, the best is the greedy answer", ok, r.why())
    r = Run(args, ["--method", "beam", "--num-beams", "1", "--length-penalty", "0"], DATES)
    check("beam: one beam equals greedy", r.ok() and r.lines == WANT, r.why())
    r = Run(args, ["--method", "beam", "--early-stopping", "never", "--length-penalty", "2"], DATES)
    check("beam: --early-stopping never, --length-penalty 2", r.ok() and len(r.lines) == len(DATES), r.why())

    # --- stop strings, repetition penalty, ids, jsonl -------------------------------------
    r = Run(args, ["--stop", "-", "--stop", "zz", "--scores"], DATES[:2])
    check("--stop '-': output ends at the stop string, kept, reason 'stop'",
          r.ok() and len(r.lines) == 2 and all(x.startswith("2026-\t") and x.endswith("\tstop") for x in r.lines),
          r.why())
    r = Run(args, ["--stop", "11"], [DATES[0]])
    check("--stop streamed: '2026-11'", r.ok() and r.out == "2026-11\n", r.why())
    r = Run(args, ["--repetition-penalty", "1.5"], DATES)
    check("--repetition-penalty 1.5 runs, one line per prompt", r.ok() and len(r.lines) == len(DATES), r.why())
    src = [" ".join(str(tok_id[ch]) for ch in d) + f" {eos}" for d in DATES[:3]]
    r = Run(args, ["--ids"], src)
    want_ids = [" ".join(str(tok_id[ch]) for ch in w) for w in WANT[:3]]
    check("--ids: ids in, ids out, the same result as text", r.ok() and r.lines == want_ids, r.why())
    r = Run(args, ["--ids"], stdin=src[0] + "\n")
    check("--ids from stdin (streamed)", r.ok() and r.lines == want_ids[:1], r.why())
    r = Run(args, ["--jsonl", "--method", "beam", "--n-best", "2"], DATES[:2])
    ok = r.ok() and len(r.lines) == 4
    if ok:
        objs = [json.loads(x) for x in r.lines]
        ok = [(o["prompt"], o["rank"]) for o in objs] == [(0, 0), (0, 1), (1, 0), (1, 1)] and \
            objs[0]["text"] == WANT[0] and objs[0]["finish"] == "eos" and \
            objs[0]["ids"] == [tok_id[ch] for ch in WANT[0]] and objs[0]["score"] >= objs[1]["score"]
    check("--jsonl: prompt, rank, text, ids, score, finish", ok, r.why())

    # --- bad flags (and a gpt2 checkpoint) ------------------------------------------------
    tmp = tempfile.mkdtemp(prefix="tessera_generate_cli_")
    try:
        gpt2_checks(args, tmp)
        gpt2_text_checks(args, tmp)
        no_tok = os.path.join(tmp, "no-tokenizer")
        os.makedirs(no_tok)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(args.model, f), no_tok)
        bad = [
            (["--method", "topk"], [DATES[0]], None, "--method 'topk'"),
            (["--temperature", "0.5"], [DATES[0]], None, "--temperature applies to --method sample"),
            (["--top-k", "3", "--method", "beam"], [DATES[0]], None, "--top-k applies to --method sample"),
            (["--num-beams", "2", "--method", "sample"], [DATES[0]], None, "--num-beams applies to --method beam"),
            (["--n-best", "2"], [DATES[0]], None, "--n-best 2 needs --method sample or beam"),
            (["--n-best", "5", "--method", "beam", "--num-beams", "4"], [DATES[0]], None, "more than --num-beams 4"),
            (["--n-best", "0"], [DATES[0]], None, "--n-best"),
            (["--method", "sample", "--temperature", "0"], [DATES[0]], None, "--temperature must be a number > 0"),
            (["--method", "sample", "--top-p", "0"], [DATES[0]], None, "--top-p must be in (0, 1]"),
            (["--method", "sample", "--top-p", "1.5"], [DATES[0]], None, "--top-p must be in (0, 1]"),
            (["--method", "sample", "--top-k", "-1"], [DATES[0]], None, "--top-k must be >= 0"),
            (["--repetition-penalty", "0"], [DATES[0]], None, "--repetition-penalty must be a number > 0"),
            (["--method", "beam", "--early-stopping", "sometimes"], [DATES[0]], None, "--early-stopping"),
            (["--max-new-tokens", "0"], [DATES[0]], None, "--max-new-tokens"),
            (["--max-new-tokens", "65"], [DATES[0]], None, "maximum of 64 positions"),
            (["--batch-size", "0"], [DATES[0]], None, "--batch-size"),
            (["--threads", "-1"], [DATES[0]], None, "--threads"),
            (["--temperature", "hot", "--method", "sample"], [DATES[0]], None, "--temperature"),
            (["--ids", "--stop", "x"], ["5 6 2"], None, "--stop"),
            (["--ids"], ["5 x 2"], None, "prompt 0: 'x' is not a token id"),
            (["--ids"], ["5 99 2"], None, "token id 99 is out of range"),
            (["--ids"], ["5 6 2", ""], None, "prompt 1 is empty"),
            ([], [DATES[0] * 3], None, "more than the model's max_position 64"),
            ([], [DATES[0]], no_tok, "--ids"),
            ([], [DATES[0]], os.path.join(tmp, "missing"), "missing"),
        ]
        for flags, prompts, model, word in bad:
            r = Run(args, flags, prompts, model=model)
            err = r.err.strip().split("\n")
            ok = (r.rc == 2 and r.out == "" and len(err) == 1 and err[0].startswith("tessera: error: ")
                  and word in err[0])
            check(f"bad: {' '.join(flags) or '(none)'} -> exit 2 naming {word!r}", ok, r.why())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("PASS" if not failures else f"FAIL: {len(failures)} check(s): " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
