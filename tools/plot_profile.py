#!/usr/bin/python3
"""Roofline chart of a `tessera profile --json` report (PNG, matplotlib Agg backend).

Each operator type (default) or node is a point at its arithmetic intensity (flop per byte of
compulsory traffic, x, log) and its achieved rate (GFLOP/s, y, log), under the machine's compute
roof (peak fp32 x threads) and bandwidth roof (DRAM read GB/s x intensity) from the report's
"machine" section. Point area grows with the share of time; labels name the points.

    tessera profile --model DIR --batch 1 --seq 128 --json > prof.json
    /usr/bin/python3 tools/plot_profile.py prof.json roofline.png [--level op|node] [--top 12]
        [--title TEXT]

Several reports may be given (comma-separated, e.g. a.json,b.json): their points share the chart,
marked per report (labels prefixed with each report's --labels entry, default the file name).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OP_COLORS = {"linear": "tab:blue", "attention": "tab:red", "layernorm": "tab:green",
             "embedding": "tab:purple", "softmax": "tab:orange", "add": "tab:brown",
             "activation": "tab:olive"}
MARKERS = ["o", "s", "^", "D", "v", "P"]


def load(path: str) -> dict:
    with open(path) as f:
        j = json.load(f)
    for k in ("machine", "ops", "nodes"):
        if k not in j:
            raise SystemExit(f"{path}: not a `tessera profile --json` report (no '{k}')")
    return j


def main() -> int:
    ap = argparse.ArgumentParser(description="Roofline chart of tessera profile --json output")
    ap.add_argument("reports", help="profile JSON file(s), comma-separated")
    ap.add_argument("out", help="PNG to write")
    ap.add_argument("--level", choices=("op", "node"), default="op")
    ap.add_argument("--top", type=int, default=12, help="nodes shown with --level node (by time)")
    ap.add_argument("--labels", default="", help="comma-separated names of the reports")
    ap.add_argument("--title", default="")
    args = ap.parse_args()

    paths = args.reports.split(",")
    reports = [load(p) for p in paths]
    names = args.labels.split(",") if args.labels else [
        os.path.splitext(os.path.basename(p))[0] for p in paths]
    if len(names) != len(reports):
        raise SystemExit("--labels needs one name per report")

    m = reports[0]["machine"]
    peak, bw = m["peak_gflops"], m["bandwidth_gbs"]
    ridge = peak / bw

    points = []  # (report index, label, op, intensity, gflops, share)
    for i, r in enumerate(reports):
        rows = r["ops"] if args.level == "op" else r["nodes"][: args.top]
        for row in rows:
            if row["intensity"] <= 0 or row["gflops"] <= 0:
                continue
            label = row["name"] if len(reports) == 1 else f"{names[i]}: {row['name']}"
            points.append((i, label, row["op"], row["intensity"], row["gflops"], row["share"]))
    if not points:
        raise SystemExit("no points to plot (no row with flops and bytes)")

    xs = [p[3] for p in points]
    ys = [p[4] for p in points]
    x_lo = 10 ** math.floor(math.log10(min(min(xs), ridge) / 2))
    # One more decade on the right: room for the labels of the rightmost points.
    x_hi = 10 ** (math.ceil(math.log10(max(max(xs), ridge) * 2)) + 1)
    y_lo = 10 ** math.floor(math.log10(min(ys) / 2))
    y_hi = 10 ** math.ceil(math.log10(peak * 2))

    fig, ax = plt.subplots(figsize=(11, 7), dpi=120)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    # Roofs.
    xr = [x_lo, ridge, x_hi]
    ax.plot(xr, [min(peak, x * bw) for x in xr], color="black", linewidth=2, zorder=1)
    roof_label = ax.text(ridge * 1.15, peak * 1.12, f"compute roof {peak:.0f} GFLOP/s "
            f"({m['peak_gflops_per_core']:.0f}/core x {m['threads']})", ha="left", va="bottom",
            fontsize=10)
    bx = max(x_lo * 2.2, 2.5 * y_lo / bw)  # where the DRAM roof is inside the plot
    angle = math.degrees(math.atan2(1, 1))  # slope 1 in log-log; axes are not square, so:
    p0 = ax.transData.transform((bx, bx * bw))
    p1 = ax.transData.transform((bx * 10, bx * 10 * bw))
    angle = math.degrees(math.atan2(p1[1] - p0[1], p1[0] - p0[0]))
    dram_label = ax.text(bx, bx * bw * 1.25, f"DRAM roof {bw:.1f} GB/s", rotation=angle,
            rotation_mode="anchor", ha="left", va="bottom", fontsize=10)
    ax.axvline(ridge, color="grey", linestyle=":", linewidth=1, zorder=0)
    ax.text(ridge * 1.05, y_lo * 1.3, f"ridge {ridge:.1f} flop/B", color="grey", fontsize=9)

    # Points first, then labels placed where they overlap no other label or point (candidate
    # offsets tried in order, nearest first).
    seen_ops = set()
    placed = []  # display-space boxes (x0, y0, x1, y1) of points and labels
    px_per_pt = fig.dpi / 72.0
    ordered = sorted(points, key=lambda p: -p[5])  # biggest share first: best label spots
    for i, label, op, x, y, share in ordered:
        color = OP_COLORS.get(op, "tab:gray")
        size = 40 + 900 * share
        ax.scatter([x], [y], s=size, color=color, marker=MARKERS[i % len(MARKERS)], alpha=0.75,
                   edgecolors="black", linewidths=0.6, zorder=3,
                   label=op if (op not in seen_ops and args.level == "node") else None)
        seen_ops.add(op)
        cx, cy = ax.transData.transform((x, y))
        r = math.sqrt(size) / 2 * px_per_pt
        placed.append((cx - r, cy - r, cx + r, cy + r))
    renderer = fig.canvas.get_renderer()
    for fixed in (roof_label, dram_label):
        e = fixed.get_window_extent(renderer)
        placed.append((e.x0, e.y0, e.x1, e.y1))

    def overlaps(b) -> bool:
        return any(b[0] < q[2] and q[0] < b[2] and b[1] < q[3] and q[1] < b[3] for q in placed)

    def candidates(r: float):
        """Label offsets in points around a marker of radius r points, nearest first."""
        out = []
        for up, down in ((r + 2, -(r + 12)), (r + 20, -(r + 30)), (r + 40, -(r + 50))):
            for dx, ha in ((r + 4, "left"), (-(r + 4), "right")):
                out += [(dx, up, ha), (dx, down, ha)]
        return out

    for i, label, op, x, y, share in ordered:
        bound = min(peak, x * bw)
        text = f"{label}  {y:.3g} GFLOP/s ({100 * y / bound:.0f}% of bound)"
        ann = None
        options = candidates(math.sqrt(40 + 900 * share) / 2)
        for dx, dy, ha in options:
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy),
                              ha=ha, va="center", fontsize=8.5,
                              bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85),
                              zorder=4)
            e = ann.get_window_extent(renderer)
            box = (e.x0, e.y0, e.x1, e.y1)
            inside = ax.get_window_extent(renderer)
            if not overlaps(box) and inside.x0 <= e.x0 and e.x1 <= inside.x1:
                placed.append(box)
                ann.remove()  # redrawn with a leader line to its point
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha,
                            va="center", fontsize=8.5,
                            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85),
                            arrowprops=dict(arrowstyle="-", color="dimgrey", lw=0.7,
                                            shrinkA=0, shrinkB=0), zorder=4)
                break
            ann.remove()
            ann = None
        if ann is None:  # nowhere free: first candidate anyway
            dx, dy, ha = options[0]
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha,
                        fontsize=8.5, zorder=4)

    ax.set_xlabel("arithmetic intensity (flop per byte of compulsory traffic)", fontsize=11)
    ax.set_ylabel("achieved GFLOP/s", fontsize=11)
    def describe(name: str, r: dict) -> str:
        return (f"{name} (batch {r['batch']}, seq {r['seq']}" +
                (f", {r['generate']} decode steps" if r.get("generate") else "") + ")")

    r0 = reports[0]
    if len(reports) == 1:
        names[0] = os.path.basename(os.path.normpath(r0["model"]))
    title = args.title or (
        "Roofline: " + " and ".join(describe(n, r) for n, r in zip(names, reports)) +
        f"\n{r0['threads']} threads, {r0['isa']}, per {'operator type' if args.level == 'op' else 'node'}")
    ax.set_title(title, fontsize=12)
    ax.grid(True, which="major", linestyle="-", alpha=0.3)
    ax.grid(True, which="minor", linestyle=":", alpha=0.15)
    if len(reports) > 1:
        for i, n in enumerate(names):
            ax.scatter([], [], marker=MARKERS[i % len(MARKERS)], color="white", edgecolors="black",
                       label=n)
    if len(reports) > 1 or args.level == "node":
        ax.legend(loc="lower right", fontsize=9)
    fig.text(0.01, 0.01, "point area ~ share of time; above the DRAM roof = data served from cache",
             fontsize=8, color="grey")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out} ({len(points)} points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
