#!/usr/bin/python3
"""`tessera tokenize` against the reference tokenizations of tests/data/tokenizers.

For GPT-2 (vocab.json + merges.txt) and BERT (vocab.txt), every case of cases.jsonl through:
texts as arguments (one line of ids per text), texts as lines of stdin (the cases without a
newline), --jsonl ({"text"} -> {"ids"}), --special (BERT: [CLS] ... [SEP]), --decode with ids as
arguments and as stdin lines, and --jsonl --decode ({"ids"} -> {"text"}: GPT-2 gives the text back
exactly; BERT gives the normalized text, which encodes to the same ids less [UNK]). Bad input
(invalid JSON line, a missing directory, a non-integer id, an id out of range) must exit 2 with
one line on stderr naming the problem.

    tokenize_cli.py --tessera build/tools/tessera --data tests/data/tokenizers

Prints one line per check with PASS/FAIL; exit code 1 if any fails.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

FAILURES = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))
    if not ok:
        FAILURES.append(name)


def run(tessera: str, args: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([tessera, "tokenize", *args], input=stdin.encode("utf-8"),
                          capture_output=True, timeout=120)


def ids_lines(out: bytes) -> list[list[int]]:
    return [[int(x) for x in line.split()] for line in out.decode("utf-8").split("\n")[:-1]]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--data", required=True)
    a = ap.parse_args()
    t = a.tessera

    for family, unk in (("gpt2", None), ("bert", 100)):
        model = os.path.join(a.data, family)
        with open(os.path.join(model, "cases.jsonl"), encoding="utf-8") as f:
            cases = [json.loads(line) for line in f if line.strip()]
        texts = [c["text"] for c in cases]
        want = [c["ids"] for c in cases]

        r = run(t, ["--model", model, *texts])
        check(f"{family}: texts as arguments", r.returncode == 0 and ids_lines(r.stdout) == want,
              r.stderr.decode() or str(ids_lines(r.stdout))[:300])

        one_line = [c for c in cases if "\n" not in c["text"] and "\r" not in c["text"]]
        r = run(t, ["--model", model], "".join(c["text"] + "\n" for c in one_line))
        check(f"{family}: texts as stdin lines ({len(one_line)})",
              r.returncode == 0 and ids_lines(r.stdout) == [c["ids"] for c in one_line],
              r.stderr.decode())

        jsonl = "".join(json.dumps({"text": x}, ensure_ascii=(i % 2 == 0)) + "\n"
                        for i, x in enumerate(texts))
        r = run(t, ["--model", model, "--jsonl"], jsonl)
        got = [json.loads(line)["ids"] for line in r.stdout.decode().splitlines()]
        check(f"{family}: --jsonl", r.returncode == 0 and got == want, r.stderr.decode())

        r = run(t, ["--model", model, "--jsonl", "--special"], jsonl)
        got = [json.loads(line)["ids"] for line in r.stdout.decode().splitlines()]
        framed = [[101, *w, 102] for w in want] if family == "bert" else want
        check(f"{family}: --jsonl --special", r.returncode == 0 and got == framed,
              r.stderr.decode())

        ids_jsonl = "".join(json.dumps({"ids": w}) + "\n" for w in want)
        r = run(t, ["--model", model, "--jsonl", "--decode"], ids_jsonl)
        decoded = [json.loads(line)["text"] for line in r.stdout.decode().splitlines()]
        ok = r.returncode == 0 and len(decoded) == len(texts)
        if family == "gpt2":
            check("gpt2: --jsonl --decode gives every text back", ok and decoded == texts,
                  r.stderr.decode())
        else:
            r2 = run(t, ["--model", model, "--jsonl"],
                     "".join(json.dumps({"text": x}) + "\n" for x in decoded))
            again = [json.loads(line)["ids"] for line in r2.stdout.decode().splitlines()]
            check("bert: --jsonl --decode text encodes to the same ids less [UNK]",
                  ok and r2.returncode == 0 and again == [[i for i in w if i != unk] for w in want],
                  r.stderr.decode() + r2.stderr.decode())
            by_text = dict(zip(texts, decoded))
            check("bert: decoded text is normalized",
                  by_text.get(" Hello, world!") == "hello, world!"
                  and by_text.get("Cửa Việt") == "cua viet", str(by_text)[:300])

        # --decode with ids as arguments: one text; as stdin lines: one text per line.
        sample = [c for c in one_line if c["ids"]][:8]
        for c in sample:
            r = run(t, ["--model", model, "--decode", *[str(i) for i in c["ids"]]])
            if family == "gpt2":
                good = r.returncode == 0 and r.stdout.decode() == c["text"] + "\n"
            else:
                good = r.returncode == 0 and r.stdout.decode() == decoded[cases.index(c)] + "\n"
            if not good:
                check(f"{family}: --decode {c['ids']}", False, repr(r.stdout) + r.stderr.decode())
                break
        else:
            check(f"{family}: --decode with ids as arguments ({len(sample)} cases)", True)
        r = run(t, ["--model", model, "--decode"],
                "".join(" ".join(map(str, c["ids"])) + "\n" for c in sample))
        lines = r.stdout.decode().split("\n")[:-1]
        expect = [c["text"] if family == "gpt2" else decoded[cases.index(c)] for c in sample]
        check(f"{family}: --decode with ids on stdin lines", r.returncode == 0 and lines == expect,
              r.stderr.decode() + str(lines))

        # Bad input: exit 2, one line on stderr naming the problem.
        bad = [
            (["--model", model, "--jsonl"], '{"text": "ok"}\n{"text": broken\n', "stdin line 2"),
            (["--model", model, "--jsonl"], '{"txt": "ok"}\n', "stdin line 1"),
            (["--model", model, "--jsonl", "--decode"], '{"ids": [1, "x"]}\n', "stdin line 1"),
            (["--model", model, "--decode", "12", "x3"], "", "'x3'"),
            (["--model", model, "--decode", "99999999"], "", "99999999"),
            (["--model", model + "-missing", "hello"], "", model + "-missing"),
        ]
        for args, stdin, needle in bad:
            r = run(t, args, stdin)
            err = r.stderr.decode()
            check(f"{family}: bad input {args[2:]} {stdin[:30]!r} -> exit 2 naming {needle!r}",
                  r.returncode == 2 and needle in err and err.count("\n") == 1,
                  f"rc={r.returncode} stderr={err!r}")

    # A directory of tokenizer files only (no config.json) is a model directory for tokenize.
    check("tokenizer-only directories have no config.json",
          not os.path.exists(os.path.join(a.data, "gpt2", "config.json")))
    print(f"{len(FAILURES)} failed" if FAILURES else "all passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
