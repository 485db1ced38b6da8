#!/usr/bin/env python3
"""make_image_goldens.py - image-preprocessing goldens for qvl, from transformers' own image processors.

Usage: python3 scripts/make_image_goldens.py --out tests/data/images

1. Creates the fixture images (deterministic: numpy's PCG64 with fixed seeds, Pillow's encoders, and a small
   PNG writer here for what Pillow cannot write: 16-bit RGB/RGBA/LA, 2-bit gray, Adam7 interlace). Content is
   gradients + shapes + noise, so resampling has edges and texture to work on. Formats: JPEG 4:2:0, 4:2:2,
   4:4:4, grayscale, progressive, CMYK; PNG RGB, RGBA, LA (8/16-bit), palette + tRNS, 1/2-bit and 16-bit gray,
   16-bit RGB(A), interlaced; WebP lossy, lossy + alpha, lossless + alpha. Sizes 1x1 to 4000x3000, aspect
   ratios up to 200 (and one of 201, which the reference refuses).
2. Runs, for every fixture and setting, transformers' Qwen2VLImageProcessorPil (the PIL backend) on
   Image.open(path), exactly as a user would:
     qwen2_5_vl, qwen3_vl         HF semantics, the processor settings of tests/data/tiny-*/preprocessor_config.json
     qwen2_5_vl_qvu, qwen3_vl_qvu qwen-vl-utils' fetch_image (to_rgb: RGBA pasted on white; its smart_resize;
                                  Image.resize BICUBIC), then the PIL processor with do_resize=False
3. Writes tests/data/images/goldens.json: per fixture the decoded mode/size and the BLAKE2b-128 of the RGB
   pixels (Image.convert("RGB") for HF, to_rgb for qwen-vl-utils); per setting the resized size, the
   BLAKE2b-128 of the resized RGB, image_grid_thw, BLAKE2b-128 and SHA-256 of pixel_values (float32,
   little endian, C order), a few sampled values, and the torchvision backend's max/mean |difference| in
   uint8 levels against the PIL backend. BLAKE2b-128 is what the C test (tests/test_image_golden.c)
   recomputes; the three hashes (decoded, resized, rows) tell which stage differs.

Self-checks (any failure raises): the PIL backend class really is the PIL one; every fixture reopens with the
intended mode and size; the resized RGB hashed here is the one the processor used (the pixel rows are
inverted back to uint8 levels and compared); image_grid_thw equals transformers' smart_resize; the total
size of what is written stays under 8 MB. Written against transformers 5.17 / Pillow 12.3; needs numpy,
Pillow, transformers and (for the comparison column) torch + torchvision. No network.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import math
import platform
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw, features

import transformers

REPO = Path(__file__).resolve().parent.parent
MAX_TOTAL_BYTES = 8 * 1024 * 1024
SAMPLES = 24  # values kept from each sampled row
SETTINGS = {
    "qwen2_5_vl": ("tests/data/tiny-qwen2_5_vl/preprocessor_config.json", False),
    "qwen3_vl": ("tests/data/tiny-qwen3_vl/preprocessor_config.json", False),
    "qwen2_5_vl_qvu": ("tests/data/tiny-qwen2_5_vl/preprocessor_config.json", True),
    "qwen3_vl_qvu": ("tests/data/tiny-qwen3_vl/preprocessor_config.json", True),
}


def require(cond, message: str) -> None:
    if not cond:
        raise SystemExit(f"make_image_goldens: {message}")


def b2(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# ---- content --------------------------------------------------------------------------------------------

def from_array(a: np.ndarray, mode: str) -> Image.Image:
    """Image.fromarray with the mode inferred (the mode argument is deprecated since Pillow 11.3), checked."""
    im = Image.fromarray(a)
    require(im.mode == mode, f"fromarray made {im.mode}, expected {mode}")
    return im


def scene(w: int, h: int, seed: int, noise: float) -> np.ndarray:
    """RGB uint8 [h, w, 3]: smooth gradients, a sinusoid, random shapes with hard edges, a fine checker patch
    (aliasing bait for the downscale filter) and Gaussian noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    fx, fy = x / max(w - 1, 1), y / max(h - 1, 1)
    r = 40 + 180 * fx
    g = 30 + 200 * fy
    b = 128 + 90 * np.sin(6.0 * fx + 4.0 * fy + rng.uniform(0, 6.28))
    img = from_array(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    s = max(min(w, h), 1)
    for _ in range(14):
        x0, y0 = rng.uniform(-0.1, 1.0) * w, rng.uniform(-0.1, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.05, 0.5) * w, y0 + rng.uniform(0.05, 0.5) * h
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            d.ellipse([x0, y0, x1, y1], fill=col)
        elif kind == 1:
            d.rectangle([x0, y0, x1, y1], fill=col, outline=(255, 255, 255), width=max(1, s // 100))
        else:
            d.line([x0, y0, x1, y1], fill=col, width=max(1, s // 60))
    a = np.asarray(img).astype(np.float64)
    cw, ch = min(w, 64), min(h, 64)
    checker = ((np.add.outer(np.arange(ch), np.arange(cw)) % 2) * 255.0)[..., None]
    a[h - ch:, w - cw:, :] = checker
    if noise > 0:
        a += rng.normal(0.0, noise, a.shape)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def alpha_plane(w: int, h: int, seed: int) -> np.ndarray:
    """uint8 [h, w]: opaque, transparent and every level in between (a radial ramp plus stripes)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot((x - w / 2) / max(w, 1), (y - h / 2) / max(h, 1)) * 2.0
    a = np.clip(255 * (1.2 - r), 0, 255)
    a[:, (np.arange(w) // max(w // 8, 1)) % 4 == 1] = 0
    a[: h // 6, :] = 255
    a += rng.normal(0, 3, a.shape)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


# ---- a small PNG writer for what Pillow does not write -------------------------------------------------

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _pack_rows(samples: np.ndarray, depth: int) -> list[bytes]:
    """samples [h, w, c] integers -> one byte string per row (big-endian 16-bit, or packed 1/2/4-bit)."""
    rows = []
    for row in samples:
        if depth == 16:
            rows.append(row.astype(">u2").tobytes())
        elif depth == 8:
            rows.append(row.astype(np.uint8).tobytes())
        else:
            flat = row.reshape(-1).astype(np.uint8)
            per = 8 // depth
            pad = (-len(flat)) % per
            flat = np.concatenate([flat, np.zeros(pad, np.uint8)]).reshape(-1, per)
            shifts = np.array([8 - depth * (i + 1) for i in range(per)], np.uint8)
            rows.append((flat << shifts).sum(axis=1).astype(np.uint8).tobytes())
    return rows


def write_png(path: Path, samples: np.ndarray, color_type: int, depth: int, interlace: bool = False) -> None:
    """samples [h, w, c]; filter type 0 on every row; Adam7 when interlace."""
    h, w = samples.shape[:2]
    raw = b""
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        raw += b"".join(b"\0" + r for r in _pack_rows(sub, depth))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    path.write_bytes(data)


# ---- fixtures -------------------------------------------------------------------------------------------

def fixtures():
    """(file name, expected Pillow mode, writer(path)) for every fixture."""
    fx = []

    def jpeg(name, w, h, seed, noise=4.0, mode="RGB", **kw):
        def make(p):
            a = scene(w, h, seed, noise)
            im = from_array(a, "RGB")
            if mode == "L":
                im = im.convert("L")
            elif mode == "CMYK":
                im = im.convert("CMYK")
            im.save(p, "JPEG", **kw)
        fx.append((name, mode, make))

    def pil_png(name, w, h, seed, mode, noise=2.0, **kw):
        def make(p):
            a = scene(w, h, seed, noise)
            if mode == "RGBA":
                im = from_array(np.dstack([a, alpha_plane(w, h, seed)]), "RGBA")
            elif mode == "LA":
                im = from_array(np.dstack([a[..., 1], alpha_plane(w, h, seed)]), "LA")
            elif mode == "P":
                im = from_array(a, "RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
                alphas = bytes(int(v) for v in np.linspace(0, 255, 64).astype(np.uint8))
                kw["transparency"] = alphas
            elif mode == "L":
                im = from_array(np.ascontiguousarray(a[..., 0]), "L")
            elif mode == "1":
                im = from_array(np.ascontiguousarray(a[..., 0]), "L").convert("1")
            elif mode == "I;16":  # up to 765: Pillow's convert("RGB") clips at 255
                im = from_array(np.ascontiguousarray(a[..., 1].astype(np.uint16) * 3), "I;16")
            else:
                im = from_array(a, "RGB")
            im.save(p, "PNG", **kw)
        fx.append((name, mode, make))

    def raw_png(name, w, h, seed, mode, color_type, depth, interlace=False):
        def make(p):
            a = scene(w, h, seed, 2.0).astype(np.uint32)
            al = alpha_plane(w, h, seed).astype(np.uint32)
            if depth == 16:  # full 16-bit range; the low byte is noise Pillow drops
                lo = np.random.default_rng(seed + 1).integers(0, 256, a.shape, dtype=np.uint32)
                a = a * 256 + lo
                al = al * 256 + lo[..., 0]
            if color_type == 0:
                s = (a[..., :1] >> (8 - depth)) if depth < 8 else a[..., :1]
            elif color_type == 2:
                s = a
            elif color_type == 4:
                s = np.dstack([a[..., 1], al])
            else:
                s = np.dstack([a, al])
            write_png(p, s, color_type, depth, interlace)
        fx.append((name, mode, make))

    def webp(name, w, h, seed, alpha=False, noise=3.0, **kw):
        def make(p):
            a = scene(w, h, seed, noise)
            im = from_array(np.dstack([a, alpha_plane(w, h, seed)]), "RGBA") if alpha else from_array(a, "RGB")
            im.save(p, "WEBP", **kw)
        fx.append((name, "RGBA" if alpha else "RGB", make))

    jpeg("jpeg_420_640x480.jpg", 640, 480, 1, quality=90, subsampling=2)
    jpeg("jpeg_444_1000x750.jpg", 1000, 750, 2, quality=95, subsampling=0)
    jpeg("jpeg_422_333x777.jpg", 333, 777, 3, quality=85, subsampling=1)
    jpeg("jpeg_gray_500x400.jpg", 500, 400, 4, mode="L", quality=90)
    jpeg("jpeg_progressive_1024x768.jpg", 1024, 768, 5, quality=88, progressive=True)
    jpeg("jpeg_cmyk_300x200.jpg", 300, 200, 6, mode="CMYK", quality=92)
    jpeg("jpeg_4000x3000.jpg", 4000, 3000, 7, noise=0.0, quality=70, subsampling=2)
    jpeg("jpeg_20x20.jpg", 20, 20, 8, quality=90)
    jpeg("jpeg_wide_4000x20.jpg", 4000, 20, 9, quality=90)  # aspect ratio 200: allowed
    jpeg("jpeg_1920x1080.jpg", 1920, 1080, 10, noise=1.0, quality=80)
    pil_png("png_rgb_448x448.png", 448, 448, 11, "RGB")  # a multiple of 28 and 32: no resize for either model
    pil_png("png_rgba_400x300.png", 400, 300, 12, "RGBA")
    pil_png("png_la_250x250.png", 250, 250, 13, "LA")
    pil_png("png_palette_trns_256x192.png", 256, 192, 14, "P")
    pil_png("png_gray_300x300.png", 300, 300, 15, "L")
    pil_png("png_gray1_100x80.png", 100, 80, 16, "1")
    pil_png("png_gray16_180x120.png", 180, 120, 17, "I;16")
    pil_png("png_tall_1x150.png", 1, 150, 18, "RGB")
    pil_png("png_wide_150x1.png", 150, 1, 19, "RGB")
    pil_png("png_1x1.png", 1, 1, 20, "RGB")
    pil_png("png_ratio201_201x1.png", 201, 1, 21, "RGB")  # the reference refuses it
    raw_png("png_rgb16_200x150.png", 200, 150, 22, "RGB", 2, 16)
    raw_png("png_rgba16_160x100.png", 160, 100, 23, "RGBA", 6, 16)
    raw_png("png_la16_120x90.png", 120, 90, 24, "RGBA", 4, 16)  # Pillow opens 16-bit LA as RGBA
    raw_png("png_gray2_90x70.png", 90, 70, 25, "L", 0, 2)
    raw_png("png_interlaced_rgb_320x240.png", 320, 240, 26, "RGB", 2, 8, interlace=True)
    raw_png("png_interlaced_rgba_77x51.png", 77, 51, 27, "RGBA", 6, 8, interlace=True)
    webp("webp_lossy_800x600.webp", 800, 600, 28, quality=80)
    webp("webp_lossy_alpha_320x240.webp", 320, 240, 29, alpha=True, quality=80)
    webp("webp_lossless_alpha_300x200.webp", 300, 200, 30, alpha=True, lossless=True)
    webp("webp_2000x1500.webp", 2000, 1500, 31, noise=1.0, quality=70)
    return fx


# ---- the reference pipelines ----------------------------------------------------------------------------

def load_settings() -> dict:
    out = {}
    for name, (rel, qvu) in SETTINGS.items():
        cfg = json.loads((REPO / rel).read_text())
        cfg.pop("image_processor_type", None)
        out[name] = (cfg, qvu)
    return out


def processor_kwargs(cfg: dict) -> dict:
    kw = dict(cfg)
    size = kw.pop("size", None)
    if size:
        kw["min_pixels"], kw["max_pixels"] = size["shortest_edge"], size["longest_edge"]
    return kw


def factor_of(cfg: dict) -> int:
    return cfg["patch_size"] * cfg["merge_size"]


def qvu_smart_resize(height, width, factor, min_pixels, max_pixels):
    """qwen-vl-utils 0.0.10/0.0.14 smart_resize (spec §1.2)."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qvu_to_rgb(im: Image.Image) -> Image.Image:
    """qwen-vl-utils to_rgb: only mode RGBA is pasted on white with its alpha as the mask."""
    if im.mode == "RGBA":
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.split()[3])
        return bg
    return im.convert("RGB")


def qvu_image(path: Path, cfg: dict) -> Image.Image:
    """qwen-vl-utils fetch_image for a local file, with its defaults min 4*F^2, max 16384*F^2."""
    f = factor_of(cfg)
    im = qvu_to_rgb(Image.open(path))
    w, h = im.size
    rh, rw = qvu_smart_resize(h, w, f, 4 * f * f, 16384 * f * f)
    if rh == 0 or rw == 0:
        raise ValueError(f"qwen-vl-utils resizes {w}x{h} to {rw}x{rh}")
    return im.resize((rw, rh))


def pil_class():
    cls = getattr(transformers, "Qwen2VLImageProcessorPil", None)
    require(cls is not None, "transformers has no Qwen2VLImageProcessorPil (need 5.x with the PIL backend)")
    return cls


def unpatchify_levels(pv: np.ndarray, grid, cfg: dict) -> np.ndarray:
    """pixel_values -> the uint8 image it was made from ([h, w, 3]), inverting spec §1.7 and the normalization
    (exact: the normalized values are 256 distinct floats per channel)."""
    t, gh, gw = (int(v) for v in grid)
    p, m, tp = cfg["patch_size"], cfg["merge_size"], cfg["temporal_patch_size"]
    x = pv.reshape(t, gh // m, gw // m, m, m, 3, tp, p, p)[0, :, :, :, :, :, 0]  # first frame
    x = x.transpose(0, 2, 5, 1, 3, 6, 4).reshape(gh * p, gw * p, 3)  # (bh, ih, py, bw, iw, px, c)
    mean = np.array(cfg["image_mean"], np.float32)
    std = np.array(cfg["image_std"], np.float32)
    levels = np.arange(256, dtype=np.float64)
    out = np.zeros(x.shape, np.uint8)
    for c in range(3):
        table = ((levels * cfg["rescale_factor"]).astype(np.float32) - mean[c]) / std[c]
        idx = np.searchsorted(table, x[..., c])
        idx = np.clip(idx, 0, 255)
        require(np.array_equal(table[idx], x[..., c]), "pixel_values are not normalized uint8 levels")
        out[..., c] = idx
    return out


def levels_from_tv(pv: np.ndarray, cfg: dict) -> np.ndarray:
    """Approximate uint8 levels of torchvision-backend rows (its normalization differs by ~1 ulp)."""
    k = pv.shape[1] // 3
    mean = np.repeat(np.array(cfg["image_mean"], np.float64), k)
    std = np.repeat(np.array(cfg["image_std"], np.float64), k)
    return np.rint((pv.astype(np.float64) * std + mean) / cfg["rescale_factor"])


def tv_compare(cls_tv, cfg, inp, pv_pil, qvu: bool):
    """max/mean |levels| between the torchvision backend and the PIL backend, or the reason it was skipped."""
    if cls_tv is None:
        return {"skipped": "torchvision backend unavailable"}
    kw = processor_kwargs(cfg)
    if qvu:
        kw["do_resize"] = False
    out = cls_tv(**kw)(images=[inp], return_tensors="pt")
    pv = out["pixel_values"].numpy()
    if pv.shape != pv_pil.shape:
        return {"skipped": f"shapes differ {pv.shape} vs {pv_pil.shape}"}
    d = np.abs(levels_from_tv(pv, cfg) - levels_from_tv(pv_pil, cfg))
    return {"max_levels": int(d.max()), "mean_levels": float(d.mean())}


def run_setting(path: Path, name: str, cfg: dict, qvu: bool, cls_pil, cls_tv) -> dict:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    kw = processor_kwargs(cfg)
    try:
        if qvu:
            inp = qvu_image(path, cfg)
            kw["do_resize"] = False
        else:
            inp = Image.open(path)
        proc = cls_pil(**kw)
        require(getattr(proc, "backend", "pil") == "pil", f"{cls_pil.__name__} is not the PIL backend")
        out = proc(images=[inp], return_tensors="np")
    except ValueError as e:  # the reference's own refusal (aspect ratio)
        return {"error": str(e)}
    pv = np.ascontiguousarray(out["pixel_values"], dtype=np.float32)
    require(out["pixel_values"].dtype == np.float32, f"{path.name}/{name}: pixel_values are {out['pixel_values'].dtype}")
    grid = [int(v) for v in np.asarray(out["image_grid_thw"]).reshape(-1)]
    # What the processor resized, recomputed here and checked against its rows.
    rgb = inp if qvu else Image.open(path).convert("RGB")
    w, h = rgb.size
    if qvu:
        rh, rw = h, w
    else:
        rh, rw = smart_resize(h, w, factor=factor_of(cfg), min_pixels=kw["min_pixels"], max_pixels=kw["max_pixels"])
    resized = rgb if (rw, rh) == rgb.size else rgb.resize((rw, rh), resample=Image.Resampling.BICUBIC)
    resized_np = np.asarray(resized.convert("RGB"), np.uint8)
    require(grid == [1, rh // cfg["patch_size"], rw // cfg["patch_size"]], f"{path.name}/{name}: grid {grid} vs {rw}x{rh}")
    back = unpatchify_levels(pv, grid, cfg)
    require(np.array_equal(back, resized_np), f"{path.name}/{name}: the rows do not come from Image.resize BICUBIC")
    n = pv.shape[0]
    rows = sorted({0, n // 2, n - 1})
    return {
        "resized": [rh, rw],
        "resized_blake2b": b2(resized_np.tobytes()),
        "image_grid_thw": grid,
        "pixel_values_shape": list(pv.shape),
        "pixel_values_blake2b": b2(pv.tobytes()),
        "pixel_values_sha256": hashlib.sha256(pv.tobytes()).hexdigest(),
        "samples": {str(r): [float(v) for v in pv[r, :SAMPLES]] for r in rows},
        "torchvision": tv_compare(cls_tv, cfg, inp, pv, qvu),
    }


def decoded_entry(path: Path, mode: str) -> dict:
    im = Image.open(path)
    # Pillow < 10.? opened 16-bit gray as "I"; either way convert("RGB") clips values above 255.
    require(im.mode == mode or (mode, im.mode) == ("I;16", "I"), f"{path.name} opens as {im.mode}, expected {mode}")
    hf_rgb = np.asarray(im.convert("RGB"), np.uint8)
    qvu_rgb = np.asarray(qvu_to_rgb(Image.open(path)), np.uint8)
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "mode": im.mode,
        "size": list(im.size),  # width, height
        "rgb_blake2b": b2(hf_rgb.tobytes()),
        "rgb_qvu_blake2b": b2(qvu_rgb.tobytes()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/data/images", help="where fixtures and goldens.json go")
    args = ap.parse_args()
    out = Path(args.out)
    if not out.is_absolute():
        out = REPO / out
    out.mkdir(parents=True, exist_ok=True)
    cls_pil = pil_class()
    cls_tv = getattr(transformers, "Qwen2VLImageProcessor", None)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        cls_tv = None
    settings = load_settings()
    entries, total = [], 0
    for name, mode, make in fixtures():
        path = out / name
        make(path)
        e = decoded_entry(path, mode)
        e["settings"] = {}
        for sname, (cfg, qvu) in settings.items():
            e["settings"][sname] = run_setting(path, sname, cfg, qvu, cls_pil, cls_tv)
        refused = ["error" in v for v in e["settings"].values()]
        # Only the 201:1 fixture may be refused, and by every setting: any other error is a bug here.
        require(all(refused) if "ratio201" in name else not any(refused),
                f"{name}: unexpected outcome {[v.get('error') for v in e['settings'].values()]}")
        total += e["bytes"]
        entries.append(e)
        tv = [s.get("torchvision", {}).get("max_levels") for s in e["settings"].values()]
        print(f"{name:36s} {e['mode']:5s} {e['size'][0]}x{e['size'][1]:<5d} {e['bytes']:>9d} B  tv max {tv}", flush=True)
    doc = {
        "generator": "scripts/make_image_goldens.py",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "transformers": transformers.__version__,
            "libjpeg_turbo": features.version("libjpeg_turbo"),
            "zlib": features.version("zlib"),
            "webp": features.version("webp"),
            "torch": sys.modules["torch"].__version__ if "torch" in sys.modules else None,
            "torchvision": sys.modules["torchvision"].__version__ if "torchvision" in sys.modules else None,
        },
        "settings": {k: {"config": v[0], "qwen_vl_utils": v[1]} for k, v in SETTINGS.items()},
        "samples_per_row": SAMPLES,
        "images": entries,
    }
    text = json.dumps(doc, indent=1)
    total += len(text)
    require(total <= MAX_TOTAL_BYTES, f"fixtures + goldens are {total} bytes, over {MAX_TOTAL_BYTES}")
    (out / "goldens.json").write_text(text + "\n")
    tvs = [s["torchvision"]["max_levels"] for e in entries for s in e["settings"].values()
           if "torchvision" in s and "max_levels" in s["torchvision"]]
    print(f"wrote {len(entries)} fixtures + goldens.json to {out} ({total} bytes); "
          f"torchvision vs PIL: max {max(tvs) if tvs else 'n/a'} levels over {len(tvs)} runs")


if __name__ == "__main__":
    main()
