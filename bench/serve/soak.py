#!/usr/bin/python3
"""Soak of `tessera serve` (issue 13, point 7): many requests of mixed lengths, some clients
disconnecting mid-stream; no error but the deliberate ones, no memory growth.

Starts `tessera serve` (or uses --url's), then --clients concurrent clients take --requests
requests from one seeded list, back to back: prompts of --prompt-min..--prompt-max tokens
(slices of a passage, made with POST /tokenize + /detokenize), max_tokens --gen-min..--gen-max,
half streaming and half not, half greedy and half sampled (a seed each); --disconnect (10 %) of
the streaming requests close the socket after a random number of token chunks. Counts:

  completed      200, the right shape ([DONE], a finish_reason per choice, the streamed chunks
                 = usage.completion_tokens, completion_tokens <= max_tokens)
  disconnected   the deliberate ones
  errors         anything else (must be 0)

Reads the server's VmRSS after the first 100 requests and after all of them (ratio must be
<= 1.05), checks the server still answers (/health, one more completion), prints progress every
100 requests and the tessera_* lines of GET /metrics at the end. Stops issuing requests after
--time-limit seconds (then reports how many ran).

    /usr/bin/python3 bench/serve/soak.py --model DIR [--binary build/tools/tessera] [--threads 2]
        [--requests 2000] [--clients 8] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def make_plan(a, positions):
    rng = random.Random(a.seed)
    plan = []
    for i in range(a.requests):
        gen = rng.randint(a.gen_min, a.gen_max)
        plen = rng.randint(a.prompt_min, a.prompt_max)
        if positions:
            plen = max(1, min(plen, positions - gen))
        stream = rng.random() < 0.5
        greedy = rng.random() < 0.5
        body = {"max_tokens": gen, "stream": stream, "temperature": 0.0 if greedy else 0.8}
        if not greedy:
            body["seed"] = rng.randrange(1 << 31)
        cut = None
        if stream and rng.random() < a.disconnect:
            cut = rng.randint(1, max(1, gen - 1))
        plan.append({"i": i, "prompt_len": plen, "body": body,
                     "disconnect_after": cut})
    return plan


def check(res, p):
    """None when the request is a well-formed completion; else what is wrong."""
    if res["error"]:
        return res["error"]
    body = p["body"]
    if not res["finish"] or any(f not in ("stop", "length") for f in res["finish"].values()):
        return f"finish_reason {res['finish']}"
    u = res["usage"]
    if body["stream"]:
        if not res["done"]:
            return "no [DONE]"
        if u and u.get("completion_tokens") != len(res["token_times"]):
            return f"{len(res['token_times'])} token chunks, usage {u}"
    elif not u:
        return "no usage"
    n = common.completion_tokens(res)
    if n > body["max_tokens"] or (n < body["max_tokens"] and "length" in res["finish"].values()):
        return f"{n} tokens for max_tokens {body['max_tokens']}, finish {res['finish']}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model directory (gpt2 with a tokenizer)")
    ap.add_argument("--binary", default=common.DEFAULT_BINARY, help="the tessera CLI")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--server-args", default="", help="more `tessera serve` flags")
    ap.add_argument("--url", default=None, help="use a running server (host:port) instead of "
                    "starting one; --pid its process id for the RSS")
    ap.add_argument("--pid", type=int, default=None)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--prompt-min", type=int, default=8)
    ap.add_argument("--prompt-max", type=int, default=200)
    ap.add_argument("--gen-min", type=int, default=8)
    ap.add_argument("--gen-max", type=int, default=128)
    ap.add_argument("--disconnect", type=float, default=0.10,
                    help="fraction of the streaming requests that disconnect mid-stream")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompts", type=int, default=64, help="distinct prompt texts made up front")
    ap.add_argument("--request-timeout", type=float, default=600)
    ap.add_argument("--time-limit", type=float, default=3 * 3600, help="seconds; then no new requests")
    ap.add_argument("--log", default="/tmp/tessera-serve-soak.log", help="the server's stderr")
    a = ap.parse_args()

    server = None
    if a.url:
        host, _, port = a.url.removeprefix("http://").rstrip("/").rpartition(":")
        port, pid = int(port), a.pid
    else:
        server = common.ServerProcess(a.binary, a.model, a.threads, extra=a.server_args.split(),
                                      log_path=a.log)
        print(f"starting: {' '.join(server.cmd)}", flush=True)
        server.start()
        host, port, pid = server.host, server.port, server.pid
        print(f"ready in {server.load_s:.1f} s on port {port}", flush=True)

    rc = None
    try:
        positions = common.model_positions(a.model)
        plan = make_plan(a, positions)
        # the prompt texts: slices of the passage's ids of the planned lengths, one text per
        # (length, offset) pair drawn for the pool; each request takes the pool text whose length is
        # nearest its own
        tok = common.Tokenizer(host, port)
        try:
            base = tok.tokenize(common.PASSAGE * (2 + a.prompt_max // 100))
        except RuntimeError as e:
            print(f"note: {e}; prompts from vocab.json words", flush=True)
            base = None
        rng = random.Random(a.seed + 1)
        pool = {}
        lengths = sorted({p["prompt_len"] for p in plan})
        for n in rng.sample(lengths, min(a.prompts, len(lengths))) + [lengths[0], lengths[-1]]:
            off = rng.randrange(max(1, len(base) - n)) if base else 0
            pool[n] = tok.detokenize(base[off:off + n]) if base else common.vocab_prompt(a.model, n)
        pool_lengths = sorted(pool)
        for p in plan:
            n = min(pool_lengths, key=lambda m: (abs(m - p["prompt_len"]), m))
            p["prompt_len"] = n
            p["body"]["prompt"] = pool[n]
        streaming = sum(p["body"]["stream"] for p in plan)
        cuts = sum(p["disconnect_after"] is not None for p in plan)
        print(f"{len(plan)} requests ({streaming} streaming, {cuts} of them to disconnect), "
              f"{a.clients} clients, prompts {pool_lengths[0]}..{pool_lengths[-1]} tokens "
              f"({len(pool)} texts), max_tokens {a.gen_min}..{a.gen_max}, seed {a.seed}", flush=True)

        lock = threading.Lock()
        state = {"next": 0, "finished": 0, "completed": 0, "disconnected": 0, "errors": 0,
                 "gen_tokens": 0, "prompt_tokens": 0, "rss_100": None, "error_msgs": []}
        t0 = time.perf_counter()
        deadline = time.monotonic() + a.time_limit

        def client():
            while True:
                with lock:
                    if state["next"] >= len(plan) or time.monotonic() > deadline:
                        return
                    p = plan[state["next"]]
                    state["next"] += 1
                res = common.completion(host, port, p["body"], disconnect_after=p["disconnect_after"],
                                        timeout=a.request_timeout)
                problem = None if res["disconnected"] and not res["error"] else check(res, p)
                with lock:
                    state["finished"] += 1
                    if problem:
                        state["errors"] += 1
                        if len(state["error_msgs"]) < 20:
                            state["error_msgs"].append(f"request {p['i']} ({p['body']['stream'] and 'stream' or 'plain'}, "
                                                       f"prompt {p['prompt_len']}, max_tokens {p['body']['max_tokens']}): {problem}")
                    elif res["disconnected"]:
                        state["disconnected"] += 1
                    else:
                        state["completed"] += 1
                        state["gen_tokens"] += common.completion_tokens(res)
                        if res["usage"]:
                            state["prompt_tokens"] += res["usage"].get("prompt_tokens", 0)
                    done = state["finished"]
                    if done == 100:
                        state["rss_100"] = common.proc_memory_kib(pid).get("VmRSS")
                    if done % 100 == 0:
                        mem = common.proc_memory_kib(pid)
                        print(f"  {done}/{len(plan)} in {time.perf_counter() - t0:.0f} s: completed "
                              f"{state['completed']}, disconnected {state['disconnected']}, errors "
                              f"{state['errors']}; server RSS {common.mib(mem.get('VmRSS'))} MiB",
                              flush=True)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        time.sleep(1.0)  # the last disconnected rows leave at the server's next step
        rss_end = common.proc_memory_kib(pid)

        # still serving: /health and one more completion
        hs, _ = common.request(host, port, "GET", "/health")
        after = common.completion(host, port, {"prompt": pool[pool_lengths[0]], "max_tokens": 8,
                                               "temperature": 0}, timeout=a.request_timeout)
        alive = hs == 200 and after["error"] is None
        metrics = common.metrics_lines(host, port)
    finally:
        if server:
            rc = server.stop()

    s = state
    print()
    print(f"CPU: {common.cpu_name()}, {os.cpu_count()} cores; server threads {a.threads}"
          + (f"; `{' '.join(server.cmd)}`" if server else f"; server at {a.url}"))
    print(f"- requests: {s['finished']} of {len(plan)} in {wall:.0f} s"
          + (" (time limit reached)" if s["finished"] < len(plan) else ""))
    print(f"- completed {s['completed']}, deliberately disconnected {s['disconnected']}, "
          f"errors {s['errors']} (must be 0)")
    print(f"- tokens: {s['prompt_tokens']} prompt, {s['gen_tokens']} generated (completed requests)")
    for m in s["error_msgs"]:
        print(f"  error: {m}")
    r100, rend = s["rss_100"], rss_end.get("VmRSS")
    ratio = rend / r100 if r100 and rend else None
    print(f"- server RSS after the first 100 requests {common.mib(r100)} MiB, after all "
          f"{common.mib(rend)} MiB (peak {common.mib(rss_end.get('VmHWM'))} MiB): ratio "
          + (f"{ratio:.3f}" if ratio else "-") + " (must be <= 1.05: "
          + ("met" if ratio and ratio <= 1.05 else "NOT met") + ")")
    print(f"- after the soak: /health {hs}, a new completion "
          + ("answered" if after["error"] is None else f"failed: {after['error']}"))
    if server:
        print(f"- server exit code after SIGTERM: {rc}")
    print("\n/metrics at the end (tessera_*, buckets left out):\n```")
    print("\n".join(metrics))
    print("```")
    ok = s["errors"] == 0 and alive and ratio is not None and ratio <= 1.05 and s["finished"] == len(plan)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
