"""Errors: every failure is a tessera.Error (an Exception) whose message names the problem."""
import numpy as np
import pytest

import tessera
from conftest import DEMO

IDS = np.array([[464, 2068, 7586]], np.int64)


def test_classes():
    assert issubclass(tessera.Error, Exception)
    assert issubclass(tessera.Cancelled, tessera.Error)


def test_loading():
    with pytest.raises(tessera.Error, match="/nonexistent/model"):
        tessera.Model("/nonexistent/model")
    with pytest.raises(tessera.Error, match="threads"):
        tessera.Model(DEMO, threads=-1)
    with pytest.raises(tessera.Error, match="sse9"):
        tessera.Model(DEMO, isa="sse9")
    with pytest.raises(tessera.Error, match="nosuchpass"):
        tessera.Model(DEMO, passes="nosuchpass")


def test_run_inputs(gpt2):
    with pytest.raises(tessera.Error, match="tokens"):
        gpt2.run({"tokens": IDS})
    with pytest.raises(tessera.Error, match="input_ids"):
        gpt2.run({})
    with pytest.raises(tessera.Error, match="input_ids"):
        gpt2.run({"input_ids": IDS.astype(np.float32)})  # a dtype the input does not take
    with pytest.raises(tessera.Error, match="input 'input_ids'.*float64"):
        gpt2.run({"input_ids": IDS.astype(np.float64)})  # a dtype no input takes
    with pytest.raises(tessera.Error, match="input 'input_ids'.*complex64"):
        gpt2.run({"input_ids": IDS.astype(np.complex64)})
    with pytest.raises(tessera.Error, match="input 'input_ids'.*byte order"):
        gpt2.run({"input_ids": IDS.astype(">i8")})
    with pytest.raises(tessera.Error, match="50257"):
        gpt2.run({"input_ids": np.array([[50257]], np.int64)})
    with pytest.raises(tessera.Error, match="str"):
        gpt2.run({1: IDS})
    # The model is still usable.
    assert gpt2.run({"input_ids": IDS})["logits"].shape == (1, 3, 50257)


def test_generation_options(gpt2, bert):
    with pytest.raises(tessera.Error, match="temperature"):
        gpt2.generate("x", method="sample", temperature=0)
    with pytest.raises(tessera.Error, match="method.*nucleus"):
        gpt2.generate("x", method="nucleus")
    with pytest.raises(tessera.Error, match="early_stopping"):
        gpt2.generate("x", method="beam", early_stopping="sometimes")
    with pytest.raises(tessera.Error, match="max_new_tokens"):
        gpt2.generate("x", max_new_tokens=1000)
    with pytest.raises(tessera.Error, match="num_return_sequences"):
        gpt2.generate("x", num_return_sequences=2)
    with pytest.raises(tessera.Error, match="prompt 0"):
        gpt2.generate([[]])
    with pytest.raises(tessera.Error, match="prompts"):
        gpt2.generate(42)
    with pytest.raises(tessera.Error, match="prompts"):
        gpt2.generate([[1, "a"]])
    with pytest.raises(tessera.Error, match="gpt2"):
        bert.generate("x")
    with pytest.raises(tessera.Error, match="bert"):
        gpt2.embed("x")
    with pytest.raises(tessera.Error, match="pooling.*max"):
        bert.embed("x", pooling="max")
    with pytest.raises(tessera.Error, match="texts"):
        bert.embed(5)
    with pytest.raises(tessera.Error, match="texts"):
        bert.embed(["a", 5])
    with pytest.raises(tessera.Error, match="stop.*int"):
        gpt2.generate("x", stop=5)
    with pytest.raises(TypeError):
        gpt2.generate("x", no_such_option=1)  # Python's own error for an unknown keyword
    assert gpt2.generate("x", max_new_tokens=2)[0] != ""  # still usable
