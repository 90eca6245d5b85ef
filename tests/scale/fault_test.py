#!/usr/bin/python3
"""Fault test of the replicated server (issue 17, point 2; CTest `scale_fault`).

tools/cluster.sh starts 2 `tessera serve` replicas of 1 thread on loopback with nginx
(deploy/nginx/tessera.conf) in front; 8 client threads send a fixed number of completion
requests through nginx, every other one streamed (`Accept: text/event-stream`, `"stream": true`).
When half of them have been answered, replica 1 is killed with SIGKILL and restarted with
`tools/cluster.sh restart 1` while the load goes on.

Each request ends as exactly one of:
  completed          200 with the right text (the temperature-0 answer a replica gives the prompt
                     alone); a stream ends with `data: [DONE]`; `retried` counts the completed ones
                     whose X-Tessera-Upstream names more than one replica (nginx tried another)
  failed-with-error  a stream the client sees fail: an HTTP error status (502 when no replica
                     could take it), an `error` event, or the connection closing before [DONE]
  lost               no HTTP answer at all, or none within --request-timeout seconds
  wrong              an answer with the wrong text

Checks: every non-streamed request completed, lost = 0, wrong = 0, the kill happened while
requests were in flight, and replica 1 answers again after its restart. Prints the counts and the
throughput before the kill (requests/s and generated tokens/s). bench/scale/fault_bench.py is
the full form: the same load on 1 and on 2 replicas, the throughput ratio.

    fault_test.py --tessera build/tools/tessera --model models/demo-dates [--requests 96]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(ROOT, "tools", "cluster.sh")

# Prompts of the demo model (dates -> ISO 8601); any text works for a gpt2 model.
DEMO_PROMPTS = [
    "1 May 2020", "the 26th of November 2026", "Thursday, November 26, 2026", "Nov 26, 2026",
    "26/11/2026", "3rd of March 1999", "Sat 1 Jan 2000", "July 4, 1976",
]


def free_port_base(count: int) -> int:
    """A port P such that P .. P+count-1 on 127.0.0.1 are free now (random in 20000..59999)."""
    rng = random.Random(os.getpid() ^ int(time.time()))
    for _ in range(200):
        base = rng.randrange(20000, 60000 - count)
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free range of loopback ports found")


class Cluster:
    """tools/cluster.sh with a private directory and free ports."""

    def __init__(self, binary: str, model: str, replicas: int, threads: int, workdir: str,
                 serve_args=()):
        self.env = dict(os.environ, TESSERA_CLUSTER_DIR=os.path.join(workdir, "cluster"))
        self.dir = self.env["TESSERA_CLUSTER_DIR"]
        self.binary, self.model = binary, model
        self.replicas, self.threads = replicas, threads
        self.serve_args = list(serve_args)
        self.port = None

    def sh(self, *args, check=True):
        r = subprocess.run([CLUSTER, *args], env=self.env, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"cluster.sh {' '.join(args)} failed ({r.returncode}):\n"
                               f"{r.stdout}{r.stderr}")
        return r

    def up(self):
        self.port = free_port_base(self.replicas + 1)
        args = ["up", str(self.replicas), "--model", self.model, "--threads", str(self.threads),
                "--port", str(self.port), "--binary", self.binary]
        if self.serve_args:
            args += ["--", *self.serve_args]
        self.sh(*args)

    def down(self):
        return self.sh("down", check=False)

    def replica_pid(self, i: int) -> int:
        with open(os.path.join(self.dir, f"replica-{i}.pid")) as f:
            return int(f.read().strip())

    def replica_port(self, i: int) -> int:
        return self.port + i

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()


def completion(port: int, prompt, max_tokens: int, stream: bool, timeout: float) -> dict:
    """One POST /v1/completions. Returns {"outcome": ok|error|lost, "text", "tokens",
    "upstream", "status", "why"}."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    headers = {"Content-Type": "application/json"}
    if stream:
        body["stream"] = True
        headers["Accept"] = "text/event-stream"
    res = {"outcome": "lost", "text": None, "tokens": 0, "upstream": "", "status": None, "why": ""}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        try:
            conn.request("POST", "/v1/completions", json.dumps(body), headers)
            r = conn.getresponse()
        except socket.timeout:
            res["why"] = "no answer in time"
            return res
        except (OSError, http.client.HTTPException) as e:
            res["why"] = f"no HTTP answer: {e!r}"
            return res
        res["status"] = r.status
        res["upstream"] = r.getheader("X-Tessera-Upstream", "")
        if r.status != 200:
            res["outcome"], res["why"] = "error", f"HTTP {r.status}: {r.read()[:200]!r}"
            return res
        if not stream:
            try:
                data = json.loads(r.read())
            except socket.timeout:
                res["why"] = "body not complete in time"
                return res
            except (OSError, http.client.HTTPException, ValueError) as e:
                res["outcome"], res["why"] = "error", f"bad body: {e!r}"
                return res
            res["text"] = data["choices"][0]["text"]
            res["tokens"] = data["usage"]["completion_tokens"]
            res["outcome"] = "ok"
            return res
        # A stream: data lines until [DONE].
        pieces, done = [], False
        try:
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                payload = line[6:]
                if payload == b"[DONE]":
                    done = True
                    break
                event = json.loads(payload)
                if "error" in event:
                    res["outcome"], res["why"] = "error", f"error event: {event['error']}"
                    return res
                choice = event["choices"][0]
                if choice.get("finish_reason") == "error":
                    res["outcome"], res["why"] = "error", "finish_reason error"
                    return res
                pieces.append(choice["text"])
                if choice.get("finish_reason") is None:
                    res["tokens"] += 1
        except socket.timeout:
            res["why"] = "stream stalled (no event in time)"
            return res
        except (OSError, http.client.HTTPException, ValueError) as e:
            res["outcome"], res["why"] = "error", f"stream broken: {e!r}"
            return res
        if not done:
            res["outcome"], res["why"] = "error", "stream ended without [DONE]"
            return res
        res["text"] = "".join(pieces)
        res["outcome"] = "ok"
        return res
    finally:
        conn.close()


def run_load(port: int, prompts: list, expected: dict | None, requests: int, clients: int,
             max_tokens: int, timeout: float, stream_every: int = 2, on_half=None) -> dict:
    """`requests` completions through `port` by `clients` threads; request i is streamed when
    i % stream_every == 1 (stream_every 0: none). When half are answered, on_half() runs in a
    thread of its own (the fault). Returns the per-request results and timings."""
    lock = threading.Lock()
    nxt = [0]
    results = [None] * requests
    answered = [0]
    half = requests // 2
    fault = {"thread": None, "t": None, "inflight": None, "tokens_before": 0}
    t_start = time.perf_counter()

    def worker():
        while True:
            with lock:
                i = nxt[0]
                if i >= requests:
                    return
                nxt[0] += 1
            stream = stream_every > 0 and i % stream_every == 1
            prompt = prompts[i % len(prompts)]
            t0 = time.perf_counter()
            r = completion(port, prompt, max_tokens, stream, timeout)
            r["index"], r["stream"], r["prompt"] = i, stream, prompt
            r["t0"], r["t1"] = t0 - t_start, time.perf_counter() - t_start
            if r["outcome"] == "ok" and expected is not None and r["text"] != expected[prompt]:
                r["outcome"], r["why"] = "wrong", f"text {r['text']!r} != {expected[prompt]!r}"
            results[i] = r
            with lock:
                answered[0] += 1
                if answered[0] == half and on_half is not None:
                    fault["t"] = time.perf_counter() - t_start
                    fault["inflight"] = nxt[0] - answered[0]
                    fault["tokens_before"] = sum(x["tokens"] for x in results if x is not None)
                    fault["thread"] = threading.Thread(target=on_half)
                    fault["thread"].start()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    if fault["thread"] is not None:
        fault["thread"].join()
    return {"results": results, "wall": wall, "fault": fault}


def summarize(load: dict) -> dict:
    rs = load["results"]
    c = {"requests": len(rs), "completed": 0, "retried": 0, "failed_with_error": 0, "lost": 0,
         "wrong": 0, "streamed": sum(1 for r in rs if r["stream"])}
    for r in rs:
        if r["outcome"] == "ok":
            c["completed"] += 1
            if "," in r["upstream"]:
                c["retried"] += 1
        elif r["outcome"] == "error":
            c["failed_with_error"] += 1
        elif r["outcome"] == "lost":
            c["lost"] += 1
        else:
            c["wrong"] += 1
    c["failed_non_streamed"] = sum(1 for r in rs if not r["stream"] and r["outcome"] != "ok")
    return c


def throughput(load: dict, until: float | None = None) -> tuple[float, float]:
    """(requests/s, generated tokens/s) of the requests answered up to `until` seconds after the
    start (all when None), over that time."""
    rs = [r for r in load["results"] if r["outcome"] == "ok" and (until is None or r["t1"] <= until)]
    span = until if until is not None else load["wall"]
    if not rs or span <= 0:
        return 0.0, 0.0
    return len(rs) / span, sum(r["tokens"] for r in rs) / span


def expected_answers(port: int, prompts: list, max_tokens: int, timeout: float) -> dict:
    """Each prompt's temperature-0 text from one replica, asked alone (non-streamed)."""
    out = {}
    for p in prompts:
        r = completion(port, p, max_tokens, False, timeout)
        if r["outcome"] != "ok":
            raise RuntimeError(f"reference answer for {p!r}: {r['why']}")
        out[p] = r["text"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", default=os.path.join(ROOT, "build", "tools", "tessera"),
                    help="the tessera binary (default build/tools/tessera)")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo-dates"),
                    help="model directory (default models/demo-dates)")
    ap.add_argument("--requests", type=int, default=96, help="requests in all (default 96)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--max-tokens", type=int, default=16, help="max_tokens per request")
    ap.add_argument("--request-timeout", type=float, default=60,
                    help="seconds without an answer after which a request counts as lost")
    args = ap.parse_args()
    if args.requests < 4 or args.clients < 1:
        ap.error("--requests must be at least 4, --clients at least 1")

    with tempfile.TemporaryDirectory(prefix="tessera-fault-") as work:
        cluster = Cluster(args.tessera, args.model, replicas=2, threads=1, workdir=work)
        with cluster:
            prompts = DEMO_PROMPTS
            expected = expected_answers(cluster.replica_port(2), prompts, args.max_tokens,
                                        args.request_timeout)
            # Warm-up through nginx (both replicas), not counted.
            run_load(cluster.port, prompts, expected, 8, 4, args.max_tokens,
                     args.request_timeout)
            killed = {}

            def fault():
                pid = cluster.replica_pid(1)
                os.kill(pid, signal.SIGKILL)
                killed["pid"], killed["at"] = pid, time.perf_counter()
                r = cluster.sh("restart", "1", check=False)
                killed["restart_rc"], killed["restart_out"] = r.returncode, r.stdout + r.stderr
                killed["restart_s"] = time.perf_counter() - killed["at"]

            load = run_load(cluster.port, prompts, expected, args.requests, args.clients,
                            args.max_tokens, args.request_timeout, on_half=fault)
            c = summarize(load)
            rps, tps = throughput(load, load["fault"]["t"])
            # Replica 1 answers again, directly and through nginx.
            after = completion(cluster.replica_port(1), prompts[0], args.max_tokens, False,
                               args.request_timeout)
            status = cluster.sh("status", check=False).stdout

    print(f"fault test: 2 replicas x 1 thread behind nginx, {args.clients} clients, "
          f"{c['requests']} requests ({c['streamed']} streamed), replica 1 (pid "
          f"{killed.get('pid')}) SIGKILLed at {load['fault']['t']:.2f} s with "
          f"{load['fault']['inflight']} requests in flight, restarted in "
          f"{killed.get('restart_s', float('nan')):.2f} s")
    print(f"before the kill: {rps:.1f} requests/s, {tps:.0f} tokens/s; all: {load['wall']:.2f} s")
    print(f"completed {c['completed']}, retried {c['retried']}, failed-with-error "
          f"{c['failed_with_error']}, lost {c['lost']}, wrong {c['wrong']}")
    for r in load["results"]:
        if r["outcome"] != "ok":
            kind = "stream" if r["stream"] else "plain"
            print(f"  request {r['index']} ({kind}, {r['t0']:.2f}-{r['t1']:.2f} s): "
                  f"{r['outcome']}: {r['why']} [upstream {r['upstream'] or '-'}]")
    print(status.rstrip())

    problems = []
    if killed.get("restart_rc") != 0:
        problems.append(f"restart of replica 1 failed: {killed.get('restart_out')}")
    if c["failed_non_streamed"]:
        problems.append(f"{c['failed_non_streamed']} non-streamed request(s) did not complete")
    if c["lost"]:
        problems.append(f"{c['lost']} request(s) lost")
    if c["wrong"]:
        problems.append(f"{c['wrong']} request(s) with a wrong text")
    if not load["fault"]["inflight"]:
        problems.append("no request was in flight at the kill (the test tested nothing)")
    if after["outcome"] != "ok" or after["text"] != expected[prompts[0]]:
        problems.append(f"replica 1 after its restart: {after['outcome']} {after['why']}")
    if c["completed"] + c["failed_with_error"] + c["lost"] + c["wrong"] != c["requests"]:
        problems.append("counts do not add up")
    for p in problems:
        print("FAIL:", p)
    print("fault test:", "FAILED" if problems else "OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
