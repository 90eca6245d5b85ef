#!/usr/bin/python3
"""Soak of `tessera serve` (issue 13, point 7): many requests of mixed lengths, some clients
disconnecting mid-stream; no error but the deliberate ones, no memory growth.

Starts `tessera serve` (or uses --url's), then --clients concurrent clients take --requests
requests from one seeded list, back to back: prompts of --prompt-min..--prompt-max tokens
(slices of a passage's ids from POST /tokenize, sent as ids, or as text made by /detokenize for
half of them), max_tokens --gen-min..--gen-max, half streaming and half not, half greedy and
half sampled (a seed each); --disconnect (10 %) of the streaming requests close the socket
after a random number of token chunks. Counts:

  completed      200, the right shape (a finish_reason stop/length per choice; streams end with
                 [DONE]; usage when not streamed; completion tokens <= max_tokens, fewer only
                 with stop)
  disconnected   the deliberate ones
  errors         anything else (must be 0)

Reads the server's VmRSS after the first 100 requests (--rss-after) and after all of them
(ratio must be <= 1.05), checks the server still answers (/health, one more completion) and that
the scheduler's gauges (queue, running sequences, KV bytes) are back to 0, prints progress
every 100 requests and the tessera_* lines of GET /metrics at the end. Stops issuing requests
after --time-limit seconds (then reports how many ran).

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
        plan.append({"i": i, "prompt_len": plen, "offset": rng.randrange(1 << 20),
                     "as_text": rng.random() < 0.5, "body": body, "disconnect_after": cut})
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
    ap.add_argument("--rss-after", type=int, default=100,
                    help="the RSS baseline: after this many requests (at most half of them)")
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
        # the prompts: slices of the passage's ids of the planned length at the planned offset,
        # sent as token ids, or for half of the requests as their text (/detokenize, made here,
        # up front; the server's tokenization of it may differ from the slice by a token or two)
        tok = common.Tokenizer(host, port)
        period = len(tok.tokenize(common.PASSAGE))
        base = common.passage_ids(tok, period + a.prompt_max)
        for p in plan:
            off = p["offset"] % period
            ids = base[off:off + p["prompt_len"]]
            p["body"]["prompt"] = tok.detokenize(ids) if p["as_text"] else ids
        lengths = [p["prompt_len"] for p in plan]
        streaming = sum(p["body"]["stream"] for p in plan)
        cuts = sum(p["disconnect_after"] is not None for p in plan)
        texts = sum(p["as_text"] for p in plan)
        print(f"{len(plan)} requests ({streaming} streaming, {cuts} of them to disconnect; "
              f"{texts} prompts as text, the others as token ids), {a.clients} clients, prompts "
              f"{min(lengths)}..{max(lengths)} tokens, max_tokens {a.gen_min}..{a.gen_max}, seed "
              f"{a.seed}", flush=True)

        rss_after = max(1, min(a.rss_after, len(plan) // 2))
        lock = threading.Lock()
        state = {"next": 0, "finished": 0, "completed": 0, "disconnected": 0, "errors": 0,
                 "gen_tokens": 0, "rss_100": None, "error_msgs": []}
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
                    done = state["finished"]
                    if done == rss_after:
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
        after = common.completion(host, port, {"prompt": base[:8], "max_tokens": 8,
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
    print(f"- generated tokens of the completed requests: {s['gen_tokens']}")
    for m in s["error_msgs"]:
        print(f"  error: {m}")
    r100, rend = s["rss_100"], rss_end.get("VmRSS")
    ratio = rend / r100 if r100 and rend else None
    print(f"- server RSS after the first {rss_after} requests {common.mib(r100)} MiB, after all "
          f"{common.mib(rend)} MiB (peak {common.mib(rss_end.get('VmHWM'))} MiB): ratio "
          + (f"{ratio:.3f}" if ratio else "-") + " (must be <= 1.05: "
          + ("met" if ratio and ratio <= 1.05 else "NOT met") + ")")
    print(f"- after the soak: /health {hs}, a new completion "
          + ("answered" if after["error"] is None else f"failed: {after['error']}"))
    gauges = {l.split()[0]: l.split()[-1] for l in metrics
              if l.split()[0] in ("tessera_queue_length", "tessera_running_sequences",
                                  "tessera_kv_cache_bytes")}
    freed = bool(gauges) and all(v in ("0", "0.0") for v in gauges.values())
    print(f"- the scheduler at the end: {', '.join(f'{k} {v}' for k, v in gauges.items()) or '-'} "
          f"({'every slot and cache freed' if freed else 'NOT empty'})")
    if server:
        print(f"- server exit code after SIGTERM: {rc}")
    print("\n/metrics at the end (tessera_*, buckets left out):\n```")
    print("\n".join(metrics))
    print("```")
    ok = s["errors"] == 0 and alive and freed and ratio is not None and ratio <= 1.05 and s["finished"] == len(plan)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
