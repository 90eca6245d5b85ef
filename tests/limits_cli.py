#!/usr/bin/python3
"""Absurd sizes must be refused before anything of that size is allocated.

Each case makes a small file (a safetensors header declaring an overflowing shape, a config.json
copy of the demo model or a tiny gpt2/bert checkpoint asking for weights no machine has, a
100 MB prompt on stdin, a sparse inputs file of 10^6 rows, ...), runs the `tessera` CLI and
requires: exit code 2, exactly one non-empty line on stderr that names the limit (case-specific
words), nothing on stderr from a crash, and a peak resident set size (ru_maxrss of that one
child, from os.wait4) under --max-rss-mb (default 200).

    limits_cli.py --tessera build/tools/tessera --model models/demo-dates [--keep DIR]

Prints one line per case: PASS/FAIL, the peak RSS and the message. Exit code 1 if any fails.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
CRASH_MARKERS = ("AddressSanitizer", "runtime error:", "terminate called", "Segmentation fault",
                 "core dumped", "bad_alloc")


def write_safetensors(path, header: dict, data: bytes = b"", total_size=None):
    """A raw safetensors file; total_size > len: extended as a sparse file (holes read as 0)."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-(8 + len(text))) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
        if total_size is not None:
            f.truncate(8 + len(text) + total_size)


def physical_memory():
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class Suite:
    def __init__(self, tessera, model, root, max_rss_mb, timeout):
        self.tessera, self.model, self.root = tessera, model, root
        self.max_rss_kb = max_rss_mb * 1024
        self.timeout = timeout
        self.failures = 0
        with open(os.path.join(model, "config.json")) as f:
            self.demo_cfg = json.load(f)

    def path(self, name):
        return os.path.join(self.root, name)

    def check(self, name, args, words, stdin_path=None):
        err_path = self.path("stderr.txt")
        with open(stdin_path or os.devnull, "rb") as fin, open(os.devnull, "wb") as fout, \
                open(err_path, "wb") as ferr:
            # GNU time's %M: the peak RSS of tessera alone (a child forked from this Python
            # process would report this process's RSS at the fork as well).
            rss_path = self.path("rss.txt")
            timed = ["/usr/bin/time", "-f", "%M", "-o", rss_path] if os.path.exists("/usr/bin/time") else []
            p = subprocess.Popen(timed + [self.tessera] + args, stdin=fin, stdout=fout, stderr=ferr)
            timer = threading.Timer(self.timeout, p.kill)  # a hung case fails, not the suite
            timer.start()
            _, status, ru = os.wait4(p.pid, 0)  # without GNU time: this child's own rusage
            timer.cancel()
            p.returncode = os.waitstatus_to_exitcode(status)
        with open(err_path, "rb") as f:
            err = f.read().decode("utf-8", "replace")
        rc, rss_kb = p.returncode, ru.ru_maxrss
        if timed:
            with open(rss_path) as f:
                rss_kb = int(f.read().split()[-1])
        lines = [ln for ln in err.split("\n") if ln.strip()]
        why = []
        if rc != 2:
            why.append(f"exit code {rc}, expected 2")
        if len(lines) != 1:
            why.append(f"{len(lines)} stderr lines, expected 1")
        elif not lines[0].startswith("tessera: error: "):
            why.append("message does not start with 'tessera: error: '")
        for w in words:
            if w.lower() not in err.lower():
                why.append(f"message does not name '{w}'")
        if any(m in err for m in CRASH_MARKERS):
            why.append("crash marker on stderr")
        if rss_kb > self.max_rss_kb:
            why.append(f"peak RSS {rss_kb // 1024} MiB over {self.max_rss_kb // 1024} MiB")
        ok = not why
        self.failures += not ok
        msg = lines[0] if lines else err.strip()[:300]
        print(f"{'PASS' if ok else 'FAIL'}  {name}  (peak RSS {rss_kb / 1024:.1f} MiB)\n      {msg}"
              + ("" if ok else "\n      " + "; ".join(why)), flush=True)

    # -- model directories -------------------------------------------------------------------------
    def demo_copy(self, name, **overrides):
        d = self.path(name)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(self.model, d)
        cfg = dict(self.demo_cfg, **overrides)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        return d

    def hf_dir(self, name, cfg):
        """config.json and an empty (valid) model.safetensors: the config is read first."""
        d = self.path(name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        write_safetensors(os.path.join(d, "model.safetensors"), {})
        return d

    def small_inputs(self):
        p = self.path("small_inputs.safetensors")
        ids = struct.pack("<3q", 4, 5, 2)
        write_safetensors(p, {"src_ids": {"dtype": "I64", "shape": [1, 3], "data_offsets": [0, 24]},
                              "tgt_ids": {"dtype": "I64", "shape": [1, 2], "data_offsets": [24, 40]}},
                          ids + struct.pack("<2q", 1, 6))
        return p

    # -- the cases ---------------------------------------------------------------------------------
    def run_all(self):
        out = self.path("out.safetensors")
        small = self.small_inputs()

        # 1. safetensors shapes whose element or byte count overflows 64 bits.
        d = self.demo_copy("overflow-weights")
        write_safetensors(os.path.join(d, "model.safetensors"),
                          {"src_embed.weight": {"dtype": "F32", "shape": [1 << 32, 1 << 32, 16],
                                                "data_offsets": [0, 0]}})
        self.check("weights: shape element count overflows 64 bits",
                   ["run", "--model", d, "--inputs", small, "--outputs", out],
                   ["element count", "overflows 64 bits", "src_embed.weight"])
        bad = self.path("overflow-inputs.safetensors")
        write_safetensors(bad, {"src_ids": {"dtype": "I64", "shape": [1 << 40, 1 << 40],
                                            "data_offsets": [0, 0]}})
        self.check("run inputs: shape element count overflows 64 bits",
                   ["run", "--model", self.model, "--inputs", bad, "--outputs", out],
                   ["element count", "overflows 64 bits", "src_ids"])
        write_safetensors(bad, {"src_ids": {"dtype": "I64", "shape": [1 << 31, 1 << 31],
                                            "data_offsets": [0, 0]}})
        self.check("run inputs: shape byte count overflows 64 bits",
                   ["run", "--model", self.model, "--inputs", bad, "--outputs", out],
                   ["byte count", "overflows 64 bits", "src_ids"])

        # 2. config.json asking for weights no machine has (checked while reading the config).
        d = self.demo_copy("huge-vocab", tgt_vocab_size=10**12)
        self.check("transformer config: tgt_vocab_size 10^12",
                   ["run", "--model", d, "--inputs", small, "--outputs", out],
                   ["tgt_vocab_size", "physical memory", "bytes"])
        d = self.demo_copy("huge-width", d_model=1 << 20, nhead=1, dim_feedforward=1 << 22)
        self.check("transformer config: d_model 2^20",
                   ["generate", "--model", d, "--ids", "1 2 3"],
                   ["d_model", "physical memory", "bytes"])
        d = self.demo_copy("huge-layers", num_encoder_layers=1 << 40)
        self.check("transformer config: num_encoder_layers 2^40",
                   ["run", "--model", d, "--inputs", small, "--outputs", out],
                   ["num_encoder_layers", "physical memory"])
        gpt2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 1024, "n_head": 16, "n_positions": 1024,
                "vocab_size": 10**12}
        d = self.hf_dir("gpt2-huge-vocab", gpt2)
        self.check("gpt2 config: vocab_size 10^12",
                   ["generate", "--model", d, "--ids", "1 2 3"], ["vocab_size", "physical memory"])
        d = self.hf_dir("gpt2-overflow", dict(gpt2, vocab_size=100, n_embd=1 << 40, n_head=1))
        self.check("gpt2 config: n_embd 2^40 (parameter count overflows)",
                   ["generate", "--model", d, "--ids", "1 2 3"], ["n_embd", "overflows 64 bits"])
        bert = {"model_type": "bert", "vocab_size": 100, "hidden_size": 768, "num_hidden_layers": 10**9,
                "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512}
        d = self.hf_dir("bert-huge-layers", bert)
        self.check("bert config: num_hidden_layers 10^9",
                   ["embed", "--model", d, "x"], ["num_hidden_layers", "physical memory"])

        # 3. a 100 MB prompt / text (stdin: an argument cannot be that long).
        big = self.path("100mb.txt")
        with open(big, "wb") as f:  # in 1 MiB pieces: this process stays small
            for _ in range(100):
                f.write(b"1" * (1 << 20))
            f.write(b"\n")
        for name, args in [("generate", ["generate", "--model", self.model]),
                           ("generate --ids", ["generate", "--model", self.model, "--ids"]),
                           ("tokenize", ["tokenize", "--model", self.model]),
                           ("tokenize --jsonl", ["tokenize", "--model", self.model, "--jsonl"])]:
            self.check(f"{name}: a 100 MB line on stdin", args, ["16 MiB", "input text limit"], big)
        d = self.path("bert-small")
        subprocess.run([PYTHON, os.path.join(_ROOT, "tools", "make_hf_checkpoint.py"), "bert", d],
                       check=True, capture_output=True)
        self.check("embed: a 100 MB line on stdin", ["embed", "--model", d], ["16 MiB", "input text limit"],
                   big)

        # 4. --max-new-tokens 2^31.
        self.check("generate --max-new-tokens 2^31",
                   ["generate", "--model", self.model, "--max-new-tokens", str(1 << 31), "1 May 2020"],
                   ["--max-new-tokens", "maximum of 64 positions"])

        # 5. batches of 10^6 rows (more where the machine is large): activations / KV cache.
        seq = 64
        rows = max(10**6, 2 * physical_memory() // (seq * self.demo_cfg["d_model"] * 4) + 1)
        self.check(f"bench --batch {rows} --seq {seq}",
                   ["bench", "--model", self.model, "--batch", str(rows), "--seq", str(seq)],
                   ["activations", "physical memory", "bytes"])
        self.check(f"bench --batch {rows} --seq 8 --generate 56",
                   ["bench", "--model", self.model, "--batch", str(rows), "--seq", "8", "--generate", "56"],
                   ["KV cache", "physical memory", "bytes"])
        self.check(f"inspect --graph --batch {rows} --seq {seq}",
                   ["inspect", "--model", self.model, "--graph", "--batch", str(rows), "--seq", str(seq)],
                   ["activations", "physical memory", "bytes"])
        g = self.path("gpt2-small")
        subprocess.run([PYTHON, os.path.join(_ROOT, "tools", "make_hf_checkpoint.py"), "gpt2", g],
                       check=True, capture_output=True)
        g_rows = max(10**6, 2 * physical_memory() // (seq * 48 * 4) + 1)  # n_embd 48
        self.check(f"gpt2 bench --batch {g_rows} --seq {seq}",
                   ["bench", "--model", g, "--batch", str(g_rows), "--seq", str(seq)],
                   ["activations", "physical memory", "bytes"])
        sparse = self.path("rows-inputs.safetensors")
        n = rows * seq * 8
        write_safetensors(sparse, {"src_ids": {"dtype": "I64", "shape": [rows, seq], "data_offsets": [0, n]},
                                   "tgt_ids": {"dtype": "I64", "shape": [rows, seq],
                                               "data_offsets": [n, 2 * n]}}, b"", total_size=2 * n)
        self.check(f"run: inputs of {rows} rows (sparse file)",
                   ["run", "--model", self.model, "--inputs", sparse, "--outputs", out],
                   ["activations", "physical memory", "bytes"])
        os.remove(sparse)
        prompts = self.path("prompts.txt")
        kv_rows = max(10**6, 2 * physical_memory() // (64 * 2 * self.demo_cfg["num_decoder_layers"]
                                                        * self.demo_cfg["d_model"] * 4) + 1)
        with open(prompts, "w") as f:
            f.write("4 5 6\n" * kv_rows)
        self.check(f"generate: {kv_rows} prompts, --batch-size {kv_rows}",
                   ["generate", "--model", self.model, "--ids", "--batch-size", str(kv_rows)],
                   ["KV cache", "physical memory", "--batch-size"], prompts)
        if os.path.exists(out):
            print("FAIL  an output file was written")
            self.failures += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--model", required=True, help="the demo model directory")
    ap.add_argument("--max-rss-mb", type=float, default=200)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--keep", help="work in this directory and keep it")
    a = ap.parse_args()
    root = a.keep or tempfile.mkdtemp(prefix="tessera-limits-")
    os.makedirs(root, exist_ok=True)
    try:
        s = Suite(os.path.abspath(a.tessera), os.path.abspath(a.model), root, a.max_rss_mb, a.timeout)
        s.run_all()
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{'FAILED' if s.failures else 'OK'}: {s.failures} failing case(s)")
    return 1 if s.failures else 0


if __name__ == "__main__":
    sys.exit(main())
