#!/usr/bin/env python3
"""hf_preprocess.py - transformers' image preprocessing on the JPEGs `qvl bench pre` times, same GPU job.

    build-gpu/qvl bench pre --model configs/Qwen2.5-VL-7B-Instruct --write-jpegs /tmp/pre
    python3 bench/hf_preprocess.py --model configs/Qwen2.5-VL-7B-Instruct --jpegs /tmp/pre

For each case directory (NxHxW, as qvl bench pre writes it) the bytes are read into memory once, then timed
(medians of --runs after one warm-up, wall clock, torch.cuda.synchronize around GPU work):
  - decode:      PIL Image.open(bytes).convert("RGB") of every image (libjpeg-turbo, one thread)
  - pil:         decode + Qwen2VLImageProcessorPil (the slow PIL backend, CPU) -> pixel_values
  - fast_cuda:   decode + Qwen2VLImageProcessor (torchvision backend) with device="cuda"
  - nvjpeg_fast: torchvision.io.decode_jpeg(device="cuda") (nvJPEG, batched) + the fast processor on those tensors,
                 the route SGLang takes; pixel_values stay on the GPU
One JSON line per case and pipeline, like qvl's benches.
"""
import argparse
import io
import json
import os
import statistics
import time

import torch
import torchvision
import transformers
from PIL import Image


def timed(fn, runs):
    fn()
    ms = []
    for _ in range(runs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ms)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="directory with preprocessor_config.json")
    ap.add_argument("--jpegs", required=True, help="the --write-jpegs directory of qvl bench pre")
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    slow = transformers.Qwen2VLImageProcessorPil.from_pretrained(a.model)
    fast = transformers.Qwen2VLImageProcessor.from_pretrained(a.model)
    for case in sorted(os.listdir(a.jpegs)):
        d = os.path.join(a.jpegs, case)
        files = sorted(f for f in os.listdir(d) if f.endswith(".jpg"))
        blobs = [open(os.path.join(d, f), "rb").read() for f in files]

        def decode():
            return [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]

        def pil():
            return slow(images=decode(), return_tensors="pt")["pixel_values"]

        def fast_cuda():
            return fast(images=decode(), return_tensors="pt", device="cuda")["pixel_values"]

        datas = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]

        def nvjpeg_fast():
            imgs = torchvision.io.decode_jpeg(datas, device="cuda")
            return fast(images=imgs, return_tensors="pt", device="cuda")["pixel_values"]

        rows = nvjpeg_fast().shape
        for name, fn in (("decode", decode), ("pil", pil), ("fast_cuda", fast_cuda), ("nvjpeg_fast", nvjpeg_fast)):
            runs = a.runs if name != "pil" else max(3, a.runs // 3)
            ms = timed(fn, runs)
            print(json.dumps({
                "bench": "hf_pre", "images": case, "pipeline": name, "device": torch.cuda.get_device_name(),
                "transformers": transformers.__version__, "torchvision": torchvision.__version__,
                "ms": round(ms, 3), "img_per_s": round(len(blobs) * 1e3 / ms, 1), "rows": list(rows), "runs": runs,
            }), flush=True)


if __name__ == "__main__":
    main()
