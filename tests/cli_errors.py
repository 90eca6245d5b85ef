#!/usr/bin/python3
"""Bad input must make `tessera run` fail cleanly.

Builds a tiny valid model directory (random nn.Transformer, exported with export_model), a tiny
token model (TokenTransformer) and valid inputs in a temporary directory, then breaks one thing
per case: the weight file (truncated, header length past the end or 2 GiB, bad JSON, spans out
of range / overlapping / of the wrong size, unknown dtype, duplicate names, a missing weight,
a weight whose shape disagrees with the config), config.json (missing, bad JSON, unsupported
activation), or the inputs (wrong dtype, rank or shape, unknown or missing names, a token id
past the vocabulary, a nonexistent inputs file).

Each bad case must: exit with code 2 (no signal), print exactly one non-empty line on stderr
that names the problem (a case-specific word, usually the tensor or file name), print nothing
from a sanitizer ("AddressSanitizer", "runtime error", ...), and leave the (empty) output
directory empty -- no output file, no temporary file. Two valid runs (plain and token model)
must exit 0 and write the expected output, so that a broken tool cannot pass.

    cli_errors.py --tessera build/tools/tessera [--keep DIR]

Works with sanitizer builds (generous timeouts; sanitizer reports are failures). Prints one
line per case with PASS/FAIL; exit code 1 if any case fails.

    cli_errors.py --c-abi build/engine/api/libtessera.so

runs the same cases through the C ABI instead (ctypes, in this process): tessera_model_load,
tessera_session_create, tessera_run with the inputs as tessera_tensor descriptors; a failure must
be a status other than TESSERA_OK whose one-line tessera_last_error() names the problem (the
two inputs-file cases are the CLI's own and are skipped).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import types

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import safetensors_io  # noqa: E402
from export_torch import export_model  # noqa: E402
from tessera_torch import TokenTransformer  # noqa: E402

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "ThreadSanitizer",
                     "MemorySanitizer", "runtime error:", "SUMMARY: ", "terminate called", "Segmentation fault",
                     "core dumped")

D, H, FF = 8, 2, 16
SRC_VOCAB, TGT_VOCAB = 11, 13


# ---------------------------------------------------------------------------------------------
# raw safetensors crafting
# ---------------------------------------------------------------------------------------------
def split_file(path):
    """-> (header dict in file order, data bytes)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    return header, raw[8 + n:]


def header_bytes(header_text: str) -> bytes:
    b = header_text.encode("utf-8")
    return b + b" " * ((-(8 + len(b))) % 8)


def write_raw(path, header, data: bytes, length_override=None):
    """header: a dict (serialized) or a str (used verbatim)."""
    text = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    hb = header_bytes(text)
    n = len(hb) if length_override is None else length_override
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n) + hb + data)


def tensors_by_offset(header):
    return sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0])


def mentions(msg: str, word: str) -> bool:
    """Case-insensitive: ``word`` as a whole name ('src' does not match inside 'src_mask' or
    'x.src'), or, for ``stem*``, any word starting with the stem ('overlap*' matches 'overlapping')."""
    stem = word.endswith("*")
    w = word[:-1] if stem else word
    pattern = r"(?<![A-Za-z0-9_.])" + re.escape(w) + ("" if stem else r"(?![A-Za-z0-9_])")
    return re.search(pattern, msg, re.IGNORECASE) is not None


# ---------------------------------------------------------------------------------------------
class CAbi:
    """`tessera run` done through libtessera.so's C ABI: the same model directory and inputs
    file in, a result shaped like subprocess.run's (returncode 0 or 2, stderr the last error)."""
    DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1, np.dtype(np.int64): 3,
              np.dtype(np.int32): 4, np.dtype(np.uint8): 5, np.dtype(np.bool_): 6}
    NUMPY = {v: k for k, v in DTYPES.items()}

    class Tensor(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("rank", ctypes.c_int32),
                    ("shape", ctypes.POINTER(ctypes.c_int64)), ("data", ctypes.c_void_p)]

    def __init__(self, path):
        lib = ctypes.CDLL(path)
        lib.tessera_last_error.restype = ctypes.c_char_p
        lib.tessera_model_load.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_void_p)]
        lib.tessera_session_create.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.tessera_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(CAbi.Tensor), ctypes.c_size_t,
                                    ctypes.POINTER(ctypes.POINTER(CAbi.Tensor)), ctypes.POINTER(ctypes.c_size_t)]
        lib.tessera_tensors_free.argtypes = [ctypes.POINTER(CAbi.Tensor), ctypes.c_size_t]
        lib.tessera_model_free.argtypes = [ctypes.c_void_p]
        lib.tessera_session_free.argtypes = [ctypes.c_void_p]
        self.lib = lib

    def failed(self, status, expected):
        """A failure reads as the CLI's exit code 2 when the status is the expected one
        (TESSERA_MODEL_ERROR from tessera_model_load, TESSERA_INVALID_ARGUMENT after it), else
        as 100 + status."""
        err = self.lib.tessera_last_error().decode("utf-8", "replace")
        return types.SimpleNamespace(returncode=2 if status == expected else 100 + status, stderr=err + "\n")

    def run(self, model, inputs, out):
        lib = self.lib
        m, s = ctypes.c_void_p(), ctypes.c_void_p()
        status = lib.tessera_model_load(model.encode(), 2, ctypes.byref(m))
        if status != 0:
            return self.failed(status, 2)  # TESSERA_MODEL_ERROR
        try:
            status = lib.tessera_session_create(m, ctypes.byref(s))
            if status != 0:
                return self.failed(status, 1)
            arrays = {k: np.ascontiguousarray(v) for k, v in safetensors_io.load_file(inputs).items()}
            shapes = [(ctypes.c_int64 * max(a.ndim, 1))(*a.shape) for a in arrays.values()]
            descs = (CAbi.Tensor * len(arrays))()
            for i, (name, a) in enumerate(arrays.items()):
                descs[i] = CAbi.Tensor(name.encode(), CAbi.DTYPES[a.dtype], a.ndim, shapes[i],
                                       a.ctypes.data_as(ctypes.c_void_p))
            outs, n = ctypes.POINTER(CAbi.Tensor)(), ctypes.c_size_t()
            status = lib.tessera_run(s, descs, len(arrays), ctypes.byref(outs), ctypes.byref(n))
            if status != 0:
                return self.failed(status, 1)  # TESSERA_INVALID_ARGUMENT
            result = {}
            for i in range(n.value):
                t = outs[i]
                shape = tuple(t.shape[j] for j in range(t.rank))
                dt = CAbi.NUMPY[t.dtype]
                count = int(np.prod(shape)) if shape else 1
                buf = (ctypes.c_char * (count * dt.itemsize)).from_address(t.data)
                result[t.name.decode()] = np.frombuffer(bytes(buf), dtype=dt).reshape(shape)
            lib.tessera_tensors_free(outs, n)
            safetensors_io.save_file(result, out)
            return types.SimpleNamespace(returncode=0, stderr="")
        finally:
            lib.tessera_session_free(s)
            lib.tessera_model_free(m)


class Suite:
    def __init__(self, tessera: str, root: str, timeout: float, c_abi=None):
        self.tessera = tessera
        self.c_abi = c_abi
        self.root = root
        self.timeout = timeout
        self.results = []
        torch.manual_seed(7)
        self.base_model = os.path.join(root, "base-model")
        self.module = nn.Transformer(D, H, 1, 1, FF, dropout=0.0, batch_first=True)
        with torch.no_grad():
            for name, p in self.module.named_parameters():
                if name.endswith("bias"):
                    p.add_(0.1 * torch.randn_like(p))
        self.module.eval()
        export_model(self.module, self.base_model)
        self.tok_model = os.path.join(root, "tok-model")
        self.tok_module = TokenTransformer(SRC_VOCAB, TGT_VOCAB, d_model=D, nhead=H, num_encoder_layers=1,
                                           num_decoder_layers=1, dim_feedforward=FF, max_position=16)
        self.tok_module.eval()
        export_model(self.tok_module, self.tok_model)
        self.src = torch.randn(1, 3, D).numpy()
        self.tgt = torch.randn(1, 2, D).numpy()
        self.src_ids = np.array([[4, 5, 2]], dtype=np.int64)
        self.tgt_ids = np.array([[1, 6]], dtype=np.int64)
        self.header, self.data = split_file(os.path.join(self.base_model, "model.safetensors"))
        self.weights = safetensors_io.load_file(os.path.join(self.base_model, "model.safetensors"))

    # -- case plumbing --------------------------------------------------------------------------
    def case_dir(self, name):
        d = os.path.join(self.root, "cases", name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "out"))
        return d

    def model_copy(self, cdir, token=False):
        dst = os.path.join(cdir, "model")
        shutil.copytree(self.tok_model if token else self.base_model, dst)
        return dst

    def inputs(self, cdir, tensors):
        path = os.path.join(cdir, "inputs.safetensors")
        safetensors_io.save_file(tensors, path)
        return path

    def valid_inputs(self, cdir, token=False):
        if token:
            return self.inputs(cdir, {"src_ids": self.src_ids, "tgt_ids": self.tgt_ids})
        return self.inputs(cdir, {"src": self.src, "tgt": self.tgt})

    def run(self, model, inputs, cdir):
        out = os.path.join(cdir, "out", "outputs.safetensors")
        if self.c_abi:
            p = self.c_abi.run(model, inputs, out)
            return p, p.stderr, out
        cmd = [self.tessera, "run", "--model", model, "--inputs", inputs, "--outputs", out, "--threads", "2"]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, errors="replace")
        except subprocess.TimeoutExpired:
            return None, "", out
        return p, p.stderr, out

    def record(self, name, ok, detail):
        self.results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'}  {name:34s} {detail}", flush=True)

    def expect_error(self, name, model, inputs, cdir, words):
        """words: alternatives, one of which the message must mention (see ``mentions``)."""
        p, stderr, out = self.run(model, inputs, cdir)
        problems = []
        if p is None:
            self.record(name, False, f"timed out after {self.timeout}s")
            return
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        if p.returncode < 0:
            problems.append(f"killed by signal {-p.returncode}")
        elif p.returncode != 2:
            problems.append(f"exit code {p.returncode}, expected 2")
        markers = [m for m in SANITIZER_MARKERS if m in stderr]
        if markers:
            problems.append(f"sanitizer/crash output {markers}")
        if len(lines) != 1:
            problems.append(f"{len(lines)} non-empty stderr lines, expected 1")
        msg = lines[0] if lines else ""
        if lines and not any(mentions(msg, w) for w in words):
            problems.append(f"message names none of {words}")
        left = os.listdir(os.path.dirname(out))
        if left:
            problems.append(f"left files behind: {left}")
        detail = f"rc={p.returncode} stderr: {msg[:160]!r}" + (f"  <-- {'; '.join(problems)}" if problems else "")
        if problems and len(lines) > 1:
            detail += "\n      stderr was:\n" + "\n".join("      | " + ln for ln in stderr.splitlines()[:20])
        self.record(name, not problems, detail)

    def expect_ok(self, name, model, inputs, cdir, out_name, reference):
        p, stderr, out = self.run(model, inputs, cdir)
        problems = []
        if p is None:
            self.record(name, False, f"timed out after {self.timeout}s")
            return
        if p.returncode != 0:
            problems.append(f"exit code {p.returncode}: {stderr.strip()[:200]}")
        markers = [m for m in SANITIZER_MARKERS if m in stderr]
        if markers:
            problems.append(f"sanitizer/crash output {markers}")
        err = None
        if not problems:
            try:
                outs = safetensors_io.load_file(out)
                got = outs[out_name]
                if got.shape != reference.shape:
                    problems.append(f"{out_name} shape {list(got.shape)} != {list(reference.shape)}")
                else:
                    err = float(np.abs(got - reference).max())
                    if not err <= 1e-4:
                        problems.append(f"max error {err:.3g} vs PyTorch > 1e-4")
            except Exception as e:  # noqa: BLE001
                problems.append(f"cannot read {out_name} from the outputs: {e}")
        detail = f"rc={p.returncode}" + (f" max|err| {err:.2e}" if err is not None else "")
        self.record(name, not problems, detail + (f"  <-- {'; '.join(problems)}" if problems else ""))

    # -- the cases ------------------------------------------------------------------------------
    def model_file_case(self, name, words, craft):
        """craft(path) writes a broken model.safetensors at path."""
        cdir = self.case_dir(name)
        model = self.model_copy(cdir)
        craft(os.path.join(model, "model.safetensors"))
        self.expect_error(name, model, self.valid_inputs(cdir), cdir, words)

    def run_all(self):
        hdr, data = self.header, self.data
        names = [k for k, _ in tensors_by_offset(hdr)]
        ST = "model.safetensors"

        # valid runs first: the tool must work at all
        with torch.enable_grad():  # the plain math path (no 1.13 fast path)
            ref = self.module(torch.from_numpy(self.src), torch.from_numpy(self.tgt)).detach().numpy()
            ref_tok = self.tok_module(torch.from_numpy(self.src_ids), torch.from_numpy(self.tgt_ids)).detach().numpy()
        cdir = self.case_dir("valid_run")
        self.expect_ok("valid_run", self.base_model, self.valid_inputs(cdir), cdir, "output", ref)
        cdir = self.case_dir("valid_token_run")
        self.expect_ok("valid_token_run", self.tok_model, self.valid_inputs(cdir, token=True), cdir, "logits",
                       ref_tok)

        full = struct.pack("<Q", len(header_bytes(json.dumps(hdr, separators=(",", ":"))))) + \
            header_bytes(json.dumps(hdr, separators=(",", ":"))) + data

        def truncated(path):
            with open(path, "wb") as f:
                f.write(full[: len(full) - len(data) // 2])
        self.model_file_case("model_truncated", [ST, "truncat*"] + names, truncated)

        def truncated_header(path):
            with open(path, "wb") as f:
                f.write(full[:40])
        self.model_file_case("model_truncated_in_header", [ST, "header*"], truncated_header)

        def short_file(path):
            with open(path, "wb") as f:
                f.write(b"\x10\x00\x00")
        self.model_file_case("model_3_bytes", [ST, "header*"], short_file)

        self.model_file_case("header_length_past_end", [ST, "header*"],
                             lambda p: write_raw(p, hdr, data, length_override=len(full)))

        def header_2gb(path):
            with open(path, "wb") as f:
                f.write(struct.pack("<Q", 2 ** 31) + header_bytes("{}"))
        self.model_file_case("header_length_2GiB", [ST, "header*"], header_2gb)

        def bad_json(path):
            text = json.dumps(hdr, separators=(",", ":"))
            write_raw(path, text[: len(text) // 2] + "}}", data)
        self.model_file_case("header_bad_json", [ST, "json*", "header*"], bad_json)

        victim = "encoder.layers.0.linear1.weight"
        size = hdr[victim]["data_offsets"][1] - hdr[victim]["data_offsets"][0]

        def out_of_range(path):
            h = json.loads(json.dumps(hdr))
            h[victim]["data_offsets"] = [len(data) - size + 64, len(data) + 64]
            write_raw(path, h, data)
        self.model_file_case("span_out_of_range", [victim], out_of_range)

        order = names
        second = order[3]
        first = order[2]

        def overlap(path):
            h = json.loads(json.dumps(hdr))
            b, e = h[second]["data_offsets"]
            h[second]["data_offsets"] = [b - 4, e - 4]
            write_raw(path, h, data)
        self.model_file_case("spans_overlap", [first, second, "overlap*"], overlap)

        def unknown_dtype(path):
            h = json.loads(json.dumps(hdr))
            h[victim]["dtype"] = "X8"
            write_raw(path, h, data)
        self.model_file_case("unknown_dtype_X8", [victim, "X8"], unknown_dtype)

        def size_mismatch(path):
            h = json.loads(json.dumps(hdr))
            h[victim]["shape"] = [FF, D + 1]
            write_raw(path, h, data)
        self.model_file_case("span_size_vs_shape", [victim], size_mismatch)

        dup = "decoder.norm.weight"

        def duplicate(path):
            h = {k: v for k, v in hdr.items()}
            text = json.dumps(h, separators=(",", ":"))
            extra = json.dumps({"dtype": "F32", "shape": [D], "data_offsets": [len(data), len(data) + 4 * D]},
                               separators=(",", ":"))
            text = text[:-1] + f',"{dup}":{extra}' + "}"
            write_raw(path, text, data + np.ones(D, np.float32).tobytes())
        self.model_file_case("duplicate_tensor_name", [dup, "duplicate*"], duplicate)

        missing = "decoder.layers.0.norm2.bias"
        self.model_file_case("missing_weight", [missing], lambda p: safetensors_io.save_file(
            {k: v for k, v in self.weights.items() if k != missing}, p))

        def wrong_shape(path):
            w = dict(self.weights)
            w[victim] = np.zeros((FF + 1, D), np.float32)
            safetensors_io.save_file(w, path)
        self.model_file_case("weight_shape_vs_config", [victim], wrong_shape)

        # config.json
        cdir = self.case_dir("config_missing")
        model = self.model_copy(cdir)
        os.remove(os.path.join(model, "config.json"))
        self.expect_error("config_missing", model, self.valid_inputs(cdir), cdir, ["config.json"])

        cdir = self.case_dir("config_bad_json")
        model = self.model_copy(cdir)
        with open(os.path.join(model, "config.json"), "w") as f:
            f.write('{"model_type": "transformer", "d_model": 8,')
        self.expect_error("config_bad_json", model, self.valid_inputs(cdir), cdir, ["config.json"])

        cdir = self.case_dir("config_bad_activation")
        model = self.model_copy(cdir)
        cfg_path = os.path.join(model, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["activation"] = "swish"
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        self.expect_error("config_bad_activation", model, self.valid_inputs(cdir), cdir, ["activation", "swish"])

        # inputs
        def input_case(name, tensors, words, token=False):
            cdir = self.case_dir(name)
            self.expect_error(name, self.tok_model if token else self.base_model, self.inputs(cdir, tensors), cdir,
                              words)

        input_case("input_src_wrong_dtype_i64", {"src": self.src.astype(np.int64), "tgt": self.tgt}, ["src"])
        input_case("input_src_wrong_rank", {"src": self.src[0], "tgt": self.tgt}, ["src"])
        input_case("input_tgt_wrong_width", {"src": self.src, "tgt": np.zeros((1, 2, D - 1), np.float32)}, ["tgt"])
        input_case("input_batch_mismatch", {"src": self.src, "tgt": np.zeros((2, 2, D), np.float32)},
                   ["tgt", "src", "batch*"])
        input_case("input_unknown_name", {"src": self.src, "tgt": self.tgt, "bogus_input": self.tgt}, ["bogus_input"])
        input_case("input_missing_tgt", {"src": self.src}, ["tgt"])
        input_case("input_mask_wrong_shape", {"src": self.src, "tgt": self.tgt,
                                              "src_mask": np.zeros((3, 4), dtype=bool)}, ["src_mask"])
        input_case("input_mask_wrong_dtype_i64", {"src": self.src, "tgt": self.tgt,
                                                  "tgt_mask": np.zeros((2, 2), dtype=np.int64)}, ["tgt_mask"])
        input_case("token_id_past_vocab", {"src_ids": np.array([[4, SRC_VOCAB, 2]], dtype=np.int64),
                                           "tgt_ids": self.tgt_ids}, ["src_ids", "vocab*"], token=True)
        input_case("token_id_negative", {"src_ids": self.src_ids, "tgt_ids": np.array([[1, -1]], dtype=np.int64)},
                   ["tgt_ids", "vocab*"], token=True)
        input_case("token_ids_wrong_dtype_f32", {"src_ids": self.src_ids.astype(np.float32),
                                                 "tgt_ids": self.tgt_ids}, ["src_ids"], token=True)

        if self.c_abi:
            return  # the inputs file is the CLI's: the C ABI takes tensors
        cdir = self.case_dir("inputs_file_missing")
        missing_in = os.path.join(cdir, "does_not_exist.safetensors")
        self.expect_error("inputs_file_missing", self.base_model, missing_in, cdir, ["does_not_exist.safetensors"])

        cdir = self.case_dir("inputs_file_garbage")
        garbage = os.path.join(cdir, "garbage.safetensors")
        with open(garbage, "wb") as f:
            f.write(b"this is not a safetensors file at all")
        self.expect_error("inputs_file_garbage", self.base_model, garbage, cdir, ["garbage.safetensors", "header*"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="`tessera run` must reject bad input cleanly (exit 2, one line).")
    ap.add_argument("--tessera", help="path to the tessera binary (a sanitizer build is fine)")
    ap.add_argument("--c-abi", metavar="LIB", help="run the cases through this libtessera.so's C ABI instead")
    ap.add_argument("--keep", metavar="DIR", help="build the cases in DIR and keep them (default: a temp dir)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run (default 120)")
    args = ap.parse_args(argv)
    if not args.tessera and not args.c_abi:
        ap.error("give --tessera or --c-abi")
    c_abi = CAbi(os.path.abspath(args.c_abi)) if args.c_abi else None
    if not c_abi and not (os.path.isfile(args.tessera) and os.access(args.tessera, os.X_OK)):
        print(f"cli_errors.py: {args.tessera} is not an executable file", file=sys.stderr)
        return 1
    torch.set_num_threads(2)
    root = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix="tessera-cli-errors-")
    if args.keep:
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
    try:
        suite = Suite(os.path.abspath(args.tessera or ""), root, args.timeout, c_abi)
        suite.run_all()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    n, ok = len(suite.results), sum(suite.results)
    print(f"{ok}/{n} cases passed")
    return 0 if ok == n else 1


if __name__ == "__main__":
    sys.exit(main())
