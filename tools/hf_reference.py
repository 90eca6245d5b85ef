"""Plain PyTorch reference implementations of Hugging Face GPT-2 and BERT.

Written from the published architectures (Radford et al. 2019, "Language Models are Unsupervised
Multitask Learners", and the GPT-2 code layout Hugging Face exports; Devlin et al. 2019, "BERT");
the `transformers` package is not used (it is not installable here). They read the same model
directories Tessera reads: config.json plus model.safetensors or shards listed in
model.safetensors.index.json, tensor names with or without the "transformer." / "bert." prefix,
old LayerNorm gamma/beta names, Conv1D weights stored [in, out], an optional lm_head.weight (tied
to wte when absent), F32/F16/BF16 weights (computed in the requested dtype, float64 by default).

    from hf_reference import load
    model = load("/path/to/dir")                   # Gpt2 or Bert, by config.json model_type
    logits = model(input_ids, attention_mask)      # Gpt2: [B, T, V]
    hidden, pooled = model(input_ids, attention_mask, token_type_ids)   # Bert

Gpt2 also decodes with a KV cache:
    logits, past = model(ids, attention_mask=mask, position_ids=pos, past=None)
    logits, past = model(next_ids, attention_mask=mask_so_far, position_ids=next_pos, past=past)
and `greedy(model, prompts, max_new_tokens)` decodes ragged prompts left-padded in one batch with
positions counted from each row's first real token (what Tessera's generation session does).

Masking follows Hugging Face: attention_mask (1 = keep) becomes an additive finfo.min on padded
keys. Rows whose keys are all masked are finite but meaningless (compare real positions only).
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Dict, List, Optional, Tuple

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import safetensors_io  # noqa: E402


# ---------------------------------------------------------------------------------------------
# checkpoint reading
# ---------------------------------------------------------------------------------------------
def read_checkpoint(model_dir: str) -> Tuple[dict, Dict[str, np.ndarray]]:
    """-> (config dict, name -> float32/float16/int array) from one file or HF-style shards."""
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        files = [single]
    else:
        with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
            index = json.load(f)
        files = [os.path.join(model_dir, s) for s in sorted(set(index["weight_map"].values()))]
    tensors: Dict[str, np.ndarray] = {}
    for path in files:
        tensors.update(safetensors_io.load_file(path))
    return config, tensors


class _Weights:
    """Name lookup with an optional prefix and LayerNorm gamma/beta aliases."""

    def __init__(self, tensors: Dict[str, np.ndarray], prefix: str, dtype: torch.dtype):
        self.t = tensors
        self.prefix = prefix if any(k.startswith(prefix) for k in tensors) else ""
        self.dtype = dtype

    def _resolve(self, name: str) -> Optional[str]:
        cands = [name]
        if name.endswith("LayerNorm.weight"):
            cands.append(name[: -len("weight")] + "gamma")
        if name.endswith("LayerNorm.bias"):
            cands.append(name[: -len("bias")] + "beta")
        for c in cands:
            for full in (self.prefix + c, c):
                if full in self.t:
                    return full
        return None

    def has(self, name: str) -> bool:
        return self._resolve(name) is not None

    def __call__(self, name: str) -> torch.Tensor:
        full = self._resolve(name)
        if full is None:
            raise KeyError(f"checkpoint has no tensor {name!r}")
        return torch.from_numpy(np.asarray(self.t[full], dtype=np.float32)).to(self.dtype)


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _activation(name: str):
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return _gelu_tanh
    if name == "gelu":
        return _gelu_erf
    if name == "relu":
        return torch.relu
    raise ValueError(f"unsupported activation {name!r}")


def _attend(q, k, v, scale, additive):
    """q [B, H, T, D], k/v [B, H, S, D], additive [B, 1|H, T, S] -> [B, H, T, D]."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale + additive
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def _split(x, heads):
    b, t, e = x.shape
    return x.view(b, t, heads, e // heads).transpose(1, 2)


def _merge(x):
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


# ---------------------------------------------------------------------------------------------
# GPT-2
# ---------------------------------------------------------------------------------------------
class Gpt2:
    def __init__(self, config: dict, tensors: Dict[str, np.ndarray], dtype=torch.float64):
        self.c = config
        self.dtype = dtype
        W = _Weights(tensors, "transformer.", dtype)
        self.n_layer, self.e, self.heads = config["n_layer"], config["n_embd"], config["n_head"]
        self.n_positions = config.get("n_positions", config.get("n_ctx"))
        self.eps = config.get("layer_norm_epsilon", 1e-5)
        self.act = _activation(config.get("activation_function", "gelu_new"))
        self.scale_attn = config.get("scale_attn_weights", True)
        self.inverse_layer = config.get("scale_attn_by_inverse_layer_idx", False)
        self.wte, self.wpe = W("wte.weight"), W("wpe.weight")
        self.layers = []
        for i in range(self.n_layer):
            p = f"h.{i}."
            self.layers.append({k: W(p + k) for k in (
                "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                "mlp.c_proj.weight", "mlp.c_proj.bias")})
        self.ln_f = (W("ln_f.weight"), W("ln_f.bias"))
        self.lm_head = W("lm_head.weight") if W.has("lm_head.weight") else self.wte

    @torch.no_grad()
    def __call__(self, input_ids, attention_mask=None, position_ids=None, past=None):
        """input_ids [B, T] (at cache positions past_len..past_len+T), attention_mask [B, past_len + T]
        (1 = keep), position_ids [B, T] (default past_len + arange). Returns (logits [B, T, V], past)
        where past is a list of (k, v) [B, H, past_len + T, D] per layer."""
        ids = torch.as_tensor(input_ids, dtype=torch.long)
        b, t = ids.shape
        past_len = 0 if past is None else past[0][0].shape[2]
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + t).unsqueeze(0).expand(b, t)
        position_ids = torch.as_tensor(position_ids, dtype=torch.long)
        if int(position_ids.max()) >= self.n_positions:
            raise ValueError(f"position {int(position_ids.max())} >= n_positions {self.n_positions}")
        x = self.wte[ids] + self.wpe[position_ids]
        s = past_len + t
        neg = torch.finfo(self.dtype).min
        causal = torch.ones(t, s, dtype=torch.bool).tril(diagonal=past_len)
        additive = torch.zeros(b, 1, t, s, dtype=self.dtype).masked_fill(~causal, neg)
        if attention_mask is not None:
            m = torch.as_tensor(np.asarray(attention_mask)).to(self.dtype).view(b, 1, 1, s)
            additive = additive + (1.0 - m) * neg
            additive = additive.clamp(min=neg)
        d = self.e // self.heads
        new_past = []
        for i, L in enumerate(self.layers):
            h = _layer_norm(x, L["ln_1.weight"], L["ln_1.bias"], self.eps)
            qkv = h @ L["attn.c_attn.weight"] + L["attn.c_attn.bias"]  # Conv1D: x @ W[in, out] + b
            q, k, v = (_split(z, self.heads) for z in qkv.split(self.e, dim=-1))
            if past is not None:
                k = torch.cat([past[i][0], k], dim=2)
                v = torch.cat([past[i][1], v], dim=2)
            new_past.append((k, v))
            scale = 1.0 / math.sqrt(d) if self.scale_attn else 1.0
            if self.inverse_layer:
                scale /= i + 1
            a = _merge(_attend(q, k, v, scale, additive))
            x = x + a @ L["attn.c_proj.weight"] + L["attn.c_proj.bias"]
            h = _layer_norm(x, L["ln_2.weight"], L["ln_2.bias"], self.eps)
            h = self.act(h @ L["mlp.c_fc.weight"] + L["mlp.c_fc.bias"])
            x = x + h @ L["mlp.c_proj.weight"] + L["mlp.c_proj.bias"]
        x = _layer_norm(x, self.ln_f[0], self.ln_f[1], self.eps)
        return x @ self.lm_head.T, new_past


def greedy(model: Gpt2, prompts: List[List[int]], max_new_tokens: int):
    """Greedy decoding with the KV cache, ragged prompts left-padded in one batch, positions from
    each row's first real token. -> (tokens [B, max_new_tokens], logits [B, max_new_tokens, V]):
    logits[:, k] are the logits that chose tokens[:, k]."""
    b, longest = len(prompts), max(len(p) for p in prompts)
    ids = torch.zeros(b, longest, dtype=torch.long)
    mask = torch.zeros(b, longest, dtype=torch.long)
    pos = torch.zeros(b, longest, dtype=torch.long)
    for r, p in enumerate(prompts):
        pad = longest - len(p)
        ids[r, pad:] = torch.tensor(p)
        mask[r, pad:] = 1
        pos[r, pad:] = torch.arange(len(p))
    logits, past = model(ids, mask, pos)
    step_logits = [logits[:, -1]]
    next_pos = torch.tensor([len(p) for p in prompts])
    tokens = [step_logits[-1].argmax(-1)]
    for _ in range(max_new_tokens - 1):
        mask = torch.cat([mask, torch.ones(b, 1, dtype=torch.long)], dim=1)
        logits, past = model(tokens[-1].view(b, 1), mask, next_pos.view(b, 1), past)
        next_pos = next_pos + 1
        step_logits.append(logits[:, -1])
        tokens.append(step_logits[-1].argmax(-1))
    return torch.stack(tokens, 1), torch.stack(step_logits, 1)


# ---------------------------------------------------------------------------------------------
# BERT
# ---------------------------------------------------------------------------------------------
class Bert:
    def __init__(self, config: dict, tensors: Dict[str, np.ndarray], dtype=torch.float64):
        self.c = config
        self.dtype = dtype
        W = _Weights(tensors, "bert.", dtype)
        self.h, self.heads = config["hidden_size"], config["num_attention_heads"]
        self.eps = config.get("layer_norm_eps", 1e-12)
        self.act = _activation(config.get("hidden_act", "gelu"))
        e = "embeddings."
        self.word, self.pos, self.type = (W(e + n + ".weight") for n in (
            "word_embeddings", "position_embeddings", "token_type_embeddings"))
        self.emb_ln = (W(e + "LayerNorm.weight"), W(e + "LayerNorm.bias"))
        self.layers = []
        for i in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            names = ["attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                     "output.dense", "output.LayerNorm"]
            self.layers.append({n: (W(p + n + ".weight"), W(p + n + ".bias")) for n in names})
        self.pooler = (W("pooler.dense.weight"), W("pooler.dense.bias")) if W.has("pooler.dense.weight") else None

    @torch.no_grad()
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        """-> (last_hidden_state [B, T, H], pooler_output [B, H] or None)."""
        ids = torch.as_tensor(input_ids, dtype=torch.long)
        b, t = ids.shape
        tt = torch.zeros_like(ids) if token_type_ids is None else torch.as_tensor(token_type_ids, dtype=torch.long)
        pos = (torch.arange(t).unsqueeze(0).expand(b, t) if position_ids is None
               else torch.as_tensor(position_ids, dtype=torch.long))
        x = _layer_norm(self.word[ids] + self.pos[pos] + self.type[tt], *self.emb_ln, self.eps)
        additive = torch.zeros(b, 1, 1, t, dtype=self.dtype)
        if attention_mask is not None:
            m = torch.as_tensor(np.asarray(attention_mask)).to(self.dtype).view(b, 1, 1, t)
            additive = (1.0 - m) * torch.finfo(self.dtype).min
        d = self.h // self.heads
        lin = (lambda z, wb: z @ wb[0].T + wb[1])  # Linear: x @ W[out, in]^T + b
        for L in self.layers:
            q, k, v = (_split(lin(x, L["attention.self." + n]), self.heads) for n in ("query", "key", "value"))
            a = _merge(_attend(q, k, v, 1.0 / math.sqrt(d), additive))
            x = _layer_norm(x + lin(a, L["attention.output.dense"]), *L["attention.output.LayerNorm"], self.eps)
            hmid = self.act(lin(x, L["intermediate.dense"]))
            x = _layer_norm(x + lin(hmid, L["output.dense"]), *L["output.LayerNorm"], self.eps)
        pooled = torch.tanh(lin(x[:, 0], self.pooler)) if self.pooler is not None else None
        return x, pooled


def load(model_dir: str, dtype=torch.float64):
    config, tensors = read_checkpoint(model_dir)
    kind = config.get("model_type")
    if kind == "gpt2":
        return Gpt2(config, tensors, dtype)
    if kind == "bert":
        return Bert(config, tensors, dtype)
    raise ValueError(f"{model_dir}: model_type {kind!r} is neither gpt2 nor bert")
