"""The PyTorch side of Tessera's model-directory contract, shared by the exporter, the demo
trainer and the parity / accuracy tests.

* ``TokenTransformer`` -- an ``nn.Transformer`` (batch_first=True) with token embeddings,
  sinusoidal positions and a generator on top. Being a subclass, its ``state_dict`` keys are
  exactly ``nn.Transformer``'s (``encoder.*``, ``decoder.*``) plus ``src_embed.weight``,
  ``tgt_embed.weight``, ``generator.weight`` and ``generator.bias``.
  x = embed(ids) * (sqrt(d_model) if scale_embedding else 1) + pe[position], with
  pe[p, 2i] = sin(p / 10000^(2i/d_model)), pe[p, 2i+1] = cos(p / 10000^(2i/d_model))
  (computed in float64, stored as float32).
* ``CharTokenizer`` -- the demo's character-level tokenizer (``tokenizer.json`` of type "char").
* ``standard_math_path()`` -- a context that keeps PyTorch 1.13 off its inference fast paths
  (nested tensors / fused kernels), so results are the plain nn.MultiheadAttention math.
* ``load_token_model(model_dir)`` -- a TokenTransformer built from a Tessera model directory.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from typing import Iterable, List, Optional, Sequence

import torch
import torch.nn as nn

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

__all__ = [
    "sinusoidal_table",
    "TokenTransformer",
    "CharTokenizer",
    "standard_math_path",
    "causal_mask",
    "load_token_model",
    "load_state_dict_from_dir",
]


def sinusoidal_table(max_position: int, d_model: int) -> torch.Tensor:
    """[max_position, d_model] float32: pe[p, 2i] = sin(p / 10000^(2i/d)), pe[p, 2i+1] = cos(...).

    Computed in float64 and rounded once to float32. For odd d_model the last (even) column
    is a sine.
    """
    pos = torch.arange(max_position, dtype=torch.float64).unsqueeze(1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), two_i / d_model)
    pe = torch.zeros(max_position, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe.to(torch.float32)


def causal_mask(n: int, device=None) -> torch.Tensor:
    """Bool [n, n] mask, True above the diagonal (= not allowed)."""
    return torch.triu(torch.ones(n, n, dtype=torch.bool, device=device), diagonal=1)


@contextlib.contextmanager
def standard_math_path():
    """Keep PyTorch 1.13 on the plain math path of nn.Transformer*/nn.MultiheadAttention.

    In eval mode with grad disabled, 1.13 may use fused kernels and nested tensors (which return
    0 at padded positions of the encoder). Those fast paths are skipped when grad is enabled and
    a parameter requires grad, so results computed inside this context are the reference math;
    detach them before use.
    """
    with torch.enable_grad():
        yield


class TokenTransformer(nn.Transformer):
    """nn.Transformer (batch_first) with token embeddings, sinusoidal positions and a generator.

    ``forward(src_ids, tgt_ids, src_mask, tgt_mask, memory_mask, src_key_padding_mask,
    tgt_key_padding_mask, memory_key_padding_mask)`` mirrors nn.Transformer.forward (masks are
    passed as they are; the memory key padding mask is NOT derived from the source's) and returns
    logits [B, T, tgt_vocab_size].
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, d_model: int = 128, nhead: int = 4,
                 num_encoder_layers: int = 3, num_decoder_layers: int = 2, dim_feedforward: int = 512,
                 dropout: float = 0.0, activation="relu", layer_norm_eps: float = 1e-5,
                 norm_first: bool = False, max_position: int = 64, scale_embedding: bool = True,
                 bos_id: int = 1, eos_id: int = 2, pad_id: int = 0):
        super().__init__(d_model=d_model, nhead=nhead, num_encoder_layers=num_encoder_layers,
                         num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward,
                         dropout=dropout, activation=activation, layer_norm_eps=layer_norm_eps,
                         batch_first=True, norm_first=norm_first)
        self.src_vocab_size = int(src_vocab_size)
        self.tgt_vocab_size = int(tgt_vocab_size)
        self.max_position = int(max_position)
        self.scale_embedding = bool(scale_embedding)
        self.bos_id, self.eos_id, self.pad_id = int(bos_id), int(eos_id), int(pad_id)
        self.src_embed = nn.Embedding(self.src_vocab_size, d_model)
        self.tgt_embed = nn.Embedding(self.tgt_vocab_size, d_model)
        self.generator = nn.Linear(d_model, self.tgt_vocab_size)
        # With scaling, N(0, 1/d) embeddings become unit-variance inputs.
        std = d_model ** -0.5 if self.scale_embedding else 1.0
        nn.init.normal_(self.src_embed.weight, 0.0, std)
        nn.init.normal_(self.tgt_embed.weight, 0.0, std)
        nn.init.xavier_uniform_(self.generator.weight)
        nn.init.zeros_(self.generator.bias)
        self.register_buffer("pe", sinusoidal_table(self.max_position, d_model), persistent=False)

    # -- config ------------------------------------------------------------------------------
    def token_config(self) -> dict:
        """The config keys of the token model (on top of nn.Transformer's)."""
        return {
            "src_vocab_size": self.src_vocab_size,
            "tgt_vocab_size": self.tgt_vocab_size,
            "max_position": self.max_position,
            "positional": "sinusoidal",
            "scale_embedding": self.scale_embedding,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
        }

    @classmethod
    def from_config(cls, cfg: dict) -> "TokenTransformer":
        """Build (untrained) from a Tessera config.json dict."""
        if cfg.get("model_type", "transformer") != "transformer":
            raise ValueError(f"model_type {cfg.get('model_type')!r} is not 'transformer'")
        if cfg.get("positional", "sinusoidal") != "sinusoidal":
            raise ValueError(f"positional {cfg.get('positional')!r} is not supported (only 'sinusoidal')")
        return cls(src_vocab_size=cfg["src_vocab_size"], tgt_vocab_size=cfg["tgt_vocab_size"],
                   d_model=cfg["d_model"], nhead=cfg["nhead"],
                   num_encoder_layers=cfg["num_encoder_layers"], num_decoder_layers=cfg["num_decoder_layers"],
                   dim_feedforward=cfg["dim_feedforward"], dropout=0.0, activation=cfg["activation"],
                   layer_norm_eps=cfg["layer_norm_eps"], norm_first=cfg["norm_first"],
                   max_position=cfg["max_position"], scale_embedding=cfg["scale_embedding"],
                   bos_id=cfg["bos_id"], eos_id=cfg["eos_id"], pad_id=cfg["pad_id"])

    # -- embeddings ----------------------------------------------------------------------------
    def _embed(self, table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2:
            raise ValueError(f"token ids must be [batch, length], got shape {tuple(ids.shape)}")
        n = ids.shape[1]
        if n > self.max_position:
            raise ValueError(f"sequence of {n} tokens is longer than max_position {self.max_position}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= table.num_embeddings):
            raise ValueError(f"token id out of range [0, {table.num_embeddings})")
        x = table(ids)
        if self.scale_embedding:
            x = x * math.sqrt(self.d_model)
        return x + self.pe[:n].unsqueeze(0)

    # -- forward pieces ------------------------------------------------------------------------
    def encode(self, src_ids: torch.Tensor, src_key_padding_mask: Optional[torch.Tensor] = None,
               src_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """src_ids [B,S] (i64) -> memory [B,S,E]."""
        return self.encoder(self._embed(self.src_embed, src_ids), mask=src_mask,
                            src_key_padding_mask=src_key_padding_mask)

    def decode(self, tgt_ids: torch.Tensor, memory: torch.Tensor, tgt_mask: Optional[torch.Tensor] = None,
               memory_mask: Optional[torch.Tensor] = None, tgt_key_padding_mask: Optional[torch.Tensor] = None,
               memory_key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tgt_ids [B,T], memory [B,S,E] -> logits [B,T,V]."""
        h = self.decoder(self._embed(self.tgt_embed, tgt_ids), memory, tgt_mask=tgt_mask,
                         memory_mask=memory_mask, tgt_key_padding_mask=tgt_key_padding_mask,
                         memory_key_padding_mask=memory_key_padding_mask)
        return self.generator(h)

    def forward(self, src_ids, tgt_ids, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None):
        memory = self.encode(src_ids, src_key_padding_mask, src_mask)
        return self.decode(tgt_ids, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
                           memory_key_padding_mask)

    # -- generation ----------------------------------------------------------------------------
    def pad_batch(self, seqs: Sequence[Sequence[int]]):
        """Ragged id lists -> (ids [B, L] padded with pad_id, key padding mask [B, L] True = pad)."""
        n = max(1, max((len(s) for s in seqs), default=1))
        ids = torch.full((len(seqs), n), self.pad_id, dtype=torch.long)
        pad = torch.ones(len(seqs), n, dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            pad[i, : len(s)] = False
        return ids, pad

    @torch.no_grad()
    def _greedy_batch(self, src_ids_list, max_new_tokens):
        src, src_pad = self.pad_batch(src_ids_list)
        with standard_math_path():
            memory = self.encode(src, src_pad).detach()
        b = len(src_ids_list)
        tgt = torch.full((b, 1), self.bos_id, dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        out: List[List[int]] = [[] for _ in range(b)]
        # generating token k feeds k target positions (bos + k-1 tokens): at most max_position
        max_new_tokens = min(max_new_tokens, self.max_position)
        for _ in range(max_new_tokens):
            t = tgt.shape[1]
            with standard_math_path():
                logits = self.decode(tgt, memory, tgt_mask=causal_mask(t),
                                     memory_key_padding_mask=src_pad)[:, -1].detach()
            nxt = logits.argmax(dim=-1)
            for i in range(b):
                if not done[i]:
                    tok = int(nxt[i])
                    if tok == self.eos_id:
                        done[i] = True
                    else:
                        out[i].append(tok)
            if bool(done.all()):
                break
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            tgt = torch.cat([tgt, nxt.unsqueeze(1)], dim=1)
        return out

    def greedy(self, src_ids_list: Sequence[Sequence[int]], max_new_tokens: int = 64,
               batch_size: Optional[int] = None) -> List[List[int]]:
        """Greedy decoding of ragged sources (each a list of ids, eos included by the caller).

        The sources are padded into one batch (or chunks of ``batch_size``) with key padding
        masks (the source padding is the memory key padding mask); the target starts with
        [bos]; each row stops at eos or after ``max_new_tokens`` (capped at max_position).
        Returns the generated ids per row, without bos/eos.
        """
        was_training = self.training
        self.eval()
        try:
            if not src_ids_list:
                return []
            bs = batch_size or len(src_ids_list)
            res: List[List[int]] = []
            for i in range(0, len(src_ids_list), bs):
                res.extend(self._greedy_batch(src_ids_list[i: i + bs], max_new_tokens))
            return res
        finally:
            self.train(was_training)


class CharTokenizer:
    """Character-level tokenizer; tokens[0:4] are <pad>, <bos>, <eos>, <unk>.

    tokenizer.json: {"type": "char", "tokens": [...], "unk_id": 3}; id = index in tokens.
    ``encode(text)`` = [id of each character (unk_id if absent)] + [eos_id].
    """

    SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]

    def __init__(self, tokens: Sequence[str], unk_id: int = 3):
        self.tokens = list(tokens)
        if self.tokens[:4] != self.SPECIALS:
            raise ValueError(f"tokens must start with {self.SPECIALS}")
        for t in self.tokens[4:]:
            if len(t) != 1:
                raise ValueError(f"char tokenizer entries must be single characters, got {t!r}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("duplicate tokens")
        self.unk_id = int(unk_id)
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2
        self._index = {t: i for i, t in enumerate(self.tokens) if i >= 4}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "CharTokenizer":
        chars = sorted({c for t in texts for c in t})
        return cls(cls.SPECIALS + chars)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, add_eos: bool = True) -> List[int]:
        ids = [self._index.get(c, self.unk_id) for c in text]
        return ids + [self.eos_id] if add_eos else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Characters of ids, stopping at eos; pad/bos skipped, unk as U+FFFD."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append("\ufffd" if i == self.unk_id or not (0 <= i < len(self.tokens)) else self.tokens[i])
        return "".join(out)

    def to_json(self) -> dict:
        return {"type": "char", "tokens": self.tokens, "unk_id": self.unk_id}

    def save(self, path) -> None:
        tmp = os.fspath(path) + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False, indent=1)
            f.write("\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "CharTokenizer":
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
        if obj.get("type") != "char":
            raise ValueError(f"{path}: tokenizer type {obj.get('type')!r} is not 'char'")
        return cls(obj["tokens"], obj.get("unk_id", 3))


def load_state_dict_from_dir(model_dir) -> dict:
    """model.safetensors of a model directory -> dict name -> float32/int torch tensors."""
    import numpy as np
    import safetensors_io

    arrays = safetensors_io.load_file(os.path.join(model_dir, "model.safetensors"))
    out = {}
    for k, v in arrays.items():
        if v.dtype == np.float16:
            v = v.astype(np.float32)
        out[k] = torch.from_numpy(np.ascontiguousarray(v))
    return out


def load_token_model(model_dir) -> TokenTransformer:
    """A TokenTransformer (eval mode) from a Tessera model directory (config.json + model.safetensors)."""
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    model = TokenTransformer.from_config(cfg)
    model.load_state_dict(load_state_dict_from_dir(model_dir), strict=True)
    model.eval()
    return model
