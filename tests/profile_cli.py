#!/usr/bin/python3
"""`tessera profile`, `tessera bench`, `tessera sysinfo` and TESSERA_PROFILE, end to end.

On the demo model (models/demo-dates):
  * `profile --json --trace` for a forward pass and for encode + N decode steps: the trace is valid
    Trace Event Format (every event has name, cat, ph "X", ts, dur, pid, tid and args with shapes,
    flops, bytes; ts non-decreasing per tid; events = nodes per rep x reps, as the graphs say),
    the JSON has its keys, the per-node rows add up to the per-op rows, and no node is faster than
    the machine the test runs on allows: GFLOP/s <= its measured fp32 peak per core x threads,
    GB/s <= its measured L1 read bandwidth per core x threads (`tessera sysinfo --json`, run once,
    measured; the profile runs themselves pass --peak-gflops/--bandwidth-gbs overrides, which are
    checked to be taken as given and play no part in the bound);
  * `bench --json` (forward and --generate) has its keys and positive numbers;
  * `sysinfo --json` has its keys and positive measured figures;
  * TESSERA_PROFILE=path on `tessera generate` writes a valid trace;
  * bad arguments exit 2 with one line on stderr.
On a small random gpt2 and bert model (tools/make_hf_checkpoint.py, numpy only), the same
invariants: `profile --json --trace` forward (and gpt2 prefill + N decode steps: events = nodes
of the prefill and step graphs x reps), `bench --json` (gpt2 --generate: prefill_ms and
decode_tokens_per_s positive; --inputs FILE), `attention --ids` (weights [T, T], rows sum to 1,
causal for gpt2), and one-line errors: bert --generate, --seq beyond the model's positions.
Runs in a few seconds.

    profile_cli.py --tessera build/tools/tessera --model models/demo-dates
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

FAILURES: list[str] = []


def check(cond: bool, what: str) -> None:
    print(("PASS " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)


def run(cmd: list[str], env: dict | None = None, expect: int = 0) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if p.returncode != expect:
        print(f"command {' '.join(cmd)} exited {p.returncode} (expected {expect})\n"
              f"stdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-2000:]}")
    return p


def validate_trace(path: str, expected_events: int, label: str) -> None:
    with open(path) as f:
        trace = json.load(f)
    check(trace.get("displayTimeUnit") == "ms", f"{label}: displayTimeUnit ms")
    events = trace.get("traceEvents")
    check(isinstance(events, list), f"{label}: traceEvents is a list")
    if not isinstance(events, list):
        return
    check(len(events) == expected_events,
          f"{label}: {len(events)} events == nodes x reps = {expected_events}")
    ok_keys = ok_types = ok_args = True
    last_ts: dict = {}
    monotone = True
    for e in events:
        if not all(k in e for k in ("name", "cat", "ph", "ts", "dur", "pid", "tid", "args")):
            ok_keys = False
            continue
        if e["ph"] != "X" or not isinstance(e["ts"], (int, float)) or not isinstance(
                e["dur"], (int, float)) or e["dur"] < 0 or not e["name"]:
            ok_types = False
        a = e["args"]
        if not (isinstance(a.get("shapes"), str) and "->" in a["shapes"]
                and a.get("flops", -1) >= 0 and a.get("bytes", 0) > 0):
            ok_args = False
        key = (e["pid"], e["tid"])
        if key in last_ts and e["ts"] < last_ts[key]:
            monotone = False
        last_ts[key] = e["ts"]
    check(ok_keys, f"{label}: every event has name/cat/ph/ts/dur/pid/tid/args")
    check(ok_types, f"{label}: every event is a complete event (ph X) with ts and dur >= 0")
    check(ok_args, f"{label}: every event's args have shapes, flops, bytes")
    check(monotone, f"{label}: ts non-decreasing per tid")


# Margin of the sanity bound on node rates. The bound is the machine's own measured ceiling
# (fp32 peak, L1 read bandwidth), each measured as the best of many short runs on thread CPU
# time, so it sits at or a little below the truth even on a busy machine; a node's rate comes
# from a steady_clock interval of a few microseconds at least. What can push a node's rate above
# the measured ceiling is the probe missing the truth by a few % (clock ramp, a disturbed probe)
# and the timer's granularity and overhead (tens of ns on a node of >= several us): together
# well under 30 %. A counting error (flops or bytes counted twice) is 2x or more, and crosses it.
MARGIN = 1.3


def validate_profile(j: dict, label: str, reps: int, threads: int, machine: dict) -> None:
    for k in ("model", "batch", "seq", "generate", "threads", "isa", "reps", "warmup", "machine",
              "end_to_end_ms", "overhead_pct", "events_per_rep", "graph_nodes_per_rep",
              "node_ms_per_rep", "ops", "nodes"):
        check(k in j, f"{label}: JSON has '{k}'")
    m = j["machine"]
    for k in ("isa", "cores", "threads", "peak_gflops_per_core", "peak_gflops", "bandwidth_gbs",
              "peak_method", "bandwidth_method", "flags", "cache_bytes"):
        check(k in m, f"{label}: machine has '{k}'")
    check(j["reps"] == reps and j["threads"] == threads, f"{label}: reps and threads as asked")
    check(j["events_per_rep"] == j["graph_nodes_per_rep"],
          f"{label}: recorded nodes per rep {j['events_per_rep']} == graph nodes "
          f"{j['graph_nodes_per_rep']}")
    for side in ("off", "on"):
        e2e = j["end_to_end_ms"][side]
        check(0 < e2e["min"] <= e2e["median"] <= e2e["max"], f"{label}: end-to-end {side} stats")
    row_keys = ("name", "op", "calls", "total_ms", "median_us", "share", "flops", "bytes", "gflops",
                "gbs", "intensity", "bound_gflops", "fraction_of_bound")
    check(all(all(k in r for k in row_keys) for r in j["ops"] + j["nodes"]),
          f"{label}: every row has {', '.join(row_keys)}")
    calls_nodes = sum(r["calls"] for r in j["nodes"])
    calls_ops = sum(r["calls"] for r in j["ops"])
    check(calls_nodes == calls_ops == j["events_per_rep"] * reps,
          f"{label}: calls add up ({calls_nodes} nodes, {calls_ops} ops)")
    tn = sum(r["total_ms"] for r in j["nodes"])
    to = sum(r["total_ms"] for r in j["ops"])
    check(abs(tn - to) <= 1e-6 * max(tn, 1), f"{label}: node and op times add up")
    fn = sum(r["flops"] for r in j["nodes"])
    fo = sum(r["flops"] for r in j["ops"])
    check(abs(fn - fo) <= 1e-9 * max(fn, 1), f"{label}: node and op flops add up")
    check(abs(sum(r["share"] for r in j["nodes"]) - 1) < 1e-6, f"{label}: shares sum to 1")
    ops = {r["name"] for r in j["ops"]}
    check({"linear", "attention", "layernorm", "embedding"} <= ops,
          f"{label}: linear, attention, layernorm, embedding all profiled")
    # Sanity of the counting: no node beats what this machine can do (see MARGIN). Bytes are
    # bounded by the L1 read rate: a node's data may all be L1-resident.
    if machine:
        t = j["threads"]
        peak = machine["peak_gflops_per_core"] * t
        l1 = machine["l1_read_gbs_1t"] * t
        worst_f = max(r["gflops"] for r in j["nodes"])
        worst_b = max(r["gbs"] for r in j["nodes"])
        check(worst_f <= MARGIN * peak, f"{label}: max node GFLOP/s {worst_f:.1f} <= {MARGIN} x "
              f"measured peak {peak:.1f} ({t} threads)")
        check(worst_b <= MARGIN * l1, f"{label}: max node GB/s {worst_b:.1f} <= {MARGIN} x "
              f"measured L1 read {l1:.1f} ({t} threads)")


def expect_one_line_error(cmd: list[str], words: tuple, label: str) -> None:
    p = run(cmd, expect=2)
    lines = p.stderr.strip().splitlines()
    check(p.returncode == 2 and len(lines) == 1 and all(w in lines[0] for w in words),
          f"{label}: exit 2, one line naming {', '.join(repr(w) for w in words)}"
          + ("" if p.returncode == 2 and len(lines) == 1 else f" (got {p.returncode}: {p.stderr!r})")
          + (f" (got {lines[0]!r})" if len(lines) == 1 else ""))


def hf_families(exe: str, tmp: str, machine: dict, limits: list[str]) -> None:
    """profile, bench and attention on small random gpt2 and bert models."""
    import numpy as np  # the models are written with numpy (tools/make_hf_checkpoint.py)
    import safetensors_io

    maker = os.path.join(_ROOT, "tools", "make_hf_checkpoint.py")
    dirs = {}
    for family in ("gpt2", "bert"):
        d = os.path.join(tmp, family)
        p = run([sys.executable, maker, family, d, "--layers", "2", "--hidden", "48", "--heads", "4",
                 "--vocab", "100", "--positions", "32"])
        check(p.returncode == 0, f"{family}: make_hf_checkpoint.py writes a model")
        dirs[family] = d
    gpt2, bert = dirs["gpt2"], dirs["bert"]

    # profile: forward on both, prefill + decode steps on gpt2.
    for family, extra, reps, label in (("gpt2", [], 3, "gpt2 profile forward"),
                                       ("bert", [], 3, "bert profile forward"),
                                       ("gpt2", ["--generate", "5"], 2, "gpt2 profile generate")):
        trace = os.path.join(tmp, f"{label.replace(' ', '-')}.json")
        p = run([exe, "profile", "--model", dirs[family], "--batch", "2", "--seq", "12",
                 "--threads", "2", "--reps", str(reps), "--json", "--trace", trace] + extra + limits)
        check(p.returncode == 0, f"{label} exits 0")
        if p.returncode != 0:
            continue
        j = json.loads(p.stdout)
        validate_profile(j, label, reps, 2, machine)
        check(j.get("family") == family and j["batch"] == 2 and j["seq"] == 12 and
              j["generate"] == (5 if extra else 0), f"{label}: family, B, S, N as asked")
        validate_trace(trace, j["graph_nodes_per_rep"] * reps, f"trace {label}")
    p = run([exe, "profile", "--model", bert, "--batch", "1", "--seq", "8", "--reps", "1"] + limits)
    check(p.returncode == 0 and "operator" in p.stdout and "%bound" in p.stdout and
          "bert, batch 1, seq 8" in p.stdout, "bert profile prints the tables")

    # bench: forward on both, --generate on gpt2, --inputs on both.
    for family, extra, label in (("gpt2", [], "gpt2 bench forward"), ("bert", [], "bert bench forward"),
                                 ("gpt2", ["--generate", "6"], "gpt2 bench generate")):
        p = run([exe, "bench", "--model", dirs[family], "--batch", "2", "--seq", "10", "--reps", "2",
                 "--json"] + extra)
        check(p.returncode == 0, f"{label} exits 0")
        if p.returncode != 0:
            continue
        b = json.loads(p.stdout)
        keys = ["latency_ms", "tokens_per_s", "peak_rss_mb", "threads", "isa", "family"]
        if extra:
            keys += ["generate", "prefill_ms", "decode_tokens_per_s", "tokens_per_rep"]
        check(all(k in b for k in keys), f"{label}: keys {', '.join(keys)}")
        if not all(k in b for k in keys):
            continue
        check(b["family"] == family and b["batch"] == 2 and b["seq"] == 10, f"{label}: family, B, S")
        check(b["latency_ms"]["median"] > 0 and b["tokens_per_s"] > 0, f"{label}: numbers positive")
        if extra:
            check(b["prefill_ms"] > 0 and b["decode_tokens_per_s"] > 0,
                  f"{label}: prefill_ms {b['prefill_ms']:.3g} > 0, decode_tokens_per_s "
                  f"{b['decode_tokens_per_s']:.3g} > 0")
            # gpt2: the prefill yields the first token, each of the N steps one more.
            check(b["generate"] == 6 and b["tokens_per_rep"] == 2 * (6 + 1),
                  f"{label}: {b['tokens_per_rep']} tokens per rep == batch x (N + 1)")
    p = run([exe, "bench", "--model", gpt2, "--batch", "2", "--seq", "10", "--generate", "6",
             "--reps", "1"])
    check(p.returncode == 0 and "prefill:" in p.stdout and "decode:" in p.stdout and
          "tokens/s" in p.stdout, "gpt2 bench --generate prints prefill and decode")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, size=(3, 7)).astype(np.int64)
    for family, tensors in (("gpt2", {"input_ids": ids}),
                            ("bert", {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                      "token_type_ids": np.zeros_like(ids)})):
        path = os.path.join(tmp, f"{family}-inputs.safetensors")
        safetensors_io.save_file(tensors, path)
        p = run([exe, "bench", "--model", dirs[family], "--inputs", path, "--reps", "1", "--json"])
        ok = p.returncode == 0
        if ok:
            b = json.loads(p.stdout)
            ok = b["batch"] == 3 and b["seq"] == 7 and b["tokens_per_s"] > 0
        check(ok, f"{family} bench --inputs: runs the file's [3, 7] inputs")

    # Bad arguments: exit 2, one line naming what was wrong.
    for cmd, words, label in (
            (["profile", "--model", bert, "--generate", "4"], ("--generate", "bert"), "bert profile --generate"),
            (["bench", "--model", bert, "--generate", "4"], ("--generate", "bert"), "bert bench --generate"),
            (["bench", "--model", bert, "--seq", "33"], ("--seq 33", "max_position_embeddings 32"), "bert --seq"),
            (["bench", "--model", gpt2, "--seq", "33"], ("--seq 33", "n_positions 32"), "gpt2 --seq"),
            (["profile", "--model", gpt2, "--seq", "30", "--generate", "3"], ("--seq 30", "--generate 3", "n_positions 32"),
             "gpt2 --seq + --generate"),
            (["bench", "--model", gpt2, "--generate", "2", "--inputs", "x.safetensors"],
             ("--inputs", "--generate"), "--inputs with --generate")):
        expect_one_line_error([exe] + cmd, words, label)

    # attention: one head's weights over token ids.
    for family, extra, label in (("gpt2", [], "gpt2 attention"), ("bert", [], "bert attention"),
                                 ("gpt2", ["--tgt", "--max-new-tokens", "4"], "gpt2 attention --tgt")):
        png, dump = os.path.join(tmp, "a.png"), os.path.join(tmp, "a.safetensors")
        for f in (png, dump):
            if os.path.exists(f):
                os.remove(f)
        p = run([exe, "attention", "--model", dirs[family], "--layer", "1", "--head", "3", "--ids",
                 "--out", png, "--dump", dump, "--threads", "2"] + extra + ["5 17 42 8 9 23"])
        check(p.returncode == 0 and p.stdout.strip() == png and os.path.exists(png),
              f"{label}: exits 0, writes the PNG")
        if not os.path.exists(dump):
            continue
        w = safetensors_io.load_file(dump)["weights"].astype(np.float64)
        t = w.shape[0]
        check(w.ndim == 2 and w.shape[0] == w.shape[1] and
              (t == 6 if not extra else 7 <= t <= 10), f"{label}: weights [T, T], T = {t}")
        check(bool(np.all(np.abs(w.sum(axis=1) - 1) < 1e-6)), f"{label}: every row sums to 1")
        if family == "gpt2":
            check(bool(np.all(np.triu(w, 1) == 0)), f"{label}: causal (no weight above the diagonal)")
        else:
            check(float(np.triu(w, 1).sum()) > 0, f"{label}: not causal (weights above the diagonal)")
    for cmd, words, label in (
            (["attention", "--model", bert, "--tgt", "--ids", "1 2"], ("--tgt", "bert"), "bert attention --tgt"),
            (["attention", "--model", gpt2, "--cross", "--ids", "1 2"], ("--cross", "gpt2"), "gpt2 attention --cross"),
            (["attention", "--model", gpt2, "--layer", "2", "--ids", "1 2"], ("--layer 2", "2 layers"),
             "gpt2 attention --layer"),
            (["attention", "--model", bert, "--head", "4", "--ids", "1 2"], ("--head 4", "4 heads"),
             "bert attention --head"),
            (["attention", "--model", gpt2, "--ids", "1 100"], ("--ids", "100"), "gpt2 attention id out of range"),
            (["attention", "--model", gpt2, "hello"], ("tokenizer", "--ids"), "gpt2 attention text, no tokenizer")):
        expect_one_line_error([exe] + cmd, words, label)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    exe, model = args.tessera, args.model
    # Overrides for the profile runs (checked to be taken as given; no part of the bound).
    limits = ["--peak-gflops", "115", "--bandwidth-gbs", "27"]

    # sysinfo, measured, once: its keys, and the machine's ceilings for the node-rate bound.
    machine: dict = {}
    p = run([exe, "sysinfo", "--json", "--threads", "1"])
    check(p.returncode == 0, "sysinfo exits 0")
    if p.returncode == 0:
        s = json.loads(p.stdout)
        keys = ("isa", "cores", "threads", "cpu_model", "flags", "cache_bytes",
                "peak_gflops_per_core", "peak_gflops", "peak_method", "bandwidth_gbs",
                "bandwidth_gbs_1t", "bandwidth_gbs_all", "bandwidth_method",
                "peak_bf16_gflops_per_core", "peak_bf16_method", "peak_int8_gops_per_core",
                "peak_int8_method", "l1_read_gbs_1t", "l1_read_gbs_all", "l2_read_gbs_1t",
                "l2_read_gbs_all", "cache_bandwidth_method")
        check(all(k in s for k in keys), "sysinfo: JSON has " + ", ".join(keys))
        check(s["peak_gflops_per_core"] > 0 and s["bandwidth_gbs_1t"] > 0 and s["cores"] >= 1
              and s["threads"] == 1 and s["isa"] in ("avx512", "avx2", "generic"),
              "sysinfo: measured limits positive")
        check(s["l1_read_gbs_1t"] > 0 and s["l2_read_gbs_1t"] > 0 and s["l2_read_gbs_all"] > 0,
              "sysinfo: cache read bandwidths positive")
        check(all(k in s["flags"] for k in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni")),
              "sysinfo: feature flags")
        # The dot-product peaks are measured exactly where the CPU has the instruction.
        check((s["peak_bf16_gflops_per_core"] > 0) == s["flags"]["avx512_bf16"] and
              (s["peak_int8_gops_per_core"] > 0) == s["flags"]["avx512_vnni"],
              "sysinfo: bf16 / int8 peaks measured where the CPU has them, 0 elsewhere")
        if all(k in s for k in keys):
            machine = s

    with tempfile.TemporaryDirectory() as tmp:
        # Forward pass.
        trace = os.path.join(tmp, "fwd.json")
        p = run([exe, "profile", "--model", model, "--batch", "2", "--seq", "12", "--threads", "2",
                 "--reps", "3", "--warmup", "1", "--json", "--trace", trace] + limits)
        check(p.returncode == 0, "profile forward exits 0")
        if p.returncode == 0:
            j = json.loads(p.stdout)
            validate_profile(j, "profile forward", 3, 2, machine)
            check(j["generate"] == 0 and j["batch"] == 2 and j["seq"] == 12, "forward: B, S")
            check(j["machine"]["peak_gflops_per_core"] == 115 and
                  j["machine"]["bandwidth_gbs"] == 27, "forward: overrides taken as given")
            validate_trace(trace, j["graph_nodes_per_rep"] * 3, "trace forward")

        # Encode + decode steps.
        trace = os.path.join(tmp, "gen.json")
        p = run([exe, "profile", "--model", model, "--batch", "4", "--seq", "16", "--generate", "5",
                 "--threads", "1", "--reps", "2", "--json", "--trace", trace] + limits)
        check(p.returncode == 0, "profile --generate exits 0")
        if p.returncode == 0:
            j = json.loads(p.stdout)
            validate_profile(j, "profile generate", 2, 1, machine)
            check(j["generate"] == 5, "generate: N")
            validate_trace(trace, j["graph_nodes_per_rep"] * 2, "trace generate")

        # Human-readable tables.
        p = run([exe, "profile", "--model", model, "--batch", "1", "--seq", "8", "--reps", "1"] +
                limits)
        check(p.returncode == 0 and "operator" in p.stdout and "%bound" in p.stdout and
              "overhead" in p.stdout, "profile prints the tables and the overhead")

        # bench.
        for extra, label in (([], "bench forward"), (["--generate", "4"], "bench generate")):
            p = run([exe, "bench", "--model", model, "--batch", "2", "--seq", "10", "--reps", "3",
                     "--json"] + extra)
            check(p.returncode == 0, f"{label} exits 0")
            if p.returncode != 0:
                continue
            b = json.loads(p.stdout)
            keys = ["latency_ms", "tokens_per_s", "peak_rss_mb", "threads", "isa"]
            if extra:
                keys += ["prefill_ms", "decode_tokens_per_s"]
            check(all(k in b for k in keys), f"{label}: keys {', '.join(keys)}")
            lat = b.get("latency_ms", {})
            check(all(lat.get(k, 0) > 0 for k in ("median", "min", "max")) and
                  lat["min"] <= lat["median"] <= lat["max"], f"{label}: latency stats positive")
            check(all(b.get(k, 0) > 0 for k in keys[1:4]) and
                  (not extra or (b["prefill_ms"] > 0 and b["decode_tokens_per_s"] > 0)),
                  f"{label}: numbers positive")

        # TESSERA_PROFILE on generate.
        trace = os.path.join(tmp, "env.json")
        env = dict(os.environ, TESSERA_PROFILE=trace)
        p = run([exe, "generate", "--model", model, "--max-new-tokens", "12",
                 "Nov 26, 2026", "26/11/2026"], env=env)
        check(p.returncode == 0 and os.path.exists(trace), "TESSERA_PROFILE writes a trace")
        if os.path.exists(trace):
            with open(trace) as f:
                n = len(json.load(f)["traceEvents"])
            validate_trace(trace, n, "trace TESSERA_PROFILE")
            check(n > 0, f"TESSERA_PROFILE: {n} events")

        # Bad arguments: exit 2, one line naming the problem.
        for bad, word in ((["--reps", "0"], "--reps"), (["--generate", "1000"], "max_position"),
                          (["--seq", "0"], "--seq"), (["--peak-gflops", "-1"], "peak")):
            p = run([exe, "profile", "--model", model] + bad, expect=2)
            lines = p.stderr.strip().splitlines()
            check(p.returncode == 2 and len(lines) == 1 and word in lines[0],
                  f"profile {' '.join(bad)}: exit 2, one line naming '{word}'")

        hf_families(exe, tmp, machine, limits)

    print(f"{len(FAILURES)} failures" if FAILURES else "all passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
