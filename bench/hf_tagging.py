#!/usr/bin/env python3
"""hf_tagging.py - transformers' batched generate on the tagging workload bench/serve_throughput.py sends to qvl.

    build-gpu/qvl export --model configs/Qwen2.5-VL-7B-Instruct --dummy -o /tmp/q25vl7b
    python3 bench/serve_throughput.py make-jpegs /tmp/jpegs --n 1000
    python3 bench/hf_tagging.py --model /tmp/q25vl7b --jpegs /tmp/jpegs [--batch 64] [--requests 1000]

The model is loaded from the `qvl export` checkpoint (exactly the synthetic weights `qvl serve --dummy` runs; bf16,
SDPA, CUDA). Every batch of --batch JPEGs goes the way a transformers user would take it: PIL decode
(Image.open(...).convert("RGB")), the model's image processor (the fast one on the GPU with --fast, else the slow
PIL one), the chat prompt of serve_throughput.py's question with each image's pads, then `generate` of exactly
--max-tokens greedy tokens (all 448x448 images have one grid, so the batch needs no padding). The wall clock covers
everything from the JPEG bytes on, after one warm-up batch; a second figure leaves preprocessing out. Prints one JSON
line; with --qvl-json (serve_throughput.py's output; its serve_throughput line) it also prints qvl's images/s and the ratio.
"""
import argparse
import glob
import io
import json
import os
import sys
import time

import torch
import transformers
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_throughput import QUESTION  # noqa: E402


def prompt_ids(tok, cfg, n_pads):
    """The Qwen2.5-VL / Qwen3-VL chat template's text for one user turn (image first), as qvl renders it."""
    system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" if cfg.model_type == "qwen2_5_vl" else ""
    text = (system + "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * n_pads + "<|vision_end|>" + QUESTION +
            "<|im_end|>\n<|im_start|>assistant\n")
    return tok(text, add_special_tokens=False)["input_ids"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a `qvl export` directory (config, preprocessor config, weights)")
    ap.add_argument("--jpegs", required=True)
    ap.add_argument("--tokenizer", default=os.path.join(os.path.dirname(__file__), "../.cache/tokenizer/tokenizer.json"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=5)
    ap.add_argument("--fast", action="store_true", help="the fast image processor on the GPU")
    ap.add_argument("--qvl-json", help="serve_throughput.py's output line, for the ratio")
    a = ap.parse_args()
    jpegs = sorted(glob.glob(os.path.join(a.jpegs, "*.jpg")))
    if not jpegs:
        raise SystemExit(f"no .jpg in {a.jpegs}")
    data = [open(jpegs[i % len(jpegs)], "rb").read() for i in range(a.requests)]
    cfg = transformers.AutoConfig.from_pretrained(a.model)
    cls = getattr(transformers, cfg.architectures[0])
    try:
        model = cls.from_pretrained(a.model, dtype=torch.bfloat16, attn_implementation="sdpa", device_map="cuda")
    except (ImportError, ValueError):  # device_map wants accelerate in some versions: load, then move
        model = cls.from_pretrained(a.model, dtype=torch.bfloat16, attn_implementation="sdpa").to("cuda")
    model.eval()
    proc = transformers.AutoImageProcessor.from_pretrained(a.model, use_fast=a.fast)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=a.tokenizer)
    merge = cfg.vision_config.spatial_merge_size
    kw = {"device": "cuda"} if a.fast else {}

    def one_batch(blobs):
        imgs = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
        out = proc(images=imgs, return_tensors="pt", **kw)
        grid = out["image_grid_thw"]
        n_pads = int(grid[0].prod()) // (merge * merge)
        if not bool((grid == grid[0]).all()):
            raise SystemExit("the JPEGs do not all have one grid; this script batches without padding")
        ids = torch.tensor([prompt_ids(tok, cfg, n_pads)] * len(blobs), device="cuda")
        torch.cuda.synchronize()
        t_pre = time.perf_counter()
        with torch.inference_mode():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 pixel_values=out["pixel_values"].to("cuda", torch.bfloat16),
                                 image_grid_thw=grid.to("cuda"), max_new_tokens=a.max_tokens,
                                 min_new_tokens=a.max_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
        torch.cuda.synchronize()
        return t_pre, gen.shape[1] - ids.shape[1], ids.shape[1]

    one_batch(data[:a.batch])  # warm-up
    t0 = time.perf_counter()
    gen_s = 0.0
    for i in range(0, len(data), a.batch):
        t_pre, n_new, n_prompt = one_batch(data[i:i + a.batch])
        gen_s += time.perf_counter() - t_pre
    wall = time.perf_counter() - t0
    res = {"bench": "hf_tagging", "model": a.model, "device": torch.cuda.get_device_name(),
           "transformers": transformers.__version__, "processor": type(proc).__name__ + (" cuda" if a.fast else " cpu"),
           "requests": len(data), "batch": a.batch, "prompt_tokens": n_prompt, "new_tokens": n_new,
           "wall_s": round(wall, 3), "images_per_s": round(len(data) / wall, 2),
           "images_per_s_without_preprocessing": round(len(data) / gen_s, 2)}
    if a.qvl_json:
        q = [json.loads(l) for l in open(a.qvl_json) if l.strip()]
        q = next(x for x in q if x.get("bench") == "serve_throughput")
        res["qvl_images_per_s"] = q["images_per_s"]
        res["qvl_over_hf"] = round(q["images_per_s"] / res["images_per_s"], 2)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
