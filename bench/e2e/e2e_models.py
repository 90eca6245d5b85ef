"""The PyTorch side of bench/e2e: the four models, their KV-cache decoding, their ONNX exports.

Each model is built with random (seeded) weights, written as a Tessera model directory, and
exported to ONNX from the same module, so that Tessera, PyTorch and ONNX Runtime run the same
weights. The PyTorch baselines (torch_worker.py) and the ONNX exports call the same functions
(``s2s_decode_step``, ``GPT2LMHead.forward``), so the two peers compute the same graph.

A  encoder    nn.TransformerEncoder, BERT-base shape (tools/make_bert_base.py writes the dir)
B  seq2seq    tessera_torch.TokenTransformer, "Attention Is All You Need" base + embeddings
C  causal_lm  a minimal GPT-2 (Hugging Face tensor names, Conv1D [in, out] weights)
D  bert       a minimal BertModel (Hugging Face tensor names)
"""
from __future__ import annotations

import copy
import json
import math
import os
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(REPO, "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

import safetensors_io  # noqa: E402
from export_torch import export_model  # noqa: E402
from tessera_torch import TokenTransformer, load_state_dict_from_dir, load_token_model  # noqa: E402

OPSET = 14  # Trilu (causal mask) needs 14; the reference peers' exports used 14 too
Past = List[Tuple[torch.Tensor, torch.Tensor]]  # per layer (key, value), each [B, H, T, Dh]


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _heads(x: torch.Tensor, nhead: int) -> torch.Tensor:
    """[B, T, E] -> [B, H, T, E/H]."""
    b, t, e = x.shape
    return x.reshape(b, t, nhead, e // nhead).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """[B, H, T, Dh] -> [B, T, H*Dh]."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def _attend(q, k, v, additive_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh) + mask) v; q [B,H,T,Dh], k/v [B,H,S,Dh] -> [B,H,T,Dh]."""
    s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if additive_mask is not None:
        s = s + additive_mask
    return torch.matmul(torch.softmax(s, dim=-1), v)


def _no_fast_path(module: nn.Module) -> nn.Module:
    """A copy whose encoder layers take the ordinary path (the fused
    aten::_transformer_encoder_layer_fwd has no ONNX symbolic); same maths."""
    m = copy.deepcopy(module)
    for layer in m.modules():
        if isinstance(layer, nn.TransformerEncoderLayer):
            layer.activation_relu_or_gelu = 0
    return m.eval()


def _onnx_export(module, args, path, input_names, output_names, dynamic_axes) -> None:
    tmp = path + ".tmp"
    # With grad enabled (and parameters requiring it), nn.MultiheadAttention and the encoder
    # layers stay off their fused fast paths, which have no ONNX symbolics.
    with torch.enable_grad():
        torch.onnx.export(module, args, tmp, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True)
    os.replace(tmp, path)


# =============================================================================================
# A. BERT-base-shaped nn.TransformerEncoder (the `transformer` family, encoder only)
# =============================================================================================
ENC_D, ENC_HEADS, ENC_FF, ENC_LAYERS = 768, 12, 3072, 12


def build_encoder() -> nn.TransformerEncoder:
    """The module tools/make_bert_base.py exports (its weights are then loaded from the dir)."""
    layer = nn.TransformerEncoderLayer(ENC_D, ENC_HEADS, dim_feedforward=ENC_FF, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=False)
    return nn.TransformerEncoder(layer, ENC_LAYERS, enable_nested_tensor=False).eval()


def make_encoder_dir(model_dir: str, seed: int) -> None:
    """tools/make_bert_base.py's module with every layer's weights drawn anew: nn.TransformerEncoder
    deep-copies its layer, so make_bert_base.py's 12 layers are identical, and torch.onnx.export
    then stores one layer's weights for all twelve (28 MB instead of 340 MB: ONNX Runtime would
    run from cache-resident weights the others cannot share)."""
    torch.manual_seed(seed)
    model = build_encoder()
    for layer in model.layers:
        layer.self_attn._reset_parameters()  # in_proj (and zero biases)
        layer.self_attn.out_proj.reset_parameters()  # not reset by the line above
        layer.linear1.reset_parameters()
        layer.linear2.reset_parameters()
    export_model(model, model_dir, dtype="f32")


def load_encoder(model_dir: str) -> nn.TransformerEncoder:
    m = build_encoder()
    sd = {k[len("encoder."):]: v for k, v in load_state_dict_from_dir(model_dir).items()}
    m.load_state_dict(sd, strict=True)
    return m.eval()


def export_encoder_onnx(model_dir: str, path: str) -> None:
    m = _no_fast_path(load_encoder(model_dir))
    x = torch.randn(1, 128, ENC_D)
    _onnx_export(m, (x,), path, ["src"], ["output"],
                 {"src": {0: "batch", 1: "seq"}, "output": {0: "batch", 1: "seq"}})


# =============================================================================================
# B. "Attention Is All You Need" base transformer with embeddings, greedy with a KV cache
# =============================================================================================
S2S = dict(src_vocab_size=32000, tgt_vocab_size=32000, d_model=512, nhead=8, num_encoder_layers=6,
           num_decoder_layers=6, dim_feedforward=2048, activation="relu", max_position=256,
           scale_embedding=True, bos_id=1, eos_id=2, pad_id=0)


def make_s2s_dir(model_dir: str, seed: int) -> None:
    torch.manual_seed(seed)
    model = TokenTransformer(**S2S, dropout=0.0).eval()
    export_model(model, model_dir, dtype="f32")


def load_s2s(model_dir: str) -> TokenTransformer:
    return load_token_model(model_dir)


def s2s_cross_kv(model: TokenTransformer, memory: torch.Tensor) -> Past:
    """Every decoder layer's cross-attention keys/values of `memory` [B,S,E], computed once."""
    out = []
    for layer in model.decoder.layers:
        mha = layer.multihead_attn
        e = mha.embed_dim
        kv = F.linear(memory, mha.in_proj_weight[e:], mha.in_proj_bias[e:])  # [B, S, 2E]
        k, v = kv.split(e, dim=-1)
        out.append((_heads(k, mha.num_heads), _heads(v, mha.num_heads)))
    return out


def s2s_decode_step(model: TokenTransformer, ids: torch.Tensor, past: Optional[Past],
                    cross: Past) -> Tuple[torch.Tensor, Past]:
    """One decoder step over new target ids [B, T] (T = 1 here: no causal mask needed) after the
    cached positions; nn.TransformerDecoderLayer's post-LN maths with a self-attention KV cache.
    Returns the last position's logits [B, V] and the new cache."""
    p0 = past[0][0].shape[2] if past is not None else 0
    t = ids.shape[1]
    x = model.tgt_embed(ids) * math.sqrt(model.d_model) + model.pe[p0:p0 + t].unsqueeze(0)
    present = []
    for i, layer in enumerate(model.decoder.layers):
        sa = layer.self_attn
        h = sa.num_heads
        q, k, v = F.linear(x, sa.in_proj_weight, sa.in_proj_bias).chunk(3, dim=-1)
        k, v = _heads(k, h), _heads(v, h)
        if past is not None:
            k = torch.cat([past[i][0], k], dim=2)
            v = torch.cat([past[i][1], v], dim=2)
        present.append((k, v))
        x = layer.norm1(x + sa.out_proj(_merge(_attend(_heads(q, h), k, v))))
        ca = layer.multihead_attn
        e = ca.embed_dim
        q = _heads(F.linear(x, ca.in_proj_weight[:e], ca.in_proj_bias[:e]), h)
        x = layer.norm2(x + ca.out_proj(_merge(_attend(q, cross[i][0], cross[i][1]))))
        x = layer.norm3(x + layer.linear2(layer.activation(layer.linear1(x))))
    if model.decoder.norm is not None:
        x = model.decoder.norm(x)
    return model.generator(x[:, -1]), present


def s2s_greedy(model: TokenTransformer, src_ids: torch.Tensor, steps: int):
    """Encoder (PyTorch's fast path under inference_mode), cross K/V once, then exactly `steps`
    greedy steps from bos (no eos stop). Returns (encode seconds, total seconds, tokens)."""
    import time
    t0 = time.perf_counter()
    memory = model.encode(src_ids)
    cross = s2s_cross_kv(model, memory)
    t_enc = time.perf_counter() - t0
    ids = torch.full((src_ids.shape[0], 1), model.bos_id, dtype=torch.long)
    past = None
    tokens = []
    for _ in range(steps):
        logits, past = s2s_decode_step(model, ids, past, cross)
        nxt = logits.argmax(dim=-1)
        tokens.append(int(nxt[0]))
        ids = nxt.unsqueeze(1)
    return t_enc, time.perf_counter() - t0, tokens


class _S2SEncoderExport(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, src_ids):
        cross = s2s_cross_kv(self.model, self.model.encode(src_ids))
        return tuple(t for kv in cross for t in kv)


class _S2SStepExport(nn.Module):
    def __init__(self, model, with_past: bool):
        super().__init__()
        self.model, self.with_past = model, with_past
        self.n = len(model.decoder.layers)

    def forward(self, tgt_ids, *flat):
        n = self.n
        if self.with_past:
            past, flat = [(flat[2 * i], flat[2 * i + 1]) for i in range(n)], flat[2 * n:]
        else:
            past = None
        cross = [(flat[2 * i], flat[2 * i + 1]) for i in range(n)]
        logits, present = s2s_decode_step(self.model, tgt_ids, past, cross)
        return (logits,) + tuple(t for kv in present for t in kv)


def _kv_names(prefix: str, n: int) -> List[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(n) for kind in ("key", "value")]


def export_s2s_onnx(model_dir: str, out: dict) -> None:
    """out: {"encoder": path, "decoder_first": path, "decoder_step": path}."""
    model = _no_fast_path(load_s2s(model_dir))
    n, h, dh = S2S["num_decoder_layers"], S2S["nhead"], S2S["d_model"] // S2S["nhead"]
    src = torch.randint(4, S2S["src_vocab_size"], (1, 32))
    cross_names = _kv_names("cross", n)
    _onnx_export(_S2SEncoderExport(model), (src,), out["encoder"], ["src_ids"], cross_names,
                 {"src_ids": {1: "src_len"}, **{c: {2: "src_len"} for c in cross_names}})
    with torch.no_grad():
        cross = s2s_cross_kv(model, model.encode(src))
    flat_cross = tuple(t for kv in cross for t in kv)
    ids = torch.ones(1, 1, dtype=torch.long)
    present = _kv_names("present", n)
    dyn = {**{c: {2: "src_len"} for c in cross_names}, **{p: {2: "total_len"} for p in present}}
    _onnx_export(_S2SStepExport(model, False), (ids,) + flat_cross, out["decoder_first"],
                 ["tgt_ids"] + cross_names, ["logits"] + present, dyn)
    past = tuple(torch.randn(1, h, 3, dh) for _ in range(2 * n))
    past_names = _kv_names("past", n)
    _onnx_export(_S2SStepExport(model, True), (ids,) + past + flat_cross, out["decoder_step"],
                 ["tgt_ids"] + past_names + cross_names, ["logits"] + present,
                 {**dyn, **{p: {2: "past_len"} for p in past_names}})


# =============================================================================================
# C. GPT-2-small shape, Hugging Face tensor names (transformer.h.N.attn.c_attn.weight [in, out])
# =============================================================================================
GPT2_CONFIG = {
    "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50257,
    "n_positions": 1024, "n_ctx": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None,
    "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
    "bos_token_id": 50256, "eos_token_id": 50256,
}


class Conv1D(nn.Module):
    """GPT-2's linear layer: y = x W + b with W stored [in, out] (Hugging Face's Conv1D)."""

    def __init__(self, n_in: int, n_out: int, std: float):
        super().__init__()
        self.n_out = n_out
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * std)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        y = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return y.reshape(x.shape[:-1] + (self.n_out,))


class GPT2Attention(nn.Module):
    def __init__(self, e: int, std: float, proj_std: float):
        super().__init__()
        self.c_attn = Conv1D(e, 3 * e, std)
        self.c_proj = Conv1D(e, e, proj_std)


class GPT2MLP(nn.Module):
    def __init__(self, e: int, std: float, proj_std: float):
        super().__init__()
        self.c_fc = Conv1D(e, 4 * e, std)
        self.c_proj = Conv1D(4 * e, e, proj_std)


class GPT2Block(nn.Module):
    def __init__(self, e: int, eps: float, std: float, proj_std: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(e, eps=eps)
        self.attn = GPT2Attention(e, std, proj_std)
        self.ln_2 = nn.LayerNorm(e, eps=eps)
        self.mlp = GPT2MLP(e, std, proj_std)


class GPT2Body(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        e, std = cfg["n_embd"], 0.02
        proj_std = std / math.sqrt(2 * cfg["n_layer"])
        self.wte = nn.Embedding(cfg["vocab_size"], e)
        self.wpe = nn.Embedding(cfg["n_positions"], e)
        nn.init.normal_(self.wte.weight, 0.0, std)
        nn.init.normal_(self.wpe.weight, 0.0, 0.01)
        self.h = nn.ModuleList(GPT2Block(e, cfg["layer_norm_epsilon"], std, proj_std)
                               for _ in range(cfg["n_layer"]))
        self.ln_f = nn.LayerNorm(e, eps=cfg["layer_norm_epsilon"])


class GPT2LMHead(nn.Module):
    """GPT-2 with a KV cache; the LM head is tied to wte. forward(ids [B,T], past) -> (logits of
    the last position [B, V], present). Prefill: past None, causal mask over T; decode: T = 1."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        self.nhead = cfg["n_head"]
        self.transformer = GPT2Body(cfg)

    def forward(self, ids: torch.Tensor, past: Optional[Past] = None):
        tr = self.transformer
        e = self.cfg["n_embd"]
        t = ids.shape[1]
        p0 = past[0][0].shape[2] if past is not None else 0
        x = tr.wte(ids) + tr.wpe(torch.arange(p0, p0 + t, dtype=torch.long))
        mask = None
        if past is None and t > 1:
            mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        present = []
        for i, blk in enumerate(tr.h):
            q, k, v = blk.attn.c_attn(blk.ln_1(x)).split(e, dim=-1)
            k, v = _heads(k, self.nhead), _heads(v, self.nhead)
            if past is not None:
                k = torch.cat([past[i][0], k], dim=2)
                v = torch.cat([past[i][1], v], dim=2)
            present.append((k, v))
            x = x + blk.attn.c_proj(_merge(_attend(_heads(q, self.nhead), k, v, mask)))
            x = x + blk.mlp.c_proj(F.gelu(blk.mlp.c_fc(blk.ln_2(x)), approximate="tanh"))
        last = tr.ln_f(x[:, -1])  # [B, E]
        head = getattr(self, "lm_head", None)  # only in gpt2_linear()'s copy (int8)
        return (head(last) if head is not None else F.linear(last, tr.wte.weight)), present


def make_gpt2_dir(model_dir: str, seed: int) -> None:
    torch.manual_seed(seed)
    model = GPT2LMHead(GPT2_CONFIG)
    os.makedirs(model_dir, exist_ok=True)
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}  # no lm_head: tied
    safetensors_io.save_file(tensors, os.path.join(model_dir, "model.safetensors"), {"format": "pt"})
    _write_json(os.path.join(model_dir, "config.json"), GPT2_CONFIG)


def load_gpt2(model_dir: str) -> GPT2LMHead:
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    model = GPT2LMHead(cfg)
    model.load_state_dict(load_state_dict_from_dir(model_dir), strict=True)
    return model.eval()


class _GPT2Export(nn.Module):
    def __init__(self, model, with_past: bool):
        super().__init__()
        self.model, self.with_past = model, with_past

    def forward(self, ids, *flat):
        past = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)] if self.with_past else None
        logits, present = self.model(ids, past)
        return (logits,) + tuple(t for kv in present for t in kv)


def export_gpt2_onnx(model_dir: str, out: dict) -> None:
    """out: {"prefill": path, "decode": path}; past/present keys and values [1, H, T, Dh]."""
    model = load_gpt2(model_dir)
    cfg = model.cfg
    n, h, dh = cfg["n_layer"], cfg["n_head"], cfg["n_embd"] // cfg["n_head"]
    present = _kv_names("present", n)
    ids = torch.randint(0, cfg["vocab_size"], (1, 8))
    _onnx_export(_GPT2Export(model, False), (ids,), out["prefill"], ["input_ids"], ["logits"] + present,
                 {"input_ids": {1: "seq"}, **{p: {2: "seq"} for p in present}})
    past_names = _kv_names("past", n)
    past = tuple(torch.randn(1, h, 8, dh) for _ in range(2 * n))
    _onnx_export(_GPT2Export(model, True), (ids[:, :1],) + past, out["decode"],
                 ["input_ids"] + past_names, ["logits"] + present,
                 {**{p: {2: "past_len"} for p in past_names}, **{p: {2: "total_len"} for p in present}})


def gpt2_linear(model: GPT2LMHead) -> GPT2LMHead:
    """A copy with every Conv1D replaced by the equivalent nn.Linear (weight transposed to
    [out, in]) and the tied LM head as an nn.Linear (a copy of wte, no bias), as in Hugging Face's
    GPT2LMHeadModel: quantize_dynamic swaps nn.Linear modules only, and Conv1D's addmm on a raw
    parameter would stay fp32."""
    m = copy.deepcopy(model)
    for blk in m.transformer.h:
        for parent, name in ((blk.attn, "c_attn"), (blk.attn, "c_proj"), (blk.mlp, "c_fc"),
                             (blk.mlp, "c_proj")):
            conv = getattr(parent, name)
            lin = nn.Linear(conv.weight.shape[0], conv.weight.shape[1])
            with torch.no_grad():
                lin.weight.copy_(conv.weight.t())
                lin.bias.copy_(conv.bias)
            setattr(parent, name, lin)
    wte = m.transformer.wte.weight
    m.lm_head = nn.Linear(wte.shape[1], wte.shape[0], bias=False)
    with torch.no_grad():
        m.lm_head.weight.copy_(wte)
    return m.eval()


def gpt2_generate(model: GPT2LMHead, prompt: torch.Tensor, steps: int):
    """Prefill `prompt` [1, P] (ending with the argmax of its last logits), then `steps` greedy
    steps. Returns (prefill s, decode s, tokens (steps + 1), last prefill logits)."""
    import time
    t0 = time.perf_counter()
    logits, past = model(prompt)
    nxt = logits.argmax(dim=-1)
    t1 = time.perf_counter()
    first_logits = logits
    tokens = [int(nxt[0])]
    for _ in range(steps):
        logits, past = model(nxt.unsqueeze(1), past)
        nxt = logits.argmax(dim=-1)
        tokens.append(int(nxt[0]))
    return t1 - t0, time.perf_counter() - t1, tokens, first_logits


# =============================================================================================
# D. BERT-base, Hugging Face BertModel tensor names (embeddings.*, encoder.layer.N.*, pooler.*)
# =============================================================================================
BERT_CONFIG = {
    "model_type": "bert", "architectures": ["BertModel"], "vocab_size": 30522, "hidden_size": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
    "position_embedding_type": "absolute", "pad_token_id": 0,
}


class _Dense(nn.Module):
    def __init__(self, n_in, n_out, ln_eps=None):
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)
        if ln_eps is not None:
            self.LayerNorm = nn.LayerNorm(n_out, eps=ln_eps)


class BertEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        self.token_type_embeddings = nn.Embedding(c["type_vocab_size"], c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])


class BertSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        e = c["hidden_size"]
        self.query, self.key, self.value = nn.Linear(e, e), nn.Linear(e, e), nn.Linear(e, e)


class BertAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.add_module("self", BertSelfAttention(c))
        self.output = _Dense(c["hidden_size"], c["hidden_size"], c["layer_norm_eps"])


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = _Dense(c["hidden_size"], c["intermediate_size"])
        self.output = _Dense(c["intermediate_size"], c["hidden_size"], c["layer_norm_eps"])


class BertEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c["num_hidden_layers"]))


class BertModel(nn.Module):
    """Hugging Face BertModel's eager maths: post-LN layers, exact GELU, additive padding mask.
    forward(input_ids, attention_mask, token_type_ids) -> (last_hidden_state, pooler_output)."""

    def __init__(self, c):
        super().__init__()
        self.cfg = c
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.pooler = _Dense(c["hidden_size"], c["hidden_size"])
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, input_ids, attention_mask, token_type_ids):
        c, emb = self.cfg, self.embeddings
        h = c["num_attention_heads"]
        t = input_ids.shape[1]
        pos = torch.arange(t, dtype=torch.long).unsqueeze(0)
        x = emb.word_embeddings(input_ids) + emb.token_type_embeddings(token_type_ids) + \
            emb.position_embeddings(pos)
        x = emb.LayerNorm(x)
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            sa = getattr(layer.attention, "self")
            a = _attend(_heads(sa.query(x), h), _heads(sa.key(x), h), _heads(sa.value(x), h), mask)
            ao = layer.attention.output
            x = ao.LayerNorm(x + ao.dense(_merge(a)))
            y = F.gelu(layer.intermediate.dense(x))
            x = layer.output.LayerNorm(x + layer.output.dense(y))
        return x, torch.tanh(self.pooler.dense(x[:, 0]))


def make_bert_dir(model_dir: str, seed: int) -> None:
    torch.manual_seed(seed)
    model = BertModel(BERT_CONFIG)
    os.makedirs(model_dir, exist_ok=True)
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    safetensors_io.save_file(tensors, os.path.join(model_dir, "model.safetensors"), {"format": "pt"})
    _write_json(os.path.join(model_dir, "config.json"), BERT_CONFIG)


def load_bert(model_dir: str) -> BertModel:
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    model = BertModel(cfg)
    model.load_state_dict(load_state_dict_from_dir(model_dir), strict=True)
    return model.eval()


def export_bert_onnx(model_dir: str, path: str) -> None:
    model = load_bert(model_dir)
    ids = torch.randint(1000, 30000, (1, 128))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    _onnx_export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), path, names,
                 ["last_hidden_state", "pooler_output"],
                 {**{n: {0: "batch", 1: "seq"} for n in names},
                  "last_hidden_state": {0: "batch", 1: "seq"}, "pooler_output": {0: "batch"}})


# =============================================================================================
# PyTorch dynamic int8 (torch_worker.py --int8 ENGINE)
# =============================================================================================
def quantize_int8(kind: str, model: nn.Module, qengine: str) -> nn.Module:
    """torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8) with the
    quantized engine `qengine` (Debian's torch 1.13: qnnpack or onednn; no fbgemm): every
    nn.Linear becomes a dynamically quantized Linear (int8 weights per tensor, symmetric; the
    activation quantized to u8 per call). Kind-specific changes:
      causal_lm  Conv1D -> nn.Linear and an nn.Linear LM head first (gpt2_linear), else nothing
                 would be quantized;
      encoder    nn.TransformerEncoderLayer's fused fast path fails on quantized linear1/linear2
                 (AttributeError: 'function' object has no attribute 'is_cuda', from its checks of
                 linear1.weight), so the layers take the ordinary path; nn.MultiheadAttention's
                 in_proj (a raw parameter) and out_proj (NonDynamicallyQuantizableLinear) stay fp32;
      seq2seq    the same for its encoder layers; the decode step calls F.linear on the
                 attentions' in_proj_weight (fp32).
    """
    if qengine not in torch.backends.quantized.supported_engines:
        raise ValueError(f"quantized engine {qengine!r} not in this torch "
                         f"({torch.backends.quantized.supported_engines})")
    torch.backends.quantized.engine = qengine
    if kind == "causal_lm":
        model = gpt2_linear(model)
    q = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    for layer in q.modules():
        if isinstance(layer, nn.TransformerEncoderLayer):
            layer.activation_relu_or_gelu = 0  # off the fused fast path (see above)
    return q.eval()


def count_quantized_linears(model: nn.Module) -> int:
    return sum(1 for m in model.modules()
               if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")
               and type(m).__name__ == "Linear")


def save_raw(arr: np.ndarray, path: str) -> dict:
    """Write a raw little-endian tensor for the workers; returns its descriptor."""
    arr = np.ascontiguousarray(arr)
    dt = {np.dtype(np.float32): "f32", np.dtype(np.int64): "i64"}[arr.dtype]
    arr.tofile(path)
    return {"path": path, "dtype": dt, "shape": list(arr.shape)}


def load_raw(desc: dict) -> np.ndarray:
    dt = {"f32": np.float32, "i64": np.int64}[desc["dtype"]]
    return np.fromfile(desc["path"], dtype=dt).reshape(desc["shape"])


def model_files_exist(paths: Sequence[str]) -> bool:
    return all(os.path.exists(p) for p in paths)
