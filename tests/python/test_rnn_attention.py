"""The rnn_attention family through the Python module: a small random model with the demo's char
tokenizer (tests/rnn_cli.py's make_model) loads, reports its family, and generates the text and
token ids RNNAttention.greedy (tools/rnn_attention.py) gives, ragged prompts in one call."""
import os
import sys

import pytest

import tessera
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tests"))
from rnn_cli import MAX_NEW, PROMPTS, TOKENIZER, CharTok, make_model  # noqa: E402


@pytest.fixture(scope="module")
def rnn(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("rnn_attention"))
    tok = CharTok(TOKENIZER)
    ref = make_model(d, tok)
    return tessera.Model(d, threads=2), ref, tok


def test_rnn_attention_generates_as_the_reference(rnn):
    model, ref, tok = rnn
    assert model.family == "rnn_attention"
    src = [tok.encode(p, ref.cfg["eos_id"]) for p in PROMPTS]  # text sources end with eos
    want_ids = ref.greedy(src, max_new_tokens=MAX_NEW)
    assert model.generate(PROMPTS, max_new_tokens=MAX_NEW) == [tok.decode(i) for i in want_ids]
    assert model.generate(src, max_new_tokens=MAX_NEW) == want_ids
    assert model.generate(PROMPTS[0], max_new_tokens=MAX_NEW) == [tok.decode(want_ids[0])]
