#!/usr/bin/python3
"""ONNX files of an RNNAttention module (tools/rnn_attention.py) for the ONNX Runtime column of
bench_rnn.py: the encoder and one decoder step, as a greedy loop driven from outside needs them.

  encoder.onnx  src_ids [B,S] int64, src_pad [B,S] uint8 (1 at padding)
                -> memory [B,S,2H], keys [B,S,A], s0 [1,B,H] (LSTM: and c0 [1,B,H])
  step.onnx     y_prev [B] int64, s [1,B,H] (LSTM: c [1,B,H]), memory, keys, src_pad
                -> logits [B,V], alpha [B,S], s_new (LSTM: c_new)

The encoder runs nn.GRU/nn.LSTM over the whole padded batch, not a packed sequence
(pack_padded_sequence has no usable ONNX export): the same outputs as RNNAttention.encode when no
source is padded, which is what the benchmark runs (checked on export). Additive attention only.

torch.onnx.export of Debian's torch 1.13 works without the `onnx` Python package (as
bench/e2e/e2e_models.py uses it).

    export_onnx.py MODEL_DIR OUT_DIR     (MODEL_DIR written by tools/export_torch.py)
"""
from __future__ import annotations

import json
import os
import sys
import warnings

import torch
from torch import nn

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

from rnn_attention import RNNAttention  # noqa: E402

OPSET = 14


class EncoderExport(nn.Module):
    def __init__(self, m: RNNAttention):
        super().__init__()
        self.m = m

    def forward(self, src_ids, src_pad):
        m = self.m
        out, state = m.encoder(m.src_embed(src_ids))
        memory = out * (1 - src_pad).unsqueeze(-1).to(out.dtype)  # zero at padding
        h_n = state[0] if m.is_lstm else state
        s0 = torch.tanh(m.bridge(torch.cat([h_n[-2], h_n[-1]], dim=-1))).unsqueeze(0)
        keys = m.attention.U(memory)
        if m.is_lstm:
            c_n = state[1]
            c0 = torch.tanh(m.bridge_c(torch.cat([c_n[-2], c_n[-1]], dim=-1))).unsqueeze(0)
            return memory, keys, s0, c0
        return memory, keys, s0


class StepExport(nn.Module):
    def __init__(self, m: RNNAttention):
        super().__init__()
        self.m = m

    def forward(self, y_prev, s, *rest):
        m = self.m
        if m.is_lstm:
            c, memory, keys, src_pad = rest
            state = (s, c)
        else:
            memory, keys, src_pad = rest
            state = s
        logits, alpha, state = m.step(y_prev, state, memory, keys, src_pad.to(torch.bool), None)
        if m.is_lstm:
            return logits, alpha, state[0], state[1]
        return logits, alpha, state


def load(model_dir: str) -> RNNAttention:
    from tessera_torch import load_state_dict_from_dir  # noqa: PLC0415

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    m = RNNAttention(**{k: v for k, v in cfg.items() if k != "model_type"}).eval()
    m.load_state_dict(load_state_dict_from_dir(model_dir))
    return m


def export(m: RNNAttention, out_dir: str, batch: int = 2, seq: int = 5) -> dict:
    if m.cfg["attention"] != "additive":
        raise ValueError("export_onnx.py exports additive attention only")
    os.makedirs(out_dir, exist_ok=True)
    paths = {"encoder": os.path.join(out_dir, "encoder.onnx"),
             "step": os.path.join(out_dir, "step.onnx")}
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, m.cfg["src_vocab_size"], (batch, seq), generator=g)
    pad = torch.zeros(batch, seq, dtype=torch.uint8)
    lstm = m.is_lstm
    enc_out = ["memory", "keys", "s0"] + (["c0"] if lstm else [])
    bs = {0: "batch", 1: "src_len"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 1.13's shape-inference notes on constants
        torch.onnx.export(EncoderExport(m), (src, pad), paths["encoder"],
                          input_names=["src_ids", "src_pad"], output_names=enc_out,
                          dynamic_axes={"src_ids": bs, "src_pad": bs, "memory": bs, "keys": bs,
                                        "s0": {1: "batch"}, "c0": {1: "batch"}},
                          opset_version=OPSET, do_constant_folding=True)
        memory, keys, state, src_pad, _ = m.encode(src, pad.to(torch.bool))
        mine = EncoderExport(m)(src, pad)
        s0 = state[0] if lstm else state
        err = max(float((mine[0] - memory).abs().max()), float((mine[2] - s0).abs().max()))
        if err > 1e-5:
            raise RuntimeError(f"unpacked encoder differs from RNNAttention.encode by {err}")
        y = torch.full((batch,), m.cfg["bos_id"], dtype=torch.long)
        st = (state[0], state[1]) if lstm else (state,)
        st_in = ["s"] + (["c"] if lstm else [])
        st_out = ["s_new"] + (["c_new"] if lstm else [])
        axes = {"y_prev": {0: "batch"}, "memory": bs, "keys": bs, "src_pad": bs,
                "logits": {0: "batch"}, "alpha": bs}
        for n in st_in + st_out:
            axes[n] = {1: "batch"}
        torch.onnx.export(StepExport(m), (y, *st, memory, keys, pad), paths["step"],
                          input_names=["y_prev", *st_in, "memory", "keys", "src_pad"],
                          output_names=["logits", "alpha", *st_out], dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True)
    return paths


def main() -> int:
    model_dir, out_dir = sys.argv[1:3]
    print(json.dumps(export(load(model_dir), out_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
