#!/usr/bin/python3
"""Busy-machine benchmark: the BERT-base-shaped nn.TransformerEncoder of e2e_encoder.py (B=1,
S=128, same model dir, ONNX file and input), Tessera and ONNX Runtime, each timed alone, at 1 and
2 threads, on the idle machine and with one other busy process (a spinner) running.

    /usr/bin/python3 bench/e2e/busy.py [--reps 7] [--threads 1,2] [--rep-timeout 60]

Method: one worker per engine and thread count (e2e_common.Worker), warm-ups first (the first
output of each engine is checked against PyTorch's; the PyTorch worker is closed right after).
Then --reps rounds; each round times every engine once idle and once busy (engine order and
idle/busy order rotating from round to round). During every repetition the other engine's worker
is parked (SIGSTOP of its process group; its CPU time is checked unchanged in /proc). The spinner
is `yes > /dev/null`, started once by this script in its own session (own autogroup, nice 0), kept
stopped (SIGSTOP) except during the busy repetitions, and always killed at the end (try/finally,
also on Ctrl-C or SIGTERM; it also dies with this script through PR_SET_PDEATHSIG). Its CPU time
is read before and after every busy repetition: a busy repetition during which it did not run is
reported. The workers keep nice 0 here (no autogroup -15, unlike the e2e scripts; --renice to set
it), so the spinner competes with them on equal terms. Each repetition has a time limit
(--rep-timeout); a worker that exceeds it is killed and its engine reported n/a.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import e2e_common as C  # noqa: E402
import e2e_encoder as E  # noqa: E402

ENGINES = ("tessera", "ort")


class Spinner(C.Proc):
    """`yes > /dev/null` in its own session, parked until a busy repetition."""

    def __init__(self):
        self.proc = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=C._die_with_parent)
        self.park()

    def kill(self) -> None:
        if self.proc is None:
            return
        self.unpark()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        C.log(f"spinner (pid {self.proc.pid}) stopped")
        self.proc = None


def main() -> int:
    ap = C.arg_parser(__doc__.split("\n")[0], reps=7, warmup=1)
    ap.set_defaults(engines=",".join(ENGINES), rep_timeout=60.0)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--renice", action="store_true",
                    help="give the workers autogroup nice -15 (root) as the e2e scripts do")
    ap.add_argument("--no-check", action="store_true",
                    help="skip the PyTorch worker (no output check)")
    args = ap.parse_args()
    args.no_renice = not args.renice
    engines = [e for e in args.engines.split(",") if e]
    if any(e not in ENGINES for e in engines):
        ap.error("--engines: tessera and/or ort")

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    host = C.machine_info(args)  # before any worker or the spinner exists
    spec = E.prepare(args, [args.batch])
    d = C.workdir(args, "encoder")
    spec_path = os.path.join(d, "spec-busy.json")
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)
    log_dir = os.path.join(d, "logs-busy")
    os.makedirs(log_dir, exist_ok=True)
    results = {"name": "busy", "started": C._utc(), "args": vars(args).copy(), "host": host,
               "park": not args.no_park, "runs": []}
    spinner = None
    try:
        spinner = Spinner()
        C.log(f"spinner: `yes > /dev/null`, pid {spinner.proc.pid}, parked")
        for threads in C.thread_list(args):
            results["runs"].append(run_threads(args, engines, threads, spec_path, log_dir, spinner))
    finally:
        if spinner is not None:
            spinner.kill()
    results["finished"] = C._utc()
    out_dir = os.path.join(args.scratch, "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"busy-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(markdown(results, engines, args))
    print(f"\nraw results: {path}")
    return 0


def run_threads(args, engines: List[str], threads: int, spec_path: str, log_dir: str,
                spinner: Spinner) -> dict:
    run = {"threads": threads, "checks": {}, "samples": {}, "spinner": [], "parked_cpu": [],
           "busy_seen": [], "errors": {}}
    workers: Dict[str, C.Worker] = {}
    try:
        outs = {e: os.path.join(os.path.dirname(spec_path), f"out-busy-{e}-t{threads}.bin")
                for e in list(engines) + ["pytorch"]}
        for p in outs.values():
            if os.path.exists(p):
                os.remove(p)
        replies = {}
        for e in (([] if args.no_check else ["pytorch"]) + engines):
            C.log(f"busy: starting {e} at {threads} thread(s)")
            workers[e] = C.Worker(e, spec_path, threads, args, log_dir)
            if workers[e].error:
                C.log(f"busy: {e} unavailable: {workers[e].error[:300]}")
            elif not args.no_park:
                workers[e].park()
        for wi in range(args.warmup):
            for e in workers:
                with C.bench_lock(args):
                    r, _, _ = C.timed_alone(workers, e, lambda: workers[e].request(
                        {"cmd": "run", "case": 0, **({"out": outs[e]} if wi == 0 else {})}),
                        not args.no_park)
                if wi == 0:
                    replies[e] = r
        if "pytorch" in workers:
            for e in engines:
                if "error" in replies.get(e, {"error": "no warm-up"}):
                    run["checks"][e] = {"error": replies.get(e, {}).get("error", "no warm-up")}
                elif "error" not in replies.get("pytorch", {"error": ""}):
                    run["checks"][e] = C.tensor_check(e, replies[e], replies["pytorch"], outs)
            workers.pop("pytorch").close()  # checks only: not alive during the timed reps
        run["info"] = {e: w.info for e, w in workers.items()}
        samples = {(e, ph): [] for e in engines for ph in ("idle", "busy")}
        for rep in range(args.reps):
            order = engines[rep % len(engines):] + engines[:rep % len(engines)]
            phases = ("idle", "busy") if rep % 2 == 0 else ("busy", "idle")
            for ph in phases:
                for e in order:
                    w = workers.get(e)
                    if w is None or w.error or "error" in replies.get(e, {}):
                        continue
                    spin_rec = {}

                    def once():
                        if ph == "busy":
                            if not spinner.alive():
                                return {"error": "spinner is not running"}
                            spinner.unpark()
                            time.sleep(0.05)  # let it take its share before the clock starts
                            s0, t0 = spinner.cpu(), time.perf_counter()
                        r = w.request({"cmd": "run", "case": 0})
                        if ph == "busy":
                            s1, t1 = spinner.cpu(), time.perf_counter()
                            spinner.park()
                            spin_rec.update(ticks=s1[0] - s0[0], ns=s1[1] - s0[1],
                                            wall_ns=int((t1 - t0) * 1e9))
                        return r

                    with C.bench_lock(args):
                        spinner.park()
                        r, seen, used = C.timed_alone(workers, e, once, not args.no_park,
                                                      args.quiet_wait)
                    run["busy_seen"].append(round(seen, 3))
                    run["parked_cpu"].append({"engine": e, "phase": ph, "others": used})
                    if spin_rec:
                        run["spinner"].append({"engine": e, **spin_rec})
                    if "error" in r:
                        C.log(f"busy: {e} {ph} at {threads} thread(s) failed: {r['error'][:300]}")
                        run["errors"][e] = r["error"]
                        continue
                    samples[(e, ph)].append(r["total_s"] * 1e3)
            C.log(f"busy: round {rep + 1}/{args.reps} at {threads} thread(s) done")
        run["samples"] = {f"{e}/{ph}": v for (e, ph), v in samples.items()}
        for e, w in workers.items():
            if w.error:
                run["errors"][e] = w.error
    finally:
        for w in workers.values():
            w.close()
    return run


def markdown(results: dict, engines: List[str], args) -> str:
    lab = C.LABEL
    lines = [f"### Busy machine: {E.TITLE}, one forward pass B={args.batch},S={args.seq} [ms]", "",
             C.machine_line(results["host"]), ""]
    spin = [s for run in results["runs"] for s in run["spinner"]]
    shares = [s["ns"] / s["wall_ns"] for s in spin if s["ns"] >= 0 and s["wall_ns"] > 0]
    idle_spins = [s for s in spin if s["ticks"] <= 0 and s["ns"] <= 0]
    spin_txt = (f"its CPU time advanced in {len(spin) - len(idle_spins)} of {len(spin)} busy "
                f"repetitions" + (f", median {100 * float(np.median(shares)):.0f} % of a core "
                                  f"(min {100 * min(shares):.0f} %)" if shares else ""))
    seen = [b for run in results["runs"] for b in run["busy_seen"]]
    seen_med, seen_max = (float(np.median(seen)), max(seen)) if seen else (0.0, 0.0)
    parked = C.method_line({"park": results["park"], "runs": results["runs"]}, engines)
    lines += [f"{results['started']}; median (min–max) of {args.reps} repetitions per engine, "
              f"threads and condition after {args.warmup} warm-up; each round times every engine "
              f"idle and busy, orders rotating. {parked} "
              f"Busy = one other process on the machine: `yes > /dev/null` in its own session "
              f"(nice 0; workers {'autogroup nice -15' if args.renice else 'nice 0'}), running "
              f"only during the busy repetitions; {spin_txt}. Before each repetition (spinner "
              f"stopped) the quiet-wait saw the machine median {seen_med:.2f} busy "
              f"(max {seen_max:.2f}; 0 = idle).", ""]
    lines += ["| engine | threads | idle [ms] | busy [ms] | busy / idle |", "|---|---|---|---|---|"]
    med = {}
    for run in results["runs"]:
        for e in engines:
            row = [lab[e], str(run["threads"])]
            ms = {}
            for ph in ("idle", "busy"):
                v = run["samples"].get(f"{e}/{ph}", [])
                if not v:
                    row.append("n/a")
                    continue
                s = C.stats(v)
                ms[ph] = s["median"]
                med[(e, run["threads"], ph)] = s["median"]
                row.append(f"{C.fmt(s['median'])} ({C.fmt(s['min'])}–{C.fmt(s['max'])})")
            row.append(f"{ms['busy'] / ms['idle']:.2f}" if len(ms) == 2 else "n/a")
            lines.append("| " + " | ".join(row) + " |")

    def check(a, b, what):
        if a in med and b in med:
            ok = med[a] <= med[b]
            return (f"- {what}: **{'yes' if ok else 'no'}** ({C.fmt(med[a])} ms vs "
                    f"{C.fmt(med[b])} ms, medians)")
        return f"- {what}: n/a"

    lines += ["", "Checks:", "",
              check(("tessera", 2, "busy"), ("tessera", 1, "busy"),
                    "Tessera 2 threads busy ≤ Tessera 1 thread busy"),
              check(("tessera", 2, "busy"), ("ort", 2, "busy"),
                    "Tessera 2 threads busy ≤ ONNX Runtime 2 threads busy")]
    for run in results["runs"]:
        parts = [f"{lab[e]}: " + ", ".join(f"{k} {C._short(v)}" for k, v in c.items())
                 for e, c in run["checks"].items()]
        if parts:
            lines.append(f"- output against PyTorch's, {run['threads']} thread(s): " + "; ".join(parts))
        for e, err in run["errors"].items():
            lines.append(f"- {lab[e]} at {run['threads']} thread(s) failed: "
                         f"{err.splitlines()[0][:200] if err else ''}")
    if idle_spins:
        lines.append(f"- **the spinner did not run** during {len(idle_spins)} busy repetition(s): "
                     f"those are not busy measurements")
    versions = {e: (i.get("ort") or i.get("isa") or "") for run in results["runs"]
                for e, i in run.get("info", {}).items() if i}
    lines += ["", "Engines: " + ", ".join(f"{lab[e]} {v}".strip() for e, v in versions.items())
              + ". ONNX Runtime: graphOptimizationLevel 'all', intraOpNumThreads = threads, "
              "interOpNumThreads 1, sequential. Tessera: kernels::set_num_threads(threads)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
