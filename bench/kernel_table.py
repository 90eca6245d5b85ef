#!/usr/bin/env python3
"""Runs Tessera's kernel benchmark suites and prints markdown tables.

Usage (from the repository root, after building with benchmarks):
  python3 bench/kernel_table.py                       # all suites, 5 repetitions, medians
  python3 bench/kernel_table.py --suite gemm --repetitions 3 --min-time 0.5
  python3 bench/kernel_table.py --suite gemm --filter '128x'   # extra regex on the names
  python3 bench/kernel_table.py --json-dir out/       # also keep each suite's raw JSON

Tables:
  gemm       shape, threads, Tessera GFLOP/s, oneDNN matmul GFLOP/s (prepacked weights),
             ratio, Tessera's fraction of peak (measured by `tessera sysinfo` on this machine, or
             --peak-per-core, x threads), Tessera blocked for a 32 KiB L1d (gemm_blocks/l1d32k:
             the effect of the cache-derived blocks), dnnl_sgemm GFLOP/s
  gemm_mem   M <= 4 with weights from memory: GB/s of weights, oneDNN, ratio, fraction of the
             DRAM read bandwidth measured in the same run (membw/dram_read at that thread count)
  lowp       (with gemm) bf16 and int8: Tessera beside oneDNN's same-precision matmul
             (bf16·bf16→f32, u8·s8→s32), % of the BF16 / INT8 dot-product peaks `tessera
             sysinfo` measures, beside Tessera fp32; and few rows from memory (GB/s, speed-up)
  attention  S, mask, threads, fused GFLOP/s, unfused GFLOP/s, ratio (and decode steps)
  rows       kernel, shape, threads, GB/s, fraction of the L2 read bandwidth measured in the
             same run (membw/l2_read at that thread count)
Every number is the median over --repetitions runs (Google Benchmark's aggregate). Above the
tables: the CPU and its limits as `tessera sysinfo --json` measures them, before any suite runs
(no benchmark thread alive).
"""
import argparse
import json
import os
import re
import subprocess
import sys

SUITES = ("gemm", "attention", "rows")


def run_suite(binary, repetitions, min_time, extra_filter, json_dir, name):
    cmd = [binary, "--benchmark_format=json", f"--benchmark_repetitions={repetitions}",
           "--benchmark_report_aggregates_only=true", f"--benchmark_min_time={min_time}"]
    if extra_filter:
        cmd.append(f"--benchmark_filter={extra_filter}")
    print(f"running: {' '.join(cmd)}", file=sys.stderr)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    if json_dir:
        os.makedirs(json_dir, exist_ok=True)
        with open(os.path.join(json_dir, f"bench_{name}.json"), "w") as f:
            f.write(out)
    data = json.loads(out)
    medians = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name", "median" if repetitions == 1 else "") != "median":
            continue
        key = b["run_name"] if "run_name" in b else b["name"]
        key = re.sub(r"/real_time$", "", key)
        medians[key] = b
    return data.get("context", {}), medians


def counter(b, name):
    if b is None or name not in b:
        return None
    return float(b[name])


def fmt(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def bandwidths(med, probe):
    out = {}
    for key, b in med.items():
        m = re.match(rf"membw/{probe}/threads:(\d+)$", key)
        if m:
            out[int(m.group(1))] = counter(b, "GB/s")
    return out


def gemm_tables(med, peak_per_core):
    rows, mem_rows = [], []
    dram = bandwidths(med, "dram_read")
    for key in med:
        m = re.match(r"gemm/tessera/(\d+x\d+x\d+)/threads:(\d+)$", key)
        if m:
            shape, threads = m.group(1), int(m.group(2))
            t = counter(med[key], "GFLOP/s")
            o = counter(med.get(f"gemm/onednn/{shape}/threads:{threads}"), "GFLOP/s")
            s = counter(med.get(f"gemm/dnnl_sgemm/{shape}/threads:{threads}"), "GFLOP/s")
            z4 = counter(med.get(f"gemm_blocks/l1d32k/{shape}/threads:{threads}"), "GFLOP/s")
            rows.append([shape, str(threads), fmt(t), fmt(o), fmt(ratio(t, o), 2),
                         fmt(100 * t / (peak_per_core * threads), 0) + " %", fmt(z4), fmt(s)])
        m = re.match(r"gemm_mem/tessera/(\d+x\d+x\d+)/threads:(\d+)$", key)
        if m:
            shape, threads = m.group(1), int(m.group(2))
            t = counter(med[key], "GB/s")
            o = counter(med.get(f"gemm_mem/onednn/{shape}/threads:{threads}"), "GB/s")
            bw = dram.get(threads)
            mem_rows.append([shape, str(threads), fmt(t), fmt(o), fmt(ratio(t, o), 2),
                             fmt(bw), fmt(None if bw is None else 100 * t / bw, 0) + " %"])
    out = []
    if rows:
        out.append("### GEMM (weights prepacked, L3/L2-resident), C[M,N] = A[M,K]·Wᵀ\n")
        out.append(table(["M×K×N", "threads", "Tessera GFLOP/s", "oneDNN matmul GFLOP/s",
                          "ratio", "Tessera % of peak",
                          "Tessera, Zen 4 blocks (32 KiB L1d) GFLOP/s", "dnnl_sgemm GFLOP/s"],
                         rows))
    if mem_rows:
        out.append("\n### GEMM, few rows, weights from memory (GB/s of weights streamed)\n")
        out.append(table(["M×K×N", "threads", "Tessera GB/s", "oneDNN GB/s", "ratio",
                          "DRAM read GB/s (same run)", "Tessera % of DRAM bw"], mem_rows))
    return "\n".join(out)


def lowp_tables(med, machine):
    """bf16 / int8 GEMMs beside fp32 and oneDNN's same-precision matmuls, % of measured peaks."""
    peaks = {"bf16": machine.get("peak_bf16_gflops_per_core", 0.0),
             "int8": machine.get("peak_int8_gops_per_core", 0.0)}
    rows, mem_rows = [], []
    dram = bandwidths(med, "dram_read")
    for key in med:
        m = re.match(r"gemm_lowp/(bf16|int8)/tessera/(\d+x\d+x\d+)/threads:(\d+)$", key)
        if m:
            t, shape, threads = m.group(1), m.group(2), int(m.group(3))
            g = counter(med[key], "GFLOP/s")
            o = counter(med.get(f"gemm_lowp/{t}/onednn/{shape}/threads:{threads}"), "GFLOP/s")
            f = counter(med.get(f"gemm/tessera/{shape}/threads:{threads}"), "GFLOP/s")
            peak = peaks[t] * threads
            rows.append([t, shape, str(threads), fmt(g), fmt(o), fmt(ratio(g, o), 2),
                         (fmt(100 * g / peak, 0) + " %") if peak else "-", fmt(f),
                         fmt(ratio(g, f), 2)])
        m = re.match(r"gemm_mem_lowp/(bf16|int8)/tessera/(\d+x\d+x\d+)/threads:(\d+)$", key)
        if m:
            t, shape, threads = m.group(1), m.group(2), int(m.group(3))
            g = counter(med[key], "GB/s")
            f = counter(med.get(f"gemm_mem/tessera/{shape}/threads:{threads}"), "GB/s")
            gf = counter(med[key], "GFLOP/s")
            ff = counter(med.get(f"gemm_mem/tessera/{shape}/threads:{threads}"), "GFLOP/s")
            bw = dram.get(threads)
            mem_rows.append([t, shape, str(threads), fmt(g), fmt(None if bw is None else 100 * g / bw, 0) + " %",
                             fmt(ratio(gf, ff), 2)])
    out = []
    if rows:
        rows.sort(key=lambda r: (r[0], int(r[1].split("x")[0]), r[1], int(r[2])))
        out.append("### bf16 / int8 GEMM (weights prepacked, L3/L2-resident; A converted from fp32 "
                   "inside Tessera's call, given converted to oneDNN)\n")
        out.append(table(["type", "M×K×N", "threads", "Tessera GFLOP/s (int8: GOP/s)",
                          "oneDNN same-precision matmul", "ratio", "Tessera % of BF16/INT8 peak",
                          "Tessera fp32 GFLOP/s", "× fp32"], rows))
    if mem_rows:
        mem_rows.sort(key=lambda r: (r[0], r[1], int(r[2])))
        out.append("\n### bf16 / int8 GEMM, few rows, weights from memory\n")
        out.append(table(["type", "M×K×N", "threads", "GB/s of weights", "% of DRAM bw",
                          "speed-up over fp32 (same shape)"], mem_rows))
    return "\n".join(out)


def attention_tables(med):
    rows, dec = [], []
    for key in med:
        m = re.match(r"attention/fused/S(\d+)/(causal|padded)/threads:(\d+)$", key)
        if m:
            s, mask, threads = m.group(1), m.group(2), m.group(3)
            f = counter(med[key], "GFLOP/s")
            u = counter(med.get(f"attention/unfused/S{s}/{mask}/threads:{threads}"), "GFLOP/s")
            rows.append([s, mask, threads, fmt(f), fmt(u), fmt(ratio(f, u), 2)])
        m = re.match(r"attention/fused/decode/S(\d+)/threads:(\d+)$", key)
        if m:
            b = med[key]
            dec.append([m.group(1), m.group(2), fmt(counter(b, "GFLOP/s"), 2),
                        fmt(float(b["real_time"]) / 1e3 if b["time_unit"] == "ns" else None, 1)])
    out = ["### Attention, 12 heads × 64, one sequence (fused vs Tessera's unfused gemm + softmax)\n",
           table(["S", "mask", "threads", "fused GFLOP/s", "unfused GFLOP/s", "fused / unfused"],
                 rows)]
    if dec:
        out.append("\n### Attention decode step (1 query, S cached keys)\n")
        out.append(table(["S", "threads", "GFLOP/s", "µs per step"], dec))
    return "\n".join(out)


def rows_tables(med):
    l2 = bandwidths(med, "l2_read")
    rows = []
    for key in med:
        m = re.match(r"rows/([a-z_]+)/(\d+x\d+)/threads:(\d+)$", key)
        if m:
            name, shape, threads = m.group(1), m.group(2), int(m.group(3))
            g = counter(med[key], "GB/s")
            bw = l2.get(threads)
            rows.append([name, shape, str(threads), fmt(g), fmt(bw),
                         fmt(None if bw is None else 100 * g / bw, 0) + " %"])
    return "\n".join(["### Row kernels, L2-resident\n",
                      table(["kernel", "rows×N", "threads", "GB/s", "L2 read GB/s (same run)",
                             "% of L2 bw"], rows)])


def machine_limits(build):
    """`tessera sysinfo --json` of this machine (measured), or {} when the CLI is missing."""
    exe = os.path.join(build, "tools", "tessera")
    if not os.path.exists(exe):
        return {}
    out = subprocess.run([exe, "sysinfo", "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def describe_machine(m):
    if not m:
        return "<!-- machine: unknown (build/tools/tessera not found) -->"
    parts = [f"CPU {m.get('cpu_model', '?')}", f"ISA {m.get('isa', '?')}",
             f"{m.get('cores', '?')} cores",
             f"L1d/L2/L3 {'/'.join(str(v >> 10) + ' KiB' for v in m.get('cache_bytes', {}).values())}",
             f"FP32 peak {m.get('peak_gflops_per_core', 0):.1f} GFLOP/s per core"]
    for key, label, unit in (("peak_bf16_gflops_per_core", "BF16 peak", "GFLOP/s per core"),
                             ("peak_int8_gops_per_core", "INT8 peak", "GOP/s per core"),
                             ("l2_read_gbs_1t", "L2 read", "GB/s (1 thread)"),
                             ("bandwidth_gbs_1t", "DRAM read", "GB/s (1 thread)"),
                             ("bandwidth_gbs_all", "DRAM read", f"GB/s ({m.get('threads', '?')} threads)")):
        if m.get(key):
            parts.append(f"{label} {m[key]:.1f} {unit}")
    return "Machine (measured by `tessera sysinfo`): " + "; ".join(parts) + "."


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="build directory (default: build)")
    ap.add_argument("--suite", choices=SUITES + ("all",), default="all")
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per repetition")
    ap.add_argument("--filter", default="", help="regex passed as --benchmark_filter")
    ap.add_argument("--peak-per-core", type=float, default=0.0,
                    help="fp32 FMA peak GFLOP/s per core (default: measured by `tessera sysinfo`)")
    ap.add_argument("--json-dir", default="", help="keep each suite's raw JSON here")
    args = ap.parse_args()
    suites = SUITES if args.suite == "all" else (args.suite,)
    machine = machine_limits(args.build)
    print(describe_machine(machine))
    peak = args.peak_per_core or machine.get("peak_gflops_per_core", 0.0)
    if peak <= 0:
        sys.exit("kernel_table: no FP32 peak: build build/tools/tessera or pass --peak-per-core")
    for name in suites:
        binary = os.path.join(args.build, "bench", f"bench_{name}")
        context, med = run_suite(binary, args.repetitions, args.min_time, args.filter,
                                 args.json_dir, name)
        print(f"\n<!-- bench_{name}: {context.get('date', '')}, host {context.get('host_name', '')}, "
              f"ISA {context.get('tessera_isa', '?')}, {context.get('num_cpus', '?')} CPUs, "
              f"{args.repetitions} repetitions x {args.min_time} s, medians -->\n")
        if name == "gemm":
            print(gemm_tables(med, peak))
            print()
            print(lowp_tables(med, machine))
        elif name == "attention":
            print(attention_tables(med))
        else:
            print(rows_tables(med))


if __name__ == "__main__":
    main()
