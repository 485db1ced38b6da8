#!/usr/bin/env python3
"""qvl_dummy.py - synthetic weights and test inputs, bit-identical to src/core/rng.{h,c}.

The C engine's --dummy mode and its test inputs come from a counter-based generator keyed by tensor
name, so any element is computable alone, in any order, in any language (definition in src/core/rng.h):

    seed  = FNV-1a 64 of the name's bytes
    z     = SplitMix64 finaliser of (seed + (i + 1) * 0x9e3779b97f4a7c15)   mod 2^64, i = flat index
    u     = (z >> 40) * 2^-24                                               float64, exact, in [0, 1)
    value = float32(center + scale * (2u - 1))                              float64 arithmetic, one rounding

This module gives transformers the same numbers:
    values(name, shape, center, scale)  numpy float32 array (vectorised, uint64 wraparound)
    value_py(name, i, center, scale)    one element in pure Python (the reference for the self-test)
    dummy_scale(name, shape)            (center, scale) for an HF checkpoint tensor name, as qvl_dummy_scale
    checkpoint_name(name, arch)         in-memory transformers name -> on-disk checkpoint name
    fill_model(model)                   overwrites a transformers model's checkpoint tensors with the stream
    pixels(fixture, n_rows, n_cols)     the input pixel rows of a golden fixture

`python3 scripts/qvl_dummy.py --selftest` checks the pure-Python path against published FNV-1a and
SplitMix64 test vectors, prints the first values of a known tensor as float32 bits (for the C test to
compare), and checks numpy against pure Python when numpy is installed.
"""
from __future__ import annotations

import math
import struct
import sys

try:  # numpy is needed for values()/fill_model(); the pure-Python self-test runs without it
    import numpy as np
except ImportError:  # pragma: no cover - depends on the machine
    np = None

MASK64 = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
TWO_POW_M24 = 2.0**-24
CHUNK = 1 << 22  # elements per numpy pass: bounds the uint64 temporaries (32 MiB) for large tensors

# Input rows of the golden fixtures: values in [-1.6, 2.0], roughly the range of normalised pixels.
PIXEL_CENTER = 0.2
PIXEL_SCALE = 1.8


# ---- the generator, pure Python --------------------------------------------------------------------


def fnv1a64(name: str) -> int:
    h = FNV_OFFSET
    for byte in name.encode("utf-8"):
        h = ((h ^ byte) * FNV_PRIME) & MASK64
    return h


def splitmix64(seed: int, i: int) -> int:
    """z for element i of the stream seeded by seed (the C code's uint64 arithmetic, masked)."""
    z = (seed + (i + 1) * GOLDEN_GAMMA) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def to_f32(x: float) -> float:
    """Rounds a Python float (double) to the nearest float32, as C's (float) cast does."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def value_py(name: str, i: int, center: float, scale: float) -> float:
    """Element i of the named stream; the same expression, in the same order, as qvl_counter_value."""
    u = float(splitmix64(fnv1a64(name), i) >> 40) * TWO_POW_M24
    return to_f32(center + scale * (2.0 * u - 1.0))


# ---- the generator, numpy -------------------------------------------------------------------------


def _require_numpy():
    if np is None:
        raise RuntimeError("qvl_dummy: numpy is required for the vectorised generator")


def stream(name: str, first: int, n: int, center: float, scale: float):
    """Elements [first, first + n) of the named stream as float32 (qvl_counter_fill)."""
    _require_numpy()
    seed = np.uint64(fnv1a64(name))
    shifts = {k: np.uint64(k) for k in (27, 30, 31, 40)}
    out = np.empty(n, dtype=np.float32)
    # Integer array arithmetic in numpy wraps mod 2^64 without warnings; every operand is uint64 so no
    # value-based promotion to int64/float64 can happen. errstate guards the float part.
    with np.errstate(over="raise", invalid="raise"):
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            z = np.arange(first + lo + 1, first + hi + 1, dtype=np.uint64)  # i + 1
            z *= np.uint64(GOLDEN_GAMMA)
            z += seed
            z ^= z >> shifts[30]
            z *= np.uint64(MIX1)
            z ^= z >> shifts[27]
            z *= np.uint64(MIX2)
            z ^= z >> shifts[31]
            u = (z >> shifts[40]).astype(np.float64) * TWO_POW_M24
            out[lo:hi] = (center + scale * (2.0 * u - 1.0)).astype(np.float32)  # one rounding to f32
    return out


def values(name: str, shape, center: float, scale: float):
    """The named tensor (row-major) as a float32 numpy array of the given shape."""
    shape = tuple(int(d) for d in shape)
    return stream(name, 0, math.prod(shape), center, scale).reshape(shape)


def pixels(fixture_name: str, n_rows: int, n_cols: int):
    """A golden fixture's input pixel rows; the C tests regenerate them from the same name."""
    return values("pixel_values:" + fixture_name, (n_rows, n_cols), PIXEL_CENTER, PIXEL_SCALE)


# ---- scales and names -----------------------------------------------------------------------------


def dummy_scale(name: str, shape) -> tuple[float, float]:
    """(center, scale) for an on-disk checkpoint tensor name; the rules of qvl_dummy_scale (rng.c)."""
    if name.endswith(".bias"):
        return 0.0, 0.02
    if "norm" in name or "ln_q" in name:
        return 1.0, 0.1
    if name.endswith("embed_tokens.weight") or name.endswith("pos_embed.weight"):
        return 0.0, 0.05
    fan_in = math.prod(int(d) for d in tuple(shape)[1:])  # 1 for 1-D tensors, as in the C loop
    return 0.0, 1.0 / math.sqrt(float(fan_in))


def checkpoint_name(in_memory_name: str, arch: str) -> str:
    """The on-disk checkpoint name of a transformers state_dict key (spec qwen_vl.md section 5.4).

    Qwen2.5-VL: transformers >= 4.52 (and 5.x) nests the towers as model.visual / model.language_model,
    while the released checkpoints keep the original layout visual.* / model.*. On load, transformers
    5.x renames them with the "Qwen2VLForConditionalGeneration" entry of conversion_mapping.py
    (Qwen2_5_VLForConditionalGeneration maps to it): r"^visual" -> "model.visual" and
    r"^model(?!\\.(language_model|visual))" -> "model.language_model"; this is its inverse.
    Qwen3-VL checkpoints were released with the nested names, so they are the identity.
    lm_head.weight keeps its name in both (and is absent from tied checkpoints; see fill_model).
    """
    if arch == "qwen2_5_vl":
        if in_memory_name.startswith("model.visual."):
            return in_memory_name[len("model."):]
        if in_memory_name.startswith("model.language_model."):
            return "model." + in_memory_name[len("model.language_model."):]
        if in_memory_name == "lm_head.weight":
            return in_memory_name
        if in_memory_name.startswith(("visual.", "model.")):  # transformers < 4.52: already on-disk names
            return in_memory_name
    elif arch == "qwen3_vl":
        if in_memory_name.startswith(("model.visual.", "model.language_model.")) or in_memory_name == "lm_head.weight":
            return in_memory_name
    else:
        raise ValueError(f"checkpoint_name: unknown arch {arch!r} (expected qwen2_5_vl or qwen3_vl)")
    raise ValueError(f"checkpoint_name: {in_memory_name!r} is not a known {arch} tensor name")


def _tie_groups(state):
    """Groups state_dict keys that share one storage (tied parameters appear under every alias)."""
    groups = {}
    for key, tensor in state.items():
        groups.setdefault((tensor.data_ptr(), tuple(tensor.shape)), []).append(key)
    return [keys for keys in groups.values() if len(keys) > 1]


def _tied_aliases(state, arch):
    """{alias: source} for tied tensors. Only lm_head may alias, and only the text embedding."""
    aliases = {}
    for keys in _tie_groups(state):
        heads = [k for k in keys if checkpoint_name(k, arch) == "lm_head.weight"]
        embeds = [k for k in keys if checkpoint_name(k, arch).endswith("embed_tokens.weight")]
        if len(keys) != 2 or len(heads) != 1 or len(embeds) != 1:
            raise RuntimeError(f"fill_model: unexpected shared storage between {keys}")
        aliases[heads[0]] = embeds[0]
    return aliases


def fill_model(model, arch: str | None = None) -> dict:
    """Overwrites every checkpoint tensor of a transformers model with the qvl_dummy stream.

    Every state_dict entry (parameters and persistent buffers) is generated under its on-disk name with
    its own shape, exactly as the C loader's --dummy mode does from the checkpoint index. A tied lm_head
    is not a checkpoint tensor: it is the embedding, so it is skipped and must end up equal to it.
    Returns {"generated": {in_memory: checkpoint}, "tied": {alias: source}}.
    """
    _require_numpy()
    import torch

    arch = arch or model.config.model_type
    state = model.state_dict(keep_vars=True)
    aliases = _tied_aliases(state, arch)
    generated = {}
    with torch.no_grad():
        for key, tensor in state.items():
            if key in aliases:
                continue
            if not tensor.is_floating_point():
                raise RuntimeError(f"fill_model: {key} has dtype {tensor.dtype}; expected a float tensor")
            name = checkpoint_name(key, arch)
            center, scale = dummy_scale(name, tensor.shape)
            data = torch.from_numpy(values(name, tensor.shape, center, scale))
            tensor.copy_(data.to(dtype=tensor.dtype, device=tensor.device))
            generated[key] = name
        for alias, source in aliases.items():
            if not torch.equal(state[alias], state[source]):
                raise RuntimeError(f"fill_model: tied {alias} differs from {source} after filling")
    if len(set(generated.values())) != len(generated):
        raise RuntimeError("fill_model: two in-memory tensors map to one checkpoint name")
    return {"generated": generated, "tied": aliases}


# ---- self-test ------------------------------------------------------------------------------------

SELFTEST_NAME = "visual.blocks.0.attn.qkv.weight"
SELFTEST_SHAPE = (3840, 1280)  # Qwen2.5-VL vision qkv: fan_in 1280


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError("selftest: " + what)


def _selftest_vectors() -> None:
    # Published FNV-1a 64 vectors and the first outputs of SplitMix64 seeded with 0 (whose state after
    # k steps is k * gamma, i.e. our counter with seed 0).
    _check(fnv1a64("") == 0xCBF29CE484222325, 'fnv1a64("")')
    _check(fnv1a64("a") == 0xAF63DC4C8601EC8C, 'fnv1a64("a")')
    _check(fnv1a64("foobar") == 0x85944171F73967E8, 'fnv1a64("foobar")')
    _check(splitmix64(0, 0) == 0xE220A8397B1DCDAF, "splitmix64 seed 0, first output")
    _check(splitmix64(0, 1) == 0x6E789E6AA1B965F4, "splitmix64 seed 0, second output")
    print("  FNV-1a 64 and SplitMix64 test vectors: ok")


def _selftest_print() -> list[float]:
    center, scale = dummy_scale(SELFTEST_NAME, SELFTEST_SHAPE)
    _check(center == 0.0 and scale == 1.0 / math.sqrt(1280.0), "dummy_scale of the qkv weight")
    print(f'  fnv1a64("{SELFTEST_NAME}") = 0x{fnv1a64(SELFTEST_NAME):016x}')
    print(f"  {SELFTEST_NAME} {list(SELFTEST_SHAPE)}: center {center:g}, scale 1/sqrt(1280) = {scale!r}")
    first = [value_py(SELFTEST_NAME, i, center, scale) for i in range(4)]
    for i, v in enumerate(first):
        print(f"    [{i}] 0x{f32_bits(v):08x}  {v!r}")
    for i in range(4096):  # every value lies in [center - scale, center + scale]
        v = value_py(SELFTEST_NAME, i, center, scale)
        _check(abs(v - center) <= to_f32(scale) * (1 + 2**-23), f"range of element {i}")
    return first


def _selftest_numpy() -> None:
    if np is None:
        print("  numpy: not installed here, so the vectorised path was not checked")
        return
    import warnings

    cases = [  # name, first index, count, center, scale
        (SELFTEST_NAME, 0, 3000, 0.0, 1.0 / math.sqrt(1280.0)),
        ("model.norm.weight", 0, 257, 1.0, 0.1),
        ("visual.merger.mlp.0.bias", 5, 1000, 0.0, 0.02),
        ("pixel_values:q25_17x23", (1 << 33) + 7, 999, PIXEL_CENTER, PIXEL_SCALE),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning from numpy would fail the test
        for name, first, n, center, scale in cases:
            got = stream(name, first, n, center, scale)
            want = [f32_bits(value_py(name, first + i, center, scale)) for i in range(n)]
            _check(got.view(np.uint32).tolist() == want, f"numpy vs pure Python for {name}")
        grid = values(SELFTEST_NAME, (3, 1280), 0.0, 1.0 / math.sqrt(1280.0))
        _check(grid.dtype == np.float32 and grid.shape == (3, 1280), "values() shape/dtype")
        _check(float(grid[1, 0]) == value_py(SELFTEST_NAME, 1280, 0.0, 1.0 / math.sqrt(1280.0)), "row-major order")
    print(f"  numpy {np.__version__}: stream()/values() equal value_py bit for bit: ok")


def selftest() -> int:
    print("qvl_dummy selftest")
    _selftest_vectors()
    _selftest_print()
    _selftest_numpy()
    print("selftest passed")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--selftest"]:
        sys.exit(selftest())
    print(__doc__.strip().splitlines()[0])
    print("usage: python3 scripts/qvl_dummy.py --selftest   (the functions are meant to be imported)")
    sys.exit(2)
