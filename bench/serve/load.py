#!/usr/bin/python3
"""Load benchmark of `tessera serve` (issue 13, point 7 and its targets; a benchmark, not a test).

Starts `tessera serve --threads T` on a model, waits for GET /health 200, then for each level
N (default 1, 2, 4, 8, 16): N concurrent streaming clients, each sending --rounds requests back
to back (POST /v1/completions, stream, a fixed prompt of exactly --prompt-tokens token ids: a
slice of a passage's POST /tokenize whose /detokenize text tokenizes back to the same count,
checked against usage.prompt_tokens; max_tokens --max-tokens; temperature 0). Measured by the client, per level:

  aggregate tokens/s   completion tokens of the level / the level's wall time (first request
                       sent to last stream ended)
  TTFT p50/p99         request sent -> first token chunk
  ITL p50/p99          gaps between consecutive token chunks of a stream
  errors               non-200 answers, error events, streams without [DONE], socket errors
  RSS, HWM             the server's VmRSS after the level and VmHWM (/proc/<pid>/status)

Then stops the server (SIGTERM) and, with no server alive, times the same generation through
the library (the Python module: tessera.Model(dir, threads=T).generate([ids], max_new_tokens=M),
the median of --library-reps after a warm-up, in a child process; without the module,
`tessera generate --ids`'s own prefill + decode figures). Prints one markdown table and the
ratios of the issue's targets.

    /usr/bin/python3 bench/serve/load.py --model DIR [--binary build/tools/tessera] [--threads 2]
        [--levels 1,2,4,8,16] [--rounds 3] [--ramp 0] [--python build/python]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import re
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

LIBRARY_CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import tessera
model_dir, threads, prompt, max_tokens, reps = sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
m = tessera.Model(model_dir, threads=threads)
ids = prompt["ids"] if prompt.get("ids") else m.tokenize(prompt["text"])
out = m.generate([ids], max_new_tokens=max_tokens)  # warm-up (greedy: the default method)
times = []
for _ in range(reps):
    t0 = time.perf_counter()
    out = m.generate([ids], max_new_tokens=max_tokens)
    times.append(time.perf_counter() - t0)
print(json.dumps({"how": "Python module", "seconds": times, "tokens": len(out[0]), "prompt_tokens": len(ids)}))
"""


def library_baseline(a, ids, text):
    """The same generation through the library, no server alive: {"how", "seconds", "tokens",
    "prompt_tokens"}. The prompt's ids (from the server's /tokenize), else its text."""
    pydir = a.python or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(a.binary))),
                                     "python")
    have_module = os.path.isdir(pydir) and any(f.startswith("tessera") and f.endswith(".so")
                                               for f in os.listdir(pydir))
    if have_module:
        r = subprocess.run([sys.executable, "-c", LIBRARY_CHILD, pydir, a.model, str(a.threads),
                            json.dumps({"ids": ids, "text": text}), str(a.max_tokens), str(a.library_reps)],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return json.loads(r.stdout.strip().splitlines()[-1])
        print(f"note: the Python module failed ({r.stderr.strip().splitlines()[-1:]}); "
              "using `tessera generate`", file=sys.stderr)
    if ids is None:
        raise RuntimeError("no Python module and no token ids for `tessera generate --ids`")
    # `tessera generate --ids`: its own prefill ms and decode tokens/s (stderr), model load excluded
    times, tokens = [], 0
    for _ in range(a.library_reps + 1):
        r = subprocess.run([a.binary, "generate", "--model", a.model, "--threads", str(a.threads),
                            "--ids", "--max-new-tokens", str(a.max_tokens), " ".join(map(str, ids))],
                           capture_output=True, text=True, check=True)
        m = re.search(r"tokens (\d+), prefill ([\d.]+) ms, decode ([\d.]+) tokens/s", r.stderr)
        if not m:
            raise RuntimeError(f"tessera generate: no timing line in {r.stderr[-300:]!r}")
        tokens = int(m.group(1))
        decode_tokens = max(tokens - 1, 1)  # the first token comes out of the prefill
        times.append(float(m.group(2)) / 1e3 + decode_tokens / float(m.group(3)))
    return {"how": "tessera generate --ids (prefill ms + decode tokens/s it prints)",
            "seconds": times[1:], "tokens": tokens, "prompt_tokens": len(ids)}


def run_level(a, host, port, prompt, n):
    """n clients x a.rounds streaming requests back to back; the list of results and the wall time."""
    body = {"prompt": prompt, "max_tokens": a.max_tokens, "temperature": 0, "stream": True}
    body.update(a.extra_body)
    results = [[] for _ in range(n)]
    barrier = threading.Barrier(n + 1)

    def client(i):
        barrier.wait()
        if a.ramp > 0:  # client i starts i/n of --ramp seconds after the first
            time.sleep(a.ramp * i / n)
        for _ in range(a.rounds):
            results[i].append(common.completion(host, port, body, timeout=a.request_timeout))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return [r for rs in results for r in rs], wall


def summarize(results, wall, max_tokens):
    """A level's figures. A stream carries no usage: its tokens are its token chunks, at most
    max_tokens (a last chunk may hold back the bytes of an incomplete UTF-8 character: no token)."""
    ok = [r for r in results if r["error"] is None]
    ntok = [min(common.completion_tokens(r), max_tokens) for r in ok]
    times = [r["token_times"][:max_tokens] for r in ok]
    ttft = [(r["t_first"] - r["t_send"]) * 1e3 for r in ok if r["t_first"] is not None]
    itl = [(b - a_) * 1e3 for t in times for a_, b in zip(t, t[1:])]
    lone = [n / (r["t_end"] - r["t_send"]) for n, r in zip(ntok, ok)]
    tokens = sum(ntok)
    return {"requests": len(results), "errors": len(results) - len(ok), "tokens": tokens,
            "wall": wall, "tps": tokens / wall if wall > 0 else 0.0,
            "ttft50": common.percentile(ttft, 50), "ttft99": common.percentile(ttft, 99),
            "itl50": common.percentile(itl, 50), "itl99": common.percentile(itl, 99),
            "req_tps": statistics.median(lone) if lone else None,
            "min_tokens": min(ntok) if ntok else None,
            "error_msgs": [r["error"] for r in results if r["error"]][:5]}


def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model directory (gpt2 with a tokenizer)")
    ap.add_argument("--binary", default=common.DEFAULT_BINARY, help="the tessera CLI")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--levels", default="1,2,4,8,16", help="concurrent streams, comma-separated")
    ap.add_argument("--rounds", type=int, default=3, help="requests per client, back to back")
    ap.add_argument("--ramp", type=float, default=0.0,
                    help="seconds over which the clients of a level start, evenly (0: all at once, "
                         "a burst whose prefills queue up; about one request's duration gives the "
                         "steady state of clients that arrived at different times)")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--text-prompt", action="store_true", help="send the prompt as text (the "
                    "server tokenizes it) instead of its token ids")
    ap.add_argument("--server-args", default="", help="more `tessera serve` flags, e.g. "
                    "'--max-batch 16 --kv-budget-mb 1024'")
    ap.add_argument("--extra-body", default="{}", help="JSON merged into every completion request")
    ap.add_argument("--request-timeout", type=float, default=600)
    ap.add_argument("--python", default=None, help="the Python module's folder (default: "
                    "<build>/python next to the binary's tools/)")
    ap.add_argument("--library-reps", type=int, default=5)
    ap.add_argument("--no-library", action="store_true", help="skip the library baseline")
    ap.add_argument("--log", default="/tmp/tessera-serve-load.log", help="the server's stderr")
    a = ap.parse_args()
    a.extra_body = json.loads(a.extra_body)
    levels = [int(x) for x in a.levels.split(",") if x]

    server = common.ServerProcess(a.binary, a.model, a.threads, extra=a.server_args.split(),
                                  log_path=a.log)
    print(f"starting: {' '.join(server.cmd)}", file=sys.stderr, flush=True)
    server.start()
    host, port = server.host, server.port
    notes = []
    rows = []
    try:
        print(f"ready in {server.load_s:.1f} s on port {port}; building the prompt", file=sys.stderr,
              flush=True)
        tok = common.Tokenizer(host, port)
        text, ids = common.exact_prompt(tok, a.prompt_tokens)
        prompt = text if a.text_prompt else ids
        # warm-up (not counted) and the checks: prompt length, generation not cut short by eos,
        # streamed chunks = usage.completion_tokens
        body = {"prompt": prompt, "max_tokens": a.max_tokens, "temperature": 0}
        body.update(a.extra_body)
        plain = common.completion(host, port, body, timeout=a.request_timeout)
        if plain["error"]:
            raise RuntimeError(f"warm-up request failed: {plain['error']}")
        streamed = common.completion(host, port, dict(body, stream=True), timeout=a.request_timeout)
        if streamed["error"]:
            raise RuntimeError(f"warm-up streaming request failed: {streamed['error']}")
        usage = plain["usage"] or {}
        pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        print(f"warm-up: usage {usage}, {len(streamed['token_times'])} token chunks streamed, "
              f"finish {plain['finish']}", file=sys.stderr, flush=True)
        if pt != a.prompt_tokens:
            notes.append(f"usage.prompt_tokens is {pt}, not {a.prompt_tokens}")
        if ct is not None and ct < a.max_tokens:
            notes.append(f"the model stopped at {ct} tokens (eos) before max_tokens {a.max_tokens}")
        if ct is not None and len(streamed["token_times"]) != ct:
            notes.append(f"streamed {len(streamed['token_times'])} token chunks for "
                         f"usage.completion_tokens {ct} (a last chunk can hold back the bytes of an "
                         "incomplete UTF-8 character: not a token)")
        if plain["text"].get(0) != streamed["text"].get(0):
            notes.append("the streamed text differs from the non-streamed text (greedy)")

        for n in levels:
            print(f"N={n}: {n} x {a.rounds} requests ...", file=sys.stderr, flush=True)
            results, wall = run_level(a, host, port, prompt, n)
            s = summarize(results, wall, a.max_tokens)
            mem = common.proc_memory_kib(server.pid)
            s.update(n=n, rss=mem.get("VmRSS"), hwm=mem.get("VmHWM"))
            rows.append(s)
            print(f"  {s['tokens']} tokens in {wall:.1f} s: {s['tps']:.1f} tokens/s, errors "
                  f"{s['errors']} {s['error_msgs']}", file=sys.stderr, flush=True)
            if s["min_tokens"] is not None and s["min_tokens"] < a.max_tokens:
                notes.append(f"N={n}: a request stopped at {s['min_tokens']} tokens (< max_tokens)")
        metrics = common.metrics_lines(host, port)
    finally:
        rc = server.stop()
    print(f"server stopped (SIGTERM): exit code {rc}", file=sys.stderr, flush=True)

    lib = None
    if not a.no_library:
        print("library baseline (no server running) ...", file=sys.stderr, flush=True)
        lib = library_baseline(a, ids, text)
        if lib["tokens"] < a.max_tokens:
            notes.append(f"the library generated {lib['tokens']} tokens (eos before {a.max_tokens})")
        if lib["prompt_tokens"] != a.prompt_tokens:
            notes.append(f"the library's prompt is {lib['prompt_tokens']} tokens")

    # ---- report
    print(f"CPU: {common.cpu_name()}, {os.cpu_count()} cores; server threads {a.threads}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"`{' '.join(server.cmd)}`; prompt {a.prompt_tokens} tokens, max_tokens {a.max_tokens}, "
          f"greedy, streaming; {a.rounds} requests per client back to back; model load "
          f"{server.load_s:.1f} s")
    print()
    print("| streams | requests | errors | generated tokens | wall s | aggregate tokens/s | "
          "TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | server RSS MiB | RSS peak MiB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in rows:
        print(f"| {s['n']} | {s['requests']} | {s['errors']} | {s['tokens']} | {s['wall']:.1f} | "
              f"{s['tps']:.1f} | {fmt(s['ttft50'])} | {fmt(s['ttft99'])} | {fmt(s['itl50'])} | "
              f"{fmt(s['itl99'])} | {common.mib(s['rss'])} | {common.mib(s['hwm'])} |")
    print()
    by = {s["n"]: s for s in rows}

    def ratio(x, y):
        return None if not x or not y else x / y

    one = by.get(1)
    for n, target in ((8, 4.0), (16, 6.0)):
        if one and n in by:
            r = ratio(by[n]["tps"], one["tps"])
            print(f"- throughput {n} streams / 1 stream: {fmt(r, '.2f')}x (target >= {target:.0f}x: "
                  f"{'met' if r and r >= target else 'NOT met'})")
    if one and 8 in by:
        r = ratio(by[8]["ttft99"], one["ttft50"])
        print(f"- TTFT p99 at 8 streams / lone TTFT (p50 at 1 stream): {fmt(r, '.2f')}x (target <= 3x: "
              f"{'met' if r and r <= 3 else 'NOT met'})")
    if one and lib:
        lib_s = statistics.median(lib["seconds"])
        lib_tps = lib["tokens"] / lib_s
        r = ratio(one["req_tps"], lib_tps)
        print(f"- server overhead: lone request through HTTP streaming {fmt(one['req_tps'])} tokens/s "
              f"(median of {one['requests']}: completion tokens / send-to-last-chunk), library "
              f"{lib_tps:.1f} tokens/s ({lib['how']}, median of {len(lib['seconds'])}: "
              f"{lib_s * 1e3:.0f} ms for {lib['tokens']} tokens): {fmt(r, '.3f')}x (target >= 0.95x: "
              f"{'met' if r and r >= 0.95 else 'NOT met'})")
    for note in notes:
        print(f"- note: {note}")
    print(f"- server exit code after SIGTERM: {rc}")
    if metrics:
        print("\n/metrics after the last level (tessera_*, buckets left out):\n```")
        print("\n".join(metrics))
        print("```")
    return 0 if all(s["errors"] == 0 for s in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
