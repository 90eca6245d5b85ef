#!/usr/bin/python3
"""Train the RNN demo models: the dates task of the transformer demo (tools/dates.py, dates
written the ways people write them -> ISO YYYY-MM-DD), learned by an ``rnn_attention`` model
(tools/rnn_attention.py) with additive attention or without it.

The same character tokenizer as models/demo-dates (tools/tessera_torch.py CharTokenizer over
dates.all_characters()), the same endless seeded stream of training samples (held-out calendar
dates never appear), teacher forcing; then greedy exact match on ``dates.heldout_dates(1000)``
and an export to a model directory: config.json, model.safetensors (f32), tokenizer.json.

Model (defaults): GRU, embeddings 64, hidden 128, one bidirectional encoder layer, attention 64
(``--attention none``: no attention tensors; every decoder step sees the encoder's final states).
Both variants have the same size apart from the attention's W, U, v, and train with the same
data, steps and schedule: Adam (0.9, 0.98), peak learning rate 2e-3, linear warmup (100 steps)
then cosine decay, batch 128, 1000 steps, gradient clipping 1.0, no dropout.

Speed: Debian's PyTorch links the reference BLAS, which nn.GRU's CPU path calls for every time
step (about 10 s per batch here). So training runs its own forward (``fast_forward``) over the
very parameters of the module (the nn.GRU's weight_ih_l0, ..., the attention's W/U/v, ...):
every matrix product, forward and backward, is a oneDNN inner product (torch's mkldnn_linear;
train_demo.py's 1x1-convolution trick falls back to the BLAS for the small per-step products),
per-step slices are taken by unbind (one backward, not one zero-filled tensor per step), and
padded source positions are handled as the packed module does (the forward direction's state is
held after a row's last token, the backward direction starts at it). ``--check`` compares its
logits and gradients with the module's own forward's. The
monitor, the final evaluation and the export use the module itself (stock kernels).

Threads: one by default. The step is hundreds of small operations one after another (a time step
at a time); with two OpenMP threads on a 2-core machine shared with other work each of them waits
for the other thread to be scheduled, which measured 13x slower (8.6 s against 0.65 s a step;
two threads on an otherwise idle machine were not measured).

Reproducible: one seed drives the data stream and the initialization, the thread count is fixed
(default 1) and the number of steps is fixed (not time-based). Exit code 1 if the attention
model's held-out accuracy is below 99%.

    /usr/bin/python3 tools/train_rnn_demo.py --attention additive [--out models/demo-dates-rnn]
    /usr/bin/python3 tools/train_rnn_demo.py --attention none [--out models/demo-dates-rnn-noattn]
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import dates  # noqa: E402
from export_torch import export_model  # noqa: E402
from rnn_attention import RNNAttention  # noqa: E402
from tessera_torch import CharTokenizer  # noqa: E402

EXAMPLE = ("the 26th of November 2026", "2026-11-26")
TARGET_ACCURACY = 0.99  # for the attention model
TGT_LEN = 11  # 10 ISO characters + eos


# --- matrix products through oneDNN (training only) ---------------------------------------
def _mm_t(a, b):
    """a [M,K] @ b[N,K]^T (+ nothing) by oneDNN's inner product (torch's mkldnn_linear)."""
    return torch._C._nn.mkldnn_linear(a.contiguous().to_mkldnn(), b.contiguous().to_mkldnn()).to_dense()


class _OneDNNLinear(torch.autograd.Function):
    """F.linear(x, weight, bias) for 2-D x, forward and backward as oneDNN inner products."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = _mm_t(x, weight)
        return y + bias if bias is not None else y

    @staticmethod
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        gx = _mm_t(gy, weight.t()) if ctx.needs_input_grad[0] else None
        gw = _mm_t(gy.t(), x.t()) if ctx.needs_input_grad[1] else None
        gb = gy.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def _lin(x, weight, bias=None):
    """F.linear(x, weight, bias) for x [..., in] through oneDNN (same math up to rounding)."""
    shape = x.shape
    y = _OneDNNLinear.apply(x.reshape(-1, shape[-1]), weight, bias)
    return y.reshape(*shape[:-1], weight.shape[0])


def _gru_update(gi, gh, h, dim):
    """PyTorch's GRU cell from the input part gi and the hidden part gh (gates r, z, n along dim)."""
    i_r, i_z, i_n = gi.chunk(3, dim)
    h_r, h_z, h_n = gh.chunk(3, dim)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)  # (1 - z) * n + z * h


def fast_encode(model: RNNAttention, src, src_pad):
    """The module's encode() for a one-layer bidirectional GRU, differentiable, through oneDNN.
    Returns (memory [B,S,2H] zero at padding, keys [B,S,A] or None, s0 [B,H], final [B,2H])."""
    enc = model.encoder
    if model.is_lstm or enc.num_layers != 1:
        raise ValueError("fast_forward supports the one-layer GRU encoder only")
    B, S = src.shape
    H = model.cfg["hidden_size"]
    valid = ~src_pad  # [B,S]
    x = model.src_embed(src)  # [B,S,E]
    w_ih = torch.cat([enc.weight_ih_l0, enc.weight_ih_l0_reverse], 0)  # [6H,E]
    b_ih = torch.cat([enc.bias_ih_l0, enc.bias_ih_l0_reverse], 0)
    gi = _lin(x, w_ih, b_ih)  # [B,S,6H]
    gi_f, gi_r = gi[..., :3 * H].unbind(1), gi[..., 3 * H:].unbind(1)  # unbind: one backward, not S slices
    h_f = h_r = x.new_zeros(B, H)
    out_f, out_r = [None] * S, [None] * S
    for k in range(S):  # forward direction at t = k, backward direction at t = S-1-k
        t = S - 1 - k
        new_f = _gru_update(gi_f[k], _lin(h_f, enc.weight_hh_l0, enc.bias_hh_l0), h_f, 1)
        new_r = _gru_update(gi_r[t], _lin(h_r, enc.weight_hh_l0_reverse, enc.bias_hh_l0_reverse), h_r, 1)
        h_f = torch.where(valid[:, k:k + 1], new_f, h_f)  # held after a row's last token
        h_r = torch.where(valid[:, t:t + 1], new_r, h_r)  # zero until a row's last token
        out_f[k], out_r[t] = h_f, h_r
    # the forward state held after the last token -> zero there, as pad_packed_sequence gives
    memory = torch.cat([torch.stack(out_f, 1), torch.stack(out_r, 1)], -1) * valid.unsqueeze(-1)  # [B,S,2H]
    final = torch.cat([h_f, h_r], -1)  # [h_fwd_last ; h_bwd_first]
    s0 = torch.tanh(_lin(final, model.bridge.weight, model.bridge.bias))
    keys = _lin(memory, model.attention.U.weight) if model.cfg["attention"] == "additive" else None
    return memory, keys, s0, final


def fast_forward(model: RNNAttention, src, src_pad, tgt_in):
    """The module's teacher-forced forward (logits [B,T,V]) over its own parameters."""
    memory, keys, s, final = fast_encode(model, src, src_pad)
    dec = model.decoder
    E, H = model.cfg["embed_dim"], model.cfg["hidden_size"]
    T = tgt_in.shape[1]
    emb = model.tgt_embed(tgt_in)  # [B,T,E]
    w_e, w_c = dec.weight_ih_l0[:, :E], dec.weight_ih_l0[:, E:]
    gi_e = _lin(emb, w_e, dec.bias_ih_l0).unbind(1)  # T x [B,3H]
    attn = model.cfg["attention"] == "additive"
    if attn:
        A = model.cfg["attention_dim"]
        w_q = torch.cat([model.attention.W.weight, dec.weight_hh_l0], 0)  # one product for W s and W_hh s
        b_q = torch.cat([dec.bias_hh_l0.new_zeros(A), dec.bias_hh_l0], 0)
        v = model.attention.v.weight.view(A)
        neg = torch.zeros(src_pad.shape, dtype=memory.dtype).masked_fill(src_pad, float("-inf"))
    else:
        gi_c = _lin(final, w_c).unsqueeze(1)  # the context is the same at every step
    states, contexts = [], []
    for i in range(T):
        if attn:
            q = _lin(s, w_q, b_q)
            wq, gh = q[:, :A], q[:, A:]
            e = (torch.tanh(wq.unsqueeze(1) + keys) * v).sum(-1) + neg  # [B,S]
            alpha = torch.softmax(e, dim=-1)
            ctx = (alpha.unsqueeze(-1) * memory).sum(1)  # [B,2H]
            gi = gi_e[i] + _lin(ctx, w_c)
            contexts.append(ctx)
        else:
            gh = _lin(s, dec.weight_hh_l0, dec.bias_hh_l0)
            gi = gi_e[i] + gi_c[:, 0]
        s = _gru_update(gi, gh, s, 1)
        states.append(s)
    st = torch.stack(states, 1)  # [B,T,H]
    ctx = torch.stack(contexts, 1) if attn else final.unsqueeze(1).expand(-1, T, -1)
    return _lin(torch.cat([st, ctx, emb], -1), model.generator.weight, model.generator.bias)


# --- data, evaluation -------------------------------------------------------------------------
def make_tokenizer() -> CharTokenizer:
    return CharTokenizer(CharTokenizer.SPECIALS + dates.all_characters())


def pad_sources(seqs, pad_id):
    S = max(len(s) for s in seqs)
    src = torch.full((len(seqs), S), pad_id, dtype=torch.long)
    pad = torch.ones((len(seqs), S), dtype=torch.bool)
    for r, s in enumerate(seqs):
        src[r, :len(s)] = torch.tensor(s, dtype=torch.long)
        pad[r, :len(s)] = False
    return src, pad


def make_batch(rng: random.Random, tok: CharTokenizer, n: int):
    pairs = [dates.training_sample(rng) for _ in range(n)]
    src, src_pad = pad_sources([tok.encode(t) for t, _ in pairs], tok.pad_id)
    tgt_full = torch.tensor([[tok.bos_id] + tok.encode(iso) for _, iso in pairs], dtype=torch.long)
    return src, src_pad, tgt_full[:, :-1], tgt_full[:, 1:]


def accuracy(model: RNNAttention, tok: CharTokenizer, pairs, batch_size=500):
    model.eval()
    outs = model.greedy([tok.encode(t) for t, _ in pairs], max_new_tokens=16, batch_size=batch_size)
    preds = [tok.decode(o) for o in outs]
    wrong = [(t, iso, p) for (t, iso), p in zip(pairs, preds) if p != iso]
    return 1.0 - len(wrong) / len(pairs), wrong


def check_fast_forward(model: RNNAttention, tok: CharTokenizer, seed: int):
    """(max |logits diff|, max relative gradient diff) of fast_forward against the module's forward
    on one training batch."""
    src, src_pad, tgt_in, tgt_out = make_batch(random.Random(seed), tok, 64)
    logits, grads = [], []
    for forward in (lambda: model(src, tgt_in, src_key_padding_mask=src_pad)[0],
                    lambda: fast_forward(model, src, src_pad, tgt_in)):
        model.zero_grad(set_to_none=True)
        lg = forward()
        F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tgt_out.reshape(-1)).backward()
        logits.append(lg.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    model.zero_grad(set_to_none=True)
    gdiff = max(float((grads[0][n] - grads[1][n]).abs().max() / grads[0][n].abs().max().clamp_min(1e-12))
                for n in grads[0])
    return float((logits[0] - logits[1]).abs().max()), gdiff


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = os.path.dirname(_HERE)
    ap.add_argument("--attention", choices=("additive", "none"), default="additive")
    ap.add_argument("--out", help="model directory to write (default models/demo-dates-rnn, "
                                  "models/demo-dates-rnn-noattn with --attention none)")
    ap.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--attention-dim", type=int, default=64)
    ap.add_argument("--log-every", type=int, default=250)
    ap.add_argument("--check", action="store_true", help="compare fast_forward with the module's forward and exit")
    ap.add_argument("--no-export", action="store_true", help="train and evaluate only")
    args = ap.parse_args(argv)
    if args.out is None:
        name = "demo-dates-rnn" if args.attention == "additive" else "demo-dates-rnn-noattn"
        args.out = os.path.join(root, "models", name)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tok = make_tokenizer()
    model = RNNAttention("gru", embed_dim=args.embed, hidden_size=args.hidden, num_encoder_layers=1,
                         attention_dim=args.attention_dim, attention=args.attention,
                         src_vocab_size=len(tok), tgt_vocab_size=len(tok), bos_id=tok.bos_id,
                         eos_id=tok.eos_id, pad_id=tok.pad_id, max_length=64)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"attention {args.attention}, vocab {len(tok)}, parameters {n_params} "
          f"({n_params * 4 / 1e6:.2f} MB f32), steps {args.steps} x batch {args.batch_size}, "
          f"threads {args.threads}", flush=True)
    if args.check:
        diff, gdiff = check_fast_forward(model, tok, args.seed)
        print(f"fast_forward vs the module's forward: logits max |diff| {diff:.2e}, "
              f"gradients max relative diff {gdiff:.2e}")
        return 0 if diff < 1e-4 and gdiff < 1e-4 else 1

    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9)

    def lr_at(step):  # linear warmup, cosine decay to 1% of the peak
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * p)))

    # A small monitor set from the *training* dates (a separate stream), never the held-out set.
    mrng = random.Random(args.seed + 1)
    monitor = [dates.training_sample(mrng) for _ in range(300)]

    t0 = time.time()
    running = 0.0
    for step in range(args.steps):
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        src, src_pad, tgt_in, tgt_out = make_batch(rng, tok, args.batch_size)
        logits = fast_forward(model, src, src_pad, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = 0.98 * running + 0.02 * float(loss) if step else float(loss)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            acc, _ = accuracy(model, tok, monitor)
            print(f"step {step + 1:5d}  loss {running:.4f}  lr {lr_at(step):.2e}  "
                  f"monitor acc {acc * 100:.2f}%  {time.time() - t0:.0f}s", flush=True)
    train_s = time.time() - t0

    model.eval()
    held = dates.heldout_dates(1000)
    acc, wrong = accuracy(model, tok, held)
    print(f"held-out greedy exact match: {acc * 100:.2f}% ({1000 - len(wrong)}/1000), training {train_s:.0f}s")
    for t, iso, p in wrong[:20]:
        print(f"  wrong: {t!r} -> {p!r} (want {iso})")
    ex = tok.decode(model.greedy([tok.encode(EXAMPLE[0])], max_new_tokens=16)[0])
    print(f"{EXAMPLE[0]!r} -> {ex!r}{'' if ex == EXAMPLE[1] else '  (WRONG, want ' + EXAMPLE[1] + ')'}")

    if not args.no_export:
        cfg = export_model(model, args.out, dtype="f32")
        tok.save(os.path.join(args.out, "tokenizer.json"))
        size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
        print(f"wrote {args.out} ({size / 1e6:.2f} MB): config {cfg}")
    print(f"total wall time {time.time() - t0:.0f}s (training {train_s:.0f}s)")
    if args.attention == "additive" and acc < TARGET_ACCURACY:
        print(f"WARNING: held-out accuracy below the {TARGET_ACCURACY * 100:.0f}% target")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
