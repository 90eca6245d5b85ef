#!/usr/bin/env python3
"""`tessera serve` through a real HTTP client, on loopback (ctest `serve`; also in the
ThreadSanitizer stage of tools/test.sh).

    test_server.py TESSERA_BINARY API_MODELS_DIR DEMO_MODEL_DIR [TEST_NAME ...]

API_MODELS_DIR holds the random-weight gpt2 and bert fixtures of tests/api/make_api_models.py.
Each test starts its own server (--port 0, the port read from its "listening on" line) and stops
it with SIGTERM. Every wait is bounded (requests time out after 60 s, polls after 20 s), every
loop counted. Standard library only."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

BINARY, MODELS, DEMO = sys.argv[1], sys.argv[2], sys.argv[3]
GPT2 = os.path.join(MODELS, "gpt2")
BERT = os.path.join(MODELS, "bert")
TIMEOUT = 60


class Server:
    """A `tessera serve` process on a free port; stopped (SIGTERM) on exit of the with block."""

    def __init__(self, model, *args):
        self.proc = subprocess.Popen([BINARY, "serve", "--model", model, "--port", "0", "--threads", "2", *args],
                                     stderr=subprocess.PIPE, text=True)
        self.log = []
        self.port = None
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            if "listening on http://" in line:
                self.port = int(line.rsplit(":", 1)[1])
                break
        if self.port is None:
            self.proc.kill()
            raise AssertionError("the server did not start: " + "".join(self.log))
        self.reader = threading.Thread(target=self._drain_log, daemon=True)
        self.reader.start()
        for _ in range(400):  # ready within 20 s
            status, _ = self.get("/health")
            if status == 200:
                return
            time.sleep(0.05)
        raise AssertionError("the server did not become ready")

    def _drain_log(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)

    def request(self, method, path, body=None, headers=None, raw=None):
        c = self.conn()
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        c.request(method, path, body=data, headers=headers or {})
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
        return r.status, payload, dict(r.getheaders())

    def get(self, path, headers=None):
        try:
            s, p, _ = self.request("GET", path, headers=headers)
            return s, p
        except OSError:
            return 0, None

    def post(self, path, body, headers=None):
        s, p, _ = self.request("POST", path, body, headers)
        return s, p

    def metrics(self):
        s, text = self.get("/metrics")
        assert s == 200, s
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError("the server did not stop within 30 s of SIGTERM")
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def stream(server, body):
    """POST a streamed completion; returns (pieces by choice index, finish reasons, saw [DONE])."""
    c = server.conn()
    c.request("POST", "/v1/completions", body=json.dumps(dict(body, stream=True)))
    r = c.getresponse()
    assert r.status == 200, (r.status, r.read())
    assert r.getheader("Content-Type").startswith("text/event-stream")
    assert r.getheader("X-Accel-Buffering") == "no"  # a proxy in front passes events on at once
    pieces, finish, tails, done = {}, {}, {}, False
    for _ in range(100000):
        line = r.readline().decode()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line[len("data: "):]
        if data == "[DONE]":
            done = True
            break
        chunk = json.loads(data)
        assert chunk["object"] == "text_completion"
        (choice,) = chunk["choices"]
        i = choice["index"]
        if choice["finish_reason"] is not None:
            finish[i] = choice["finish_reason"]
            tails[i] = choice["text"]  # text of no token: an unfinished character's bytes
        else:
            pieces.setdefault(i, []).append(choice["text"])  # one chunk per token
    c.close()
    for i, t in tails.items():
        if t:
            pieces.setdefault(i, []).append(t)
            stream.tail_chunks += 1
    return pieces, finish, done


stream.tail_chunks = 0


def completion(server, body):
    s, p = server.post("/v1/completions", body)
    assert s == 200, (s, p)
    return p


def error_of(server, body, path="/v1/completions", status=400):
    s, p = server.post(path, body)
    assert s == status, (body, s, p)
    assert set(p["error"]) == {"message", "type", "param", "code"}, p
    return p["error"]


# ---------------------------------------------------------------------------------------------


def test_endpoints():
    with Server(GPT2) as srv:
        s, p = srv.get("/health")
        assert s == 200 and p == {"status": "ok"}, (s, p)
        s, p = srv.get("/v1/models")
        assert s == 200 and p["object"] == "list" and p["data"][0]["id"] == "gpt2", p
        assert p["data"][0]["dtype"] == "f32", p
        s, p = srv.post("/tokenize", {"content": "Hello world"})
        assert s == 200 and p == {"tokens": [15496, 995]}, p
        s, p = srv.post("/detokenize", {"tokens": [15496, 995]})
        assert s == 200 and p == {"content": "Hello world"}, p
        r = completion(srv, {"prompt": "Hello world", "max_tokens": 7, "temperature": 0})
        (choice,) = r["choices"]
        assert choice["index"] == 0 and choice["finish_reason"] in ("length", "stop"), r
        assert r["usage"]["prompt_tokens"] == 2, r
        assert r["usage"]["total_tokens"] == 2 + r["usage"]["completion_tokens"], r
        if choice["finish_reason"] == "length":
            assert r["usage"]["completion_tokens"] == 7, r
        # Prompts as an array (2 prompts x n = 2 choices), and as token ids.
        r = completion(srv, {"prompt": ["a b c", "Hello"], "n": 2, "max_tokens": 3, "temperature": 0.8,
                             "seed": 5})
        assert [c["index"] for c in r["choices"]] == [0, 1, 2, 3], r
        r2 = completion(srv, {"prompt": [15496, 995], "max_tokens": 7, "temperature": 0})
        assert r2["usage"]["prompt_tokens"] == 2
        assert r2["choices"][0]["text"] == choice["text"], (r2, choice)
        s, p = srv.get("/nope")
        assert s == 404 and "error" in p, (s, p)
        # A known path with the wrong method: 405 naming the allowed one.
        s, p, h = srv.request("GET", "/v1/completions")
        assert s == 405 and h.get("Allow") == "POST" and "error" in p, (s, p, h)
        s, p, h = srv.request("POST", "/metrics", {})
        assert s == 405 and h.get("Allow") == "GET" and "error" in p, (s, p, h)
    print("ok: health, models, tokenize, detokenize, completions (text, arrays, ids, n), 404, 405")


def test_streaming_equals_text():
    with Server(GPT2) as srv:
        for body in ({"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0},
                     {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0.9, "top_k": 40,
                      "seed": 7},
                     {"prompt": ["one", "two three"], "n": 2, "max_tokens": 6, "temperature": 1.1,
                      "seed": 3}):
            whole = completion(srv, body)
            pieces, finish, done = stream(srv, body)
            assert done, "no [DONE]"
            for c in whole["choices"]:
                joined = "".join(pieces.get(c["index"], []))
                assert joined == c["text"], (joined, c["text"])
                assert finish[c["index"]] == c["finish_reason"], (finish, c)
    print("ok: SSE chunks joined equal the non-streamed text (greedy, seeded top-k, 2 prompts x n=2)")


def eight_requests():
    words = "the of and to in is you that it he was for on are as with his they at be this".split()
    out = []
    for i in range(8):
        body = {"prompt": " ".join(words[: 1 + 3 * i]), "max_tokens": 4 + 6 * i}
        if i % 2 == 0:
            body["temperature"] = 0
        else:
            body.update(temperature=0.6 + 0.1 * i, seed=100 + i)
        if i == 3:
            body["top_k"] = 20
        if i == 5:
            body["top_p"] = 0.8
        if i == 6:
            body["stop"] = ["e"]
        if i == 7:
            body["repetition_penalty"] = 1.3
        out.append(body)
    return out


def test_batched_equals_alone():
    with Server(GPT2, "--max-batch", "16") as srv:
        bodies = eight_requests()
        alone = [completion(srv, b)["choices"][0] for b in bodies]
        together = [None] * len(bodies)

        def run(i):
            together[i] = completion(srv, bodies[i])["choices"][0]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        for i, (a, b) in enumerate(zip(alone, together)):
            assert b is not None, i
            assert a["text"] == b["text"] and a["finish_reason"] == b["finish_reason"], (i, a, b)
        steps = srv.metrics()["tessera_decode_steps_total"]
    print(f"ok: 8 concurrent requests (greedy and seeded sampling, top-k, top-p, stop, penalty; "
          f"prompts 1-22 words, 4-46 tokens) equal to each run alone ({int(steps)} decode steps in all)")


def test_disconnect_mid_stream():
    with Server(GPT2) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
        body = json.dumps({"prompt": "Hello", "max_tokens": 120, "temperature": 0, "stream": True})
        sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        seen = b""
        for _ in range(1000):
            seen += sock.recv(4096)
            if seen.count(b"data: ") >= 2:
                break
        assert seen.count(b"data: ") >= 2, seen
        sock.close()
        for _ in range(400):  # the slot frees within 20 s (at the next step after a failed write)
            m = srv.metrics()
            if m["tessera_running_sequences"] == 0 and m["tessera_kv_cache_bytes"] == 0:
                break
            time.sleep(0.05)
        assert m["tessera_running_sequences"] == 0 and m["tessera_kv_cache_bytes"] == 0, m
        # Still serving.
        r = completion(srv, {"prompt": "Hello", "max_tokens": 3, "temperature": 0})
        assert len(r["choices"]) == 1
    print("ok: a client that disconnects mid-stream frees its slot; the server goes on")


def test_queue_overflow():
    with Server(GPT2, "--max-batch", "1", "--max-queue", "1") as srv:
        # A runs (its first chunk read), B waits in the queue, C is refused.
        c = srv.conn()
        c.request("POST", "/v1/completions",
                  body=json.dumps({"prompt": "a b c d e f g h", "max_tokens": 118, "temperature": 0,
                                   "stream": True}))
        ra = c.getresponse()
        assert ra.status == 200
        ra.readline()
        result = {}

        def b():
            result["b"] = srv.post("/v1/completions", {"prompt": "x", "max_tokens": 100, "temperature": 0})

        tb = threading.Thread(target=b)
        tb.start()
        for _ in range(400):
            if srv.metrics()["tessera_queue_length"] >= 1 or "b" in result:
                break
            time.sleep(0.005)
        s, p, h = srv.request("POST", "/v1/completions", {"prompt": "y", "max_tokens": 5})
        rest = ra.read().decode()
        c.close()
        tb.join(TIMEOUT)
        assert s == 503, (s, p)
        assert h.get("Retry-After") == "1", h
        assert p["error"]["type"] == "server_busy", p
        assert "data: [DONE]" in rest
        assert result["b"][0] == 200, result
    print("ok: beyond --max-batch 1 and --max-queue 1: 503 with Retry-After; the running and the "
          "queued requests complete")


def test_bad_requests():
    with Server(GPT2, "--max-body-bytes", "4096") as srv:
        cases = [
            ({"prompt": "x", "bogus": 1}, "bogus"),
            ({"prompt": "x", "max_tokens": "5"}, "max_tokens"),
            ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
            ({"prompt": "x", "max_tokens": 200}, "max_tokens"),  # 1 + 200 > 128 positions
            ({"prompt": "x", "temperature": -1}, "temperature"),
            ({"prompt": "x", "temperature": "hot"}, "temperature"),
            ({"prompt": "x", "top_p": 1.5}, "top_p"),
            ({"prompt": "x", "top_k": 2.5}, "top_k"),
            ({"prompt": "x", "repetition_penalty": 0}, "repetition_penalty"),
            ({"prompt": "x", "n": 0}, "n"),
            ({"prompt": "x", "n": 17}, "n"),  # more sequences than --max-batch 16
            ({"prompt": "x", "stop": [1]}, "stop"),
            ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
            ({"prompt": "x", "stream": "yes"}, "stream"),
            ({"prompt": "x", "seed": -3}, "seed"),
            ({"prompt": []}, "prompt"),
            ({"prompt": [50257]}, "prompt"),
            ({"prompt": 42}, "prompt"),
            ({"max_tokens": 3}, "prompt"),
        ]
        for body, field in cases:
            e = error_of(srv, body)
            assert e["param"] == field, (body, e)
            assert e["type"] == "invalid_request_error", e
        s, p, _ = srv.request("POST", "/v1/completions", raw="{not json")
        assert s == 400 and "not valid JSON" in p["error"]["message"], p
        s, p, _ = srv.request("POST", "/v1/completions", raw="[1, 2]")
        assert s == 400, p
        assert error_of(srv, {"tokens": [50257]}, "/detokenize")["param"] == "tokens"
        assert error_of(srv, {"input": "hi"}, "/v1/embeddings")["param"] == "model"
        big = {"prompt": "x" * 5000, "max_tokens": 1}
        s, p, _ = srv.request("POST", "/v1/completions", big)
        assert s == 413 and "larger" in p["error"]["message"], (s, p)
        r = completion(srv, {"prompt": "still fine", "max_tokens": 2, "temperature": 0})
        assert r["usage"]["prompt_tokens"] == 2
        n = len(cases)
    print(f"ok: {n} bad completion bodies -> 400 naming the field; bad JSON, non-object -> 400; "
          "detokenize id out of range, embeddings on gpt2 -> 400; body over --max-body-bytes -> 413")


def test_api_key():
    with Server(GPT2, "--api-key", "sekret") as srv:
        assert srv.get("/health")[0] == 200
        s, p = srv.get("/v1/models")
        assert s == 401 and p["error"]["type"] == "authentication_error", (s, p)
        s, p = srv.get("/v1/models", headers={"Authorization": "Bearer wrong"})
        assert s == 401, (s, p)
        s, p = srv.post("/v1/completions", {"prompt": "x", "max_tokens": 1})
        assert s == 401, (s, p)
        s, p = srv.get("/v1/models", headers={"Authorization": "Bearer sekret"})
        assert s == 200, (s, p)
        s, p = srv.post("/v1/completions", {"prompt": "x", "max_tokens": 1},
                        headers={"Authorization": "Bearer sekret"})
        assert s == 200, (s, p)
    print("ok: --api-key: missing or wrong Bearer -> 401 (completions, models); right key -> 200; "
          "/health open")


def test_metrics_move():
    with Server(GPT2) as srv:
        before = srv.metrics()
        r = completion(srv, {"prompt": "Hello world again", "max_tokens": 9, "temperature": 0})
        tails = stream.tail_chunks
        pieces, _, _ = stream(srv, {"prompt": "Hello", "max_tokens": 4, "temperature": 0})
        # A stream's request is counted (requests_total, duration) once httplib has written its
        # last chunk and logged it, which may be just after the client read [DONE]: wait for
        # it, bounded (250 x 20 ms), then check the exact amounts.
        key = 'tessera_requests_total{endpoint="/v1/completions",code="200"}'
        dur = "tessera_request_duration_seconds_count"
        for _ in range(250):
            after = srv.metrics()
            if (after.get(key, 0) - before.get(key, 0) >= 2
                    and after[dur] - before.get(dur, 0) >= 2):
                break
            time.sleep(0.02)
        assert after[key] - before.get(key, 0) == 2, (before, after)
        assert after["tessera_prompt_tokens_total"] - before["tessera_prompt_tokens_total"] == 3 + 1
        gen = r["usage"]["completion_tokens"] + len(pieces[0]) - (stream.tail_chunks - tails)
        assert after["tessera_generated_tokens_total"] - before["tessera_generated_tokens_total"] == gen
        ttft = "tessera_time_to_first_token_seconds_count"
        assert after[ttft] - before.get(ttft, 0) == 2, (before.get(ttft), after[ttft])
        itl = "tessera_inter_token_latency_seconds_count"
        assert after[itl] - before.get(itl, 0) == gen - 2, (after[itl], gen)
        assert after[dur] - before.get(dur, 0) == 2
        for k in ("tessera_queue_length", "tessera_running_sequences", "tessera_kv_cache_bytes"):
            assert after[k] == 0, (k, after[k])
        assert after['tessera_time_to_first_token_seconds_bucket{le="+Inf"}'] == after[ttft]
    print("ok: /metrics: requests +2, prompt tokens +4, generated tokens +usage, TTFT +2, "
          "inter-token gaps +(tokens - 2), durations +2, gauges back to 0")


def test_timeout():
    with Server(GPT2, "--timeout", "0.001") as srv:
        e = error_of(srv, {"prompt": "x", "max_tokens": 100, "temperature": 0}, status=504)
        assert e["type"] == "timeout", e
        pieces, finish, done = stream(srv, {"prompt": "x", "max_tokens": 100, "temperature": 0})
        assert finish == {0: "timeout"} and done, (finish, done)
    print("ok: past --timeout: 504 (not streamed), finish_reason \"timeout\" (streamed)")


def test_demo_and_bert():
    with Server(DEMO) as srv:
        r = completion(srv, {"prompt": ["1 May 2020", "July 4, 1976"], "max_tokens": 16, "temperature": 0})
        texts = [c["text"] for c in r["choices"]]
        assert texts == ["2020-05-01", "1976-07-04"], texts
        assert [c["finish_reason"] for c in r["choices"]] == ["stop", "stop"], r
        pieces, finish, _ = stream(srv, {"prompt": "1 May 2020", "max_tokens": 16, "temperature": 0})
        assert "".join(pieces[0]) == "2020-05-01" and finish[0] == "stop", (pieces, finish)
    with Server(BERT) as srv:
        s, p = srv.post("/v1/embeddings", {"input": ["hello world", "a much longer sentence here"]})
        assert s == 200, p
        assert [d["index"] for d in p["data"]] == [0, 1]
        for d in p["data"]:
            v = d["embedding"]
            assert len(v) == 64 and abs(sum(x * x for x in v) - 1) < 1e-4, len(v)
        assert p["usage"]["prompt_tokens"] == p["usage"]["total_tokens"] > 0
        s1, p1 = srv.post("/v1/embeddings", {"input": "hello world"})
        assert p1["data"][0]["embedding"] == p["data"][0]["embedding"]
        e = error_of(srv, {"prompt": "x"})
        assert e["param"] == "model", e
        e = error_of(srv, {"input": [1, 2]}, "/v1/embeddings")
        assert e["param"] == "input", e
    print("ok: the demo (encoder-decoder) completes dates, streamed too; bert embeddings: unit "
          "vectors of 64, batch of 2 = each alone; completions on bert -> 400")


def test_sigterm_drain():
    srv = Server(GPT2)
    result = {}

    def long_request():
        result["r"] = srv.post("/v1/completions", {"prompt": ["a", "b c", "d e f", "g"], "n": 2,
                                                   "max_tokens": 120, "temperature": 0})

    t = threading.Thread(target=long_request)
    t.start()
    running = False
    for _ in range(400):
        if srv.metrics()["tessera_running_sequences"] > 0:
            running = True
            break
        time.sleep(0.005)
    srv.proc.send_signal(signal.SIGTERM)
    t.join(TIMEOUT)
    code = srv.proc.wait(timeout=30)
    s, p = result["r"]
    assert s == 200 and len(p["choices"]) == 8, (s, p)
    assert all(c["finish_reason"] in ("length", "stop") for c in p["choices"]), p
    assert code == 0, code
    refused = False
    try:
        srv.get("/health")
        refused = srv.get("/health")[0] == 0
    except OSError:
        refused = True
    assert refused
    log = "".join(srv.log)
    assert "SIGTERM: draining" in log and "stopped" in log, log
    print(f"ok: SIGTERM (request in flight: {running}): the running request completes (200, 8 "
          "choices), exit 0, new connections refused")


def test_dtype():
    """`tessera serve --dtype int8`: int8 GEMM weights, named by /v1/models; the same greedy text as
    `tessera --dtype int8 generate`."""
    with Server(GPT2, "--dtype", "int8") as srv:
        s, p = srv.get("/v1/models")
        assert s == 200 and p["data"][0]["dtype"] == "int8", p
        r = completion(srv, {"prompt": [15496, 995], "max_tokens": 5, "temperature": 0})
        text = r["choices"][0]["text"]
    cli = subprocess.run([BINARY, "--dtype", "int8", "generate", "--model", GPT2, "--max-new-tokens", "5",
                          "--threads", "2", "Hello world"], capture_output=True, text=True)
    assert cli.returncode == 0 and cli.stdout.rstrip("\n") == text, (cli.stdout, cli.stderr, text)
    assert any("int8 weights" in line for line in srv.log), srv.log
    print("ok: serve --dtype int8: /v1/models says int8, completions equal tessera --dtype int8 generate")


TESTS = [test_endpoints, test_dtype, test_streaming_equals_text, test_batched_equals_alone, test_disconnect_mid_stream,
         test_queue_overflow, test_bad_requests, test_api_key, test_metrics_move, test_timeout,
         test_demo_and_bert, test_sigterm_drain]


def main():
    wanted = sys.argv[4:]
    t0 = time.time()
    ran = 0
    for test in TESTS:
        if wanted and test.__name__ not in wanted:
            continue
        test()
        ran += 1
    print(f"test_server: {ran} tests passed in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
