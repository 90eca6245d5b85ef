"""What bench/serve/load.py and soak.py share: starting and stopping `tessera serve`, a streaming
HTTP client that timestamps every SSE chunk, the prompt builder, percentiles, the server's RSS.

Python 3.11 standard library only.
"""
from __future__ import annotations

import http.client
import json
import os
import platform
import re
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BINARY = os.path.join(ROOT, "build", "tools", "tessera")

# Plain prose (written for this benchmark) that the prompt builder tokenizes and cuts to length.
PASSAGE = (
    "The river ran low that autumn, and the boats that once carried grain from the northern "
    "farms sat on the mud with their ropes still tied. In the town the mill kept turning, slower "
    "each week, while the miller counted the sacks left in his store and wrote the numbers on the "
    "wall beside the door. Children walked the dry bed after school, looking for coins and old "
    "bottles, and the older people said they had not seen the water so far down since the year of "
    "the great fire. When the rain finally came in November it fell for nine days without a break, "
    "the river rose past the marks on the bridge, and by the end of the month the boats were "
    "moving again, loaded higher than anyone could remember, as if the whole valley had been "
    "waiting to send everything it had grown down to the sea at once. "
)


# ---------------------------------------------------------------- machine and process facts

def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def proc_memory_kib(pid: int | None) -> dict:
    """VmRSS and VmHWM (KiB) of a process from /proc/<pid>/status; {} when unreadable."""
    out = {}
    if pid is None:
        return out
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def mib(kib) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def percentile(values, p: float):
    """The p-th percentile (0..100), linear interpolation between closest ranks (numpy's
    default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def model_positions(model_dir: str) -> int | None:
    """n_positions (gpt2) / max_position_embeddings of the checkpoint's config.json."""
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
    except (OSError, ValueError):
        return None
    for key in ("n_positions", "n_ctx", "max_position_embeddings"):
        if isinstance(c.get(key), int):
            return c[key]
    return None


# ---------------------------------------------------------------- the server process

class ServerProcess:
    """`tessera serve` as a child process; its stderr (the request log) goes to a file."""

    def __init__(self, binary: str, model: str, threads: int, port: int = 0, extra=(),
                 log_path: str = "/tmp/tessera-serve-bench.log", host: str = "127.0.0.1"):
        self.cmd = [binary, "serve", "--model", model, "--host", host, "--port", str(port),
                    "--threads", str(threads)] + list(extra)
        self.log_path = log_path
        self.host, self.port = host, port
        self.proc = None
        self.load_s = None

    def start(self, timeout_s: float = 600) -> None:
        """Starts the server and waits until /health answers 200 (the model loaded); on failure
        stops it and raises RuntimeError with the log's tail."""
        self._log = open(self.log_path, "wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop(timeout_s=10)
            raise
        self.load_s = time.perf_counter() - t0

    def _wait_ready(self, timeout_s: float) -> None:
        pat = re.compile(rb"listening on http://([^\s/]+):(\d+)")
        deadline = time.monotonic() + timeout_s
        while True:  # the port it listens on (--port 0: any free port), from its log line
            self._check_alive()
            with open(self.log_path, "rb") as f:
                m = pat.search(f.read())
            if m:
                self.port = int(m.group(2))
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no 'listening on' line within {timeout_s} s\n{self.log_tail()}")
            time.sleep(0.05)
        while True:  # /health: 503 while loading, 200 when ready
            self._check_alive()
            try:
                status, _ = request(self.host, self.port, "GET", "/health", timeout=5)
            except OSError:
                status = None
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"/health not 200 within {timeout_s} s (last: {status})\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"`{' '.join(self.cmd)}` exited with {self.proc.returncode}\n"
                               f"{self.log_tail()}")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout_s: float = 60):
        """SIGTERM (the server drains, then exits 0); SIGKILL after timeout_s. The exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# ---------------------------------------------------------------- HTTP

def request(host, port, method, path, body=None, timeout=60):
    """One plain request: (status, parsed JSON or text)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw.decode("utf-8", "replace")
    finally:
        conn.close()


def completion(host, port, body: dict, disconnect_after: int | None = None, timeout: float = 600):
    """POST /v1/completions and time it from the client. Streaming (body["stream"]): reads the
    SSE chunk by chunk, timestamping each token chunk (a choice whose finish_reason is null);
    with disconnect_after=k closes the socket after k token chunks. Returns a dict:
      status, error (None or a message), t_send, t_first (first token chunk), t_end,
      token_times (list), chunks, finish (list of finish_reason per choice index), text (per
      index), usage (dict or None), done (saw [DONE]), disconnected (bool).
    Times are time.perf_counter() seconds."""
    res = {"status": None, "error": None, "t_send": None, "t_first": None, "t_end": None,
           "token_times": [], "chunks": 0, "finish": {}, "text": {}, "usage": None, "done": False,
           "disconnected": False}
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        data = json.dumps(body).encode()
        res["t_send"] = time.perf_counter()
        conn.request("POST", "/v1/completions", body=data,
                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        r = conn.getresponse()
        res["status"] = r.status
        if r.status != 200:
            raw = r.read()
            res["t_end"] = time.perf_counter()
            res["error"] = f"HTTP {r.status}: {raw[:300].decode('utf-8', 'replace')}"
            return res
        if not body.get("stream"):
            raw = r.read()
            res["t_end"] = time.perf_counter()
            j = json.loads(raw)
            for c in j.get("choices", []):
                res["text"][c.get("index", 0)] = c.get("text", "")
                res["finish"][c.get("index", 0)] = c.get("finish_reason")
            res["usage"] = j.get("usage")
            return res
        tokens = 0
        while True:
            line = r.readline()
            if not line:
                break  # the server closed the stream
            line = line.rstrip(b"\r\n")
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event:/id: fields
            now = time.perf_counter()
            payload = line[5:].strip()
            if payload == b"[DONE]":
                res["done"] = True
                break
            res["chunks"] += 1
            j = json.loads(payload)
            if "error" in j:
                res["error"] = f"error event: {json.dumps(j['error'])[:300]}"
                break
            if j.get("usage"):
                res["usage"] = j["usage"]
            for c in j.get("choices", []):
                i = c.get("index", 0)
                res["text"][i] = res["text"].get(i, "") + (c.get("text") or "")
                if c.get("finish_reason") is None:
                    res["token_times"].append(now)
                    tokens += 1
                    if res["t_first"] is None:
                        res["t_first"] = now
                else:
                    res["finish"][i] = c["finish_reason"]
            if disconnect_after is not None and tokens >= disconnect_after:
                res["disconnected"] = True
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                break
        res["t_end"] = time.perf_counter()
        if not res["done"] and not res["disconnected"] and res["error"] is None:
            res["error"] = "stream ended without data: [DONE]"
        return res
    except (OSError, http.client.HTTPException, ValueError) as e:
        res["t_end"] = time.perf_counter()
        res["error"] = f"{type(e).__name__}: {e}"
        return res
    finally:
        conn.close()


def completion_tokens(res) -> int:
    """Generated tokens of one finished request: usage.completion_tokens when the server sent
    usage, else the token chunks counted."""
    if res["usage"] and isinstance(res["usage"].get("completion_tokens"), int):
        return res["usage"]["completion_tokens"]
    return len(res["token_times"])


def metrics_lines(host, port, buckets: bool = False) -> list[str]:
    """The tessera_* sample lines of GET /metrics (histogram buckets left out unless asked)."""
    status, text = request(host, port, "GET", "/metrics")
    if status != 200 or not isinstance(text, str):
        return [f"(GET /metrics: HTTP {status})"]
    return [l for l in text.splitlines()
            if l.startswith("tessera_") and (buckets or "_bucket{" not in l)]


# ---------------------------------------------------------------- prompts of a known length

class Tokenizer:
    """The server's POST /tokenize ({"content": text} -> {"tokens": [ids]}) and POST /detokenize
    ({"tokens": [ids]} -> {"content": text}), as docs/server.md gives them."""

    def __init__(self, host, port):
        self.host, self.port = host, port

    def tokenize(self, text: str) -> list[int]:
        status, j = request(self.host, self.port, "POST", "/tokenize", {"content": text})
        if status != 200 or not isinstance(j, dict) or not isinstance(j.get("tokens"), list):
            raise RuntimeError(f"POST /tokenize: HTTP {status} {str(j)[:300]}")
        return j["tokens"]

    def detokenize(self, ids: list[int]) -> str:
        status, j = request(self.host, self.port, "POST", "/detokenize", {"tokens": ids})
        if status != 200 or not isinstance(j, dict) or not isinstance(j.get("content"), str):
            raise RuntimeError(f"POST /detokenize: HTTP {status} {str(j)[:300]}")
        return j["content"]


def passage_ids(tok: Tokenizer, n: int) -> list[int]:
    """At least n token ids of the passage (repeated as needed)."""
    ids = tok.tokenize(PASSAGE)
    return (ids * (1 + n // max(1, len(ids))))


def exact_prompt(tok: Tokenizer, n: int, offset: int = 0) -> tuple[str, list[int]]:
    """A text whose tokenization is exactly n tokens: a slice of the passage's ids, detokenized,
    checked by tokenizing it again (a slice whose text re-tokenizes differently is skipped)."""
    base = tok.tokenize(PASSAGE * (2 + (n + offset) // 100))
    for start in range(offset, offset + 32):
        if start + n > len(base):
            break
        text = tok.detokenize(base[start:start + n])
        ids = tok.tokenize(text)
        if len(ids) == n:
            return text, ids
    raise RuntimeError(f"no slice of the passage re-tokenizes to exactly {n} tokens")
