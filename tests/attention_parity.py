#!/usr/bin/python3
"""`tessera attention` weights must equal PyTorch's nn.MultiheadAttention weights.

For each case below, runs ``tessera attention ... --dump W.safetensors`` on a model directory
(the demo by default) and computes the same head's weights in PyTorch: the model is loaded with
tools/tessera_torch.load_token_model, the chosen layer's inputs are computed by running the
embeddings and the preceding layers in PyTorch (plain math path), and the layer's attention
module is called with need_weights=True, average_attn_weights=False. The target of --tgt/--cross
is bos + the tokens ``tessera generate`` prints for the same input, with a causal tgt_mask.

Then the same for a random-weight gpt2 and bert model (tools/make_hf_checkpoint.py) against the
plain PyTorch references of tools/hf_reference.py, whose attention probabilities are captured at
each layer: ``tessera attention --ids`` over a prompt (gpt2: causal; bert: bidirectional), gpt2
--tgt over the prompt and its greedy continuation (the reference's greedy tokens, cut after eos),
and with ``--passes none`` (the unfused scores -> softmax -> context chain).

Checks, per case: the shape [T, S]; every row sums to 1 (or is all 0); max |tessera - torch|
<= 1e-5; and, so the comparison can tell heads apart, that a different head's PyTorch weights do
NOT match. Exit code 1 on any failure.

    attention_parity.py --tessera build/tools/tessera [--model models/demo-dates]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import safetensors_io  # noqa: E402
from tessera_torch import CharTokenizer, causal_mask, load_token_model, standard_math_path  # noqa: E402

TOL = 1e-5
TEXT = "the 26th of November 2026"
MAX_NEW = "20"  # the demo's outputs are 10 characters; bounds a model that never emits eos


def torch_weights(model, src, tgt, mode, layer, causal=True):
    """[H, T, S] attention weights of `layer` in PyTorch. mode: encoder | tgt | cross."""
    with standard_math_path():
        x = model._embed(model.src_embed, src)
        enc = model.encoder
        if mode == "encoder":
            for lyr in enc.layers[:layer]:
                x = lyr(x)
            lyr = enc.layers[layer]
            h = lyr.norm1(x) if lyr.norm_first else x
            return lyr.self_attn(h, h, h, need_weights=True,
                                 average_attn_weights=False)[1][0].detach().double()
        memory = model.encode(src)
        y = model._embed(model.tgt_embed, tgt)
        mask = causal_mask(tgt.shape[1]) if causal else None
        for lyr in model.decoder.layers[:layer]:
            y = lyr(y, memory, tgt_mask=mask)
        lyr = model.decoder.layers[layer]
        h = lyr.norm1(y) if lyr.norm_first else y
        sa, sa_w = lyr.self_attn(h, h, h, attn_mask=mask, need_weights=True,
                                 average_attn_weights=False)
        if mode == "tgt":
            return sa_w[0].detach().double()
        if lyr.norm_first:
            q = lyr.norm2(y + sa)
        else:
            q = lyr.norm1(y + sa)
        return lyr.multihead_attn(q, memory, memory, need_weights=True,
                                  average_attn_weights=False)[1][0].detach().double()


def tessera_weights(args, tmp, mode, layer, head):
    dump = os.path.join(tmp, f"w-{mode}-{layer}-{head}.safetensors")
    cmd = [args.tessera, "attention", "--model", args.model, "--layer", str(layer), "--head",
           str(head), "--threads", "2", "--out", os.path.join(tmp, "a.png"), "--dump", dump]
    if mode != "encoder":
        cmd += ["--" + mode, "--max-new-tokens", MAX_NEW]
    cmd.append(TEXT)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: rc {r.returncode}: {r.stderr.strip()}")
    w = safetensors_io.load_file(dump)["weights"]
    if w.dtype != np.float32 or w.ndim != 2:
        raise RuntimeError(f"dumped weights are {w.dtype} {w.shape}, expected F32 [T, S]")
    return w.astype(np.float64)


IDS = [5, 17, 42, 8, 9, 23, 61, 3]


def hf_reference_weights(model, ids):
    """Every layer's attention probabilities [H, T, S] (batch row 0), in layer order, as the
    reference computes them (its _attend, called once per layer, captured)."""
    import hf_reference
    captured = []
    orig = hf_reference._attend

    def capture(q, k, v, scale, additive):
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale + additive
        captured.append(torch.softmax(scores, dim=-1)[0].double().numpy())
        return orig(q, k, v, scale, additive)

    hf_reference._attend = capture
    try:
        model(torch.tensor([ids], dtype=torch.long))
    finally:
        hf_reference._attend = orig
    return captured


def compare(ours, ref_all, head, label):
    """Prints ok/FAIL for one case; returns 1 on failure."""
    ref = ref_all[head]
    nhead = ref_all.shape[0]
    problems = []
    if ours.shape != ref.shape:
        problems.append(f"shape {ours.shape} != torch {ref.shape}")
    else:
        sums = ours.sum(axis=1)
        if not np.all((np.abs(sums - 1) < 1e-5) | (np.abs(ours).max(axis=1) == 0)):
            problems.append(f"row sums {sums}")
        err = float(np.abs(ours - ref).max())
        if not err <= TOL:
            problems.append(f"max |diff| {err:.3g} > {TOL}")
        if nhead > 1 and float(np.abs(ours - ref_all[(head + 1) % nhead]).max()) <= TOL:
            problems.append("also matches another head: the comparison cannot discriminate")
    label = f"{label} [{ours.shape[0]}x{ours.shape[1]}]"
    if problems:
        print(f"FAIL {label}: {'; '.join(problems)}")
        return 1
    print(f"ok   {label}: max |diff| {float(np.abs(ours - ref).max()):.3g}")
    return 0


def hf_cases(args, tmp) -> tuple:
    """gpt2 and bert: (cases, failures)."""
    import make_hf_checkpoint
    import hf_reference
    cases = failures = 0
    for family, extra in (("gpt2", ["--inverse-layer-scale"]), ("bert", [])):
        model_dir = os.path.join(tmp, family)
        make_hf_checkpoint.write(make_hf_checkpoint.parser().parse_args(
            [family, model_dir, "--layers", "2", "--hidden", "48", "--heads", "4", "--vocab", "100",
             "--positions", "32", "--seed", "3"] + extra))
        model = hf_reference.load(model_dir)
        # (global options, attention options, layer, head, the reference's token ids)
        runs = [([], [], 0, 0, IDS), ([], [], 1, 3, IDS), (["--passes", "none"], [], 1, 2, IDS)]
        if family == "gpt2":
            max_new = 6
            tokens, _ = hf_reference.greedy(model, [IDS], max_new)
            gen = [int(t) for t in tokens[0]]
            eos = model.c.get("eos_token_id")
            if eos in gen:
                gen = gen[:gen.index(eos) + 1]
            runs.append(([], ["--tgt", "--max-new-tokens", str(max_new)], 1, 1, IDS + gen))
        for global_opts, opts, layer, head, ids in runs:
            dump = os.path.join(tmp, f"{family}-{layer}-{head}.safetensors")
            cmd = [args.tessera] + global_opts + [
                "attention", "--model", model_dir, "--layer", str(layer), "--head", str(head),
                "--threads", "2", "--ids", "--out", os.path.join(tmp, "a.png"), "--dump", dump
            ] + opts + [" ".join(map(str, IDS))]
            r = subprocess.run(cmd, capture_output=True, text=True)
            cases += 1
            label = " ".join([family] + global_opts + opts + [f"layer {layer} head {head}"])
            if r.returncode != 0:
                print(f"FAIL {label}: {' '.join(cmd)}: rc {r.returncode}: {r.stderr.strip()}")
                failures += 1
                continue
            ours = safetensors_io.load_file(dump)["weights"].astype(np.float64)
            ref_all = hf_reference_weights(model, ids)[layer]
            failures += compare(ours, ref_all, head, label)
    return cases, failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--model", default=os.path.join(_ROOT, "models", "demo-dates"))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    model = load_token_model(args.model)
    tok = CharTokenizer.load(os.path.join(args.model, "tokenizer.json"))
    nhead, n_enc, n_dec = model.nhead, len(model.encoder.layers), len(model.decoder.layers)
    src = torch.tensor([tok.encode(TEXT)], dtype=torch.long)  # eos appended

    r = subprocess.run([args.tessera, "generate", "--model", args.model, "--threads", "2",
                        "--max-new-tokens", MAX_NEW, TEXT],
                       capture_output=True, text=True, check=True)
    generated = r.stdout.rstrip("\n")
    tgt = torch.tensor([[model.bos_id] + tok.encode(generated, add_eos=False)], dtype=torch.long)
    print(f"input {TEXT!r} -> {generated!r}; target length {tgt.shape[1]}")

    cases = [("encoder", 0, 0), ("encoder", n_enc - 1, nhead - 1), ("cross", n_dec - 1, 1 % nhead),
             ("cross", 0, 0), ("tgt", n_dec - 1, 0)]
    failures = 0
    with tempfile.TemporaryDirectory(prefix="tessera-attn-") as tmp:
        for mode, layer, head in cases:
            ours = tessera_weights(args, tmp, mode, layer, head)
            ref_all = torch_weights(model, src, tgt, mode, layer).numpy()
            ref = ref_all[head]
            problems = []
            if ours.shape != ref.shape:
                problems.append(f"shape {ours.shape} != torch {ref.shape}")
            else:
                sums = ours.sum(axis=1)
                if not np.all((np.abs(sums - 1) < 1e-5) | (np.abs(ours).max(axis=1) == 0)):
                    problems.append(f"row sums {sums}")
                err = float(np.abs(ours - ref).max())
                if not err <= TOL:
                    problems.append(f"max |diff| {err:.3g} > {TOL}")
                if nhead > 1:
                    other = ref_all[(head + 1) % nhead]
                    if float(np.abs(ours - other).max()) <= TOL:
                        problems.append("also matches another head: the comparison cannot "
                                        "discriminate")
            label = f"{mode} layer {layer} head {head} [{ours.shape[0]}x{ours.shape[1]}]"
            if problems:
                failures += 1
                print(f"FAIL {label}: {'; '.join(problems)}")
            else:
                print(f"ok   {label}: max |diff| {float(np.abs(ours - ref).max()):.3g}")
        hf_n, hf_failures = hf_cases(args, tmp)
    total = len(cases) + hf_n
    failures += hf_failures
    if failures:
        print(f"{failures} of {total} cases failed")
        return 1
    print(f"all {total} cases ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
