"""Coordinator of bench/e2e: starts one long-lived worker per engine (tessera_e2e, torch_worker.py,
ort_worker.js) per thread count, interleaves their repetitions one by one (rotating the order),
checks their outputs against PyTorch's, and prints a markdown table of medians (min-max) and ratios.

Method (as /work/shared/reference/peers-pytorch-ort.md): every timed repetition runs under
`flock /tmp/bench.lock` (so it never overlaps another lock holder's timing) after waiting up to
3 s for the machine to be < 15 % busy (the busy fraction seen is logged); workers run in their own
process session with autogroup nice -15 when allowed (root); one process per engine and thread
count, thread counts set explicitly (PyTorch's OpenBLAS separately from its OpenMP pool).

Each engine is timed alone: before every repetition (warm-ups included) the other engines'
workers are parked, SIGSTOP to their process groups, and the coordinator waits until /proc shows
every thread of theirs stopped; the timed worker is sent SIGCONT. A stopped thread cannot spin
(PyTorch's OpenBLAS/OpenMP threads and ONNX Runtime's pool spin after a call). Their CPU time
(/proc/PID/stat utime+stime, and /proc/PID/task/*/schedstat in ns) is read before and after each
timed repetition; the table header reports the largest change seen (0 = parked throughout).
Workers get PR_SET_PDEATHSIG=SIGKILL, so a coordinator killed while they are stopped does not
leave them behind; on exit (also Ctrl-C) they are continued and closed.

Engines (--engines): tessera, pytorch, ort (the default), and the reduced-precision variants
pytorch-int8[-onednn|-qnnpack] (torch_worker.py --int8: quantize_dynamic of every nn.Linear),
ort-int8 (ort_worker.js on the graphs quantize_onnx.py rewrites: DynamicQuantizeLinear +
MatMulInteger, int8 weights per column) and tessera-bf16 / tessera-int8 (tessera_e2e --dtype; also
from --tessera-dtypes f32,bf16,int8, which replaces `tessera` by one worker per dtype). Each is a
worker of its own, timed alone like the others; a reduced-precision engine's output is checked
against PyTorch's fp32 with its max |difference| reported, and the engine is dropped (the script
exits 1) only when its output is garbage: non-finite, or off by more than 10 % of max |output|.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ENGINES = ("tessera", "pytorch", "ort")
OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
LABEL = {"tessera": "Tessera", "pytorch": "PyTorch", "ort": "ONNX Runtime"}
TESSERA_DTYPES = ("f32", "bf16", "int8")
TORCH_QENGINES = ("onednn", "qnnpack")
GARBAGE_REL = 0.10  # a reduced-precision output off by more than this x max |reference| fails


def engine_base(engine: str) -> str:
    """tessera-bf16 -> tessera, pytorch-int8-qnnpack -> pytorch, ort-int8 -> ort."""
    return engine.split("-", 1)[0]


def engine_dtype(engine: str) -> str:
    """f32, bf16 or int8: the precision of the engine's weights and GEMMs."""
    parts = engine.split("-")
    return parts[1] if len(parts) > 1 else "f32"


def torch_qengine(engine: str, args) -> str:
    """pytorch-int8 -> --torch-qengine (default onednn); pytorch-int8-qnnpack -> qnnpack."""
    parts = engine.split("-")
    return parts[2] if len(parts) > 2 else getattr(args, "torch_qengine", "onednn")


def label(engine: str, args=None) -> str:
    base = LABEL.get(engine_base(engine), engine)
    dt = engine_dtype(engine)
    if dt == "f32":
        return base
    if engine_base(engine) == "pytorch":
        return f"{base} {dt} ({torch_qengine(engine, args)})"
    return f"{base} {dt}"


def engine_list(args) -> List[str]:
    """--engines, with `tessera` replaced by one engine per --tessera-dtypes entry (f32 ->
    tessera, bf16 -> tessera-bf16, ...); checked against the known names."""
    out: List[str] = []
    dtypes = [d for d in getattr(args, "tessera_dtypes", "f32").split(",") if d]
    for d in dtypes:
        if d not in TESSERA_DTYPES:
            raise SystemExit(f"--tessera-dtypes: unknown dtype {d!r} ({', '.join(TESSERA_DTYPES)})")
    for e in (e for e in args.engines.split(",") if e):
        if e == "tessera":
            out += ["tessera" if d == "f32" else f"tessera-{d}" for d in dtypes]
            continue
        ok = (e in ENGINES or e == "ort-int8" or e in ("tessera-bf16", "tessera-int8")
              or e == "pytorch-int8" or (e.startswith("pytorch-int8-") and
                                         e[len("pytorch-int8-"):] in TORCH_QENGINES))
        if not ok:
            raise SystemExit(f"--engines: unknown engine {e!r} (tessera, pytorch, ort, pytorch-int8"
                             f"[-{'|-'.join(TORCH_QENGINES)}], ort-int8, tessera-bf16, tessera-int8)")
        out.append(e)
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------------------------------
# Arguments and scratch
# ---------------------------------------------------------------------------------------------
def arg_parser(description: str, reps: int = 5, warmup: int = 1) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--scratch", default=os.environ.get("TESSERA_E2E_SCRATCH", "/tmp/tessera-e2e"),
                    help="where model dirs, ONNX files, inputs and results go (default "
                         "$TESSERA_E2E_SCRATCH or /tmp/tessera-e2e); never committed")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    ap.add_argument("--reps", type=int, default=reps, help=f"timed repetitions per engine (default {reps})")
    ap.add_argument("--warmup", type=int, default=warmup,
                    help=f"untimed repetitions per engine first; the first is checked (default {warmup})")
    ap.add_argument("--engines", default=",".join(ENGINES),
                    help="engines to run, comma-separated (default tessera,pytorch,ort); also "
                         "pytorch-int8 (quantize_dynamic on --torch-qengine), pytorch-int8-onednn, "
                         "pytorch-int8-qnnpack, ort-int8 (quantize_onnx.py's graphs), "
                         "tessera-bf16, tessera-int8")
    ap.add_argument("--tessera-dtypes", default="f32",
                    help="one Tessera worker per dtype, comma-separated from f32,bf16,int8 "
                         "(tessera_e2e --dtype D; default f32 = the `tessera` engine alone)")
    ap.add_argument("--torch-qengine", choices=TORCH_QENGINES, default="onednn",
                    help="quantized engine of pytorch-int8 (default onednn; Debian's torch has no "
                         "fbgemm)")
    ap.add_argument("--ort-int8-ops", default="MatMul,Gemm",
                    help="op types quantize_onnx.py rewrites for ort-int8 (default MatMul,Gemm; "
                         "MatMul alone = what onnxruntime's quantize_dynamic rewrites)")
    ap.add_argument("--tessera-bin", default=os.path.join(REPO, "build", "bench", "e2e", "tessera_e2e"),
                    help="the tessera_e2e driver (built with TESSERA_BUILD_BENCH=ON)")
    ap.add_argument("--torch-t2", choices=("omp", "blas"), default="omp",
                    help="PyTorch at 2 threads: 'omp' = torch intra-op 2 + OpenBLAS 2 + "
                         "OMP_WAIT_POLICY=PASSIVE (default), 'blas' = intra-op 1 + OpenBLAS 2")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    ap.add_argument("--regen", action="store_true", help="rebuild the model dirs and ONNX files")
    ap.add_argument("--no-lock", action="store_true", help="do not take /tmp/bench.lock per repetition")
    ap.add_argument("--no-renice", action="store_true", help="leave the workers' autogroup nice alone")
    ap.add_argument("--quiet-wait", type=float, default=3.0,
                    help="seconds to wait for the machine to be < 15%% busy before each repetition")
    ap.add_argument("--no-park", action="store_true",
                    help="do not SIGSTOP the other engines' workers during a repetition (the old "
                         "method: their spinning threads then compete with the timed engine)")
    ap.add_argument("--rep-timeout", type=float, default=600.0,
                    help="seconds one repetition may take before its worker is killed (default 600)")
    ap.add_argument("--tessera-cli", default=os.path.join(REPO, "build", "tools", "tessera"),
                    help="the tessera CLI, for `tessera sysinfo --json` once at the start")
    ap.add_argument("--sysinfo", default="",
                    help="a saved `tessera sysinfo --json` output to report instead of running it "
                         "(run_all.sh runs it once for the four scripts)")
    return ap


def thread_list(args) -> List[int]:
    return [int(t) for t in args.threads.split(",") if t.strip()]


def workdir(args, name: str) -> str:
    d = os.path.join(args.scratch, name)
    os.makedirs(d, exist_ok=True)
    return d


def prepared(d: str, args, build: Callable[[], None], what: str, recipe: int = 1) -> None:
    """Runs build() unless d/prepared.json says it already ran with this seed and recipe (bump
    `recipe` when what build() writes changes)."""
    stamp = os.path.join(d, "prepared.json")
    if not args.regen and os.path.exists(stamp):
        with open(stamp, encoding="utf-8") as f:
            stamp_data = json.load(f)
            if stamp_data.get("seed") == args.seed and stamp_data.get("recipe", 1) == recipe:
                log(f"reusing {what} in {d} (--regen to rebuild)")
                return
    if os.path.exists(stamp):
        os.remove(stamp)
    t0 = time.time()
    log(f"building {what} in {d} ...")
    build()
    with open(stamp, "w", encoding="utf-8") as f:
        json.dump({"seed": args.seed, "recipe": recipe, "built_s": time.time() - t0}, f)
    log(f"built {what} in {time.time() - t0:.0f} s")


def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------
def engine_command(engine: str, spec_path: str, threads: int, args) -> List[str]:
    base, dt = engine_base(engine), engine_dtype(engine)
    if base == "tessera":
        cmd = [args.tessera_bin, "--spec", spec_path, "--threads", str(threads)]
        return cmd if dt == "f32" else cmd + ["--dtype", dt]
    if base == "pytorch":
        cmd = ["/usr/bin/python3", os.path.join(HERE, "torch_worker.py"), "--spec", spec_path,
               "--threads", str(threads), "--t2", args.torch_t2]
        return cmd if dt == "f32" else cmd + ["--int8", torch_qengine(engine, args)]
    if base == "ort":
        cmd = ["node", os.path.join(HERE, "ort_worker.js"), spec_path, str(threads)]
        return cmd if dt == "f32" else cmd + ["onnx_int8"]
    raise ValueError(engine)


def engine_env(engine: str, threads: int, args) -> Dict[str, str]:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY",
              "OMP_PROC_BIND", "GOMP_SPINCOUNT"):
        env.pop(k, None)
    env["OMP_NUM_THREADS"] = str(threads)
    if engine_base(engine) == "pytorch":
        # Debian's torch calls the system libblas.so.3; the reference peers ran it on OpenBLAS
        # 0.3.21 (pthread). Use that build for this process alone when it is installed
        # (apt-get install libopenblas0-pthread), whatever the system's BLAS alternative is.
        if os.path.exists(os.path.join(OPENBLAS_DIR, "libblas.so.3")):
            env["LD_LIBRARY_PATH"] = OPENBLAS_DIR + (
                ":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env["OPENBLAS_NUM_THREADS"] = str(threads)
        if threads > 1:
            if args.torch_t2 == "omp":
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            else:
                env["OMP_NUM_THREADS"] = "1"
    return env


def torch_thread_label(threads: int, args) -> str:
    if threads == 1:
        return "1"
    if args.torch_t2 == "omp":
        return f"{threads} (OpenBLAS {threads}, intra-op {threads}, OMP_WAIT_POLICY=PASSIVE)"
    return f"{threads} (OpenBLAS {threads}, intra-op 1)"


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """preexec_fn of every child: SIGKILL when the coordinator dies (a stopped worker would
    otherwise stay stopped forever; SIGKILL reaches stopped processes)."""
    with contextlib.suppress(Exception):
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def proc_cpu(pid: int) -> tuple:
    """(utime+stime in clock ticks of the whole process, sum of its threads' run time in ns from
    /proc/PID/task/*/schedstat, or -1 where schedstat is missing)."""
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])
    ns = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns += int(f.read().split()[0])
    except OSError:
        ns = -1
    return ticks, ns


def thread_states(pid: int) -> List[str]:
    out = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    st = f.read()
                out.append(st[st.rindex(")") + 2])
    return out


class Proc:
    """A child process in its own session/process group that can be parked (SIGSTOP of the
    group, waiting until /proc shows every thread stopped) and continued."""
    proc: Optional[subprocess.Popen] = None
    parked = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def park(self) -> None:
        if not self.alive() or self.parked:
            return
        os.killpg(self.proc.pid, signal.SIGSTOP)
        self.parked = True
        t_end = time.time() + 5.0
        while time.time() < t_end:
            states = thread_states(self.proc.pid)
            if all(c in "Tt" for c in states):
                return
            time.sleep(0.001)
        raise RuntimeError(f"pid {self.proc.pid}: threads not stopped after SIGSTOP: "
                           f"{''.join(thread_states(self.proc.pid))}")

    def unpark(self) -> None:
        if self.proc is None or not self.parked:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)
        self.parked = False

    def cpu(self) -> tuple:
        try:
            return proc_cpu(self.proc.pid)
        except (OSError, AttributeError):
            return (0, 0)


class Worker(Proc):
    def __init__(self, engine: str, spec_path: str, threads: int, args, log_dir: str,
                 renice: Optional[bool] = None):
        self.engine = engine
        self.error: Optional[str] = None
        self.info: dict = {}
        self.timeout = getattr(args, "rep_timeout", 600.0)
        self.stderr_path = os.path.join(log_dir, f"{engine}-t{threads}.stderr")
        cmd = engine_command(engine, spec_path, threads, args)
        if engine_base(engine) == "tessera" and not os.path.exists(cmd[0]):
            self.proc = None
            self.error = f"{cmd[0]} not found (build with TESSERA_BUILD_BENCH=ON)"
            return
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, env=engine_env(engine, threads, args),
                                     cwd=HERE, text=True, bufsize=1, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        if (not args.no_renice) if renice is None else renice:
            with contextlib.suppress(OSError):  # needs root (a lower nice value)
                with open(f"/proc/{self.proc.pid}/autogroup", "w") as f:
                    f.write("-15")
        ready = self._read(timeout=max(self.timeout, 600.0))
        if not ready.get("ready"):
            self.error = ready.get("error", "no ready line")
            self.close()
        else:
            self.info = ready

    def _read(self, timeout: Optional[float] = None) -> dict:
        timeout = self.timeout if timeout is None else timeout
        # One reply line per request: nothing is left buffered between requests, so select on
        # the pipe tells whether the reply has started to arrive.
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.unpark()
            self.proc.kill()
            self.proc.wait()
            return {"error": f"{self.engine} worker: no reply within {timeout:.0f} s (killed)"}
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                tail = f.read()[-2000:]
            return {"error": f"{self.engine} worker exited (rc {self.proc.returncode}): {tail.strip()}"}
        return json.loads(line)

    def request(self, obj: dict) -> dict:
        if self.error:
            return {"error": self.error}
        self.unpark()
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        r = self._read()
        if "error" in r and self.proc.poll() is not None:
            self.error = r["error"]
        return r

    def close(self) -> None:
        if self.proc is None:
            return
        self.unpark()
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        self.proc = None


def timed_alone(workers: Dict[str, "Worker"], engine: str, fn: Callable[[], dict],
                park: bool = True, quiet_wait: float = 0.0) -> tuple:
    """Runs fn() (one request to workers[engine]) with every other worker parked. Returns
    (fn's reply, busy fraction seen by the quiet-wait, {other engine: (ticks, ns) of CPU time
    it used during fn})."""
    if park:
        for o, w in workers.items():
            if o != engine:
                w.park()
    workers[engine].unpark()
    busy = wait_quiet(quiet_wait) if quiet_wait > 0 else 0.0
    others = {o: w for o, w in workers.items() if o != engine and w.alive()}
    before = {o: w.cpu() for o, w in others.items()}
    r = fn()
    after = {o: w.cpu() for o, w in others.items()}
    used = {o: (after[o][0] - before[o][0],
                after[o][1] - before[o][1] if min(after[o][1], before[o][1]) >= 0 else -1)
            for o in others}
    return r, busy, used


# ---------------------------------------------------------------------------------------------
# Timing discipline
# ---------------------------------------------------------------------------------------------
def _cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v), idle


def wait_quiet(max_wait: float, threshold: float = 0.15, window: float = 0.1) -> float:
    """Waits until the machine was < threshold busy over `window`, at most max_wait s; returns the
    last busy fraction seen."""
    t_end = time.time() + max_wait
    busy = 0.0
    while True:
        t0, i0 = _cpu_times()
        time.sleep(window)
        t1, i1 = _cpu_times()
        busy = 1.0 - (i1 - i0) / max(1, t1 - t0)
        if busy < threshold or time.time() >= t_end:
            return busy


@contextlib.contextmanager
def bench_lock(args):
    if args.no_lock:
        yield
        return
    with open("/tmp/bench.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------
class Metric:
    def __init__(self, name: str, unit: str, fn: Callable[[dict], float], higher_is_better: bool):
        self.name, self.unit, self.fn, self.higher = name, unit, fn, higher_is_better


def stats(values: Sequence[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {}
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "min": float(a.min()), "max": float(a.max()), "q1": float(q1),
            "q3": float(q3), "n": int(a.size)}


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def run_comparison(name: str, title: str, spec: dict, metrics: List[Metric], args,
                   check: Callable[[str, dict, dict, str], dict], notes: Sequence[str] = ()) -> dict:
    """Runs every case of `spec` on every engine at every thread count; returns the results dict
    (also written to SCRATCH/results/NAME-<time>.json) after printing the markdown table.

    check(engine, reply, pytorch_reply, out_path_of(engine)) compares a warm-up reply with
    PyTorch's and returns what to report.
    """
    d = workdir(args, name)
    engines = engine_list(args)
    ort_int8 = prepare_int8_onnx(spec, args) if "ort-int8" in engines else None
    spec_path = os.path.join(d, "spec.json")
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
    log_dir = os.path.join(d, "logs")
    os.makedirs(log_dir, exist_ok=True)
    results = {"name": name, "title": title, "started": _utc(), "args": vars(args).copy(),
               "host": machine_info(args), "park": not args.no_park, "runs": []}
    if ort_int8 is not None:
        results["ort_int8"] = ort_int8
    for threads in thread_list(args):
        workers: Dict[str, Worker] = {}
        try:
            _run_threads(name, d, spec, spec_path, engines, threads, metrics, args, check,
                         log_dir, workers, results)
        finally:
            for w in workers.values():
                w.close()
    results["finished"] = _utc()
    out_dir = os.path.join(args.scratch, "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(markdown(results, metrics, engines, args, notes))
    print(f"\nraw results: {path}")
    if results.get("failed"):
        log(f"{name}: output check failed: {'; '.join(results['failed'])}")
    return results


def prepare_int8_onnx(spec: dict, args) -> dict:
    """spec["onnx_int8"]: every ONNX file of spec["onnx"] rewritten by quantize_onnx.py
    (NAME.int8.onnx next to it; rebuilt when the fp32 file, the ops or the recipe change, or with
    --regen). Returns {graph: quantize_onnx's counts}."""
    import quantize_onnx as Q
    ops = tuple(o for o in args.ort_int8_ops.split(",") if o)
    out, stats = {}, {}
    for key, src in spec["onnx"].items():
        dst = (src[:-len(".onnx")] if src.endswith(".onnx") else src) + ".int8.onnx"
        meta_path = dst + ".json"
        recipe = {"recipe": 1, "src_mtime": os.path.getmtime(src), "ops": list(ops), "per_column": True}
        meta = None
        if not args.regen and os.path.exists(dst) and os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            if meta.get("recipe") != recipe:
                meta = None
        if meta is None:
            log(f"quantize_onnx.py: {src} -> {dst} ({'+'.join(ops)}, int8 weights per column) ...")
            meta = {"recipe": recipe, "stats": Q.quantize_file(src, dst, ops, per_column=True)}
            with open(meta_path, "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=1)
        else:
            log(f"reusing {dst}")
        out[key] = dst
        stats[key] = meta["stats"]
    spec["onnx_int8"] = out
    return stats


def _run_threads(name, d, spec, spec_path, engines, threads, metrics, args, check, log_dir,
                 workers: Dict[str, "Worker"], results) -> None:
    """One thread count of run_comparison: starts the workers (into `workers`, which the caller
    closes), then for every case warm-ups and --reps rounds, each engine timed alone."""
    for e in engines:
        log(f"{name}: starting {e} at {threads} thread(s)")
        workers[e] = Worker(e, spec_path, threads, args, log_dir)
        if workers[e].error:
            log(f"{name}: {e} unavailable: {workers[e].error[:300]}")
        elif not args.no_park:
            workers[e].park()  # parked from the start: the next one loads alone
    info = {e: w.info for e, w in workers.items()}
    park = not args.no_park
    for ci, case in enumerate(spec["cases"]):
        run = {"threads": threads, "case": case["name"], "engines": {}, "checks": {},
               "busy": [], "parked_cpu": [], "info": info}
        replies: Dict[str, dict] = {}
        outs = {e: os.path.join(d, f"out-{e}-t{threads}-c{ci}.bin") for e in engines}
        for p in outs.values():
            if os.path.exists(p):
                os.remove(p)
        for wi in range(args.warmup):
            for e in engines:
                with bench_lock(args):
                    r, _, _ = timed_alone(workers, e, lambda: workers[e].request(
                        {"cmd": "run", "case": ci, **({"out": outs[e]} if wi == 0 else {})}), park)
                if wi == 0:
                    replies[e] = r
        for e in engines:
            if "error" in replies.get(e, {"error": "no warm-up"}):
                run["checks"][e] = {"error": replies.get(e, {}).get("error", "no warm-up")}
            elif "pytorch" in replies and "error" not in replies["pytorch"]:
                run["checks"][e] = check(e, replies[e], replies["pytorch"], outs)
                if run["checks"][e].get("garbage"):
                    # A reduced-precision engine whose output is garbage: not timed, run fails.
                    msg = f"{label(e, args)}, {case['name']}, {threads} thread(s): {run['checks'][e]['garbage']}"
                    log(f"{name}: output check failed: {msg}")
                    results.setdefault("failed", []).append(msg)
                    replies[e] = {"error": f"output check failed: {run['checks'][e]['garbage']}"}
        samples: Dict[str, List[dict]] = {e: [] for e in engines}
        for rep in range(args.reps):
            order = engines[rep % len(engines):] + engines[:rep % len(engines)]
            for e in order:
                if workers[e].error or "error" in replies.get(e, {}):
                    continue
                with bench_lock(args):
                    r, busy, used = timed_alone(workers, e, lambda: workers[e].request(
                        {"cmd": "run", "case": ci}), park, args.quiet_wait)
                run["busy"].append(round(busy, 3))
                run["parked_cpu"].append({"engine": e, "others": used})
                if "error" in r:
                    log(f"{name}: {e} failed: {r['error'][:300]}")
                    continue
                r.pop("tokens", None)
                samples[e].append(r)
        for e in engines:
            err = workers[e].error or replies.get(e, {}).get("error")
            if err or not samples[e]:
                run["engines"][e] = {"error": err or "no samples"}
                continue
            run["engines"][e] = {"raw": samples[e],
                                 "metrics": {m.name: stats([m.fn(s) for s in samples[e]]) for m in metrics}}
        results["runs"].append(run)
        log(f"{name}: {case['name']} at {threads} thread(s) done; busy before reps "
            f"median {np.median(run['busy']) if run['busy'] else 0:.2f}")


def _utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _host() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    # Cores from the kernel's topology: distinct (package, core) pairs of the online CPUs.
    cores = set()
    for c in range(os.cpu_count() or 0):
        t = f"/sys/devices/system/cpu/cpu{c}/topology"
        with contextlib.suppress(OSError, ValueError):
            with open(f"{t}/physical_package_id") as f1, open(f"{t}/core_id") as f2:
                cores.add((int(f1.read()), int(f2.read())))
    return {"cpu": cpu, "cores": os.cpu_count(), "physical_cores": len(cores) or None,
            "affinity": len(os.sched_getaffinity(0)), "kernel": os.uname().release,
            "node": shutil.which("node") or ""}


# The measured limits reported above every table; the last three exist only in newer builds of
# `tessera sysinfo` (printed when present).
SYSINFO_KEYS = (("peak_gflops_per_core", "peak fp32 {} GFLOP/s per core"),
                ("bandwidth_gbs_1t", "DRAM read {} GB/s at 1 thread"),
                ("bandwidth_gbs_all", "{} GB/s at all threads"),
                ("l2_read_gbs_1t", "L2 read {} GB/s at 1 thread"),
                ("peak_bf16_gflops_per_core", "peak bf16 {} GFLOP/s per core"),
                ("peak_int8_gops_per_core", "peak int8 {} GOP/s per core"))


def machine_info(args) -> dict:
    """The host, and `tessera sysinfo --json` run once here, before any worker is started (or
    read from --sysinfo FILE)."""
    host = _host()
    try:
        if getattr(args, "sysinfo", ""):
            with open(args.sysinfo, encoding="utf-8") as f:
                host["sysinfo"] = json.load(f)
            host["sysinfo_source"] = args.sysinfo
        elif os.path.exists(args.tessera_cli):
            log(f"tessera sysinfo --json (no engine worker alive) ...")
            env = dict(os.environ)
            for k in ("OMP_NUM_THREADS", "TESSERA_NUM_THREADS"):
                env.pop(k, None)
            out = subprocess.run([args.tessera_cli, "sysinfo", "--json"], capture_output=True,
                                 text=True, timeout=600, env=env, check=True)
            host["sysinfo"] = json.loads(out.stdout)
        else:
            host["sysinfo_error"] = f"{args.tessera_cli} not found"
    except (OSError, ValueError, subprocess.SubprocessError) as ex:
        host["sysinfo_error"] = str(ex).splitlines()[0][:200] if str(ex) else type(ex).__name__
    return host


def machine_line(host: dict) -> str:
    cores = host.get("physical_cores")
    per = (f" = {cores} core(s) x {host['cores'] // cores} thread(s)"
           if cores and host.get("cores") and host["cores"] % cores == 0 else "")
    line = (f"Machine: {host.get('cpu') or 'unknown CPU'}; kernel CPUs (hardware threads) "
            f"{host.get('cores')}{per}; Linux {host.get('kernel', '?')}. ")
    si = host.get("sysinfo")
    if si:
        parts = [fmt_s.format(fmt(float(si[k]))) for k, fmt_s in SYSINFO_KEYS
                 if isinstance(si.get(k), (int, float)) and si[k] > 0]
        src = f"from {host['sysinfo_source']}" if host.get("sysinfo_source") else \
            "run once before any engine worker started"
        line += (f"Measured by `tessera sysinfo --json` ({src}; ISA {si.get('isa', '?')}): "
                 + ", ".join(parts) + ".")
    else:
        line += f"`tessera sysinfo`: n/a ({host.get('sysinfo_error', 'not run')})."
    return line


def method_line(results: dict, engines: Sequence[str]) -> str:
    ticks, ns = 0, 0
    n = 0
    for run in results["runs"]:
        for rec in run.get("parked_cpu", []):
            for t, u in rec["others"].values():
                ticks, ns = max(ticks, t), max(ns, u)
                n += 1
    if not results.get("park", True):
        return ("**Engines not isolated** (--no-park, the old method): the other engines' workers "
                "stayed running during each timed repetition; the most CPU time one of them used "
                f"during a timed repetition: {ticks} ticks, {ns / 1e6:.1f} ms.")
    what = (f"largest CPU time a parked worker used during a timed repetition: {ticks} ticks, "
            f"{ns / 1e3:.0f} µs (over {n} worker-repetitions)" if n else "no other engine alive")
    return (f"Each engine timed alone: during every repetition the other engines' workers are "
            f"parked (SIGSTOP of their process groups, every thread seen stopped in /proc; "
            f"{what}).")


def markdown(results: dict, metrics: List[Metric], engines: List[str], args, notes) -> str:
    lines = [f"### {results['title']}", "",
             machine_line(results["host"]), "",
             f"{results['started']}; median (min–max) of {args.reps} interleaved repetitions per "
             f"engine (rounds rotating the engine order) after {args.warmup} warm-up. "
             + method_line(results, engines), ""]
    versions = {}
    for run in results["runs"]:
        for e, i in run["info"].items():
            if i:
                versions[e] = i.get("torch") or i.get("ort") or i.get("isa") or ""
                if i.get("blas"):
                    versions[e] += f" ({i['blas']})"
    head = ["workload", "threads"] + [f"{label(e, args)} {versions.get(e, '')}".strip() for e in engines]
    ratios = ratio_pairs(engines)
    head += [f"{label(t, args)} / {label(p, args)}" for t, p in ratios]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in metrics:
        for run in results["runs"]:
            row = [f"{run['case']}: {m.name} [{m.unit}]", str(run["threads"])]
            med = {}
            for e in engines:
                r = run["engines"].get(e, {})
                s = r.get("metrics", {}).get(m.name)
                if not s:
                    row.append("n/a")
                    continue
                med[e] = s["median"]
                row.append(f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})")
            for t, p in ratios:
                if t in med and p in med and med[p] > 0:
                    row.append(f"{med[t] / med[p]:.2f}")
                else:
                    row.append("n/a")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Ratios are of medians: for ms, Tessera's time / the peer's (below 1 = Tessera "
              "faster); for tokens/s, Tessera's rate / the peer's (above 1 = Tessera faster).",
              f"Threads: Tessera and ONNX Runtime use exactly that many; PyTorch at 2 threads = "
              f"{torch_thread_label(2, args)}. ONNX Runtime: graphOptimizationLevel 'all', "
              f"intraOpNumThreads = threads, interOpNumThreads 1, sequential."]
    lines += list(notes)
    lines += reduced_precision_notes(results, engines, args)
    lines += ["", "Checks (first warm-up run of each engine against PyTorch's):", ""]
    for run in results["runs"]:
        parts = []
        for e, c in run["checks"].items():
            parts.append(f"{label(e, args)}: " + ", ".join(f"{k} {_short(v)}" for k, v in c.items()))
        lines.append(f"- {run['case']}, {run['threads']} thread(s): " + "; ".join(parts))
    unavailable = {}
    for run in results["runs"]:
        for e, r in run["engines"].items():
            if "error" in r:
                unavailable[e] = r["error"]
    for e, err in unavailable.items():
        lines.append(f"- {label(e, args)} n/a: {err.splitlines()[0][:200] if err else ''}")
    return "\n".join(lines)


def ratio_pairs(engines: Sequence[str]) -> List[tuple]:
    """(Tessera engine, peer) columns: Tessera f32 against every peer (as before the
    reduced-precision engines); tessera-int8 against the int8 peers; tessera-bf16 against the
    f32 peers (no peer runs bf16)."""
    peers = [e for e in engines if engine_base(e) != "tessera"]
    out = []
    for t in (e for e in engines if engine_base(e) == "tessera"):
        dt = engine_dtype(t)
        want = None if dt == "f32" else ("f32" if dt == "bf16" else dt)
        out += [(t, p) for p in peers if want is None or engine_dtype(p) == want]
    return out


def reduced_precision_notes(results: dict, engines: Sequence[str], args) -> List[str]:
    """What the int8 / bf16 engines ran, under the table."""
    lines = []
    info = {}
    for run in results["runs"]:
        info.update({e: i for e, i in run["info"].items() if i})
    torch_int8 = [e for e in engines if engine_base(e) == "pytorch" and engine_dtype(e) == "int8"]
    if torch_int8:
        what = ", ".join(f"{info.get(e, {}).get('qengine', torch_qengine(e, args))} "
                         f"({info.get(e, {}).get('quantized_linears', '?')} Linear modules)"
                         for e in torch_int8)
        kind = {"gpt2": " GPT-2: every Conv1D and the tied LM head made nn.Linear first "
                        "(quantize_dynamic swaps nn.Linear only).",
                "encoder": " nn.TransformerEncoderLayer taken off its fused fast path (which fails "
                           "on quantized linear1/linear2); the attention's in_proj and out_proj "
                           "stay fp32 (quantize_dynamic leaves them).",
                "seq2seq": " Encoder layers off their fused fast path; the attentions' in_proj "
                           "stay fp32."}.get(results.get("name"), "")
        lines.append("PyTorch int8: torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, "
                     "dtype=torch.qint8) with torch.backends.quantized.engine = " + what +
                     ": int8 weights per tensor, symmetric; u8 activations quantized per call "
                     "(reduce_range)." + kind)
    if "ort-int8" in engines and results.get("ort_int8"):
        parts = []
        for g, st in results["ort_int8"].items():
            parts.append(f"{g}: {st.get('MatMul', 0)} MatMul + {st.get('Gemm', 0)} Gemm rewritten, "
                         f"{st.get('weights_fp32_bytes', 0) / 2**20:.0f} -> "
                         f"{st.get('weights_int8_bytes', 0) / 2**20:.0f} MiB of weights")
        lines.append("ONNX Runtime int8: the fp32 export rewritten by quantize_onnx.py as ONNX Runtime's "
                     "dynamic quantizer emits it (DynamicQuantizeLinear u8 -> MatMulInteger with int8 "
                     "weights, symmetric per column -> Cast -> Mul by the scales; ORT fuses them into "
                     "DynamicQuantizeMatMul); " + "; ".join(parts) + ".")
    if any(engine_dtype(e) != "f32" for e in engines):
        tokens = (" Greedy tokens may then differ from fp32's: the number of steps, and so the "
                  "work, stays the same." if results.get("name") in ("gpt2", "seq2seq") else "")
        lines.append(f"Reduced-precision outputs are compared with PyTorch's fp32 (max |difference| "
                     f"reported, rel = it / max |PyTorch output|); an engine fails only on garbage "
                     f"(non-finite or rel > {GARBAGE_REL:.0%}).{tokens}")
    return lines


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, str):
        return v.splitlines()[0][:160] if v else v
    return str(v)


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------
def _reduced_check(engine: str, a: np.ndarray, b: np.ndarray, out: dict, what: str = "") -> None:
    """For a reduced-precision engine: max |PyTorch output|, the relative difference, and
    `garbage` when the output is non-finite or off by more than GARBAGE_REL of max |output|."""
    if engine_dtype(engine) == "f32" or not a.size:
        return
    ref = float(np.max(np.abs(b)))
    diff = float(np.max(np.abs(a - b))) if np.all(np.isfinite(a)) else float("nan")
    out[f"{what}max_abs_ref"] = ref
    out[f"{what}rel"] = diff / ref if ref > 0 else diff
    if not np.all(np.isfinite(a)):
        out["garbage"] = f"{int(np.sum(~np.isfinite(a)))} non-finite {what or 'output '}values"
    elif diff > GARBAGE_REL * ref:
        out["garbage"] = f"{what}max_abs_diff {diff:.3g} > {GARBAGE_REL:.0%} of max |output| {ref:.3g}"


def tensor_check(engine: str, reply: dict, ref: dict, outs: dict) -> dict:
    """Max |difference| of the engine's output tensor against PyTorch's (fp32)."""
    out = {} if engine != "pytorch" else {"reference": True}
    if engine != "pytorch":
        a = np.fromfile(outs[engine], dtype=np.float32)
        b = np.fromfile(outs["pytorch"], dtype=np.float32)
        if a.shape != b.shape:
            return {"error": f"output has {a.size} values, PyTorch's {b.size}"}
        out["max_abs_diff"] = float(np.max(np.abs(a - b))) if a.size else 0.0
        _reduced_check(engine, a, b, out)
    for k in ("fused_encoder_layer_op",):
        if k in reply:
            out[k] = reply[k]
    return out


def tokens_check(engine: str, reply: dict, ref: dict, outs: dict) -> dict:
    """Greedy tokens equal to PyTorch's, position by position (and logits, where written)."""
    out = {}
    a, b = reply.get("tokens", []), ref.get("tokens", [])
    if engine != "pytorch":
        same = sum(1 for x, y in zip(a, b) if x == y)
        first_diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        out["tokens_equal"] = f"{same}/{len(b)}" + (f" (first differs at {first_diff})" if first_diff is not None else "")
        if os.path.exists(outs[engine]) and os.path.exists(outs["pytorch"]):
            x = np.fromfile(outs[engine], dtype=np.float32)
            y = np.fromfile(outs["pytorch"], dtype=np.float32)
            if x.size == y.size and x.size:
                out["last_logits_max_abs_diff"] = float(np.max(np.abs(x - y)))
                _reduced_check(engine, x, y, out, "last_logits_")
    else:
        out["tokens"] = len(a)
    if "fused_encoder_layer_op" in reply:
        out["fused_encoder_layer_op"] = reply["fused_encoder_layer_op"]
    return out
