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
"""
import argparse
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens as mg  # noqa: E402
import qvl_dummy  # noqa: E402

IMAGE, VSTART, VEND = 1012, 1010, 1011  # the tiny configs' token ids


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
