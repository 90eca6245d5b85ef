"""Generation through the module: the demo's dates, gpt2 greedy text equal to the CLI's,
streaming (pieces concatenate to generate()'s text; closing a stream early stops the engine and
leaves the model usable), token-id prompts, several sequences per prompt."""
import json
import subprocess

import pytest

import tessera
from conftest import CLI, GPT2


def test_demo_dates(demo):
    assert demo.generate("1 May 2020") == ["2020-05-01"]
    assert demo.generate(["23 March 1999", "July 4, 1976"]) == ["1999-03-23", "1976-07-04"]
    beams = demo.generate(["23 March 1999"], method="beam", num_beams=3, num_return_sequences=2)
    assert len(beams) == 1 and len(beams[0]) == 2 and beams[0][0] == "1999-03-23"


def test_gpt2_greedy_equals_cli(gpt2):
    prompts = ["The quick brown fox", "Once upon a time there was"]
    got = gpt2.generate(prompts, max_new_tokens=24)
    p = subprocess.run([CLI, "generate", "--model", GPT2, "--max-new-tokens", "24", "--jsonl",
                        "--threads", "2"] + prompts, capture_output=True, text=True, check=True)
    want = [json.loads(line)["text"] for line in p.stdout.splitlines()]
    assert got == want
    # Sampling with a seed and a stop string as well.
    opts = dict(method="sample", seed=5, top_k=40, top_p=0.9, temperature=0.8, max_new_tokens=30)
    got = gpt2.generate(prompts[:1], stop=",", **opts)
    p = subprocess.run([CLI, "generate", "--model", GPT2, "--method", "sample", "--seed", "5",
                        "--top-k", "40", "--top-p", "0.9", "--temperature", "0.8",
                        "--max-new-tokens", "30", "--stop", ",", "--jsonl", prompts[0]],
                       capture_output=True, text=True, check=True)
    assert got == [json.loads(p.stdout)["text"]]


def test_token_id_prompts(gpt2):
    ids = gpt2.tokenize("The quick brown fox")
    assert ids == gpt2.tokenize("The quick brown fox", special=False)
    out = gpt2.generate([ids], max_new_tokens=10)
    assert len(out) == 1 and all(isinstance(i, int) for i in out[0]) and len(out[0]) == 10
    assert gpt2.detokenize(out[0]) == gpt2.generate("The quick brown fox", max_new_tokens=10)[0]


def test_stream_pieces_make_the_text(gpt2, demo):
    for kw in (dict(max_new_tokens=30), dict(method="sample", seed=3, max_new_tokens=30)):
        pieces = list(gpt2.stream("Once upon a time", **kw))
        assert len(pieces) > 1
        assert "".join(pieces) == gpt2.generate("Once upon a time", **kw)[0]
    assert "".join(demo.stream("July 4, 1976")) == "1976-07-04"
    # Beam search streams nothing: its text comes as one piece at the end.
    assert list(demo.stream("July 4, 1976", method="beam")) == ["1976-07-04"]


def test_stream_closed_early_stops_and_the_model_stays_usable(gpt2):
    want = gpt2.generate("In the beginning", max_new_tokens=100)[0]
    for _ in range(3):
        got = []
        for piece in gpt2.stream("In the beginning", max_new_tokens=100):
            got.append(piece)
            if len(got) == 3:
                break  # drops the iterator: the engine is cancelled, its thread joined
        assert len(got) == 3 and want.startswith("".join(got))
    s = gpt2.stream("In the beginning", max_new_tokens=100)
    first = next(s)
    s.close()
    with pytest.raises(StopIteration):
        next(s)
    assert want.startswith(first)
    with gpt2.stream("In the beginning", max_new_tokens=100) as s:
        next(s)
    # Two streams open at once in one thread, each on its own session.
    a = gpt2.stream("In the beginning", max_new_tokens=20)
    b = gpt2.stream("In the beginning", max_new_tokens=20)
    assert "".join(a) == "".join(b) == gpt2.generate("In the beginning", max_new_tokens=20)[0]
    assert gpt2.generate("In the beginning", max_new_tokens=100)[0] == want


def test_stream_errors_surface_in_python(gpt2, bert):
    with pytest.raises(tessera.Error, match="num_return_sequences"):
        gpt2.stream("x", method="sample", num_return_sequences=2)
    with pytest.raises(tessera.Error, match="temperature"):
        list(gpt2.stream("x", method="sample", temperature=0))
    with pytest.raises(tessera.Error, match="gpt2"):
        list(bert.stream("x"))


def test_explicit_session(gpt2):
    s = tessera.Session(gpt2)
    assert s.generate("The quick brown fox", max_new_tokens=12) == \
        gpt2.generate("The quick brown fox", max_new_tokens=12)
    assert s.model.family == "gpt2" and s.arena_bytes > 0
    stream = s.stream("The quick brown fox", max_new_tokens=12)
    next(stream)
    with pytest.raises(tessera.Error, match="in use"):
        s.generate("x")  # busy until the stream ends
    stream.close()
    assert s.generate("The quick brown fox", max_new_tokens=12) == \
        gpt2.generate("The quick brown fox", max_new_tokens=12)


def test_on_token_callback_and_cancellation(gpt2):
    prompts = ["The quick brown fox", "Hello"]
    tokens = []
    out = gpt2.generate(prompts, max_new_tokens=12, on_token=tokens.append)  # None: go on
    for p in range(2):
        mine = [t for t in tokens if t.prompt == p]
        assert all(t.sequence == 0 for t in mine)
        assert "".join(t.text for t in mine) == out[p]
        assert gpt2.detokenize([t.id for t in mine]) == out[p]
    assert "tessera.Token(prompt=" in repr(tokens[0])
    seen = []
    with pytest.raises(tessera.Cancelled):
        gpt2.generate(prompts[0], max_new_tokens=12, on_token=lambda t: seen.append(t) or len(seen) < 3)
    assert len(seen) == 3

    def boom(t):
        raise ValueError("from the callback")

    with pytest.raises(ValueError, match="from the callback"):
        gpt2.generate(prompts[0], max_new_tokens=12, on_token=boom)
    assert gpt2.generate(prompts, max_new_tokens=12) == out  # still usable


def test_path_like_and_empty(gpt2):
    import pathlib
    m = tessera.Model(pathlib.Path(GPT2), threads=1)
    assert m.family == "gpt2"
    assert m.generate([]) == []
