"""Model(path, dtype=...): bf16 and int8 GEMM weights, and a directory `tessera quantize` wrote."""
import os
import subprocess

import numpy as np
import pytest

import tessera
from conftest import BERT, CLI, GPT2

IDS = np.array([[464, 2068, 7586, 21831, 11687, 625], [262, 16931, 318, 257, 1110, 13]], np.int64)
# u: the relative rounding of one GEMM's operands (bf16: 2^-8, int8: 2^-7), times the 9 GEMMs in
# series of the 2-layer models (tests/lowp_cli.py states the estimate), relative to max |output|.
U = {"bf16": 2.0 ** -8, "int8": 2.0 ** -7}


def test_default_dtype_is_f32(gpt2):
    assert gpt2.dtype == "f32"


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_reduced_precision_close_to_f32(gpt2, bert, dtype):
    want = gpt2.run({"input_ids": IDS})["logits"]
    m = tessera.Model(GPT2, threads=2, dtype=dtype)
    assert m.dtype == dtype
    got = m.run({"input_ids": IDS})["logits"]
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() <= 9 * U[dtype] * np.abs(want).max()
    b = tessera.Model(BERT, threads=2, dtype=dtype)
    e32, e = bert.embed(["a text", "another one"]), b.embed(["a text", "another one"])
    assert np.abs(e - e32).max() <= 9 * U[dtype] * np.abs(e32).max()


def test_quantized_directory_equals_load_time_conversion(tmp_path):
    out = tmp_path / "gpt2_int8"
    subprocess.run([CLI, "--dtype", "int8", "quantize", "--model", GPT2, "--out", str(out)], check=True,
                   capture_output=True)
    q = tessera.Model(out, threads=2)  # auto: the directory's int8
    assert q.dtype == "int8"
    conv = tessera.Model(GPT2, threads=2, dtype="int8")
    np.testing.assert_array_equal(q.run({"input_ids": IDS})["logits"], conv.run({"input_ids": IDS})["logits"])
    assert q.generate(["Hello"], max_new_tokens=4) == conv.generate(["Hello"], max_new_tokens=4)
    with pytest.raises(tessera.Error, match="holds int8 weights"):
        tessera.Model(out, dtype="f32")
    assert os.path.exists(out / "vocab.json")  # the tokenizer came along


def test_unknown_dtype():
    with pytest.raises(tessera.Error, match="f32, bf16 or int8"):
        tessera.Model(GPT2, dtype="fp8")
