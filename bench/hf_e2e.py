#!/usr/bin/env python3
"""hf_e2e.py - transformers' time to first token from JPEG bytes, the case `qvl bench e2e` times, same GPU job.

    build-gpu/qvl bench e2e --model configs/Qwen2.5-VL-7B-Instruct --dummy --write-jpeg /tmp/e2e.jpg
    python3 bench/hf_e2e.py --model configs/Qwen2.5-VL-7B-Instruct --jpeg /tmp/e2e.jpg

Each run: PIL decode of the bytes (Image.open(...).convert("RGB")), the model's image processor (the slow PIL one
on the CPU, and the fast one with device="cuda"), then `generate` of one token on the prompt qvl bench e2e builds
(same ids, same number of image pads). Medians of --runs after a warm-up, wall clock with torch.cuda.synchronize.
The model is built from the config with random weights (bf16, SDPA): timing does not depend on the values.
Prints one JSON line per processor.
"""
import argparse
import io
import json
import statistics
import time

import torch
import transformers
from PIL import Image


def text_id(cfg, i):
    """qvl bench e2e's text_id: modulo the vocabulary, never a vision id."""
    i %= cfg.text_config.vocab_size
    vision = (cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id)
    return 100 if i in vision else i


def prompt_ids(cfg, grid, merge, nq):
    pads = grid[0] * grid[1] * grid[2] // (merge * merge)
    return ([text_id(cfg, 151644), text_id(cfg, 872), text_id(cfg, 198), cfg.vision_start_token_id] +
            [cfg.image_token_id] * pads + [cfg.vision_end_token_id] + [text_id(cfg, 1000 + i) for i in range(nq)] +
            [text_id(cfg, t) for t in (151645, 198, 151644, 77091, 198)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="directory with config.json and preprocessor_config.json")
    ap.add_argument("--jpeg", required=True)
    ap.add_argument("--question", type=int, default=20)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    jpeg = open(a.jpeg, "rb").read()
    cfg = transformers.AutoConfig.from_pretrained(a.model)
    for c in (cfg, cfg.vision_config, cfg.text_config):
        c._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = getattr(transformers, cfg.architectures[0])._from_config(cfg, dtype=torch.bfloat16).eval()
    for fast in (False, True):
        proc = transformers.AutoImageProcessor.from_pretrained(a.model, use_fast=fast)
        kw = {"device": "cuda"} if fast else {}

        def once():
            img = Image.open(io.BytesIO(jpeg)).convert("RGB")
            out = proc(images=[img], return_tensors="pt", **kw)
            t_pre = time.perf_counter()
            grid = out["image_grid_thw"][0].tolist()
            ids = torch.tensor([prompt_ids(cfg, grid, cfg.vision_config.spatial_merge_size, a.question)], device="cuda")
            with torch.inference_mode():
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                               pixel_values=out["pixel_values"].to("cuda", torch.bfloat16),
                               image_grid_thw=out["image_grid_thw"].to("cuda"), max_new_tokens=1, min_new_tokens=1,
                               do_sample=False, eos_token_id=None, pad_token_id=0)
            return t_pre, grid, ids.shape[1]

        once()
        pre, ttft = [], []
        for _ in range(a.runs):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            t_pre, grid, n = once()
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            pre.append((t_pre - t0) * 1e3)
            ttft.append((t1 - t0) * 1e3)
        print(json.dumps({
            "bench": "hf_e2e", "model": a.model, "device": torch.cuda.get_device_name(),
            "transformers": transformers.__version__, "processor": type(proc).__name__ + (" cuda" if fast else " cpu"),
            "jpeg_bytes": len(jpeg), "grid": grid, "prompt_tokens": n, "preprocess_ms": round(statistics.median(pre), 3),
            "ttft_ms": round(statistics.median(ttft), 3), "runs": a.runs}), flush=True)


if __name__ == "__main__":
    main()
