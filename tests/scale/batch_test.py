#!/usr/bin/python3
"""tools/batch.py on a local Dask cluster (issue 17, point 3; CTest `scale_batch`).

A BERT-shaped random model (tests/api/make_api_models.py's bert), 2,000 texts, a local cluster
of 2 worker processes of 1 thread, partitions of 128 texts:
  1. the output equals `tessera embed`'s for the same texts, byte for byte, and each worker
     process loaded the model once;
  2. one worker process is killed with SIGKILL mid-job: Dask runs its tasks again (the nanny
     starts a new worker process), the output is complete and identical;
  3. the job is interrupted with SIGINT mid-job (exit 130, the finished partitions kept) and run
     again: only the missing partitions are computed, the output is identical;
  4. `generate` on the demo model equals `tessera generate`'s lines;
  5. a corpus with a bad line is refused naming its line number.

    batch_test.py --tessera build/tools/tessera --bert DIR --demo models/demo-dates
                  [--python build/python]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH = os.path.join(ROOT, "tools", "batch.py")
PY = "/usr/bin/python3"

WORDS = ("the river ran low that autumn and the boats that once carried grain from the northern "
         "farms sat on the mud with their ropes still tied in the town the mill kept turning "
         "slower each week while the miller counted the sacks left in his store café naïve "
         "Zürich 3.14 don't").split()


def make_corpus(path: str, n: int, seed: int = 17) -> list:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 40))) for _ in range(n)]
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    return texts


def cli_lines(cmd: list, texts: list) -> bytes:
    r = subprocess.run(cmd, input="".join(t + "\n" for t in texts).encode(), capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.decode()}")
    return r.stdout


def batch_cmd(args, kind, model, corpus, out, *extra):
    return [PY, BATCH, kind, "--model", model, "--input", corpus, "--output", out,
            "--workers", "2", "--threads", "1", "--python", args.python, *extra]


def run_batch(cmd: list, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return r


class Watched:
    """batch.py as a child whose stderr is read line by line."""

    def __init__(self, cmd):
        self.p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  text=True)
        self.lines = []

    def wait_for(self, pattern: str, timeout: float = 300) -> re.Match:
        deadline = time.time() + timeout
        rx = re.compile(pattern)
        for line in self.p.stderr:
            self.lines.append(line)
            m = rx.search(line)
            if m:
                return m
            if time.time() > deadline:
                break
        raise RuntimeError(f"no line matching {pattern!r}; stderr:\n{''.join(self.lines)}")

    def finish(self, timeout: float = 300) -> int:
        _, rest = self.p.communicate(timeout=timeout)
        self.lines.append(rest)
        return self.p.returncode

    @property
    def text(self):
        return "".join(self.lines)


def worker_pids(parent: int) -> list:
    """The dask worker processes the local cluster of `parent` spawned (multiprocessing
    children, not its resource tracker)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and "spawn_main" in cmdline:
            pids.append(int(d))
    return sorted(pids)


def check(cond: bool, what: str, problems: list):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        problems.append(what)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", default=os.path.join(ROOT, "build", "tools", "tessera"),
                    help="the tessera binary")
    ap.add_argument("--bert", default=os.path.join(ROOT, "build", "tests", "api_models", "bert"),
                    help="a bert model directory with its tokenizer")
    ap.add_argument("--demo", default=os.path.join(ROOT, "models", "demo-dates"),
                    help="the demo model (generate)")
    ap.add_argument("--python", default=os.path.join(ROOT, "build", "python"),
                    help="folder of the tessera Python module")
    ap.add_argument("--texts", type=int, default=2000, help="texts in the corpus (default 2000)")
    args = ap.parse_args()
    problems = []
    with tempfile.TemporaryDirectory(prefix="tessera-batch-") as work:
        corpus = os.path.join(work, "corpus.jsonl")
        texts = make_corpus(corpus, args.texts)
        t0 = time.perf_counter()
        ref = cli_lines([args.tessera, "embed", "--model", args.bert], texts)
        print(f"tessera embed: {len(texts)} texts in {time.perf_counter() - t0:.1f} s")

        # 1. A whole run.
        out = os.path.join(work, "a.jsonl")
        t0 = time.perf_counter()
        r = run_batch(batch_cmd(args, "embed", args.bert, corpus, out, "--partition-size", "128"))
        print(f"batch.py embed: {time.perf_counter() - t0:.1f} s")
        if r.returncode != 0:
            print(r.stderr)
        check(r.returncode == 0, "batch.py embed exits 0", problems)
        got = open(out, "rb").read() if os.path.exists(out) else b""
        nlines = ref.count(b"\n")
        check(got == ref, f"output = tessera embed's, byte for byte ({len(ref)} bytes, "
              f"{nlines} lines)", problems)
        m = re.search(r"models loaded: (\d+) in (\d+) worker", r.stderr)
        check(m is not None and m.group(1) == m.group(2) and int(m.group(1)) <= 2,
              f"the model loaded once per worker process ({m.group(0) if m else 'no count'})",
              problems)
        check(not os.path.exists(out + ".parts"), "the parts removed after the output", problems)

        # 2. A worker killed mid-job.
        out = os.path.join(work, "b.jsonl")
        w = Watched(batch_cmd(args, "embed", args.bert, corpus, out, "--partition-size", "64"))
        w.wait_for(r"partition \d+ done \(4/")
        pids = worker_pids(w.p.pid)
        victim = pids[0] if pids else None
        if victim:
            os.kill(victim, signal.SIGKILL)
        rc = w.finish()
        print(f"killed worker pid {victim} of {pids} after 4 of 32 partitions")
        check(victim is not None, "found the worker processes to kill", problems)
        check(rc == 0, f"batch.py exits 0 after a worker was killed (rc {rc})", problems)
        got = open(out, "rb").read() if os.path.exists(out) else b""
        check(got == ref, "output complete and identical after the kill", problems)
        m = re.search(r"models loaded: (\d+) in (\d+) worker", w.text)
        print(f"  {m.group(0) if m else 'no count'}")
        if rc != 0:
            print(w.text[-3000:])

        # 3. Interrupted, then resumed.
        out = os.path.join(work, "c.jsonl")
        cmd = batch_cmd(args, "embed", args.bert, corpus, out, "--partition-size", "64")
        w = Watched(cmd)
        w.wait_for(r"partition \d+ done \(6/")
        w.p.send_signal(signal.SIGINT)
        rc = w.finish()
        check(rc == 130, f"SIGINT: exit 130 (rc {rc})", problems)
        parts = [f for f in os.listdir(out + ".parts") if f.endswith(".jsonl")] \
            if os.path.isdir(out + ".parts") else []
        check(6 <= len(parts) < 32, f"{len(parts)} of 32 partitions kept", problems)
        check(not os.path.exists(out), "no output written by the interrupted run", problems)
        r = run_batch(cmd)
        m = re.search(r"(\d+) done already", r.stderr)
        computed = len(re.findall(r"partition \d+ done", r.stderr))
        check(r.returncode == 0 and m is not None and int(m.group(1)) == len(parts) and
              computed == 32 - len(parts),
              f"resumed: {m.group(1) if m else '?'} partitions reused, {computed} computed",
              problems)
        got = open(out, "rb").read() if os.path.exists(out) else b""
        check(got == ref, "output after the resume identical", problems)

        # 4. generate on the demo model.
        prompts = ["1 May 2020", "July 4, 1976", "26/11/2026", "Sat 1 Jan 2000",
                   "the 26th of November 2026", "3rd of March 1999", "Nov 26, 2026",
                   "Thursday, November 26, 2026"] * 6
        gcorpus = os.path.join(work, "prompts.jsonl")
        with open(gcorpus, "w") as f:
            for p in prompts:
                f.write(json.dumps({"text": p}) + "\n")
        gref = cli_lines([args.tessera, "generate", "--model", args.demo], prompts)
        gref = gref.decode().splitlines()
        out = os.path.join(work, "g.jsonl")
        r = run_batch(batch_cmd(args, "generate", args.demo, gcorpus, out, "--partition-size", "8"))
        got = [json.loads(line) for line in open(out)] if os.path.exists(out) else []
        check(r.returncode == 0 and [g["index"] for g in got] == list(range(len(prompts))) and
              [g["text"] for g in got] == gref,
              f"generate: {len(got)} texts = tessera generate's", problems)
        if r.returncode != 0:
            print(r.stderr[-2000:])

        # 5. A bad line.
        bad = os.path.join(work, "bad.jsonl")
        with open(bad, "w") as f:
            f.write('{"text": "fine"}\n{"text": "fine"}\n{"text": oops}\n')
        r = run_batch(batch_cmd(args, "embed", args.bert, bad, os.path.join(work, "x.jsonl")))
        check(r.returncode == 2 and "bad.jsonl:3:" in r.stderr,
              f"a bad line refused naming it: {r.stderr.strip()}", problems)

    print("batch test:", "FAILED" if problems else "OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
