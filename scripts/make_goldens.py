#!/usr/bin/env python3
"""make_goldens.py - vision-tower goldens for qvl, captured from transformers' own Qwen-VL code.

Usage: python3 scripts/make_goldens.py --out tests/data/goldens

Builds the tiny Qwen2.5-VL and Qwen3-VL models of tests/data/tiny-*/config.json in float32 on CPU with
eager attention, fills every checkpoint tensor with the qvl_dummy stream (the engine's --dummy weights),
runs the vision tower on synthetic pixel rows and writes, per fixture, tests/data/goldens/<fixture>.safetensors:

  image_grid_thw      [n, 3] int64   the fixture's grids (patch units)
  pixel_values_probe  [2, K] f32     first two input rows: the C side checks its pixel generator with them
  patch_embed         [N, D]         visual.patch_embed output, natural row order
  rot_pos_ids         [N, 2] int64   (row, col) of every patch row, natural order, as the rotary embedding got it
  cu_seqlens          int32          full-attention sequence boundaries the blocks received
  block0              [N, D]         visual.blocks[0] output, in the order the model holds rows
  output              [N/4, out]     the tower's result, one row per visual token, images in order
  Qwen2.5-VL only: window_index [N/4] int64, cu_window_seqlens int32 (as the windowed blocks received them),
                   block_last [N, D] (last block output, window order)
  Qwen3-VL only:   pos_embed [N, D] (interpolated position embedding added to patch_embed, row order as
                   added), deepstack.<k> [N/4, out] (DeepStack merger outputs)
and <arch>_weights_probe.safetensors (a few filled tensors by checkpoint name) and README.md.

Nothing is re-implemented here: tensors come from forward hooks on the model's modules, from what the
blocks receive, or from a probe run in which patch_embed's output is replaced by a known tensor so that
what reaches blocks[0] shows transformers' own reordering / position embedding. Every stored tensor is
checked against a second source (helpers of the installed transformers, get_image_features, the
returned value); any mismatch or unrecognised API raises. Written against transformers 5.17 and kept
working with the older layouts (4.5x methods rot_pos_emb/get_window_index/fast_pos_embed_interpolate).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import safetensors
import torch
import transformers
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qvl_dummy  # noqa: E402  (sits next to this script)

REPO = Path(__file__).resolve().parent.parent
MAX_TOTAL_BYTES = 8 * 1024 * 1024
# A second forward (get_image_features) may sum in another order inside BLAS; everything else is exact.
RECOMPUTE_RTOL = 1e-5
INT32_KEYS = ("cu_seqlens", "cu_window_seqlens")

ARCHS = {
    "qwen2_5_vl": {
        "config_dir": "tests/data/tiny-qwen2_5_vl",
        "class": "Qwen2_5_VLForConditionalGeneration",
        "columns": 3 * 2 * 14 * 14,
        "fixtures": {
            "q25_17x23": [[1, 34, 46]],  # merged 17x23: not a multiple of the 4-token window
            "q25_8x8": [[1, 16, 16]],  # merged 8x8: a multiple of 4 (HF pads a whole empty window)
            "q25_batch2": [[1, 34, 46], [1, 16, 24]],
            "q25_video": [[2, 12, 16]],  # t=2: each temporal slice is its own attention sequence
        },
        # (checkpoint name, elements kept: None = all) for the weights probe
        "probes": [
            ("visual.merger.mlp.2.bias", None),
            ("visual.blocks.0.norm1.weight", None),
            ("model.norm.weight", None),
            ("visual.patch_embed.proj.weight", 8),
            ("model.embed_tokens.weight", 8),
            ("lm_head.weight", 8),
        ],
    },
    "qwen3_vl": {
        "config_dir": "tests/data/tiny-qwen3_vl",
        "class": "Qwen3VLForConditionalGeneration",
        "columns": 3 * 2 * 16 * 16,
        "fixtures": {
            "q3_17x23": [[1, 34, 46]],  # interpolates the 16x16 position table
            "q3_16x16": [[1, 16, 16]],  # grid equals the table side
            "q3_batch2": [[1, 20, 28], [1, 6, 10]],
            "q3_video": [[2, 8, 12]],
        },
        "probes": [
            ("model.visual.merger.linear_fc2.bias", None),
            ("model.visual.blocks.0.norm1.weight", None),
            ("model.language_model.norm.weight", None),
            ("model.visual.patch_embed.proj.weight", 8),
            ("model.visual.pos_embed.weight", 8),
            ("model.language_model.embed_tokens.weight", 8),
            ("lm_head.weight", 8),  # tied: equals the embedding's first 8
        ],
    },
}

VISION_KEYS = {
    "common": ["depth", "hidden_size", "num_heads", "intermediate_size", "out_hidden_size", "hidden_act",
               "patch_size", "temporal_patch_size", "spatial_merge_size"],
    "qwen2_5_vl": ["window_size", "fullatt_block_indexes", "tokens_per_second"],
    "qwen3_vl": ["num_position_embeddings", "deepstack_visual_indexes"],
}
TEXT_KEYS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "rms_norm_eps", "hidden_act", "max_position_embeddings",
             "attention_bias"]


class GoldenError(RuntimeError):
    pass


def require(cond, message: str) -> None:
    if not cond:
        raise GoldenError(message)


# ---- comparisons ----------------------------------------------------------------------------------


def same(what: str, got: torch.Tensor, want: torch.Tensor) -> None:
    """Bit-exact equality: for integer tensors and for data movement inside one forward."""
    require(tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}")
    require(got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}")
    if not torch.equal(got, want):
        diff = (got.double() - want.double()).abs().max().item()
        raise GoldenError(f"{what}: not identical (max abs diff {diff:.3g})")


def close(what: str, got: torch.Tensor, want: torch.Tensor) -> float:
    """For an independent second forward: equal up to summation order. Returns the max abs diff."""
    require(tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}")
    diff = (got.double() - want.double()).abs().max().item()
    bound = RECOMPUTE_RTOL * max(1.0, want.abs().max().item())
    require(diff <= bound, f"{what}: max abs diff {diff:.3g} exceeds {bound:.3g}")
    return diff


# ---- config and model -----------------------------------------------------------------------------


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def effective_rope(text_config):
    """(theta, mrope_section, interleaved) as the installed transformers holds them."""
    params = getattr(text_config, "rope_parameters", None)
    if not isinstance(params, dict) or "rope_theta" not in params:  # transformers 4.x
        params = dict(getattr(text_config, "rope_scaling", None) or {}, rope_theta=text_config.rope_theta)
    return params["rope_theta"], _plain(params.get("mrope_section")), bool(params.get("mrope_interleaved", False))


def raw_rope(raw_text: dict):
    """(theta, mrope_section, interleaved) as written in config.json (either layout)."""
    params = raw_text.get("rope_parameters") or raw_text.get("rope_scaling") or {}
    theta = params.get("rope_theta", raw_text.get("rope_theta"))
    return theta, params.get("mrope_section"), bool(params.get("mrope_interleaved", False))


def check_config(arch: str, config, raw: dict) -> None:
    """transformers must read the committed config.json as the C parser does (same numbers)."""
    vision, raw_vision = config.vision_config, raw["vision_config"]
    for key in VISION_KEYS["common"] + VISION_KEYS[arch]:
        if key in raw_vision:
            got = _plain(getattr(vision, key))
            require(got == raw_vision[key],
                    f"vision_config.{key}: transformers has {got!r}, config.json {raw_vision[key]!r}")
    in_ch = raw_vision.get("in_channels", raw_vision.get("in_chans", 3))
    require(vision.in_channels == in_ch, f"vision in_channels {vision.in_channels} != {in_ch}")
    text, raw_text = config.text_config, raw.get("text_config", raw)
    for key in TEXT_KEYS:
        if key in raw_text:
            require(getattr(text, key) == raw_text[key],
                    f"text_config.{key}: transformers has {getattr(text, key)!r}, config.json {raw_text[key]!r}")
    require(effective_rope(text) == raw_rope(raw_text),
            f"text rope (theta, mrope_section, interleaved): {effective_rope(text)} != config.json {raw_rope(raw_text)}")


def load_config(arch: str):
    path = REPO / ARCHS[arch]["config_dir"]
    raw = json.loads((path / "config.json").read_text())
    config = transformers.AutoConfig.from_pretrained(str(path))
    require(config.model_type == arch, f"{path}: model_type {config.model_type!r}, expected {arch!r}")
    check_config(arch, config, raw)
    return config, raw


def find_visual(model):
    inner = getattr(model, "model", None)
    for visual in (getattr(inner, "visual", None), getattr(model, "visual", None)):
        if visual is not None:
            return visual
    raise GoldenError(f"{type(model).__name__}: no vision tower at model.model.visual or model.visual")


def build_model(arch: str, config):
    # Every tower builds its attention from its own sub-config, so each one is set.
    for cfg in (config, config.vision_config, config.text_config):
        cfg._attn_implementation = "eager"
    cls = getattr(transformers, ARCHS[arch]["class"])
    model = cls(config).to(torch.float32).eval()
    visual = find_visual(model)
    impls = {blk.attn.config._attn_implementation for blk in visual.blocks}
    require(impls == {"eager"}, f"{arch}: vision attention implementation {impls}, expected eager")
    require(all(p.dtype == torch.float32 for p in model.parameters()), f"{arch}: parameters are not all float32")
    return model, visual


# ---- weights --------------------------------------------------------------------------------------


def _loading_problems(info) -> dict:
    if isinstance(info, dict):
        items = info.items()
    elif dataclasses.is_dataclass(info):
        items = ((f.name, getattr(info, f.name)) for f in dataclasses.fields(info))
    else:
        items = vars(info).items()
    words = ("missing", "unexpected", "mismatch", "error")
    return {k: v for k, v in items if v and any(w in k for w in words)}


def verify_checkpoint_names(arch: str, model, report: dict) -> None:
    """Loads the filled tensors back through from_pretrained under their on-disk names: transformers'
    own key mapping must put every one where fill_model took it from (so qvl_dummy.checkpoint_name is
    the inverse of what the C loader will meet in a real checkpoint)."""
    state = model.state_dict()
    tensors = {ckpt: state[mem].detach().clone().contiguous() for mem, ckpt in report["generated"].items()}
    cls = type(model)
    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(REPO / ARCHS[arch]["config_dir"] / "config.json", tmp)
        save_file(tensors, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        loaded, info = cls.from_pretrained(tmp, attn_implementation="eager", output_loading_info=True,
                                           local_files_only=True, **{dtype_kw: torch.float32})
    problems = _loading_problems(info)
    require(not problems, f"{arch}: loading the checkpoint names back reported {problems}")
    reloaded = loaded.state_dict()
    require(set(reloaded) == set(state), f"{arch}: state_dict keys differ after reload")
    for key, tensor in state.items():
        same(f"{arch} reload of {key}", reloaded[key], tensor)


def fill_weights(arch: str, model, raw: dict) -> dict:
    report = qvl_dummy.fill_model(model, arch)
    raw_tie = bool(raw.get("tie_word_embeddings") or raw.get("text_config", {}).get("tie_word_embeddings"))
    require(bool(report["tied"]) == raw_tie, f"{arch}: config tie_word_embeddings={raw_tie} but tied={report['tied']}")
    verify_checkpoint_names(arch, model, report)
    return report


def weights_probe(arch: str, model, report: dict) -> dict:
    """A few filled tensors under their checkpoint names (".firstK": the first K flattened elements),
    each checked against a fresh qvl_dummy stream of the tensor it comes from."""
    state = model.state_dict()
    to_memory = {ckpt: mem for mem, ckpt in report["generated"].items()}
    to_memory.update({alias: alias for alias in report["tied"]})  # a tied lm_head keeps its in-memory name
    probe = {}
    for ckpt, count in ARCHS[arch]["probes"]:
        mem = to_memory[ckpt]
        source_mem = report["tied"].get(mem, mem)  # a tied tensor's numbers are its source's stream
        source = report["generated"][source_mem]
        flat = state[mem].detach().reshape(-1)
        kept = flat if count is None else flat[:count]
        center, scale = qvl_dummy.dummy_scale(source, state[source_mem].shape)
        fresh = torch.from_numpy(qvl_dummy.stream(source, 0, kept.numel(), center, scale))
        same(f"weights probe {ckpt}", kept, fresh)
        probe[ckpt if count is None else f"{ckpt}.first{count}"] = kept
    return probe


# ---- capturing ------------------------------------------------------------------------------------


def _detach(value):
    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


def _first_tensor(value):
    return value if torch.is_tensor(value) else value[0]


class Recorder:
    """Module hooks that keep copies of what transformers passes around during one forward."""

    def __init__(self):
        self.seen = {}
        self.handles = []

    def outputs(self, module, key):
        def hook(_module, _args, out):
            self.seen[key] = _detach(_first_tensor(out))
        self.handles.append(module.register_forward_hook(hook))

    def inputs(self, module, key):
        def hook(_module, args, kwargs):
            self.seen[key] = (_detach(args), _detach(kwargs))
        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def replace_output(self, module, replacement):
        self.handles.append(module.register_forward_hook(lambda _m, _a, _out: replacement))

    def close(self):
        for handle in self.handles:
            handle.remove()


def capture_forward(visual, pixels, grid):
    rec = Recorder()
    rec.inputs(visual.patch_embed, "patch_in")
    rec.outputs(visual.patch_embed, "patch_out")
    rec.inputs(visual.rotary_pos_emb, "rotary_in")
    for i, block in enumerate(visual.blocks):
        rec.inputs(block, f"block_in.{i}")
        rec.outputs(block, f"block_out.{i}")
    rec.inputs(visual.merger, "merger_in")
    rec.outputs(visual.merger, "merger_out")
    for k, merger in enumerate(getattr(visual, "deepstack_merger_list", [])):
        rec.inputs(merger, f"deepstack_in.{k}")
        rec.outputs(merger, f"deepstack_out.{k}")
    try:
        out = visual(pixels, grid_thw=grid)
    finally:
        rec.close()
    return rec.seen, out


def probe_block0_input(visual, pixels, grid, fake):
    """Runs the tower with patch_embed's output replaced by `fake`; what blocks[0] then receives is
    transformers' own transformation of a known input (window gather, position embedding add)."""
    rec = Recorder()
    rec.replace_output(visual.patch_embed, fake)
    rec.inputs(visual.blocks[0], "block0_in")
    if getattr(visual, "pos_embed", None) is not None:
        rec.inputs(visual.pos_embed, "pos_embed_in")
    try:
        visual(pixels, grid_thw=grid)
    finally:
        rec.close()
    return rec.seen


def hidden_in(seen, key):
    args, kwargs = seen[key]
    return args[0] if args else kwargs["hidden_states"]


def block_cu_seqlens(seen, index):
    args, kwargs = seen[f"block_in.{index}"]
    cu = kwargs.get("cu_seqlens", args[1] if len(args) > 1 else None)
    require(torch.is_tensor(cu) and cu.dtype == torch.int32, f"blocks[{index}] got cu_seqlens {cu!r}, expected int32")
    return cu


def common_cu_seqlens(seen, indexes, what):
    values = [block_cu_seqlens(seen, i) for i in indexes]
    require(values, f"no block uses {what}")
    for i, cu in zip(indexes, values):
        same(f"{what} of blocks[{i}] vs blocks[{indexes[0]}]", cu, values[0])
    return values[0]


def unpack_visual_output(out, n_tokens: int, out_hidden: int):
    """(merged rows, deepstack list or None) from whichever form this transformers returns."""
    if getattr(out, "pooler_output", None) is not None:  # 5.x ModelOutput
        merged, deepstack = out.pooler_output, getattr(out, "deepstack_features", None)
    elif torch.is_tensor(out):  # 4.5x Qwen2.5-VL
        merged, deepstack = out, None
    elif isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], (list, tuple)):  # 4.57 Qwen3-VL
        merged, deepstack = out
    else:
        raise GoldenError(f"unrecognised vision forward result: {type(out).__name__}")
    require(tuple(merged.shape) == (n_tokens, out_hidden), f"vision output shape {tuple(merged.shape)}")
    return merged.detach().clone(), None if deepstack is None else [d.detach().clone() for d in deepstack]


def feature_rows(result) -> torch.Tensor:
    """The concatenated per-image rows of get_image_features / get_video_features, any version."""
    if getattr(result, "pooler_output", None) is not None:
        result = result.pooler_output
    elif isinstance(result, tuple) and result and isinstance(result[0], (tuple, list)):
        result = result[0]  # 4.57 Qwen3-VL: (embeds per image, deepstack)
    return result if torch.is_tensor(result) else torch.cat(list(result), dim=0)


def check_features(model, pixels, grid, merged) -> float:
    """The stored output must be what the model feeds the language model."""
    if bool((grid[:, 0] > 1).any()):
        result = model.get_video_features(pixel_values_videos=pixels, video_grid_thw=grid)
    else:
        result = model.get_image_features(pixel_values=pixels, image_grid_thw=grid)
    return close("get_image_features/get_video_features vs the vision forward", feature_rows(result), merged)


def modeling_module(visual):
    return sys.modules[type(visual).__module__]


# ---- rotary position ids --------------------------------------------------------------------------


def ids_from_angles(visual, angles):
    """(row, col) from the rotary angle table [N, 2F] = [row * inv_freq, col * inv_freq] (transformers
    4.5x rot_pos_emb), where inv_freq[0] = 1; checked by rebuilding the whole table."""
    inv_freq = visual.rotary_pos_emb.inv_freq.float()
    nf = inv_freq.numel()
    require(angles.shape[1] == 2 * nf and inv_freq[0].item() == 1.0, "unexpected rotary angle layout")
    row, col = angles[:, 0], angles[:, nf]
    require(torch.equal(row, row.round()) and torch.equal(col, col.round()), "rotary angles are not integer positions")
    rebuilt = torch.cat([row[:, None] * inv_freq, col[:, None] * inv_freq], 1)
    same("rotary angles rebuilt from (row, col)", rebuilt, angles)
    return torch.stack([row, col], 1).to(torch.int64)


def rotary_ids(visual, grid, seen, n: int):
    args, kwargs = seen["rotary_in"]
    found = [x for x in (*args, *kwargs.values())
             if torch.is_tensor(x) and not x.is_floating_point() and tuple(x.shape) == (n, 2)]
    if len(found) == 1:  # 5.x: the rotary embedding is called with the (N, 2) position ids
        ids, source = found[0].to(torch.int64), "rotary_pos_emb input"
    elif hasattr(visual, "rot_pos_emb"):  # 4.5x: ids only exist inside rot_pos_emb's angle table
        ids, source = ids_from_angles(visual, visual.rot_pos_emb(grid)), "rot_pos_emb angles"
    else:
        raise GoldenError("rotary position ids: rotary_pos_emb got no (N, 2) integer tensor and the vision "
                          "model has no rot_pos_emb method")
    for name in ("get_vision_position_ids", "get_rotary_pos_ids"):  # 5.17 / early 5.x helpers
        helper = getattr(modeling_module(visual), name, None)
        if helper is not None:
            same(f"rot_pos_ids vs {name}", ids, helper(grid, visual.spatial_merge_size).to(torch.int64))
            source += f", = {name}"
    check_id_ranges(ids, grid)
    return ids, source


def check_id_ranges(ids, grid) -> None:
    start = 0
    for t, h, w in grid.tolist():
        part = ids[start:start + t * h * w]
        require(part[:, 0].max().item() == h - 1 and part[:, 1].max().item() == w - 1 and part.min().item() == 0,
                f"rot_pos_ids of grid {(t, h, w)} out of range")
        require(torch.unique(part, dim=0).shape[0] == h * w, f"rot_pos_ids of grid {(t, h, w)} do not cover the grid")
        start += t * h * w


# ---- Qwen2.5-VL: window attention -----------------------------------------------------------------


def window_index_from_probe(block0_in, unit: int):
    """blocks[0] input when patch row r carries the value r everywhere: the gather transformers did."""
    src = block0_in[:, 0]
    require(torch.equal(block0_in, src[:, None].expand_as(block0_in)), "window probe: rows were mixed")
    order = src.to(torch.int64)
    require(torch.equal(order.to(src.dtype), src), "window probe: non-integer row ids")
    require(torch.equal(torch.sort(order).values, torch.arange(order.numel())), "window probe: not a permutation")
    groups = order.view(-1, unit)
    require(torch.equal(groups - groups[:, :1], torch.arange(unit).expand_as(groups)) and
            bool((groups[:, 0] % unit == 0).all()), "window probe: merge groups of 4 patches were split")
    return groups[:, 0] // unit


def helper_window_index(visual, grid):
    module = modeling_module(visual)
    if hasattr(module, "get_vision_window_index"):  # 5.17: transformers/vision_utils.py
        wi, cu = module.get_vision_window_index(grid, spatial_merge_size=visual.spatial_merge_size,
                                                window_size=visual.window_size, patch_size=visual.patch_size)
        return wi, cu, "get_vision_window_index"
    if hasattr(module, "get_window_index"):  # early 5.x: models/qwen2_vl/vision_utils.py
        wi, cu = module.get_window_index(grid, visual.spatial_merge_size, visual.window_size, visual.patch_size,
                                         visual.spatial_merge_unit)
        return wi, cu, "get_window_index"
    if hasattr(visual, "get_window_index"):  # 4.5x method; its forward removed the duplicates itself
        wi, cu = visual.get_window_index(grid)
        return wi, torch.unique_consecutive(torch.tensor(cu, dtype=torch.int32)), "Qwen2_5_Vision...get_window_index"
    raise GoldenError("no window-index helper: tried vision_utils get_vision_window_index / get_window_index and "
                      "the vision model's get_window_index method")


def qwen25_tensors(visual, grid, pixels, seen, merged, n: int):
    unit, dim, depth = visual.spatial_merge_unit, visual.config.hidden_size, len(visual.blocks)
    row_ids = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, dim)
    probe = probe_block0_input(visual, pixels, grid, row_ids)
    window_index = window_index_from_probe(hidden_in(probe, "block0_in"), unit)
    patch = seen["patch_out"]
    same("blocks[0] input = patch_embed gathered by window_index", hidden_in(seen, "block_in.0"),
         patch.view(n // unit, unit, -1)[window_index].reshape(n, -1))
    full_idx = [i for i in range(depth) if i in visual.fullatt_block_indexes]
    cu_full = common_cu_seqlens(seen, full_idx, "cu_seqlens")
    cu_window = common_cu_seqlens(seen, [i for i in range(depth) if i not in full_idx], "cu_window_seqlens")
    wi, cu, helper = helper_window_index(visual, grid)
    same(f"window_index vs {helper}", window_index, wi.to(torch.int64))
    same(f"cu_window_seqlens vs {helper}", cu_window, cu.to(torch.int32))
    block_last = seen[f"block_out.{depth - 1}"]
    same("merger input = last block output", hidden_in(seen, "merger_in"), block_last)
    same("output = merger output un-permuted by argsort(window_index)", merged,
         seen["merger_out"][torch.argsort(window_index)])
    extra = {"window_index": window_index, "cu_window_seqlens": cu_window, "block_last": block_last}
    return extra, cu_full, f"window_index = probe = {helper}"


# ---- Qwen3-VL: position embedding and DeepStack ---------------------------------------------------


def check_pos_embed_source(visual, grid, pos, probe) -> str:
    if hasattr(visual, "fast_pos_embed_interpolate"):  # 4.57 / early 5.x method returns the embeddings
        same("pos_embed vs fast_pos_embed_interpolate", pos, visual.fast_pos_embed_interpolate(grid).to(pos.dtype))
        return "fast_pos_embed_interpolate"
    module = modeling_module(visual)
    if hasattr(module, "get_vision_interpolation_indices_and_weights"):  # 5.17
        idx, _ = module.get_vision_interpolation_indices_and_weights(
            grid, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners, spatial_merge_size=visual.config.spatial_merge_size)
        name = "get_vision_interpolation_indices_and_weights"
    elif hasattr(module, "get_pos_embed_indices"):  # early 5.x
        idx, _ = module.get_pos_embed_indices(grid, visual.num_grid_per_side, visual.config.spatial_merge_size)
        name = "get_pos_embed_indices"
    else:
        raise GoldenError("no position-embedding helper: tried fast_pos_embed_interpolate, "
                          "get_vision_interpolation_indices_and_weights and get_pos_embed_indices")
    used = hidden_in(probe, "pos_embed_in")
    same(f"pos_embed table rows used vs {name}", used, idx)
    return name


def qwen3_tensors(visual, grid, pixels, seen, merged, deepstack, n: int):
    dim, depth = visual.config.hidden_size, len(visual.blocks)
    probe = probe_block0_input(visual, pixels, grid, torch.zeros(n, dim, dtype=torch.float32))
    pos = hidden_in(probe, "block0_in")  # 0 + pos_embed: exactly the embedding transformers adds
    same("blocks[0] input = patch_embed + pos_embed", hidden_in(seen, "block_in.0"), seen["patch_out"] + pos)
    helper = check_pos_embed_source(visual, grid, pos, probe)
    same("merger input = last block output", hidden_in(seen, "merger_in"), seen[f"block_out.{depth - 1}"])
    same("output = merger output", merged, seen["merger_out"])
    indexes = list(visual.deepstack_visual_indexes)
    require(deepstack is not None and len(deepstack) == len(indexes), "vision forward returned no DeepStack features")
    extra = {"pos_embed": pos}
    for k, layer in enumerate(indexes):
        same(f"deepstack merger {k} input = blocks[{layer}] output", hidden_in(seen, f"deepstack_in.{k}"),
             seen[f"block_out.{layer}"])
        same(f"deepstack.{k} = deepstack merger {k} output", deepstack[k], seen[f"deepstack_out.{k}"])
        extra[f"deepstack.{k}"] = deepstack[k]
    cu_full = common_cu_seqlens(seen, list(range(depth)), "cu_seqlens")
    return extra, cu_full, f"pos_embed = probe, indices = {helper}"


# ---- fixtures -------------------------------------------------------------------------------------


def run_fixture(arch: str, model, visual, name: str, grid_list):
    grid = torch.tensor(grid_list, dtype=torch.int64)
    n = int(grid.prod(-1).sum())
    vc = visual.config
    cols = ARCHS[arch]["columns"]
    require(cols == vc.in_channels * vc.temporal_patch_size * vc.patch_size ** 2, f"{name}: K != {cols}")
    pixels = torch.from_numpy(qvl_dummy.pixels(name, n, cols))
    seen, out = capture_forward(visual, pixels, grid)
    same("patch_embed input = the generated pixel rows", hidden_in(seen, "patch_in"), pixels)
    require(tuple(seen["patch_out"].shape) == (n, vc.hidden_size), f"{name}: patch_embed shape")
    same("blocks[1] input = blocks[0] output", hidden_in(seen, "block_in.1"), seen["block_out.0"])
    merged, deepstack = unpack_visual_output(out, n // visual.spatial_merge_unit, vc.out_hidden_size)
    ids, ids_source = rotary_ids(visual, grid, seen, n)
    if arch == "qwen2_5_vl":
        extra, cu_full, notes = qwen25_tensors(visual, grid, pixels, seen, merged, n)
    else:
        extra, cu_full, notes = qwen3_tensors(visual, grid, pixels, seen, merged, deepstack, n)
    require(cu_full[0].item() == 0 and cu_full[-1].item() == n, f"{name}: cu_seqlens {cu_full.tolist()}")
    diff = check_features(model, pixels, grid, merged)
    tensors = {"image_grid_thw": grid, "pixel_values_probe": pixels[:2], "patch_embed": seen["patch_out"],
               "rot_pos_ids": ids, "cu_seqlens": cu_full, "block0": seen["block_out.0"], "output": merged, **extra}
    return tensors, f"rot_pos_ids = {ids_source}; {notes}; get_*_features max diff {diff:.1g}"


def finalize(tensors: dict) -> dict:
    """Contiguous private copies (safetensors refuses shared storage) in the stored dtypes."""
    clean = {}
    for key, t in tensors.items():
        t = t.detach().contiguous().clone()
        if t.is_floating_point():
            require(t.dtype == torch.float32 and bool(torch.isfinite(t).all()), f"{key}: not finite float32")
        elif key in INT32_KEYS:
            require(t.dtype == torch.int32, f"{key}: dtype {t.dtype}, expected int32")
        else:
            t = t.to(torch.int64)
        clean[key] = t
    return clean


# ---- output ---------------------------------------------------------------------------------------


def versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "safetensors": safetensors.__version__}


def write_file(path: Path, tensors: dict, meta: dict, catalogue: list) -> None:
    tensors = finalize(tensors)
    # One metadata key: safetensors writes several keys in hash order, so reruns would differ byte-wise.
    save_file(tensors, str(path), metadata={"qvl_golden": json.dumps(meta, sort_keys=True)})
    catalogue.append((path, {k: (str(v.dtype).replace("torch.", ""), list(v.shape)) for k, v in tensors.items()}))


def readme_text(catalogue, notes: dict, vers: dict, command: str) -> str:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# HF goldens for the qvl vision towers", "",
             f"Generated {date} by `{command}`", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()), "",
             "Tiny models from `tests/data/tiny-*/config.json` (float32, CPU, eager attention); every "
             "checkpoint tensor filled with `scripts/qvl_dummy.py` (the engine's `--dummy` stream); input "
             "rows = `qvl_dummy.pixels(fixture, N, K)`. Row orders: `patch_embed`, `rot_pos_ids`, `pos_embed` "
             "natural (merge-group) order; `block0`/`block_last` as the model holds them (Qwen2.5-VL: window "
             "order, gathered by `window_index`); `output`/`deepstack.k` one row per visual token, images in "
             "order. `*.firstK` in the weights probes = first K elements of the flattened tensor. Each file's "
             "safetensors metadata key `qvl_golden` holds JSON: arch, fixture, versions.", ""]
    for path, entries in catalogue:
        lines.append(f"## {path.name} ({path.stat().st_size} bytes)")
        if path.stem in notes:
            lines.append(f"Checks: {notes[path.stem]}")
        lines += [""] + [f"- `{k}` {dtype} {shape}" for k, (dtype, shape) in entries.items()] + [""]
    return "\n".join(lines)


def process_arch(arch: str, out_dir: Path, meta: dict, catalogue: list, notes: dict) -> None:
    config, raw = load_config(arch)
    model, visual = build_model(arch, config)
    report = fill_weights(arch, model, raw)
    print(f"{arch}: {len(report['generated'])} tensors filled, tied {report['tied'] or 'none'}; "
          f"checkpoint names reload through from_pretrained unchanged")
    write_file(out_dir / f"{arch}_weights_probe.safetensors", weights_probe(arch, model, report),
               dict(meta, arch=arch), catalogue)
    for name, grid in ARCHS[arch]["fixtures"].items():
        tensors, note = run_fixture(arch, model, visual, name, grid)
        path = out_dir / f"{name}.safetensors"
        write_file(path, tensors, dict(meta, arch=arch, fixture=name), catalogue)
        notes[name] = note
        n, tokens = tensors["patch_embed"].shape[0], tensors["output"].shape[0]
        print(f"  {name:11s} grid {grid}  N {n}  tokens {tokens}  output {list(tensors['output'].shape)}  "
              f"{path.stat().st_size / 1e6:.2f} MB  [{note}]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", default="tests/data/goldens", help="output directory")
    args = parser.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    vers = versions()
    print("  ".join(f"{k} {v}" for k, v in vers.items()))
    torch.set_grad_enabled(False)
    meta = {"generator": "scripts/make_goldens.py", **vers}
    catalogue, notes = [], {}
    for arch in ARCHS:
        process_arch(arch, out_dir, meta, catalogue, notes)
    command = "python3 scripts/make_goldens.py --out " + args.out
    (out_dir / "README.md").write_text(readme_text(catalogue, notes, vers, command))
    total = sum(path.stat().st_size for path, _ in catalogue) + (out_dir / "README.md").stat().st_size
    print(f"wrote {len(catalogue)} files + README.md to {out_dir}: {total / 1e6:.2f} MB")
    require(total <= MAX_TOTAL_BYTES, f"goldens total {total} bytes exceeds the {MAX_TOTAL_BYTES}-byte budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
