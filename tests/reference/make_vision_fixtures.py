#!/usr/bin/env python3
"""Fixtures for tests/vision: what Pillow and the official DeepSeek-OCR preprocessing make of real images.

Writes tests/fixtures/vision/:
  src/       the source images (copied from Debian packages and a few other installed docs; see
             README.md there) plus EXIF-orientation variants made by splicing only an EXIF block
             into a real JPEG / PNG (pixel data untouched), and two 16-bit PNGs built from a real
             image's pixels (no real 16-bit PNG is installed here).
  pillow/    Pillow's decoded RGB of every JPEG source, as PNG (lossless), so the C++ test can
             (a) measure stb-vs-libjpeg decode differences and (b) run our preprocessing on exactly
             Pillow's pixels.
  manifest.json  for every source: Pillow's decode (official load_image: exif_transpose with its
             fallback, then convert('RGB')) as an CRC-32 + size; for every mode the tiling
             decision and hashes of the global view and of each tile, computed by the official
             dynamic_preprocess / find_closest_aspect_ratio (loaded at run time from the mirrored
             official repo) and Pillow's ImageOps.pad; resize-only cases; grid-search cases
             including exact ties; CPython's candidate orders; torch's normalisation of 0..255.
Only Pillow, torch and the official code compute expected values. Run: python3 tests/reference/make_vision_fixtures.py
"""
import ast
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import torch
from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "vision")
MIRROR = "/work/.mirror/deepseek-ai+DeepSeek-OCR/repo"
OFFICIAL = "DeepSeek-OCR-master/DeepSeek-OCR-vllm/process/image_process.py"

SOURCES = [  # (name in fixtures, installed path)
    ("pyparsing_diagram.jpg", "/usr/lib/google-cloud-sdk/platform/gsutil/third_party/pyparsing/docs/_static/pyparsingClassDiagram_1.5.2.jpg"),
    ("verify.jpeg", "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html/embedded-book/assets/verify.jpeg"),
    ("webtide_logo.jpg", "/usr/lib/google-cloud-sdk/platform/google_appengine/google/appengine/tools/java/jetty12/jetty-home/modules/demo.d/root/images/webtide_logo.jpg"),
    ("gnupg-card-architecture.png", "/usr/share/info/gnupg-card-architecture.png"),
    ("gnupg-module-overview.png", "/usr/share/info/gnupg-module-overview.png"),
    ("dh-tree.png", "/usr/share/doc/valgrind/html/images/dh-tree.png"),
    ("trpl14-01.png", "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html/book/img/trpl14-01.png"),
    ("pngtest.png", "/usr/share/doc/libpng-dev/examples/pngtest.png"),
    ("minus.png", "/usr/share/doc/python3/_static/minus.png"),
    ("logoLarge.gif", "/usr/share/tcltk/tk8.6/images/logoLarge.gif"),
    ("pwrdLogo75.gif", "/usr/share/tcltk/tk8.6/images/pwrdLogo75.gif"),
    ("pilrc.bmp", "/usr/share/doc/fp-compiler/3.2.2/palmos/pilrc.bmp"),
    # more JPEG decoder paths: a real progressive file, a real greyscale one
    ("f3_progressive.jpg", "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html/embedded-book/assets/f3.jpg"),
    ("grey_2x2.jpg", "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/IPython/core/tests/2x2.jpg"),
]

MODES = {  # name: (base_size, image_size, crop)
    "tiny": (512, 512, False), "small": (640, 640, False), "base": (1024, 1024, False),
    "large": (1280, 1280, False), "gundam": (1024, 640, True), "gundam-m": (1280, 1024, True),
}


def img_hash(im: Image.Image) -> str:
    """CRC-32 (zlib) of the RGB bytes, as 8 hex digits; sizes are compared separately."""
    assert im.mode == "RGB"
    return "%08x" % (zlib.crc32(im.tobytes()) & 0xFFFFFFFF)


def load_official():
    src = subprocess.check_output(["git", "-C", MIRROR, "show", "HEAD:" + OFFICIAL]).decode()
    tree = ast.parse(src)
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef)
            and n.name in ("find_closest_aspect_ratio", "dynamic_preprocess", "count_tiles")]
    ns = {"MIN_CROPS": 2, "MAX_CROPS": 9, "math": __import__("math")}
    exec(compile(ast.Module(body=keep, type_ignores=[]), OFFICIAL, "exec"), ns)
    return ns


def official_load(data: bytes) -> Image.Image:
    """run_dpsk_ocr_image.load_image + .convert('RGB') (HF: load_pil_images), on bytes."""
    image = Image.open(io.BytesIO(data))
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:
        image = Image.open(io.BytesIO(data))
    return image.convert("RGB")


def exif_tiff(orientation: int, little: bool) -> bytes:
    if not little:
        e = Image.Exif()
        e[0x0112] = orientation
        b = e.tobytes()
        assert b.startswith(b"Exif\x00\x00MM")
        return b[6:]
    # little-endian TIFF: header, IFD0 with one SHORT entry, next-IFD 0
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)


def jpeg_with_app1(jpeg: bytes, payload: bytes) -> bytes:
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + seg + jpeg[2:]


def png_with_exif(png: bytes, tiff: bytes) -> bytes:
    # insert an eXIf chunk right after IHDR (8-byte signature + 25-byte IHDR chunk)
    chunk = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff) & 0xFFFFFFFF)
    return png[:33] + chunk + png[33:]


def cmyk_with_black(rgb: Image.Image) -> Image.Image:
    """CMYK with half the grey component moved into K (Pillow's convert('CMYK') leaves K = 0,
    which would leave the K multiply of cmyk2rgb untested)."""
    c = 255 - np.asarray(rgb, dtype=np.int32)
    k = c.min(axis=2, keepdims=True) // 2
    return Image.fromarray(np.concatenate([c - k, k], axis=2).astype(np.uint8), "CMYK")


def png16(w, h, color_type, samples: np.ndarray) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def grid_margin(W, H, T, mn, mx, off):
    """Official decision plus how far it is from changing: the gap between the best |W/H - i/j|
    and the nearest different value (0 = an exact tie decided by order / area rule)."""
    ratios = sorted(set((i, j) for n in range(mn, mx + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                        if mn <= i * j <= mx), key=lambda x: x[0] * x[1])
    best = off["find_closest_aspect_ratio"](W / H, ratios, W, H, T)
    diffs = sorted(set(abs(W / H - i / j) for i, j in ratios))
    bd = abs(W / H - best[0] / best[1])
    tie = sum(1 for i, j in ratios if abs(W / H - i / j) == bd) > 1
    nxt = [d for d in diffs if d > bd]
    return list(best), tie, (nxt[0] - bd) if nxt else None, ratios


def main():
    off = load_official()
    os.makedirs(os.path.join(OUT, "src"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "pillow"), exist_ok=True)
    for n, p in SOURCES:
        shutil.copyfile(p, os.path.join(OUT, "src", n))

    files = [n for n, _ in SOURCES]
    jpeg = open(os.path.join(OUT, "src", "webtide_logo.jpg"), "rb").read()
    png = open(os.path.join(OUT, "src", "gnupg-card-architecture.png"), "rb").read()
    for o in range(1, 9):
        little = o % 2 == 0
        t = exif_tiff(o, little)
        n = "webtide_exif%d.jpg" % o
        open(os.path.join(OUT, "src", n), "wb").write(jpeg_with_app1(jpeg, b"Exif\x00\x00" + t))
        files.append(n)
        n = "card_exif%d.png" % o
        open(os.path.join(OUT, "src", n), "wb").write(png_with_exif(png, t))
        files.append(n)
    # malformed EXIF: IFD entry count far past the end; IFD offset past the end; orientation 9
    t = exif_tiff(6, True)
    bad = {
        "webtide_exif_truncated.jpg": t[:8] + struct.pack("<H", 50) + t[10:],
        "webtide_exif_badoffset.jpg": t[:4] + struct.pack("<I", 4000) + t[8:],
        "webtide_exif_value9.jpg": exif_tiff(9, True),
    }
    for n, tt in bad.items():
        open(os.path.join(OUT, "src", n), "wb").write(jpeg_with_app1(jpeg, b"Exif\x00\x00" + tt))
        files.append(n)
    # 16-bit PNGs from real pixels (grey: values up to 1020 so Pillow's I;16 -> RGB clamp matters)
    base = np.asarray(official_load(open(os.path.join(OUT, "src", "pngtest.png"), "rb").read()), dtype=np.uint16)
    h, w, _ = base.shape
    open(os.path.join(OUT, "src", "grey16.png"), "wb").write(png16(w, h, 0, base[:, :, 1] * 4))
    rgb16 = (base * 257 + (np.arange(w)[None, :, None] % 7)).astype(np.uint16).reshape(h, w * 3)
    open(os.path.join(OUT, "src", "rgb16.png"), "wb").write(png16(w, h, 2, rgb16))
    files += ["grey16.png", "rgb16.png"]

    # JPEG colour spaces and subsamplings no installed file has, encoded by Pillow (libjpeg-turbo)
    # from a 251x187 crop (odd sizes: the chroma upsampler's edge cases) of verify.jpeg's pixels
    crop = official_load(open(os.path.join(OUT, "src", "verify.jpeg"), "rb").read()).crop((200, 120, 451, 307))
    for n, im, kw in [("jpeg_grey.jpg", crop.convert("L"), {}),
                      ("jpeg_cmyk.jpg", cmyk_with_black(crop), {}),  # Adobe marker, transform 0
                      ("jpeg_444.jpg", crop, {"subsampling": 0}),
                      ("jpeg_422.jpg", crop, {"subsampling": 1}),
                      ("jpeg_420_restart.jpg", crop, {"subsampling": 2, "restart_marker_blocks": 3}),
                      ("jpeg_rgb.jpg", crop, {"keep_rgb": True, "subsampling": 0}),  # Adobe transform 0, no YCbCr
                      ("jpeg_progressive.jpg", crop, {"progressive": True, "subsampling": 2})]:
        im.save(os.path.join(OUT, "src", n), quality=90, **kw)
        files.append(n)

    manifest = {"images": [], "resize": [], "grid": [], "candidates": [], "normalize": []}
    for n in files:
        data = open(os.path.join(OUT, "src", n), "rb").read()
        im = official_load(data)
        entry = {"file": "src/" + n, "width": im.width, "height": im.height, "decoded": img_hash(im),
                 "format": Image.open(io.BytesIO(data)).format, "mode": Image.open(io.BytesIO(data)).mode}
        if entry["format"] == "JPEG":
            pn = os.path.splitext(n)[0] + ".png"
            im.save(os.path.join(OUT, "pillow", pn), optimize=True)
            entry["pillow_png"] = "pillow/" + pn
        variant = "_exif" in n or n.endswith("16.png") or n.startswith("jpeg_") or n in ("f3_progressive.jpg", "grey_2x2.jpg")
        if not variant:
            modes = {}
            for m, (base_size, image_size, crop) in MODES.items():
                rec = {}
                if crop:
                    if im.width <= 640 and im.height <= 640:
                        ratio, tiles = [1, 1], []
                    else:
                        tiles, ratio = off["dynamic_preprocess"](im, min_num=2, max_num=9, image_size=image_size)
                        best, tie, margin, _ = grid_margin(im.width, im.height, image_size, 2, 9, off)
                        assert list(ratio) == best
                        rec["tie"] = tie
                        rec["margin"] = margin
                        assert tie or margin > 1e-6, (n, m, margin)
                    g = ImageOps.pad(im, (base_size, base_size), color=(127, 127, 127))
                    rec["tiles_w"], rec["tiles_h"] = int(ratio[0]), int(ratio[1])
                    rec["tiles"] = [img_hash(t) for t in tiles] if (ratio[0] > 1 or ratio[1] > 1) else []
                else:
                    x = im.resize((image_size, image_size)) if image_size <= 640 else im
                    g = ImageOps.pad(x, (image_size, image_size), color=(127, 127, 127))
                    rec["tiles_w"], rec["tiles_h"], rec["tiles"] = 1, 1, []
                rec["global"] = img_hash(g)
                modes[m] = rec
            entry["modes"] = modes
        manifest["images"].append(entry)
        print(n, im.size, entry["format"], entry["mode"], flush=True)

    # Damaged JPEGs: what Pillow makes of them, an error (truncated) or the pixels libjpeg
    # recovers after a warning (corrupt entropy-coded data, a stray restart marker)
    manifest["jpeg_edits"] = []
    for n, cut, at, put in [("verify.jpeg", 2, None, None), ("verify.jpeg", 10, None, None),
                            ("f3_progressive.jpg", 100000, None, None),
                            ("verify.jpeg", 0, 0.5, b"\x12\x34\x56\x78"), ("verify.jpeg", 0, 0.5, b"\xff\xd3"),
                            ("f3_progressive.jpg", 0, 0.7, b"\x00\x00\x00\x00\x00\x00")]:
        b = bytearray(open(os.path.join(OUT, "src", n), "rb").read())
        rec = {"file": "src/" + n, "cut": cut}
        if at is not None:
            rec["offset"], rec["bytes"] = int(len(b) * at), put.hex()
            b[rec["offset"]:rec["offset"] + len(put)] = put
        if cut:
            b = b[:-cut]
        try:
            rec["decoded"] = img_hash(official_load(bytes(b)))
        except OSError as e:
            rec["error"] = str(e)
        manifest["jpeg_edits"].append(rec)
        print("edit", rec, flush=True)

    # Alpha::white reference: Pillow's alpha_composite onto opaque white (its own rounding)
    rgba = ImageOps.exif_transpose(Image.open(os.path.join(OUT, "src", "pngtest.png"))).convert("RGBA")
    white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    white.save(os.path.join(OUT, "pillow", "pngtest_white.png"))

    # resize_bicubic alone, from Pillow-decoded real pixels, odd sizes both ways and one-axis cases
    for n, sizes in [("verify.jpeg", [(1, 1), (3, 2), (37, 23), (720, 301), (333, 477), (1001, 333), (1441, 955), (13, 900),
                                     (700, 100), (600, 150)]),  # height shrinks > 2x the width: vertical pass first
                     ("pngtest.png", [(90, 70), (91, 68), (640, 640), (7, 5), (300, 17)]),
                     ("trpl14-01.png", [(1024, 531), (640, 1280), (97, 1561)])]:
        im = official_load(open(os.path.join(OUT, "src", n), "rb").read())
        for s in sizes:
            manifest["resize"].append({"file": "src/" + n, "width": s[0], "height": s[1], "hash": img_hash(im.resize(s, Image.BICUBIC))})

    # grid search: sizes around every candidate ratio, and exact midpoints between neighbouring ratios
    cases = set()
    for (mn, mx) in [(2, 9), (2, 6), (1, 9), (2, 12)]:
        ratios = sorted(set(i / j for i in range(1, mx + 1) for j in range(1, mx + 1) if mn <= i * j <= mx))
        for r in ratios:
            for H in (700, 1000, 1403):
                cases.add((int(round(r * H)), H, mn, mx))
        for a, b in zip(ratios, ratios[1:]):
            mid = (a + b) / 2
            for H in (800, 1000, 2000, 3000, 5000):
                W = round(mid * H)
                if abs(W / H - a) == abs(W / H - b):
                    cases.add((W, H, mn, mx))
    ties = 0
    for (W, H, mn, mx) in sorted(cases):
        if W < 1:
            continue
        for T in (640, 1024):
            best, tie, margin, _ = grid_margin(W, H, T, mn, mx, off)
            ties += tie
            manifest["grid"].append({"width": W, "height": H, "tile": T, "min": mn, "max": mx, "best": best, "tie": tie})
    print("grid cases", len(manifest["grid"]), "exact ties", ties)
    for (mn, mx) in [(2, 9), (2, 6), (1, 9), (2, 12), (3, 20), (1, 1), (1, 64), (5, 40)]:
        _, _, _, ratios = grid_margin(1000, 1000, 640, mn, mx, off)
        manifest["candidates"].append({"min": mn, "max": mx, "order": [list(r) for r in ratios]})

    # torchvision ToTensor (uint8 -> float32 / 255) + Normalize(0.5, 0.5) (sub, div in float32)
    x = torch.arange(256, dtype=torch.uint8).to(torch.float32).div(255)
    x = x.sub(torch.tensor(0.5)).div(torch.tensor(0.5))
    manifest["normalize"] = [int(v) for v in x.numpy().view(np.uint32)]

    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fs in os.walk(OUT) for fn in fs)
    print("fixture bytes", total)


if __name__ == "__main__":
    sys.exit(main())
