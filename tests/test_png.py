#!/usr/bin/python3
"""Tessera's PNG encoder and `tessera attention` images, decoded with Python's standard library.

1. Runs ``test_png OUT_DIR`` (tests/test_png.cpp: checksums, font, heatmap layout), which writes
   a 301x223 test pattern, a 1x1 image and a small heatmap; decodes each here with zlib + struct
   (signature, IHDR, every chunk's CRC, the zlib header, each deflate block being "stored" with
   LEN/NLEN of at most 65535, Adler-32, filter type 0 on each row) and checks that every pixel of
   the pattern round-trips.
2. Runs ``tessera attention`` on a model directory (the demo by default) and checks the PNG:
   plausible dimensions for the input's length, not blank (many colormap colours, black text);
   and that bad arguments (layer/head out of range, no tokenizer.json, ...) exit with code 2.

    test_png.py --test-png build/tests/test_png --tessera build/tools/tessera [--model DIR]
"""
from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import zlib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Bad(Exception):
    pass


def decode_png(path):
    """-> (width, height, rows of (r, g, b) tuples). Raises Bad on anything non-conforming."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise Bad(f"{path}: bad signature {data[:8]!r}")
    pos, chunks = 8, []
    while pos < len(data):
        if pos + 12 > len(data):
            raise Bad(f"{path}: truncated chunk at {pos}")
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise Bad(f"{path}: CRC mismatch in chunk {ctype!r}")
        chunks.append((ctype, body))
        pos += 12 + length
    types = [c for c, _ in chunks]
    if types[0] != b"IHDR" or types[-1] != b"IEND" or b"IDAT" not in types:
        raise Bad(f"{path}: chunk order {types}")
    if chunks[-1][1] != b"":
        raise Bad(f"{path}: IEND not empty")
    ihdr = chunks[0][1]
    if len(ihdr) != 13:
        raise Bad(f"{path}: IHDR of {len(ihdr)} bytes")
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", ihdr)
    if (depth, ctype, comp, filt, interlace) != (8, 2, 0, 0, 0) or w < 1 or h < 1:
        raise Bad(f"{path}: IHDR {w}x{h} depth {depth} colour {ctype} {comp} {filt} {interlace}")
    z = b"".join(body for c, body in chunks if c == b"IDAT")

    # zlib header, then stored deflate blocks, parsed by hand.
    cmf, flg = z[0], z[1]
    if cmf & 0x0F != 8 or (cmf * 256 + flg) % 31 != 0 or flg & 0x20:
        raise Bad(f"{path}: bad zlib header {cmf:#x} {flg:#x}")
    p, raw, blocks = 2, bytearray(), 0
    while True:
        hdr = z[p]
        bfinal, btype = hdr & 1, (hdr >> 1) & 3
        if btype != 0:
            raise Bad(f"{path}: deflate block type {btype}, expected 0 (stored)")
        length, nlength = struct.unpack("<HH", z[p + 1:p + 5])
        if length ^ 0xFFFF != nlength:
            raise Bad(f"{path}: LEN {length} / NLEN {nlength} mismatch")
        raw += z[p + 5:p + 5 + length]
        p += 5 + length
        blocks += 1
        if bfinal:
            break
    (adler,) = struct.unpack(">I", z[p:p + 4])
    if p + 4 != len(z):
        raise Bad(f"{path}: {len(z) - p - 4} bytes after the Adler-32")
    if zlib.adler32(bytes(raw)) & 0xFFFFFFFF != adler:
        raise Bad(f"{path}: Adler-32 mismatch")
    if zlib.decompress(z) != bytes(raw):
        raise Bad(f"{path}: zlib disagrees with the stored blocks")
    row = 1 + 3 * w
    if len(raw) != row * h:
        raise Bad(f"{path}: {len(raw)} bytes of scanlines, expected {row * h}")
    if blocks != max(1, -(-len(raw) // 65535)):
        raise Bad(f"{path}: {blocks} stored blocks for {len(raw)} bytes")
    rows = []
    for y in range(h):
        line = raw[y * row:(y + 1) * row]
        if line[0] != 0:
            raise Bad(f"{path}: row {y} has filter type {line[0]}, expected 0")
        rows.append([tuple(line[1 + 3 * x:4 + 3 * x]) for x in range(w)])
    return w, h, rows


def pattern(x, y):
    return ((x * 7 + y * 3) & 255, (x * y) & 255, ((255 - x) ^ y) & 255)


def check_encoder(test_png, tmp):
    subprocess.run([test_png, tmp], check=True)
    w, h, rows = decode_png(os.path.join(tmp, "pattern.png"))
    if (w, h) != (301, 223):
        raise Bad(f"pattern is {w}x{h}, expected 301x223")
    bad = [(x, y) for y in range(h) for x in range(w) if rows[y][x] != pattern(x, y)]
    if bad:
        x, y = bad[0]
        raise Bad(f"{len(bad)} pixels differ, first ({x}, {y}): {rows[y][x]} != {pattern(x, y)}")
    w, h, rows = decode_png(os.path.join(tmp, "tiny.png"))
    if (w, h, rows) != (1, 1, [[(10, 20, 30)]]):
        raise Bad(f"tiny.png decoded as {w}x{h} {rows}")
    w, h, rows = decode_png(os.path.join(tmp, "heatmap.png"))
    colours = {c for r in rows for c in r}
    if (68, 1, 84) not in colours or (253, 231, 37) not in colours or (0, 0, 0) not in colours:
        raise Bad("heatmap.png lacks the colormap's ends (values 0 and 1) or black text")
    print(f"encoder: pattern 301x223 round-trips; heatmap {w}x{h} ok")


def check_attention(tessera, model, tmp):
    text = "the 26th of November 2026"
    out = os.path.join(tmp, "attn.png")
    r = subprocess.run([tessera, "attention", "--model", model, "--layer", "0", "--head", "0",
                        "--threads", "2", "--out", out, text],
                       capture_output=True, text=True)
    if r.returncode != 0 or r.stdout.strip() != out:
        raise Bad(f"tessera attention: rc {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr!r}")
    w, h, rows = decode_png(out)
    n = len(text) + 1  # characters + eos
    if w < n * 18 or h < n * 18 or w > n * 28 + 600 or h > n * 28 + 600:
        raise Bad(f"attention image {w}x{h} implausible for {n}x{n} cells")
    colours = {}
    for r_ in rows:
        for c in r_:
            colours[c] = colours.get(c, 0) + 1
    if len(colours) < 20 or colours.get((0, 0, 0), 0) < 100:
        raise Bad(f"attention image looks blank: {len(colours)} colours")
    if max(colours.values()) > 0.9 * w * h:
        raise Bad("attention image is almost one colour")
    # The default file name, in the working directory.
    r = subprocess.run([tessera, "attention", "--model", model, "--layer", "0", "--head", "0",
                        "--threads", "2", "x"], capture_output=True, text=True, cwd=tmp)
    if r.returncode != 0 or r.stdout.strip() != "attention-L0-H0.png" or not os.path.exists(
            os.path.join(tmp, "attention-L0-H0.png")):
        raise Bad(f"default output name: rc {r.returncode}, stdout {r.stdout!r}")
    print(f"attention: {w}x{h} image, {len(colours)} colours ok")


def check_errors(tessera, model, tmp):
    """Bad arguments: exit code 2 and one stderr line naming the limit."""
    notok = os.path.join(tmp, "no-tokenizer")
    os.makedirs(notok, exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        dst = os.path.join(notok, f)
        if not os.path.exists(dst):
            os.symlink(os.path.abspath(os.path.join(model, f)), dst)
    cases = [
        (["--model", model, "--layer", "99", "x"], "--layer 99 is out of range: the encoder has"),
        (["--model", model, "--layer", "99", "--cross", "x"],
         "--layer 99 is out of range: the decoder has"),
        (["--model", model, "--layer", "-1", "--tgt", "x"], "--layer -1 is out of range"),
        (["--model", model, "--head", "99", "x"], "--head 99 is out of range: the model has"),
        (["--model", model, "--max-new-tokens", "9999", "--tgt", "x"],
         "--max-new-tokens 9999 is too many"),
        (["--model", notok, "x"], "has no tokenizer.json"),
        (["--model", model, "--tgt", "--cross", "x"], "excludes"),
    ]
    for extra, want in cases:
        r = subprocess.run([tessera, "attention", "--out", os.path.join(tmp, "e.png")] + extra,
                           capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        if r.returncode != 2 or len(lines) != 1 or want not in lines[0]:
            raise Bad(f"attention {extra}: rc {r.returncode}, stderr {r.stderr!r}; expected rc 2 "
                      f"and {want!r}")
    if os.path.exists(os.path.join(tmp, "e.png")):
        raise Bad("a failed run left its output file behind")
    print(f"errors: {len(cases)} cases ok")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--test-png", required=True)
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--model", default=os.path.join(_ROOT, "models", "demo-dates"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tessera-png-") as tmp:
        try:
            check_encoder(args.test_png, tmp)
            check_attention(args.tessera, args.model, tmp)
            check_errors(args.tessera, args.model, tmp)
        except (Bad, subprocess.CalledProcessError) as e:
            print(f"FAIL: {e}", file=sys.stderr)
            return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
