#!/usr/bin/python3
"""Export a PyTorch transformer to a Tessera model directory (config.json + model.safetensors).

Accepted modules: ``nn.Transformer``, ``nn.TransformerEncoder`` (written as an encoder-only
model: ``num_decoder_layers: 0``, keys prefixed ``encoder.``), ``nn.TransformerDecoder``
(decoder-only: ``num_encoder_layers: 0``, keys prefixed ``decoder.``) and
``tessera_torch.TokenTransformer`` (nn.Transformer + src_embed/tgt_embed/generator and the token
config keys), and ``rnn_attention.RNNAttention`` (the ``rnn_attention`` family: its config is
the module's own, its tensor names its parameter names). For transformers every config key is inferred from the module: d_model / nhead from the first
layer's self_attn, dim_feedforward from linear1, activation from the layer's activation
(F.relu / nn.ReLU -> "relu", F.gelu / nn.GELU() -> "gelu"; anything else is refused),
layer_norm_eps from norm1.eps, norm_first, and the layer counts. Layers that disagree with each
other, or features the format cannot express (separate q/k/v projections, bias_k/bias_v,
add_zero_attn, missing biases, a final norm with another eps), are refused with a clear error.

Weights are written as F32 (default), F16 or BF16 (round to nearest even). The directory is
written atomically: a new directory is built under a temporary name and renamed into place;
into an existing directory each file is written to a temporary name and renamed over the old
one (other files there, e.g. tokenizer.json, are kept).

Python:  from export_torch import export_model; export_model(module, "out/dir", dtype="bf16")
Command line:
    export_torch.py --module FILE.pt OUT_DIR [--dtype f32|f16|bf16]
where FILE.pt holds a whole module saved with torch.save(module).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import safetensors_io  # noqa: E402
from tessera_torch import TokenTransformer  # noqa: E402
from rnn_attention import RNNAttention  # noqa: E402

__all__ = ["ExportError", "export_model", "module_config", "module_state_dict", "round_state_dict"]

DTYPES = ("f32", "f16", "bf16")


class ExportError(ValueError):
    """The module cannot be expressed as a Tessera model directory."""


def _activation_name(layer, where: str) -> str:
    act = getattr(layer, "activation", None)
    if isinstance(act, str):  # very old pickles
        act = {"relu": F.relu, "gelu": F.gelu}.get(act, act)
    if act is F.relu or isinstance(act, nn.ReLU):
        return "relu"
    if act is F.gelu:
        return "gelu"
    if isinstance(act, nn.GELU):
        if getattr(act, "approximate", "none") != "none":
            raise ExportError(f"{where}: nn.GELU(approximate={act.approximate!r}) is not supported "
                              f"(only the exact erf GELU)")
        return "gelu"
    raise ExportError(f"{where}: activation {act!r} is not supported (only F.relu / nn.ReLU and "
                      f"F.gelu / nn.GELU())")


def _check_mha(mha: nn.MultiheadAttention, where: str):
    if not isinstance(mha, nn.MultiheadAttention):
        raise ExportError(f"{where}: not an nn.MultiheadAttention")
    if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
        raise ExportError(f"{where}: separate q/k/v projections (kdim/vdim != embed_dim) are not supported")
    if mha.in_proj_bias is None or mha.out_proj.bias is None:
        raise ExportError(f"{where}: attention without biases (bias=False) is not supported")
    if mha.bias_k is not None or mha.bias_v is not None:
        raise ExportError(f"{where}: add_bias_kv is not supported")
    if mha.add_zero_attn:
        raise ExportError(f"{where}: add_zero_attn is not supported")
    return mha.embed_dim, mha.num_heads


def _layer_config(layer, where: str, decoder: bool) -> dict:
    want = nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer
    if not isinstance(layer, want):
        raise ExportError(f"{where}: {type(layer).__name__} is not an nn.{want.__name__}")
    d_model, nhead = _check_mha(layer.self_attn, where + ".self_attn")
    if decoder:
        d2, h2 = _check_mha(layer.multihead_attn, where + ".multihead_attn")
        if (d2, h2) != (d_model, nhead):
            raise ExportError(f"{where}: multihead_attn ({d2}, {h2} heads) differs from self_attn "
                              f"({d_model}, {nhead} heads)")
    for lin in ("linear1", "linear2"):
        if getattr(layer, lin).bias is None:
            raise ExportError(f"{where}.{lin}: a Linear without bias is not supported")
    if layer.linear1.in_features != d_model or layer.linear2.out_features != d_model:
        raise ExportError(f"{where}: linear1/linear2 do not map d_model {d_model}")
    norms = ["norm1", "norm2"] + (["norm3"] if decoder else [])
    eps = layer.norm1.eps
    for n in norms:
        ln = getattr(layer, n)
        if not isinstance(ln, nn.LayerNorm) or not ln.elementwise_affine:
            raise ExportError(f"{where}.{n}: only an affine nn.LayerNorm is supported")
        if tuple(ln.normalized_shape) != (d_model,):
            raise ExportError(f"{where}.{n}: normalized_shape {tuple(ln.normalized_shape)} != ({d_model},)")
        if ln.eps != eps:
            raise ExportError(f"{where}.{n}: eps {ln.eps} differs from norm1.eps {eps}")
    return {
        "d_model": int(d_model),
        "nhead": int(nhead),
        "dim_feedforward": int(layer.linear1.out_features),
        "activation": _activation_name(layer, where),
        "layer_norm_eps": float(eps),
        "norm_first": bool(layer.norm_first),
    }


def _stack_config(stack, where: str, decoder: bool):
    """-> (number of layers, the common layer config or None when empty)."""
    want = nn.TransformerDecoder if decoder else nn.TransformerEncoder
    if not isinstance(stack, want):
        raise ExportError(f"{where}: {type(stack).__name__} is not an nn.{want.__name__}")
    layers = list(stack.layers)
    common = None
    for i, layer in enumerate(layers):
        cfg = _layer_config(layer, f"{where}.layers.{i}", decoder)
        if common is None:
            common = cfg
        elif cfg != common:
            diff = {k: (common[k], cfg[k]) for k in cfg if cfg[k] != common[k]}
            raise ExportError(f"{where}.layers.{i}: differs from layer 0 in {diff}; all layers must agree")
    norm = stack.norm
    if norm is not None and common is not None:
        if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine:
            raise ExportError(f"{where}.norm: only an affine nn.LayerNorm is supported")
        if tuple(norm.normalized_shape) != (common["d_model"],):
            raise ExportError(f"{where}.norm: normalized_shape {tuple(norm.normalized_shape)} "
                              f"!= ({common['d_model']},)")
        if norm.eps != common["layer_norm_eps"]:
            raise ExportError(f"{where}.norm: eps {norm.eps} differs from the layers' {common['layer_norm_eps']}")
    return len(layers), common


def module_config(module: nn.Module) -> dict:
    """The Tessera config.json dict of ``module`` (without extra_config)."""
    if isinstance(module, RNNAttention):
        return module.config()
    if isinstance(module, nn.Transformer):  # includes TokenTransformer
        n_enc, enc = _stack_config(module.encoder, "encoder", decoder=False)
        n_dec, dec = _stack_config(module.decoder, "decoder", decoder=True)
    elif isinstance(module, nn.TransformerEncoder):
        (n_enc, enc), (n_dec, dec) = _stack_config(module, "encoder", decoder=False), (0, None)
    elif isinstance(module, nn.TransformerDecoder):
        (n_enc, enc), (n_dec, dec) = (0, None), _stack_config(module, "decoder", decoder=True)
    else:
        raise ExportError(f"cannot export a {type(module).__name__}: expected nn.Transformer, "
                          f"nn.TransformerEncoder, nn.TransformerDecoder or TokenTransformer")
    if enc is None and dec is None:
        raise ExportError("the module has no encoder or decoder layers")
    if enc is not None and dec is not None and enc != dec:
        diff = {k: (enc[k], dec[k]) for k in enc if enc[k] != dec[k]}
        raise ExportError(f"encoder and decoder layers differ in {diff}; the config holds one value each")
    layer = enc or dec
    cfg = {
        "model_type": "transformer",
        "d_model": layer["d_model"],
        "nhead": layer["nhead"],
        "num_encoder_layers": n_enc,
        "num_decoder_layers": n_dec,
        "dim_feedforward": layer["dim_feedforward"],
        "activation": layer["activation"],
        "layer_norm_eps": layer["layer_norm_eps"],
        "norm_first": layer["norm_first"],
    }
    if isinstance(module, TokenTransformer):
        if module.src_embed.embedding_dim != cfg["d_model"] or module.tgt_embed.embedding_dim != cfg["d_model"]:
            raise ExportError("src_embed/tgt_embed width differs from d_model")
        if module.generator.bias is None:
            raise ExportError("generator without bias is not supported")
        cfg.update(module.token_config())
    return cfg


def module_state_dict(module: nn.Module) -> dict:
    """state_dict with the Tessera names (encoder./decoder. prefixes added for bare stacks)."""
    sd = module.state_dict()
    if isinstance(module, (nn.Transformer, RNNAttention)):
        prefix = ""
    elif isinstance(module, nn.TransformerEncoder):
        prefix = "encoder."
    elif isinstance(module, nn.TransformerDecoder):
        prefix = "decoder."
    else:
        raise ExportError(f"cannot export a {type(module).__name__}")
    return {prefix + k: v.detach().cpu() for k, v in sd.items()}


def _convert(t: torch.Tensor, dtype: str):
    if not t.is_floating_point():
        return t.contiguous()
    t = t.to(torch.float32).contiguous()
    if dtype == "f32":
        return t
    if dtype == "f16":
        a = t.numpy()
        if np.isfinite(a).all() and not np.isfinite(a.astype(np.float16)).all():
            raise ExportError("a weight overflows float16 (|x| > 65504); export as bf16 or f32")
        return t.to(torch.float16)
    if dtype == "bf16":
        return safetensors_io.bf16(t.numpy())
    raise ExportError(f"unknown dtype {dtype!r}: expected one of {DTYPES}")


def round_state_dict(module: nn.Module, dtype: str) -> None:
    """Round the module's exported tensors (its state_dict: parameters and persistent buffers) in
    place through ``dtype`` (f32: no-op), so that a reference computed with it uses the weights
    exactly as exported. Non-persistent buffers (TokenTransformer's positional table, which the
    engine computes itself) are left alone."""
    if dtype == "f32":
        return
    with torch.no_grad():
        for t in module.state_dict(keep_vars=True).values():
            if t.is_floating_point():
                if dtype == "f16":
                    t.copy_(t.to(torch.float16).to(t.dtype))
                elif dtype == "bf16":
                    t.copy_(torch.from_numpy(safetensors_io.round_to_bf16(t.detach().cpu().numpy())))
                else:
                    raise ExportError(f"unknown dtype {dtype!r}: expected one of {DTYPES}")


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def export_model(module: nn.Module, out_dir, dtype: str = "f32", extra_config: dict | None = None) -> dict:
    """Write ``out_dir``/config.json and ``out_dir``/model.safetensors for ``module``.

    dtype: "f32" (default), "f16" or "bf16" for the floating weights. extra_config: more keys
    for config.json (they may not override the inferred ones with other values).
    Returns the config dict written.
    """
    dtype = dtype.lower()
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}: expected one of {DTYPES}")
    cfg = module_config(module)
    for k, v in (extra_config or {}).items():
        if k in cfg and cfg[k] != v:
            raise ExportError(f"extra_config {k}={v!r} contradicts the module's {cfg[k]!r}")
        cfg[k] = v
    tensors = {k: _convert(v, dtype) for k, v in module_state_dict(module).items()}
    metadata = {"format": "pt", "producer": "tessera export_torch.py", "dtype": dtype}

    out_dir = os.path.abspath(os.fspath(out_dir))
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    if os.path.isdir(out_dir):
        # Existing directory: replace each file atomically, keep the others.
        safetensors_io.save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata)
        _write_json(os.path.join(out_dir, "config.json"), cfg)
    elif os.path.exists(out_dir):
        raise ExportError(f"{out_dir} exists and is not a directory")
    else:
        tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
        try:
            safetensors_io.save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata)
            _write_json(os.path.join(tmp, "config.json"), cfg)
            os.chmod(tmp, 0o777 & ~safetensors_io._umask())  # mkdtemp makes 0700
            os.rename(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Export a torch.save()d nn.Transformer / nn.TransformerEncoder / "
                    "nn.TransformerDecoder / TokenTransformer to a Tessera model directory.")
    ap.add_argument("--module", required=True, metavar="FILE.pt",
                    help="a whole module saved with torch.save(module)")
    ap.add_argument("out_dir", metavar="OUT_DIR", help="model directory to write (created if needed)")
    ap.add_argument("--dtype", default="f32", choices=DTYPES, help="weight dtype (default f32)")
    args = ap.parse_args(argv)
    try:
        try:
            module = torch.load(args.module, map_location="cpu", weights_only=False)
        except TypeError:  # torch without weights_only
            module = torch.load(args.module, map_location="cpu")
    except Exception as e:  # noqa: BLE001
        print(f"export_torch.py: cannot load {args.module}: {e}", file=sys.stderr)
        return 2
    if not isinstance(module, nn.Module):
        print(f"export_torch.py: {args.module} holds a {type(module).__name__}, not a whole module "
              f"(save it with torch.save(module), not its state_dict)", file=sys.stderr)
        return 2
    try:
        cfg = export_model(module, args.out_dir, dtype=args.dtype)
    except ExportError as e:
        print(f"export_torch.py: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_dir}: {json.dumps(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
