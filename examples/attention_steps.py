#!/usr/bin/env python3
"""The steps of self-attention, one at a time, on Tessera's kernels and in PyTorch.

Each step computes its quantities with tessera.ops (the engine's own GEMM, softmax, fused
attention, layer-norm and positional kernels) and with the PyTorch lines of the chapter, and
prints an excerpt and the largest difference (docs/attention-chapter.md walks through them):

  1. self-attention without weights:  omega = X X^T, alpha = softmax(omega), z = alpha X
  2. scaled dot-product attention with W_q, W_k, W_v (d_q = d_k = 24, d_v = 28)
  3. multi-head attention: 4 heads, stacked projections, an output projection
     (torch.nn.MultiheadAttention's weights)
  4. causal self-attention: renormalised weights, and the -inf mask before the softmax
  5. sinusoidal positional encodings added to the embeddings
  6. layer normalization (torch.nn.LayerNorm), alone and after a residual add

The sentence has 8 words embedded in 16 dimensions by torch.nn.Embedding from a fixed seed.

  PYTHONPATH=build/python python3 examples/attention_steps.py [--check] [--seed 123]

--check exits with status 1 when a step's difference exceeds the tolerance: for a quantity of
largest magnitude R, |Tessera - PyTorch| <= 1e-5 * max(1, R) (absolute for weights, context
vectors and normalized values, which are about 1 or less; relative for the raw scores omega,
which reach ~100, where one float32 ulp is already ~1e-5 and the GEMM and PyTorch sum in
different orders).
"""
import argparse
import math
import sys

import numpy as np
import torch

import tessera
from tessera import ops

SENTENCE = "Life is short, so eat the dessert first"
D_IN = 16        # embedding size
D_K = 24         # d_q = d_k: query and key size (step 2)
D_V = 28         # value size (step 2)
HEADS = 4        # step 3: 4 heads of 16 / 4 = 4 dimensions each
TOLERANCE = 1e-5


def t2n(t):
    """A torch tensor as a C-contiguous numpy float32 array."""
    return np.ascontiguousarray(t.detach().numpy(), dtype=np.float32)


class Step:
    """One step's compared quantities: name -> (Tessera's array, PyTorch's tensor)."""

    def __init__(self, number, title, out):
        self.number, self.title, self.rows = number, title, []
        print(f"\nstep {number}: {title}", file=out)

    def compare(self, name, ours, theirs):
        theirs = t2n(theirs)
        assert ours.shape == theirs.shape, f"{name}: {ours.shape} vs {theirs.shape}"
        diff = float(np.max(np.abs(ours.astype(np.float64) - theirs))) if ours.size else 0.0
        scale = max(1.0, float(np.max(np.abs(theirs)))) if theirs.size else 1.0
        self.rows.append((name, ours.shape, diff, scale))
        return ours

    @property
    def max_diff(self):
        return max(d for _, _, d, _ in self.rows)

    @property
    def worst(self):
        """The largest difference in units of the tolerance's scale, max(1, |PyTorch|)."""
        return max(d / s for _, _, d, s in self.rows)

    def report(self, out):
        print(f"  {'quantity':<40} {'shape':<12} {'max |Tessera - PyTorch|':>24}", file=out)
        for name, shape, diff, scale in self.rows:
            rel = f"  (max |x| = {scale:.1f})" if scale > 1.0 else ""
            print(f"  {name:<40} {str(list(shape)):<12} {diff:>24.3e}{rel}", file=out)


def embed_sentence(seed):
    """X [8, 16]: the chapter's vocabulary (the sorted words) and torch.nn.Embedding."""
    torch.manual_seed(seed)
    words = SENTENCE.replace(",", "").split()
    vocab = {w: i for i, w in enumerate(sorted(words))}
    ids = torch.tensor([vocab[w] for w in words])
    embed = torch.nn.Embedding(len(vocab), D_IN)
    return words, embed(ids).detach()  # [8, 16]


def excerpt(label, array, rows=2, out=sys.stdout):
    with np.printoptions(precision=4, suppress=True, linewidth=100):
        print(f"  {label} {list(array.shape)}, first {rows} rows:", file=out)
        for row in np.atleast_2d(array)[:rows]:
            text = np.array2string(row[:8], separator=" ")
            print(f"    {text[:-1]}{' ...]' if row.shape[0] > 8 else ']'}", file=out)


def step1(x, out):
    """Self-attention without trainable weights."""
    s = Step(1, "self-attention without weights: omega = X X^T, alpha = softmax(omega), "
             "z = alpha X", out)
    X = t2n(x)
    # PyTorch, the chapter's lines.
    omega_t = x @ x.T                          # [8, 8] dot products
    alpha_t = torch.softmax(omega_t, dim=-1)   # [8, 8] each row sums to 1
    z_t = alpha_t @ x                          # [8, 16] context vectors
    # Tessera.
    omega = s.compare("omega = X X^T", ops.matmul(X, X, transpose_b=True), omega_t)
    alpha = s.compare("alpha = softmax(omega)", ops.softmax(omega), alpha_t)
    z = s.compare("z = alpha X", ops.matmul(alpha, X), z_t)
    s.compare("fused attention(X, X, X, scale=1)", ops.attention(X, X, X, scale=1.0), z_t)
    excerpt("alpha", alpha, out=out)
    excerpt("z", z, out=out)
    return s


def projections(seed):
    """W_q, W_k [16, 24] and W_v [16, 28], as the chapter makes them (torch.rand)."""
    torch.manual_seed(seed)
    W_query = torch.rand(D_IN, D_K)
    W_key = torch.rand(D_IN, D_K)
    W_value = torch.rand(D_IN, D_V)
    return W_query, W_key, W_value


def step2(x, seed, out):
    """Scaled dot-product attention with W_q, W_k, W_v."""
    s = Step(2, f"scaled dot-product attention: d_q = d_k = {D_K}, d_v = {D_V}", out)
    W_query, W_key, W_value = projections(seed)
    X = t2n(x)
    # PyTorch.
    queries_t, keys_t, values_t = x @ W_query, x @ W_key, x @ W_value   # [8, 24] [8, 24] [8, 28]
    omega_t = queries_t @ keys_t.T                                      # [8, 8]
    alpha_t = torch.softmax(omega_t / D_K**0.5, dim=-1)                 # [8, 8]
    z_t = alpha_t @ values_t                                            # [8, 28]
    # Tessera.
    q = s.compare("queries = X W_q", ops.matmul(X, t2n(W_query)), queries_t)
    k = s.compare("keys = X W_k", ops.matmul(X, t2n(W_key)), keys_t)
    v = s.compare("values = X W_v", ops.matmul(X, t2n(W_value)), values_t)
    omega = s.compare("omega = q k^T", ops.matmul(q, k, transpose_b=True), omega_t)
    alpha = s.compare("alpha = softmax(omega / sqrt(d_k))",
                      ops.softmax(omega, scale=1 / math.sqrt(D_K)), alpha_t)
    z = s.compare("z = alpha v", ops.matmul(alpha, v), z_t)
    s.compare("fused attention(q, k, v)", ops.attention(q, k, v), z_t)
    excerpt("alpha", alpha, out=out)
    excerpt("z", z, out=out)
    return s, (q, k, v), (queries_t, keys_t, values_t)


def step3(x, seed, out):
    """Multi-head attention: torch.nn.MultiheadAttention's weights, Tessera's kernels."""
    s = Step(3, f"multi-head attention: {HEADS} heads of {D_IN // HEADS}, output projection", out)
    torch.manual_seed(seed)
    mha = torch.nn.MultiheadAttention(D_IN, HEADS, batch_first=True)
    with torch.no_grad():  # a bias that is not zero, to test it
        mha.in_proj_bias.uniform_(-0.5, 0.5)
        mha.out_proj.bias.uniform_(-0.5, 0.5)
    X = t2n(x)
    E = D_IN
    # PyTorch: the module, and its maths written out (the stacked projection split in three,
    # each head's scaled dot-product attention, the heads concatenated, the output projection).
    z_module, _ = mha(x[None], x[None], x[None], need_weights=False)    # [1, 8, 16]
    qkv_t = x @ mha.in_proj_weight.T + mha.in_proj_bias                  # [8, 48]
    q_t, k_t, v_t = qkv_t.split(E, dim=-1)                               # [8, 16] each
    d = E // HEADS
    qh, kh, vh = (t.reshape(-1, HEADS, d).transpose(0, 1) for t in (q_t, k_t, v_t))  # [4, 8, 4]
    heads_t = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(d), dim=-1) @ vh      # [4, 8, 4]
    concat_t = heads_t.transpose(0, 1).reshape(-1, E)                                 # [8, 16]
    z_t = concat_t @ mha.out_proj.weight.T + mha.out_proj.bias           # [8, 16]
    # Tessera: one GEMM for the stacked projection, the fused kernel over 4 heads, one GEMM.
    qkv = s.compare("qkv = X W_in^T + b_in", ops.matmul(X, t2n(mha.in_proj_weight), True,
                                                        t2n(mha.in_proj_bias)), qkv_t)
    q, k, v = qkv[:, :E], qkv[:, E:2 * E], qkv[:, 2 * E:]
    concat = s.compare("heads = attention(q, k, v, heads=4)",
                       ops.attention(q, k, v, heads=HEADS), concat_t)
    z = ops.matmul(concat, t2n(mha.out_proj.weight), True, t2n(mha.out_proj.bias))
    s.compare("z = heads W_out^T + b_out", z, z_t)
    s.compare("z vs nn.MultiheadAttention", z, z_module[0])
    excerpt("z", z, out=out)
    return s, mha


def step4(x, mha, qkv, qkv_t, out):
    """Causal self-attention: the weights above the diagonal zeroed."""
    s = Step(4, "causal self-attention: renormalised weights and the -inf mask", out)
    q, k, v = qkv
    queries_t, keys_t, values_t = qkv_t
    T = x.shape[0]
    # PyTorch, way 1: softmax, zero the weights above the diagonal, renormalise the rows.
    omega_t = queries_t @ keys_t.T
    alpha_t = torch.softmax(omega_t / D_K**0.5, dim=-1)
    mask_simple = torch.tril(torch.ones(T, T))
    masked_simple = alpha_t * mask_simple
    alpha_renorm_t = masked_simple / masked_simple.sum(dim=-1, keepdim=True)
    # PyTorch, way 2: -inf above the diagonal before the softmax (the same weights).
    mask = torch.triu(torch.ones(T, T), diagonal=1)
    masked = omega_t.masked_fill(mask.bool(), -torch.inf)
    alpha_causal_t = torch.softmax(masked / D_K**0.5, dim=-1)
    z_t = alpha_causal_t @ values_t
    # Tessera: the softmax with its causal mask, and the fused kernel's.
    omega = ops.matmul(q, k, transpose_b=True)
    alpha = ops.softmax(omega, scale=1 / math.sqrt(D_K), causal=True)
    s.compare("softmax(causal) vs renormalised", alpha, alpha_renorm_t)
    s.compare("softmax(causal) vs -inf mask", alpha, alpha_causal_t)
    z = s.compare("z = alpha v", ops.matmul(alpha, v), z_t)
    s.compare("fused attention(q, k, v, causal)", ops.attention(q, k, v, causal=True), z_t)
    # Multi-head, causal: nn.MultiheadAttention with the boolean mask (True: not allowed).
    X = t2n(x)
    z_mha_t, _ = mha(x[None], x[None], x[None], attn_mask=mask.bool(), need_weights=False)
    E = D_IN
    qkv_m = ops.matmul(X, t2n(mha.in_proj_weight), True, t2n(mha.in_proj_bias))
    heads = ops.attention(qkv_m[:, :E], qkv_m[:, E:2 * E], qkv_m[:, 2 * E:], heads=HEADS,
                          causal=True)
    s.compare("multi-head causal vs nn.MHA(attn_mask)",
              ops.matmul(heads, t2n(mha.out_proj.weight), True, t2n(mha.out_proj.bias)),
              z_mha_t[0])
    excerpt("alpha", alpha, rows=3, out=out)
    return s


def step5(x, out):
    """Sinusoidal positional encodings ("Attention Is All You Need", 3.5)."""
    s = Step(5, "sinusoidal positional encodings, added to the embeddings", out)
    T, d = x.shape
    # PyTorch, the usual lines.
    position = torch.arange(T).unsqueeze(1)                                   # [8, 1]
    div_term = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))   # [8]
    pe_t = torch.zeros(T, d)
    pe_t[:, 0::2] = torch.sin(position * div_term)
    pe_t[:, 1::2] = torch.cos(position * div_term)
    # Tessera.
    pe = s.compare("pe", ops.sinusoidal_positions(T, d), pe_t)
    x_pe = s.compare("X + pe", ops.add(t2n(x), pe), x + pe_t)
    excerpt("pe", pe[:3], rows=3, out=out)
    return s, x_pe, x + pe_t


def step6(x_pe, x_pe_t, mha, seed, out):
    """Layer normalization, alone and as the Transformer's add & norm."""
    s = Step(6, "layer normalization: LayerNorm(X + pe), LayerNorm(X + pe + MHA(X + pe))",
             out)
    torch.manual_seed(seed)
    ln = torch.nn.LayerNorm(D_IN)
    with torch.no_grad():  # weights that are not ones and zeros, to test them
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    w, b = t2n(ln.weight), t2n(ln.bias)
    y = s.compare("LayerNorm(X + pe)", ops.layer_norm(x_pe, w, b, eps=ln.eps), ln(x_pe_t))
    # Post-LN sublayer: LayerNorm(x + MultiheadAttention(x)), the residual added by the kernel.
    attn_t, _ = mha(x_pe_t[None], x_pe_t[None], x_pe_t[None], need_weights=False)
    E = D_IN
    qkv = ops.matmul(x_pe, t2n(mha.in_proj_weight), True, t2n(mha.in_proj_bias))
    attn = ops.matmul(ops.attention(qkv[:, :E], qkv[:, E:2 * E], qkv[:, 2 * E:], heads=HEADS),
                      t2n(mha.out_proj.weight), True, t2n(mha.out_proj.bias))
    s.compare("LayerNorm(x + MHA(x))", ops.layer_norm(attn, w, b, eps=ln.eps, residual=x_pe),
              ln(x_pe_t + attn_t[0]))
    excerpt("LayerNorm(X + pe)", y, out=out)
    return s


def run_steps(seed=123, out=sys.stdout):
    """Runs the six steps; returns their Step records."""
    torch.set_grad_enabled(False)
    words, x = embed_sentence(seed)
    print(f"sentence: {SENTENCE!r} -> {len(words)} words, X = Embedding(seed {seed}) "
          f"[{x.shape[0]}, {x.shape[1]}]; Tessera {tessera.__version__}, kernels {ops.isa()}, "
          f"torch {torch.__version__}", file=out)
    steps = []

    def show(step):
        step.report(out)
        steps.append(step)

    s1 = step1(x, out)
    show(s1)
    s2, qkv, qkv_t = step2(x, seed, out)
    show(s2)
    s3, mha = step3(x, seed, out)
    show(s3)
    show(step4(x, mha, qkv, qkv_t, out))
    s5, x_pe, x_pe_t = step5(x, out)
    show(s5)
    show(step6(x_pe, x_pe_t, mha, seed, out))
    return steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if a step differs by more than {TOLERANCE} x max(1, |x|)")
    args = parser.parse_args()
    steps = run_steps(args.seed)
    print(f"\n{'step':<6} {'max |Tessera - PyTorch|':>24} {'in units of max(1, |x|)':>24}")
    bad = []
    for s in steps:
        ok = s.worst <= TOLERANCE
        print(f"{s.number:<6} {s.max_diff:>24.3e} {s.worst:>24.3e}  {'ok' if ok else 'TOO LARGE'}")
        if not ok:
            bad.append(s.number)
    if bad and args.check:
        print(f"steps {bad} exceed {TOLERANCE}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
