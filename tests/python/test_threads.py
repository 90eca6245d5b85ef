"""Threads: Python threads sharing one Model each get their own session and run at once, with
results bit-identical to the same calls run one after another; engine calls release the GIL."""
import threading
import time

import numpy as np

import tessera

PROMPTS = ["Once upon a time", "The weather today", "In the beginning", "A B C D"]
IDS = np.array([[464, 2068, 7586, 21831, 11687, 625], [262, 16931, 318, 257, 1110, 13]], np.int64)


def work(gpt2, bert, i):
    """One thread's calls: generation (greedy or seeded sampling), a forward pass, embeddings."""
    method = "sample" if i % 2 else "greedy"
    text = gpt2.generate(PROMPTS[i], method=method, seed=100 + i, max_new_tokens=24)
    logits = gpt2.run({"input_ids": IDS[: 1 + i % 2]})["logits"]
    vectors = bert.embed([PROMPTS[i], PROMPTS[(i + 1) % 4]], pooling="mean")
    streamed = "".join(gpt2.stream(PROMPTS[i], method=method, seed=100 + i, max_new_tokens=24))
    return text, logits, vectors, streamed


def test_threads_match_sequential(gpt2, bert):
    alone = [work(gpt2, bert, i) for i in range(4)]
    for text, _, _, streamed in alone:
        assert streamed == text[0]
    for _ in range(3):
        got = [None] * 4
        errors = []
        start = threading.Barrier(4)

        def run(i):
            try:
                start.wait()
                got[i] = work(gpt2, bert, i)
            except Exception as e:  # noqa: BLE001  (reported below, with the thread)
                errors.append((i, e))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for i in range(4):
            assert got[i][0] == alone[i][0]
            np.testing.assert_array_equal(got[i][1], alone[i][1])  # bit-identical
            np.testing.assert_array_equal(got[i][2], alone[i][2])
            assert got[i][3] == alone[i][3]


def test_explicit_sessions_per_thread(gpt2):
    want = gpt2.generate(PROMPTS, max_new_tokens=16)
    got = [None] * 4

    def run(i):
        s = tessera.Session(gpt2)
        got[i] = s.generate(PROMPTS[i], max_new_tokens=16)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


def test_many_short_threads(gpt2):
    """Each thread's session goes with the thread (nothing to check but that it works and the
    results stay the same as threads come and go)."""
    want = gpt2.run({"input_ids": IDS})["logits"]
    for _ in range(20):
        out = []
        t = threading.Thread(target=lambda: out.append(gpt2.run({"input_ids": IDS})["logits"]))
        t.start()
        t.join()
        np.testing.assert_array_equal(out[0], want)


def test_gil_is_released_during_engine_calls(gpt2):
    """A pure-Python counter thread keeps counting while a long engine call runs. With the GIL
    held by the call, it could only count before the call takes the GIL (one switch interval,
    5 ms) and after it returns; so ticks in the middle half of a call that lasts >= 0.2 s show
    that the call released it."""
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0)  # keep the list short; still pure Python

    prompts = ["The quick brown fox"] * 8
    n = 40
    counter = threading.Thread(target=count)
    counter.start()
    try:
        while True:
            t0 = time.perf_counter()
            gpt2.generate(prompts, max_new_tokens=n, method="sample", seed=1)
            t1 = time.perf_counter()
            if t1 - t0 >= 0.2 or n >= 120:
                break
            n = min(120, n * 3)
    finally:
        stop.set()
        counter.join()
    d = t1 - t0
    middle = [t for t in ticks if t0 + 0.25 * d < t < t0 + 0.75 * d]
    assert d >= 0.1, f"the call took only {d:.3f} s"
    assert len(middle) > 10, f"{len(middle)} counter ticks in the middle of a {d:.3f} s call"
