#!/usr/bin/python3
"""The reference PyTorch module of the ``rnn_attention`` family: a bidirectional-RNN encoder and
an RNN decoder with additive attention (Bahdanau, Cho and Bengio, "Neural Machine Translation by
Jointly Learning to Align and Translate"), or without attention (the plain encoder-decoder).

Its parameter names are the family's tensor names (the contract in docs and models/):

- ``src_embed.weight`` [src_vocab, E], ``tgt_embed.weight`` [tgt_vocab, E]
- ``encoder.*``: ``nn.GRU`` / ``nn.LSTM(E, H, num_layers=L, bidirectional=True,
  batch_first=True)`` with PyTorch's own names (``weight_ih_l0``, ``weight_hh_l0_reverse``, ...)
- ``bridge.weight`` [H, 2H], ``bridge.bias`` [H] (LSTM also ``bridge_c.*``):
  ``s0 = tanh(bridge([h_fwd_last ; h_bwd_first]))`` from the top layer; for the LSTM the cell
  state is ``c0 = tanh(bridge_c([c_fwd_last ; c_bwd_first]))``
- ``attention.W.weight`` [A, H], ``attention.U.weight`` [A, 2H], ``attention.v.weight`` [1, A]:
  ``e_ij = v . tanh(W s_{i-1} + U h_j)`` over the real source positions, ``alpha_i =
  softmax(e_i)``, ``c_i = sum_j alpha_ij h_j``
- ``decoder.*``: a one-layer ``nn.GRU`` / ``nn.LSTM(E + 2H, H, batch_first=True)`` whose input
  at step i is ``[embed(y_{i-1}) ; c_i]``
- ``generator.weight`` [tgt_vocab, H + 2H + E], ``generator.bias``: logits from
  ``[s_i ; c_i ; embed(y_{i-1})]``

With ``attention: "none"`` there are no attention tensors and the context at every step is the
encoder's final states ``[h_fwd_last ; h_bwd_first]``; the ``attention`` output is all zeros.

Sources are right-padded (``src_key_padding_mask`` True at padding, or ``src_ids == pad_id``
when no mask is given) and run as packed sequences: each row's backward direction starts at its
last real token. ``tgt_ids`` are the decoder inputs ``y_0 = bos, y_1, ...``; output step i
predicts the token after ``tgt_ids[:, i]``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CONFIG_KEYS = ("cell", "embed_dim", "hidden_size", "num_encoder_layers", "attention_dim", "attention",
               "src_vocab_size", "tgt_vocab_size", "bos_id", "eos_id", "pad_id", "max_length")


class AdditiveAttention(nn.Module):
    def __init__(self, hidden_size: int, attention_dim: int):
        super().__init__()
        self.W = nn.Linear(hidden_size, attention_dim, bias=False)
        self.U = nn.Linear(2 * hidden_size, attention_dim, bias=False)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, s_prev, keys, memory, src_pad):
        """s_prev [B,H], keys = U h [B,S,A], memory h [B,S,2H], src_pad [B,S] True at padding.
        Returns the context [B,2H] and the weights [B,S]."""
        e = self.v(torch.tanh(self.W(s_prev).unsqueeze(1) + keys)).squeeze(-1)  # [B,S]
        e = e.masked_fill(src_pad, float("-inf"))
        alpha = torch.softmax(e, dim=-1)
        return torch.bmm(alpha.unsqueeze(1), memory).squeeze(1), alpha


class RNNAttention(nn.Module):
    """Bidirectional GRU/LSTM encoder, additive attention (or none), GRU/LSTM decoder."""

    def __init__(self, cell: str = "gru", embed_dim: int = 64, hidden_size: int = 128, num_encoder_layers: int = 1,
                 attention_dim: int = 64, attention: str = "additive", src_vocab_size: int = 64,
                 tgt_vocab_size: int = 64, bos_id: int = 1, eos_id: int = 2, pad_id: int = 0,
                 max_length: int = 64):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', not {cell!r}")
        if attention not in ("additive", "none"):
            raise ValueError(f"attention must be 'additive' or 'none', not {attention!r}")
        self.cfg = dict(cell=cell, embed_dim=embed_dim, hidden_size=hidden_size,
                        num_encoder_layers=num_encoder_layers, attention_dim=attention_dim, attention=attention,
                        src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, bos_id=bos_id,
                        eos_id=eos_id, pad_id=pad_id, max_length=max_length)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        H = hidden_size
        self.src_embed = nn.Embedding(src_vocab_size, embed_dim)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, embed_dim)
        self.encoder = rnn(embed_dim, H, num_layers=num_encoder_layers, bidirectional=True, batch_first=True)
        self.bridge = nn.Linear(2 * H, H)
        if cell == "lstm":
            self.bridge_c = nn.Linear(2 * H, H)
        if attention == "additive":
            self.attention = AdditiveAttention(H, attention_dim)
        self.decoder = rnn(embed_dim + 2 * H, H, batch_first=True)
        self.generator = nn.Linear(3 * H + embed_dim, tgt_vocab_size)

    @property
    def is_lstm(self) -> bool:
        return self.cfg["cell"] == "lstm"

    def config(self) -> dict:
        """The model directory's config.json for this module."""
        return {"model_type": "rnn_attention", **self.cfg}

    # --- encoder -----------------------------------------------------------------------------
    def src_padding(self, src_ids, src_key_padding_mask=None):
        if src_key_padding_mask is not None:
            return src_key_padding_mask.to(torch.bool)
        return src_ids == self.cfg["pad_id"]

    def encode(self, src_ids, src_key_padding_mask=None):
        """Returns (memory [B,S,2H] zero at padding, keys [B,S,A] or None, decoder state, src_pad,
        final [B,2H] = [h_fwd_last ; h_bwd_first])."""
        src_pad = self.src_padding(src_ids, src_key_padding_mask)
        lengths = (~src_pad).sum(dim=1)
        if int(lengths.min()) < 1:
            raise ValueError("every source needs at least one real token")
        S = src_ids.shape[1]
        packed = pack_padded_sequence(self.src_embed(src_ids), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, state = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=S)
        h_n = state[0] if self.is_lstm else state  # [L*2, B, H]
        final = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        s0 = torch.tanh(self.bridge(final)).unsqueeze(0)
        if self.is_lstm:
            c_n = state[1]
            c0 = torch.tanh(self.bridge_c(torch.cat([c_n[-2], c_n[-1]], dim=-1))).unsqueeze(0)
            dec_state = (s0, c0)
        else:
            dec_state = s0
        keys = self.attention.U(memory) if self.cfg["attention"] == "additive" else None
        return memory, keys, dec_state, src_pad, final

    # --- decoder -----------------------------------------------------------------------------
    def step(self, y_prev, dec_state, memory, keys, src_pad, final):
        """One decoder step: y_prev [B] -> (logits [B,V], attention weights [B,S], new state)."""
        s_prev = (dec_state[0] if self.is_lstm else dec_state)[0]  # [B,H]
        emb = self.tgt_embed(y_prev)  # [B,E]
        if self.cfg["attention"] == "additive":
            context, alpha = self.attention(s_prev, keys, memory, src_pad)
        else:
            context, alpha = final, torch.zeros(src_pad.shape, dtype=memory.dtype)
        out, dec_state = self.decoder(torch.cat([emb, context], dim=-1).unsqueeze(1), dec_state)
        logits = self.generator(torch.cat([out[:, 0], context, emb], dim=-1))
        return logits, alpha, dec_state

    def forward(self, src_ids, tgt_ids, src_key_padding_mask=None):
        """Teacher-forced forward: logits [B,T,V] and attention weights [B,T,S]."""
        memory, keys, state, src_pad, final = self.encode(src_ids, src_key_padding_mask)
        logits, alphas = [], []
        for i in range(tgt_ids.shape[1]):
            lg, alpha, state = self.step(tgt_ids[:, i], state, memory, keys, src_pad, final)
            logits.append(lg)
            alphas.append(alpha)
        return torch.stack(logits, dim=1), torch.stack(alphas, dim=1)

    @torch.no_grad()
    def greedy(self, sources, max_new_tokens: int | None = None, batch_size: int = 256):
        """Greedy decoding of a list of token-id lists (no bos/eos in them); returns the generated
        ids of each, without bos and eos."""
        max_new = max_new_tokens or self.cfg["max_length"]
        results = []
        for start in range(0, len(sources), batch_size):
            chunk = sources[start:start + batch_size]
            S = max(len(s) for s in chunk)
            src = torch.full((len(chunk), S), self.cfg["pad_id"], dtype=torch.long)
            pad = torch.ones((len(chunk), S), dtype=torch.bool)
            for r, s in enumerate(chunk):
                src[r, :len(s)] = torch.tensor(s, dtype=torch.long)
                pad[r, :len(s)] = False
            memory, keys, state, src_pad, final = self.encode(src, pad)
            y = torch.full((len(chunk),), self.cfg["bos_id"], dtype=torch.long)
            outs = [[] for _ in chunk]
            done = torch.zeros(len(chunk), dtype=torch.bool)
            for _ in range(max_new):
                logits, _, state = self.step(y, state, memory, keys, src_pad, final)
                y = logits.argmax(dim=-1)
                for r in range(len(chunk)):
                    if not done[r]:
                        if int(y[r]) == self.cfg["eos_id"]:
                            done[r] = True
                        else:
                            outs[r].append(int(y[r]))
                if bool(done.all()):
                    break
            results.extend(outs)
        return results


def from_config(config: dict) -> RNNAttention:
    if config.get("model_type") != "rnn_attention":
        raise ValueError(f"model_type is {config.get('model_type')!r}, not 'rnn_attention'")
    return RNNAttention(**{k: config[k] for k in CONFIG_KEYS})
