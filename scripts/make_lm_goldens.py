#!/usr/bin/env python3
"""make_lm_goldens.py - language-model goldens for qvl's CPU reference, from transformers' own models.

    python3 scripts/make_lm_goldens.py --out tests/data/goldens

Builds the tiny Qwen2.5-VL and Qwen3-VL models of tests/data/tiny-*/config.json exactly as
make_goldens.py does (fp32, CPU, eager attention, every tensor filled with the qvl_dummy stream), then for
each prompt fixture (text only; one image between texts; two images of different sizes) writes
lm_<arch>_<fixture>.safetensors with:
  input_ids [L] int64, image_grid_thw [n,3] int64 (when images), logits [L, vocab] f32 (the model's forward),
  position_ids [3, L] int64 (the M-RoPE positions the text model received), rope_delta [1] int64,
  generated [G] int64 (greedy generate, up to 32 new tokens; stops early only on the config's eos id).
Pixel rows are qvl_dummy.pixels("lm:" + fixture, N, K). Everything is checked for consistency; any surprise
raises.

Video positions (spec §4.5) come from the model's own get_rope_index alone (qvl's generation takes no video
pixels yet): rope_<arch>_video.safetensors with input_ids [L], video_grid_thw [n,3], second_per_grid_ts [n] f32
(Qwen2.5-VL), position_ids [3, L], rope_delta [1]. Qwen3-VL's prompt has each temporal group as its own
timestamp-text + pad run, Qwen2.5-VL's one run per video. Written only when this transformers' get_rope_index
takes video_grid_thw (and mm_token_type_ids = 2 on video pads where it takes mm_token_type_ids); otherwise the
script says why and goes on. The metadata names which Qwen2.5-VL rule (qwen / hf5, qvl_video_rope) matched.
"""
import argparse
import inspect
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens as mg  # noqa: E402
import qvl_dummy  # noqa: E402

IMAGE, VIDEO, VSTART, VEND = 1012, 1013, 1010, 1011  # the tiny configs' token ids


def text(seed, n):
    """n deterministic ordinary token ids in [0, 1000)."""
    return [(seed * 7919 + i * 104729) % 1000 for i in range(n)]


def image_run(grid, merge=2):
    t, h, w = grid
    return [VSTART] + [IMAGE] * (t * h * w // (merge * merge)) + [VEND]


FIXTURES = {
    "text": ([], lambda g: text(1, 40)),
    "image": ([[1, 8, 12]], lambda g: text(2, 10) + image_run(g[0]) + text(3, 8)),
    "two_images": ([[1, 6, 10], [1, 12, 8]], lambda g: text(4, 5) + image_run(g[0]) + text(5, 4) + image_run(g[1]) + text(6, 6)),
}


def find_rotary(model):
    inner = model.model
    lm = getattr(inner, "language_model", None) or inner
    rot = getattr(lm, "rotary_emb", None)
    mg.require(rot is not None, "no rotary_emb on the text model")
    return rot


def run(arch, model, name, grids, ids):
    columns = mg.ARCHS[arch]["columns"]
    rows = sum(t * h * w for t, h, w in grids)
    kwargs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    # transformers 5.x computes M-RoPE from mm_token_type_ids (0 text, 1 image pad), which the processor returns;
    # without it Qwen2.5-VL silently falls back to text positions and Qwen3-VL refuses.
    kwargs["mm_token_type_ids"] = (kwargs["input_ids"] == IMAGE).long()
    if grids:
        kwargs["pixel_values"] = torch.from_numpy(qvl_dummy.pixels("lm:" + name, rows, columns))
        kwargs["image_grid_thw"] = torch.tensor(grids)
    seen = []
    hook = find_rotary(model).register_forward_pre_hook(
        lambda mod, args, kw: seen.append((kw.get("position_ids") if "position_ids" in kw else args[1]).detach().clone()),
        with_kwargs=True)
    out = model(**kwargs)
    hook.remove()
    mg.require(len(seen) == 1, f"{name}: rotary embedding called {len(seen)} times")
    pos = seen[0]
    if pos.dim() == 3 and pos.shape[0] == 4:  # newer layouts prepend the text positions
        pos = pos[1:]
    mg.require(pos.dim() == 3 and pos.shape[0] == 3 and pos.shape[2] == len(ids), f"{name}: position_ids {tuple(pos.shape)}")
    pos = pos[:, 0, :].long()
    delta = getattr(model.model, "rope_deltas", None)
    computed = int(pos.max()) + 1 - len(ids)
    if delta is not None:
        mg.require(int(delta.reshape(-1)[0]) == computed, f"{name}: rope_deltas {delta} != max+1-L = {computed}")
    mg.require((computed != 0) == bool(grids), f"{name}: rope delta {computed} with images {grids}")
    new = greedy(model, kwargs, ids, 32)
    tensors = {"input_ids": torch.tensor(ids, dtype=torch.long), "logits": out.logits[0].float().contiguous(),
               "position_ids": pos.contiguous(), "rope_delta": torch.tensor([computed], dtype=torch.long),
               "generated": new.contiguous()}
    if grids:
        tensors["image_grid_thw"] = torch.tensor(grids, dtype=torch.long)
    return tensors


def greedy(model, kwargs, ids, steps):
    """model.generate (KV cache, decode positions from rope_deltas); a forward-per-token argmax loop when this
    transformers' generate cannot carry mm_token_type_ids. Both are greedy over the same model."""
    try:
        gen = model.generate(**kwargs, max_new_tokens=steps, do_sample=False, pad_token_id=0)
        return gen[0, len(ids):].long()
    except Exception as e:  # noqa: BLE001 - reported, then the equivalent loop
        print(f"    generate failed ({type(e).__name__}: {str(e)[:120]}); greedy loop over forward instead")
    seq = list(ids)
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
    for _ in range(steps):
        kw = dict(kwargs, input_ids=torch.tensor([seq]), attention_mask=torch.ones(1, len(seq), dtype=torch.long),
                  mm_token_type_ids=(torch.tensor([seq]) == IMAGE).long(), use_cache=False)
        nxt = int(model(**kw).logits[0, -1].argmax())
        seq.append(nxt)
        if nxt in eos:
            break
    return torch.tensor(seq[len(ids):], dtype=torch.long)


# (t, h, w) grids and seconds per temporal grid: 4.0 s separates the two Qwen2.5-VL rules (the temporal extent
# 8 > max(lh, lw)); 0.75 s has a fractional T (1.5 -> 1) and would show transformers' int(second_per_grid_t).
VIDEOS = ([[2, 8, 12], [4, 4, 4]], [4.0, 0.75])


def video_prompt(arch, grids):
    ids = text(7, 3)
    for k, (t, h, w) in enumerate(grids):
        per = h * w // 4
        if arch == "qwen3_vl":  # "<x seconds>" before each temporal group; any text stands in for the timestamp
            for g in range(t):
                ids += text(20 + 4 * k + g, 4) + [VSTART] + [VIDEO] * per + [VEND]
        else:
            ids += [VSTART] + [VIDEO] * (t * per) + [VEND]
        ids += text(30 + k, 3)
    return ids


def rope_rules(ids, grids, spg, tps=2):
    """Qwen2.5-VL positions under each qvl_video_rope rule (f32 as qvl computes them), to name the one transformers
    follows."""
    f32 = np.float32
    out = {}
    for rule in ("qwen", "hf5"):
        pos, cur, v, i = [], 0, 0, 0
        while i < len(ids):
            if ids[i] != VIDEO:
                pos.append((cur, cur, cur))
                i, cur = i + 1, cur + 1
                continue
            t, h, w = grids[v]
            lh, lw = h // 2, w // 2
            tt = [int(f32(k) * f32(spg[v]) * f32(tps)) if rule == "qwen" else int(f32(k) * f32(tps * int(spg[v])))
                  for k in range(t)]
            run = [(cur + tt[k], cur + r, cur + c) for k in range(t) for r in range(lh) for c in range(lw)]
            pos += run
            i += len(run)
            cur = max(max(p) for p in run) + 1 if rule == "qwen" else cur + max(lh, lw)
            v += 1
        out[rule] = torch.tensor(pos, dtype=torch.long).T.contiguous()
    return out


def video_golden(arch, model):
    """The video fixture, or None (said why) when this transformers cannot compute video positions this way."""
    inner = model.model
    fn = getattr(inner, "get_rope_index", None)
    if fn is None:
        print(f"  {arch} video: no get_rope_index on the model; skipped")
        return None
    params = inspect.signature(fn).parameters
    if "video_grid_thw" not in params:  # named: a **kwargs catch-all could drop it silently
        print(f"  {arch} video: get_rope_index{tuple(params)} takes no video_grid_thw; skipped")
        return None
    grids, spg = VIDEOS
    ids = video_prompt(arch, grids)
    input_ids = torch.tensor([ids])
    kw = {"input_ids": input_ids, "video_grid_thw": torch.tensor(grids)}
    if "mm_token_type_ids" in params:
        kw["mm_token_type_ids"] = (input_ids == IMAGE).long() + 2 * (input_ids == VIDEO).long()
    if "attention_mask" in params:
        kw["attention_mask"] = torch.ones_like(input_ids)
    if "image_grid_thw" in params:
        kw["image_grid_thw"] = None
    if arch == "qwen2_5_vl":
        if "second_per_grid_ts" not in params:
            print(f"  {arch} video: get_rope_index takes no second_per_grid_ts; skipped")
            return None
        kw["second_per_grid_ts"] = torch.tensor(spg)
    try:
        pos, delta = fn(**kw)
    except Exception as e:  # noqa: BLE001 - reported, and the other fixtures still get written
        print(f"  {arch} video: get_rope_index failed ({type(e).__name__}: {str(e)[:160]}); skipped")
        return None
    mg.require(pos.dim() == 3 and pos.shape[0] == 3 and pos.shape[2] == len(ids), f"video: position_ids {tuple(pos.shape)}")
    pos = pos[:, 0, :].long().contiguous()
    computed = int(pos.max()) + 1 - len(ids)
    mg.require(int(delta.reshape(-1)[0]) == computed, f"{arch} video: rope_deltas {delta} != max+1-L = {computed}")
    matched = "qwen3_vl"
    if arch == "qwen2_5_vl":
        rules = rope_rules(ids, grids, spg)
        matched = ",".join(r for r, p in rules.items() if torch.equal(p, pos)) or "neither"
        print(f"  {arch} video: transformers follows rule(s): {matched}")
        if "hf5" not in matched:  # test_rope_video checks QVL_VIDEO_ROPE_HF5 against this file
            print(f"  {arch} video: NOT written: transformers' t axis {pos[0].tolist()}\n"
                  f"    qvl qwen {rules['qwen'][0].tolist()}\n    qvl hf5 {rules['hf5'][0].tolist()}")
            return None
    t = {"input_ids": torch.tensor(ids, dtype=torch.long), "video_grid_thw": torch.tensor(grids, dtype=torch.long),
         "position_ids": pos, "rope_delta": torch.tensor([computed], dtype=torch.long)}
    if arch == "qwen2_5_vl":
        t["second_per_grid_ts"] = torch.tensor(spg, dtype=torch.float32)
    return t, matched


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data/goldens")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for arch in mg.ARCHS:
        config, raw = mg.load_config(arch)
        model, _ = mg.build_model(arch, config)
        mg.fill_weights(arch, model, raw)
        for name, (grids, make_ids) in FIXTURES.items():
            ids = make_ids(grids)
            t = run(arch, model, name, grids, ids)
            path = out / f"lm_{arch}_{name}.safetensors"
            save_file(t, str(path), metadata={"qvl_golden": f"{arch} {name} transformers {transformers.__version__}"})
            print(f"  {arch} {name}: L {len(ids)}  images {grids}  delta {int(t['rope_delta'][0])}  "
                  f"generated {len(t['generated'])}  {path.stat().st_size / 1e6:.2f} MB")
        got = video_golden(arch, model)
        if got:
            t, matched = got
            path = out / f"rope_{arch}_video.safetensors"
            save_file(t, str(path), metadata={"qvl_golden": f"{arch} video transformers {transformers.__version__}",
                                              "rule": matched})
            print(f"  {arch} video: L {len(t['input_ids'])}  delta {int(t['rope_delta'][0])}  rule {matched}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
