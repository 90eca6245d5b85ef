#!/usr/bin/python3
"""Rewrites an fp32 ONNX graph the way ONNX Runtime's dynamic quantizer
(`onnxruntime.quantization.quantize_dynamic`, IntegerOps mode, int8 weights) emits it, with the
`onnx` Python package alone (Debian's python3-onnx; onnxruntime's Python package is not installed
here, only npm's onnxruntime-node):

    MatMul(x, W)              DynamicQuantizeLinear(x) -> x_u8, x_scale, x_zp   (one per x)
    (W a constant [K, N])  => MatMulInteger(x_u8, W_s8, x_zp, W_zp) -> int32
                              Cast(to FLOAT) -> Mul(., Mul(x_scale, W_scale)) -> the MatMul's output

W is quantized symmetrically to int8 per output column (W_scale[n] = max_k |W[k, n]| / 127,
W_zp = a [N] int8 zero tensor; `--per-tensor`: one scale and a scalar zero point, what
quantize_dynamic does without per_channel). A following bias Add is left as it is, as
quantize_dynamic leaves it. Gemm(x, B, C) with a constant 2-D B (transA 0; transB, alpha and a
constant C folded: W = B^T when transB, alpha folded into W_scale, beta * C added by an Add after
the Mul) is rewritten the same way; ONNX Runtime's own dynamic quantizer does not quantize Gemm
(its IntegerOps registry has MatMul, Conv, Attention, LSTM, Gather), `--ops MatMul` restricts the
rewrite to what it does. MatMuls with a non-constant B (attention's QK^T and PV) stay fp32.
ONNX Runtime (graphOptimizationLevel 'all') fuses DynamicQuantizeLinear + MatMulInteger + Cast +
Mul(s) back into its DynamicQuantizeMatMul / MatMulIntegerToFloat kernels.

    quantize_onnx.py IN.onnx OUT.onnx [--ops MatMul,Gemm] [--per-tensor] [--verify]

--verify runs both graphs in onnxruntime-node (bench/e2e/node_modules, `npm ci` there) on random
inputs (float ~ N(0, 1); int64 ids in [0, --max-id), `*mask*` ones, `*type*` zeros; every symbolic
dimension = --dim, a `batch` one = 1) and prints, per output, max |int8 - fp32| and max |fp32|.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def _const_tensors(graph: onnx.GraphProto) -> Dict[str, np.ndarray]:
    """Initializers and Constant nodes' values by name (numpy arrays, loaded lazily by the caller)."""
    out = {i.name: i for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = n.attribute[0].t
    return out


def quantize_weight(w: np.ndarray, per_column: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """w [K, N] fp32 -> (int8 [K, N], scale [N] or [], zero point int8 [N] or []): symmetric,
    scale = max |w| / 127 over each column (or the whole tensor), zero point 0."""
    w = w.astype(np.float32)
    amax = np.abs(w).max(axis=0) if per_column else np.array(np.abs(w).max(), dtype=np.float32)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale, np.zeros(scale.shape, dtype=np.int8)


def quantize_model(model: onnx.ModelProto, ops=("MatMul", "Gemm"),
                   per_column: bool = True) -> Tuple[onnx.ModelProto, dict]:
    """Rewrites `model` in place (see the module doc); returns it and counts."""
    g = model.graph
    consts = _const_tensors(g)
    new_nodes: List[onnx.NodeProto] = []
    new_inits: List[TensorProto] = []
    dq_of: Dict[str, Tuple[str, str, str]] = {}  # activation -> (u8, scale, zero point)
    stats = {"MatMul": 0, "Gemm": 0, "skipped": {}, "weights_fp32_bytes": 0, "weights_int8_bytes": 0}
    used = set()

    def skip(why: str) -> None:
        stats["skipped"][why] = stats["skipped"].get(why, 0) + 1

    def unique(base: str) -> str:
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    for n in g.node:
        used.update(n.output)
    used.update(i.name for i in g.initializer)
    used.update(i.name for i in g.input)

    for idx, node in enumerate(g.node):
        if node.op_type not in ops or node.op_type not in ("MatMul", "Gemm"):
            new_nodes.append(node)
            continue
        b = node.input[1]
        if b not in consts:
            skip(f"{node.op_type} with a non-constant B")
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(consts[b])
        if w.ndim != 2 or w.dtype != np.float32:
            skip(f"{node.op_type} with a {w.ndim}-D {w.dtype} B")
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha, beta, bias = 1.0, 1.0, None
        if node.op_type == "Gemm":
            if attrs.get("transA", 0):
                skip("Gemm with transA")
                new_nodes.append(node)
                continue
            if attrs.get("transB", 0):
                w = w.T
            alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
            if len(node.input) > 2 and node.input[2]:
                if node.input[2] in consts:
                    bias = numpy_helper.to_array(consts[node.input[2]]).astype(np.float32) * beta
                elif beta == 1.0:
                    bias = node.input[2]  # a computed C, added as it is
                else:
                    skip("Gemm with a computed C and beta != 1")
                    new_nodes.append(node)
                    continue
        base = node.name or f"{node.op_type}_{idx}"
        q, scale, zp = quantize_weight(w, per_column)
        scale = (scale * np.float32(alpha)).astype(np.float32)
        wq, ws, wz = unique(b + "_quantized"), unique(b + "_scale"), unique(b + "_zero_point")
        new_inits += [numpy_helper.from_array(q, wq), numpy_helper.from_array(scale, ws),
                      numpy_helper.from_array(zp, wz)]
        stats["weights_fp32_bytes"] += w.size * 4
        stats["weights_int8_bytes"] += q.size + scale.size * 4 + zp.size
        x = node.input[0]
        if x not in dq_of:
            xq, xs, xz = unique(x + "_quantized"), unique(x + "_scale"), unique(x + "_zero_point")
            new_nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [xq, xs, xz],
                                              unique(x + "_QuantizeLinear")))
            dq_of[x] = (xq, xs, xz)
        xq, xs, xz = dq_of[x]
        mmi = unique(node.output[0] + "_output_quantized")
        new_nodes.append(helper.make_node("MatMulInteger", [xq, wq, xz, wz], [mmi], unique(base + "_quant")))
        cast = unique(mmi + "_cast_output")
        new_nodes.append(helper.make_node("Cast", [mmi], [cast], unique(mmi + "_cast"), to=TensorProto.FLOAT))
        smul = unique(base + "_quant_scales_mul:0")
        new_nodes.append(helper.make_node("Mul", [xs, ws], [smul], unique(base + "_quant_scales_mul")))
        out = node.output[0] if bias is None else unique(node.output[0] + "_no_bias")
        new_nodes.append(helper.make_node("Mul", [cast, smul], [out], unique(base + "_quant_output_scale_mul")))
        if bias is not None:
            if isinstance(bias, np.ndarray):
                bname = unique(node.input[2] + "_scaled_by_beta") if beta != 1.0 else node.input[2]
                if beta != 1.0:
                    new_inits.append(numpy_helper.from_array(bias, bname))
            else:
                bname = bias
            new_nodes.append(helper.make_node("Add", [out, bname], [node.output[0]], unique(base + "_bias_add")))
        stats[node.op_type] += 1

    # Drop the fp32 weights nothing reads any more (a weight shared with another op stays).
    read = {i for n in new_nodes for i in n.input} | {o.name for o in g.output}
    kept = [i for i in g.initializer if i.name in read]
    stats["initializers_dropped"] = len(g.initializer) - len(kept)
    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    # Constant nodes whose value nothing reads any more.
    live = [n for n in g.node if not (n.op_type == "Constant" and n.output[0] not in read)]
    if len(live) != len(g.node):
        del g.node[:]
        g.node.extend(live)
    if not any(o.domain in ("", "ai.onnx") and o.version >= 11 for o in model.opset_import):
        raise ValueError("DynamicQuantizeLinear needs opset >= 11")
    return model, stats


def quantize_file(src: str, dst: str, ops=("MatMul", "Gemm"), per_column: bool = True) -> dict:
    t0 = time.time()
    model = onnx.load(src)
    model, stats = quantize_model(model, ops, per_column)
    tmp = dst + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, dst)
    stats["seconds"] = round(time.time() - t0, 1)
    stats["per_column"] = per_column
    stats["ops"] = list(ops)
    return stats


# ---------------------------------------------------------------------------------------------
# Verification in onnxruntime-node
# ---------------------------------------------------------------------------------------------
_VERIFY_JS = r"""
const fs = require('fs');
const ort = require('onnxruntime-node');
(async () => {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const opts = {executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: 1,
                interOpNumThreads: 1, executionMode: 'sequential'};
  const feeds = {};
  for (const [k, d] of Object.entries(spec.inputs)) {
    const b = fs.readFileSync(d.path);
    const ab = b.buffer.slice(b.byteOffset, b.byteOffset + b.length);
    feeds[k] = d.dtype === 'f32' ? new ort.Tensor('float32', new Float32Array(ab), d.shape)
                                 : new ort.Tensor('int64', new BigInt64Array(ab), d.shape);
  }
  const res = {};
  for (const which of ['fp32', 'int8']) {
    const s = await ort.InferenceSession.create(spec[which], opts);
    const r = await s.run(feeds);
    res[which] = r;
  }
  const out = {};
  for (const name of Object.keys(res.fp32)) {
    const a = res.fp32[name].data, b = res.int8[name].data;
    let d = 0, m = 0, nan = 0;
    for (let i = 0; i < a.length; ++i) {
      const x = Number(a[i]), y = Number(b[i]);
      if (!Number.isFinite(y)) ++nan;
      d = Math.max(d, Math.abs(x - y));
      m = Math.max(m, Math.abs(x));
    }
    out[name] = {max_abs_diff: d, max_abs_fp32: m, nonfinite: nan, n: a.length};
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.log(JSON.stringify({error: String(e && e.message ? e.message : e)})); process.exit(2); });
"""


def verify(src: str, dst: str, dim: int = 8, max_id: int = 1000, seed: int = 0) -> dict:
    """Runs src and dst in onnxruntime-node on the same random inputs; per output
    {max_abs_diff, max_abs_fp32, nonfinite, n}."""
    model = onnx.load(src, load_external_data=False)
    init = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {}
        for vi in model.graph.input:
            if vi.name in init:
                continue
            tt = vi.type.tensor_type
            shape = []
            for d in tt.shape.dim:
                if d.HasField("dim_value"):
                    shape.append(d.dim_value)
                else:
                    shape.append(1 if "batch" in d.dim_param else dim)
            path = os.path.join(tmp, vi.name + ".bin")
            if tt.elem_type == TensorProto.FLOAT:
                rng.standard_normal(shape, dtype=np.float32).tofile(path)
                dt = "f32"
            elif tt.elem_type == TensorProto.INT64:
                if "mask" in vi.name:
                    a = np.ones(shape, np.int64)
                elif "type" in vi.name:
                    a = np.zeros(shape, np.int64)
                else:
                    a = rng.integers(0, max_id, size=shape, dtype=np.int64)
                a.tofile(path)
                dt = "i64"
            else:
                raise ValueError(f"input {vi.name}: element type {tt.elem_type} not handled")
            inputs[vi.name] = {"path": path, "dtype": dt, "shape": shape}
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w", encoding="utf-8") as f:
            json.dump({"fp32": os.path.abspath(src), "int8": os.path.abspath(dst), "inputs": inputs}, f)
        js = os.path.join(tmp, "verify.js")
        with open(js, "w", encoding="utf-8") as f:
            f.write(_VERIFY_JS)
        env = dict(os.environ, NODE_PATH=os.path.join(HERE, "node_modules"))
        p = subprocess.run(["node", js, spec_path], capture_output=True, text=True, env=env, cwd=HERE)
        line = (p.stdout.strip().splitlines() or [""])[-1]
        try:
            return json.loads(line)
        except ValueError:
            return {"error": (p.stdout + p.stderr).strip()[-2000:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--ops", default="MatMul,Gemm", help="op types to rewrite (default MatMul,Gemm)")
    ap.add_argument("--per-tensor", action="store_true",
                    help="one weight scale per tensor (quantize_dynamic's default) instead of per column")
    ap.add_argument("--verify", action="store_true", help="run both graphs in onnxruntime-node")
    ap.add_argument("--dim", type=int, default=8, help="value of symbolic dims for --verify")
    ap.add_argument("--max-id", type=int, default=1000, help="int64 ids in [0, max-id) for --verify")
    args = ap.parse_args()
    stats = quantize_file(args.src, args.dst, tuple(o for o in args.ops.split(",") if o),
                          not args.per_tensor)
    print(json.dumps(stats))
    if args.verify:
        r = verify(args.src, args.dst, args.dim, args.max_id)
        print(json.dumps(r))
        if "error" in r:
            return 1
        bad = [k for k, v in r.items() if v["nonfinite"] or v["max_abs_diff"] > 0.1 * v["max_abs_fp32"]]
        if bad:
            print(f"int8 outputs off by more than 10% of max |fp32| (or non-finite): {bad}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
