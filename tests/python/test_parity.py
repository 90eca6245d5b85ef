"""Parity with PyTorch through the module, on each family: the demo `transformer` against
nn.Transformer (tools/tessera_torch.py, as tests/parity_test.py), the random gpt2 and bert
checkpoints against tools/hf_reference.py (as tests/hf_parity.py). Tolerance: theirs, a maximum
absolute error of 1e-4 (the references run in float64 here, so the error is Tessera's)."""
import numpy as np
import torch

import hf_reference
from conftest import BERT, DEMO, GPT2
from tessera_torch import causal_mask, load_token_model, standard_math_path

TOL = 1e-4


def ragged_padding(rng, b, n):
    """Right padding (True = padding), the longest row full."""
    lengths = rng.integers(1, n + 1, b)
    lengths[0] = n
    return np.arange(n)[None, :] >= lengths[:, None]


def test_transformer_demo_matches_nn_transformer(demo):
    rng = np.random.default_rng(0)
    ref = load_token_model(DEMO).double()
    B, S, T = 3, 12, 9
    src = rng.integers(4, ref.src_vocab_size, (B, S)).astype(np.int64)
    tgt = rng.integers(4, ref.tgt_vocab_size, (B, T)).astype(np.int64)
    pad = ragged_padding(rng, B, S)
    src[pad] = ref.pad_id
    mask = causal_mask(T).numpy()
    out = demo.run({"src_ids": src, "tgt_ids": tgt, "tgt_mask": mask, "src_key_padding_mask": pad,
                    "memory_key_padding_mask": pad})
    assert set(out) == {"logits"}
    got = out["logits"]
    assert got.dtype == np.float32 and got.shape == (B, T, ref.tgt_vocab_size)
    for p in ref.parameters():
        p.requires_grad_(True)
    with standard_math_path():
        want = ref(torch.from_numpy(src), torch.from_numpy(tgt), tgt_mask=torch.from_numpy(mask),
                   src_key_padding_mask=torch.from_numpy(pad),
                   memory_key_padding_mask=torch.from_numpy(pad)).detach().numpy()
    err = np.abs(got - want).max()
    assert err < TOL, f"max |err| {err:.3g}"


def test_gpt2_matches_reference(gpt2):
    rng = np.random.default_rng(1)
    B, T = 3, 11
    ids = rng.integers(0, 50257, (B, T)).astype(np.int64)
    real = ~ragged_padding(rng, B, T)
    mask = real.astype(np.int64)
    got = gpt2.run({"input_ids": ids, "attention_mask": mask})["logits"]
    assert got.dtype == np.float32 and got.shape == (B, T, 50257)
    want = hf_reference.load(GPT2)(ids, mask)[0].numpy()
    err = np.abs(got[real] - want[real]).max()
    assert err < TOL, f"max |err| {err:.3g}"


def test_bert_matches_reference(bert):
    rng = np.random.default_rng(2)
    B, T = 3, 13
    ids = rng.integers(0, 30522, (B, T)).astype(np.int64)
    real = ~ragged_padding(rng, B, T)
    mask = real.astype(np.int64)
    types = rng.integers(0, 2, (B, T)).astype(np.int64)
    out = bert.run({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    hidden, pooled = hf_reference.load(BERT)(ids, mask, types)
    hidden, pooled = hidden.numpy(), pooled.numpy()
    assert out["last_hidden_state"].shape == (B, T, 64)
    assert out["pooler_output"].shape == (B, 64)
    err = np.abs(out["last_hidden_state"][real] - hidden[real]).max()
    assert err < TOL, f"last_hidden_state: max |err| {err:.3g}"
    assert (out["last_hidden_state"][~real] == 0).all()  # padding removed: exactly zero
    err = np.abs(out["pooler_output"] - pooled).max()
    assert err < TOL, f"pooler_output: max |err| {err:.3g}"


def test_bert_embed_is_the_pooled_reference(bert):
    texts = ["Hello world", "a somewhat longer sentence than the first one"]
    ids = [bert.tokenize(t, special=True) for t in texts]
    ref = hf_reference.load(BERT)
    want_cls, want_mean, want_pooler = [], [], []
    for row in ids:
        hidden, pooled = ref(np.array([row], np.int64), None, None)
        want_cls.append(hidden[0, 0].numpy())
        want_mean.append(hidden[0].mean(0).numpy())
        want_pooler.append(pooled[0].numpy())
    for pooling, want in (("cls", want_cls), ("mean", want_mean), ("pooler", want_pooler)):
        got = bert.embed(texts, pooling=pooling)
        assert got.dtype == np.float32 and got.shape == (2, 64)
        assert np.abs(got - np.stack(want)).max() < TOL, pooling
    unit = bert.embed(texts, pooling="mean", normalize=True)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(bert.embed(ids, pooling="mean", normalize=True), unit)
