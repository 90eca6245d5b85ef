"""run(): numpy arrays in and out without copies, every input dtype, non-contiguous inputs."""
import gc

import numpy as np
import pytest

import tessera

IDS = np.array([[464, 2068, 7586, 21831, 11687, 625], [262, 16931, 318, 257, 1110, 13]], np.int64)


def test_outputs_are_views_of_the_engine_memory(gpt2):
    out = gpt2.run({"input_ids": IDS})
    logits = out["logits"]
    assert logits.shape == (2, 6, 50257) and logits.dtype == np.float32
    # Not a copy: the array does not own its data; its base is the capsule holding the tensor.
    assert not logits.flags.owndata
    assert type(logits.base).__name__ == "PyCapsule"
    # The memory outlives the dict and the call, and belongs to this result alone.
    keep = logits[1, 2]
    del out, logits
    gc.collect()
    again = gpt2.run({"input_ids": IDS})["logits"]
    np.testing.assert_array_equal(keep, again[1, 2])
    again[:] = 0  # writable, and no other result sees it
    assert not np.array_equal(gpt2.run({"input_ids": IDS})["logits"], again)


def test_inputs_read_in_place_and_non_contiguous_views(gpt2):
    want = gpt2.run({"input_ids": IDS})["logits"]
    # The engine reads the caller's buffer: change the buffer, get the other result.
    buf = IDS.copy()
    np.testing.assert_array_equal(gpt2.run({"input_ids": buf})["logits"], want)
    buf[0, 0] = 50256
    assert not np.array_equal(gpt2.run({"input_ids": buf})["logits"][0, 0], want[0, 0])
    # A transposed view, a strided slice and a Fortran-order copy give the same result.
    for x in (np.ascontiguousarray(IDS.T).T, np.repeat(IDS, 2, axis=1)[:, ::2],
              np.asfortranarray(IDS)):
        assert not x.flags.c_contiguous
        np.testing.assert_array_equal(gpt2.run({"input_ids": x})["logits"], want)
    # A list (numpy makes it int64), an attention mask of every dtype gpt2 takes: the same.
    np.testing.assert_array_equal(gpt2.run({"input_ids": IDS.tolist()})["logits"], want)
    for dt in (np.int64, np.int32, np.uint8, np.bool_, np.float32):
        mask = np.ones(IDS.shape, dt)
        np.testing.assert_array_equal(
            gpt2.run({"input_ids": IDS, "attention_mask": mask})["logits"], want, err_msg=str(dt))


def test_mask_dtypes(demo):
    ids = np.array([[5, 6, 7, 8]], np.int64)
    tgt = np.array([[1, 9, 10]], np.int64)
    causal = np.triu(np.ones((3, 3), bool), 1)
    a = demo.run({"src_ids": ids, "tgt_ids": tgt, "tgt_mask": causal})["logits"]
    for mask in (causal.astype(np.uint8), np.where(causal, -np.inf, 0).astype(np.float32)):
        b = demo.run({"src_ids": ids, "tgt_ids": tgt, "tgt_mask": mask})["logits"]
        np.testing.assert_allclose(a, b, atol=1e-6, err_msg=str(mask.dtype))
    # float16 reaches the engine as F16 (which no mask takes: its error names the dtype).
    with pytest.raises(tessera.Error, match="tgt_mask.*F16"):
        demo.run({"src_ids": ids, "tgt_ids": tgt, "tgt_mask": causal.astype(np.float16)})


def test_embed_is_a_view_too(bert):
    v = bert.embed(["Hello world", "another"])
    assert v.shape == (2, 64) and v.dtype == np.float32 and not v.flags.owndata


def test_properties_and_tokenizers(demo, gpt2, bert):
    assert isinstance(tessera.__version__, str) and tessera.__version__.count(".") == 2
    assert (demo.family, gpt2.family, bert.family) == ("transformer", "gpt2", "bert")
    assert demo.can_generate and gpt2.can_generate and not bert.can_generate
    assert bert.can_embed and not gpt2.can_embed
    assert demo.has_tokenizer and gpt2.has_tokenizer and bert.has_tokenizer
    assert gpt2.threads == 2 and gpt2.directory.endswith("gpt2")
    assert gpt2.tokenize("Hello world") == [15496, 995]
    assert gpt2.detokenize([15496, 995]) == "Hello world"
    assert bert.tokenize("Hello world", special=True) == [101, 7592, 2088, 102]
    assert bert.detokenize([101, 7592, 2088, 102]) == "hello world"
    assert bert.detokenize([101, 7592, 2088, 102], special=True) == "[CLS] hello world [SEP]"
    assert "gpt2" in repr(gpt2)
    with pytest.raises(AttributeError):
        gpt2.family = "bert"
