"""Minimal, dependency-free (numpy only) reader and writer for the safetensors format.

Format: an 8-byte little-endian u64 N, then N bytes of JSON header
    {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
     "__metadata__": {"key": "value"}}
then the data section; offsets are relative to its start (byte 8 + N).

Supported dtypes: F32, F16, BF16, I64, I32, U8, BOOL, I8 (the int8 weights of a quantized model
directory, `tessera quantize`).

* ``save_file(tensors, path, metadata=None)`` writes a dict name -> numpy array or torch tensor.
  BF16 is stored as uint16 bit patterns: pass a torch.bfloat16 tensor (its bits are written as
  they are) or wrap a float array with ``bf16(array)`` (rounded from float32 to nearest-even).
  The output is deterministic: tensors are laid out by decreasing element size (so that every
  tensor is naturally aligned and there are no gaps between them), ties kept in the given order;
  the header is compact JSON padded with spaces so that the data section starts 8-byte aligned.
  The file is written to a temporary file beside ``path`` and renamed over it.
* ``load_file(path)`` returns a dict name -> numpy array (BF16 expanded to float32, F16 kept
  as float16, BOOL as numpy bool); ``load_file(path, with_dtypes=True)`` also returns the
  dict name -> safetensors dtype string. The header is validated strictly (lengths, JSON,
  dtypes, shape x dtype size == span, spans inside the data section and not overlapping,
  duplicate names); violations raise ``SafetensorsError``.
* ``round_to_bf16(array)`` / ``round_to_f16(array)`` return float32 arrays holding the values
  after rounding through that dtype (useful for reference computations).
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Dict, Mapping, Optional

import numpy as np

__all__ = [
    "SafetensorsError",
    "save_file",
    "load_file",
    "read_header",
    "bf16",
    "BF16",
    "f32_to_bf16_bits",
    "bf16_bits_to_f32",
    "round_to_bf16",
    "round_to_f16",
    "DTYPE_SIZES",
]

# safetensors dtype -> (numpy storage dtype, element size in bytes)
_STORAGE = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
    "I8": np.dtype("i1"),
}
DTYPE_SIZES = {k: v.itemsize for k, v in _STORAGE.items()}

_NUMPY_TO_ST = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.int8): "I8",
}

# Refuse absurd header lengths (the reference implementation uses the same 100 MB cap).
MAX_HEADER_BYTES = 100 << 20


class SafetensorsError(ValueError):
    """A malformed safetensors file or an unsupported tensor."""


class BF16:
    """Marks data to be stored as BF16: ``bits`` is a uint16 array of bf16 bit patterns."""

    __slots__ = ("bits",)

    def __init__(self, bits: np.ndarray):
        bits = np.asarray(bits)
        if bits.dtype != np.uint16:
            raise TypeError("BF16 wants uint16 bit patterns; use bf16(float_array) to round floats")
        self.bits = bits

    @property
    def shape(self):
        return self.bits.shape


def f32_to_bf16_bits(x) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), round to nearest even; NaN stays a (quiet) NaN."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    u = x.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


def bf16_bits_to_f32(bits) -> np.ndarray:
    """bf16 bit patterns (uint16) -> float32 (exact)."""
    bits = np.ascontiguousarray(np.asarray(bits, dtype=np.uint16))
    return (bits.astype(np.uint32) << 16).view(np.float32)


def bf16(x) -> BF16:
    """Wrap a float array (numpy or torch) so that ``save_file`` stores it as BF16 (RNE)."""
    return BF16(f32_to_bf16_bits(_to_numpy(x).astype(np.float32)))


def round_to_bf16(x) -> np.ndarray:
    """The float32 values of ``x`` after a round trip through bf16."""
    return bf16_bits_to_f32(f32_to_bf16_bits(x))


def round_to_f16(x) -> np.ndarray:
    """The float32 values of ``x`` after a round trip through IEEE half (RNE)."""
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def _to_numpy(value):
    """numpy array, torch tensor (any device; bf16 kept as BF16 bits) or BF16 -> ndarray/BF16."""
    if isinstance(value, BF16):
        return value
    if isinstance(value, np.ndarray):
        return value
    mod = type(value).__module__
    if mod.startswith("torch"):
        import torch  # only when the caller already uses torch

        t = value.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return BF16(t.view(torch.int16).numpy().view(np.uint16).copy())
        return t.numpy()
    if np.isscalar(value):
        return np.asarray(value)
    raise TypeError(f"cannot store a {type(value).__name__} in safetensors (numpy array or torch tensor expected)")


def _encode(name: str, value):
    """-> (dtype string, shape list, bytes)."""
    value = _to_numpy(value)
    if isinstance(value, BF16):
        return "BF16", list(value.bits.shape), np.ascontiguousarray(value.bits, dtype="<u2").tobytes()
    dt = _NUMPY_TO_ST.get(value.dtype)
    if dt is None:
        raise SafetensorsError(
            f"tensor '{name}': numpy dtype {value.dtype} is not supported "
            f"(use float32, float16, int64, int32, uint8, int8, bool, or bf16(...))")
    arr = np.ascontiguousarray(value, dtype=_STORAGE[dt] if dt != "BOOL" else np.bool_)
    if dt == "BOOL":
        data = arr.astype(np.uint8).tobytes()
    else:
        data = arr.tobytes()
    return dt, [int(s) for s in value.shape], data


def serialize(tensors: Mapping[str, object], metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` (see ``save_file``)."""
    items = []
    for i, (name, value) in enumerate(tensors.items()):
        if not isinstance(name, str) or not name:
            raise SafetensorsError(f"tensor names must be non-empty strings, got {name!r}")
        if name == "__metadata__":
            raise SafetensorsError("'__metadata__' is reserved and cannot name a tensor")
        dt, shape, data = _encode(name, value)
        items.append((-DTYPE_SIZES[dt], i, name, dt, shape, data))
    items.sort(key=lambda t: (t[0], t[1]))  # larger elements first, stable

    header: Dict[str, object] = {}
    if metadata:
        md = {}
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SafetensorsError("__metadata__ must map strings to strings")
            md[k] = v
        header["__metadata__"] = md
    offset = 0
    for _, _, name, dt, shape, data in items:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    hbytes = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    hbytes += b" " * ((-(8 + len(hbytes))) % 8)
    out = bytearray(struct.pack("<Q", len(hbytes)))
    out += hbytes
    for item in items:
        out += item[5]
    return bytes(out)


def save_file(tensors: Mapping[str, object], path, metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write ``tensors`` (name -> numpy array / torch tensor / BF16) to ``path`` atomically."""
    blob = serialize(tensors, metadata)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _no_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise SafetensorsError(f"duplicate tensor name '{k}' in the header")
        seen[k] = v
    return seen


def read_header(path):
    """Parse and validate the header -> (header dict without __metadata__, metadata, data offset, file size)."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: {size} bytes, too short to hold the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise SafetensorsError(f"{path}: header length {n} exceeds the {MAX_HEADER_BYTES} byte limit")
        if n > size - 8:
            raise SafetensorsError(f"{path}: header length {n} runs past the end of the file ({size} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except SafetensorsError as e:
        raise SafetensorsError(f"{path}: {e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + n
    data_size = size - data_start
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise SafetensorsError(f"{path}: tensor '{name}': entry is not an object")
        dt = info.get("dtype")
        if dt not in _STORAGE:
            raise SafetensorsError(f"{path}: tensor '{name}': unsupported dtype {dt!r}")
        shape = info.get("shape")
        offs = info.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape)):
            raise SafetensorsError(f"{path}: tensor '{name}': bad shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or offs[0] < 0 or offs[1] < offs[0]):
            raise SafetensorsError(f"{path}: tensor '{name}': bad data_offsets {offs!r}")
        if offs[1] > data_size:
            raise SafetensorsError(
                f"{path}: tensor '{name}': data_offsets {offs} run past the data section ({data_size} bytes)")
        want = int(np.prod(shape, dtype=np.int64)) * DTYPE_SIZES[dt]
        if offs[1] - offs[0] != want:
            raise SafetensorsError(
                f"{path}: tensor '{name}': span of {offs[1] - offs[0]} bytes but {dt}{shape} needs {want}")
        spans.append((offs[0], offs[1], name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise SafetensorsError(f"{path}: tensors '{n0}' and '{n1}' overlap")
    return header, metadata, data_start, size


def load_file(path, with_dtypes: bool = False):
    """Read a safetensors file -> dict name -> np.ndarray (BF16 as float32), in file order.

    With ``with_dtypes=True`` returns (tensors, dtypes) where dtypes maps name -> "F32"/"BF16"/...
    """
    header, _, data_start, _ = read_header(path)
    with open(os.fspath(path), "rb") as f:
        f.seek(data_start)
        data = f.read()
    out, dtypes = {}, {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        dt = info["dtype"]
        b, e = info["data_offsets"]
        arr = np.frombuffer(data, dtype=_STORAGE[dt], count=(e - b) // DTYPE_SIZES[dt], offset=b)
        arr = arr.reshape(info["shape"])
        if dt == "BF16":
            arr = bf16_bits_to_f32(arr)
        elif dt == "BOOL":
            arr = arr != 0
        else:
            arr = arr.astype(arr.dtype.newbyteorder("="), copy=True)
        out[name] = arr
        dtypes[name] = dt
    return (out, dtypes) if with_dtypes else out


def load_metadata(path) -> Dict[str, str]:
    """The ``__metadata__`` dict of a safetensors file (empty if none)."""
    return dict(read_header(path)[1])
