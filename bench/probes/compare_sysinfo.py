#!/usr/bin/python3
"""Compare `tessera sysinfo --json` with the independent microbenchmark bench/probes/machine_probe.

Runs both (same thread count) and prints a markdown table: quantity, sysinfo, microbenchmark,
ratio sysinfo / microbenchmark, and whether they agree within 10 %. Run it on an idle machine
(`uptime`): both measure the CPU and memory, and another process's load moves either.

    bench/probes/compare_sysinfo.py --tessera build/tools/tessera \
        --probe build/bench/probes/machine_probe [--threads N] [--repeat R]

--repeat R runs both tools R times, alternating, and keeps each figure's highest value per tool:
on a shared machine another process's load only ever lowers these figures, so the highest of a
few runs is the one least disturbed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def run_json(cmd: list[str]) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def highest(old: dict, new: dict) -> dict:
    """new, with every number replaced by the larger of old's and new's."""
    out = dict(new)
    for k, v in new.items():
        w = old.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(w, (int, float)):
            out[k] = max(v, w)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tessera", default="build/tools/tessera")
    ap.add_argument("--probe", default="build/bench/probes/machine_probe")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeat", type=int, default=1, help="runs of each tool; highest kept")
    args = ap.parse_args()
    t = args.threads
    s: dict = {}
    m: dict = {}
    for _ in range(max(1, args.repeat)):
        s = highest(s, run_json([args.tessera, "sysinfo", "--json", "--threads", str(t)]))
        m = highest(m, run_json([args.probe, "--json", "--threads", str(t)]))

    # (quantity, unit, sysinfo value, microbenchmark value). sysinfo's all-thread peaks are
    # per core x threads (not measured with threads); the microbenchmark measures them.
    rows = [
        ("fp32 FMA peak, 1 core", "GFLOP/s", s["peak_gflops_per_core"], m["fp32_gflops_1t"]),
        (f"fp32 FMA peak, {t} threads (sysinfo: per core x {t})", "GFLOP/s", s["peak_gflops"],
         m["fp32_gflops_all"]),
        ("bf16 vdpbf16ps peak, 1 core", "GFLOP/s", s["peak_bf16_gflops_per_core"],
         m["bf16_gflops_1t"]),
        (f"bf16 vdpbf16ps peak, {t} threads (sysinfo: per core x {t})", "GFLOP/s",
         s["peak_bf16_gflops"], m["bf16_gflops_all"]),
        ("int8 vpdpbusd peak, 1 core", "GOP/s", s["peak_int8_gops_per_core"], m["int8_gops_1t"]),
        (f"int8 vpdpbusd peak, {t} threads (sysinfo: per core x {t})", "GOP/s",
         s["peak_int8_gops"], m["int8_gops_all"]),
        ("L1 read, 1 thread", "GB/s", s["l1_read_gbs_1t"], m["l1_read_gbs_1t"]),
        (f"L1 read, {t} threads", "GB/s", s["l1_read_gbs_all"], m["l1_read_gbs_all"]),
        ("L2 read, 1 thread", "GB/s", s["l2_read_gbs_1t"], m["l2_read_gbs_1t"]),
        (f"L2 read, {t} threads", "GB/s", s["l2_read_gbs_all"], m["l2_read_gbs_all"]),
        ("DRAM read, 1 thread", "GB/s", s["bandwidth_gbs_1t"], m["dram_read_gbs_1t"]),
        (f"DRAM read, {t} threads", "GB/s", s["bandwidth_gbs_all"], m["dram_read_gbs_all"]),
    ]
    print(f"CPU: {s['cpu_model']}; sysinfo: {s['threads']} kernel threads (isa {s['isa']}), "
          f"microbenchmark: {m['threads']} pinned threads; highest of {max(1, args.repeat)} run(s) "
          f"each; caches L1d {s['cache_bytes']['l1d']}"
          f" B, L2 {s['cache_bytes']['l2']} B, L3 {s['cache_bytes']['l3']} B; "
          f"sysinfo probes took up to {s.get('probe_seconds', 0):.2f} s; load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| quantity | unit | sysinfo | microbenchmark | ratio | within 10 % |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    bad = 0
    for name, unit, a, b in rows:
        if not a or b is None:  # not available on this CPU (sysinfo 0, microbenchmark null)
            ok = (not a) and b is None
            print(f"| {name} | {unit} | {a or 'n/a'} | {b if b is not None else 'n/a'} | - | "
                  f"{'n/a (both)' if ok else 'NO (one only)'} |")
            bad += not ok
            continue
        r = a / b
        ok = abs(r - 1) <= 0.10
        bad += not ok
        print(f"| {name} | {unit} | {a:.1f} | {b:.1f} | {r:.3f} | {'yes' if ok else 'no'} |")
    print(f"\n{len(rows) - bad} of {len(rows)} within 10 %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
