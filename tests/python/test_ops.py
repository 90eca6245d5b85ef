"""tessera.ops (numpy float32 in and out) and the attention chapter's steps
(examples/attention_steps.py, docs/attention-chapter.md) against PyTorch."""
import importlib.util
import io
import math
import os

import numpy as np
import pytest

import tessera
from tessera import ops

from conftest import ROOT

TOL = 1e-5


def _example():
    path = os.path.join(ROOT, "examples", "attention_steps.py")
    spec = importlib.util.spec_from_file_location("attention_steps", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chapter_steps():
    pytest.importorskip("torch")
    out = io.StringIO()
    steps = _example().run_steps(seed=123, out=out)
    print(out.getvalue())
    return steps


@pytest.mark.parametrize("number", [1, 2, 3, 4, 5, 6])
def test_chapter_step_matches_pytorch(chapter_steps, number):
    """Every quantity of the step within 1e-5 x max(1, max |PyTorch|) (absolute below 1)."""
    step = next(s for s in chapter_steps if s.number == number)
    assert step.rows, f"step {number} compared nothing"
    for name, shape, diff, scale in step.rows:
        assert diff <= TOL * scale, f"step {number}, {name} {shape}: {diff:.3e} > {TOL} x {scale}"


def test_chapter_runs_every_step(chapter_steps):
    assert [s.number for s in chapter_steps] == [1, 2, 3, 4, 5, 6]


def test_isa():
    assert ops.isa() in ("avx512", "avx2", "generic")
    if os.environ.get("TESSERA_ISA"):
        assert ops.isa() == os.environ["TESSERA_ISA"]


# Odd sizes against numpy in float64 (the C++ suite, tests/api/test_ops.cpp, does the same with
# stated bounds; these check the Python layer: conversions, strides, shapes, options).
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 17, 1), (17, 3, 17), (1, 17, 3)])
def test_matmul_odd_sizes(m, k, n):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    bias = rng.uniform(-1, 1, n).astype(np.float32)
    want = a.astype(np.float64) @ b + bias
    np.testing.assert_allclose(ops.matmul(a, b, bias=bias), want, atol=TOL)
    # b.T is not C-contiguous: copied once, same result.
    np.testing.assert_allclose(ops.matmul(a, np.ascontiguousarray(b.T), transpose_b=True,
                                          bias=bias), want, atol=TOL)
    np.testing.assert_allclose(ops.matmul(a, b.T.T, bias=bias), want, atol=TOL)


@pytest.mark.parametrize("t,s", [(1, 1), (3, 17), (17, 3), (17, 17)])
def test_softmax_and_attention_odd_sizes(t, s):
    rng = np.random.default_rng(t * 31 + s)
    d = 3
    q = rng.uniform(-1, 1, (2, t, 2 * d)).astype(np.float32)  # [B, T, H*D], 2 heads
    k = rng.uniform(-1, 1, (2, s, 2 * d)).astype(np.float32)
    v = rng.uniform(-1, 1, (2, s, 2 * 5)).astype(np.float32)  # Dv = 5 != Dk = 3
    for causal in (False, True):
        heads = []
        for h in range(2):
            qh, kh = q[..., h * d:(h + 1) * d], k[..., h * d:(h + 1) * d]
            sc = (qh.astype(np.float64) @ kh.transpose(0, 2, 1)) / math.sqrt(d)  # [B, T, S]
            if causal:
                sc = np.where(np.triu(np.ones((t, s), bool), 1), -np.inf, sc)
            w = np.exp(sc - sc.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            heads.append(w @ v[..., h * 5:(h + 1) * 5])
        want = np.concatenate(heads, -1)
        got = ops.attention(q, k, v, heads=2, causal=causal)
        assert got.shape == (2, t, 10) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=TOL)
        scores = np.ascontiguousarray(q[..., :d] @ k[..., :d].transpose(0, 2, 1))
        sm = ops.softmax(scores, scale=0.5, causal=causal)
        ref = np.where(np.triu(np.ones((t, s), bool), 1) & causal, -np.inf, 0.5 * scores)
        ref = np.exp(ref - ref.max(-1, keepdims=True))
        np.testing.assert_allclose(sm, ref / ref.sum(-1, keepdims=True), atol=TOL)


@pytest.mark.parametrize("n", [1, 3, 17])
def test_layer_norm_add_positions_odd_sizes(n):
    rng = np.random.default_rng(n)
    x = rng.uniform(-3, 3, (4, n)).astype(np.float32)
    r = rng.uniform(-1, 1, (4, n)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, n).astype(np.float32)
    b = rng.uniform(-1, 1, n).astype(np.float32)
    s = x.astype(np.float64) + r
    want = (s - s.mean(-1, keepdims=True)) / np.sqrt(s.var(-1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(ops.layer_norm(x, w, b, residual=r), want, atol=4 * TOL)
    np.testing.assert_array_equal(ops.add(x, r), x + r)
    pe = ops.sinusoidal_positions(n, n)
    assert pe.shape == (n, n)
    p, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    angle = p / np.power(10000.0, (j - j % 2) / n)
    np.testing.assert_allclose(pe, np.where(j % 2 == 0, np.sin(angle), np.cos(angle)), atol=1e-7)


def test_lists_are_converted_results_are_owned():
    y = ops.softmax([[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(y, [[0.5, 0.5], [0.5, 0.5]])
    y[0, 0] = 7.0  # a writable array of its own
    assert ops.softmax([[0.0, 0.0]])[0, 0] == 0.5


# Errors: tessera.Error, naming the op and the wrong argument.
def _error(f, *args, **kwargs):
    with pytest.raises(tessera.Error) as e:
        f(*args, **kwargs)
    return str(e.value)


def test_errors_name_the_argument():
    f = np.ones((4, 8), np.float32)
    e = _error(ops.matmul, f, np.ones((5, 3), np.float32))
    assert "ops::matmul" in e and "b is [5, 3]" in e and "K = 8" in e
    e = _error(ops.matmul, f, np.ones((8, 3), np.float32), bias=np.ones(4, np.float32))
    assert "bias is [4]; expected [N] with N = 3" in e
    e = _error(ops.matmul, f.astype(np.float64), f)
    assert "ops::matmul: a must be a float32 array, got float64" in e
    e = _error(ops.softmax, np.ones(4, np.float32), causal=True)
    assert "ops::softmax: x has rank 1 [4]; expected rank 2 or more" in e
    e = _error(ops.softmax, np.ones((2, 2), np.int64))
    assert "x must be a float32 array, got int64" in e
    e = _error(ops.attention, f, f, f, heads=3)
    assert "ops::attention: q's last dimension 8 is not heads = 3" in e
    e = _error(ops.attention, f, np.ones((4, 6), np.float32), f)
    assert "k is [4, 6]; its last dimension must be q's, 8" in e
    e = _error(ops.attention, f, f, np.ones((3, 8), np.float32))
    assert "v is [3, 8]; expected as many rows as k, S = 4" in e
    e = _error(ops.attention, np.ones((1, 4, 8), np.float32), f, f)
    assert "k is [4, 8]; expected rank 3 like q" in e
    e = _error(ops.layer_norm, f, weight=np.ones(3, np.float32))
    assert "ops::layer_norm: weight is [3]; expected [N] with N = 8" in e
    e = _error(ops.layer_norm, f, residual=np.ones((4, 7), np.float32))
    assert "residual is [4, 7]; expected the shape of x, [4, 8]" in e
    e = _error(ops.add, f, np.ones((8, 4), np.float32))
    assert "ops::add: b is [8, 4]; expected the shape of a, [4, 8]" in e
    e = _error(ops.sinusoidal_positions, 8, 0)
    assert "ops::sinusoidal_positions: dim must be >= 1" in e
    e = _error(ops.softmax, "not numbers")
    assert "ops::softmax: x is not an array of numbers (str)" in e
