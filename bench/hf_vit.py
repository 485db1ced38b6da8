#!/usr/bin/env python3
"""hf_vit.py - transformers' own vision tower on qvl's synthetic weights, side by side with `qvl bench vit`.

    python3 bench/hf_vit.py --model configs/Qwen2.5-VL-7B-Instruct --time 64x448x448 ... \
        [--agree 1x644x812 ...] [--qvl-json qvl.jsonl] [--qvl-dump qvl_features.safetensors] [--iters 5]

The tower is built from the config's vision_config (bf16, SDPA attention, CUDA) and every tensor is filled
with the qvl_dummy stream of its checkpoint name, i.e. exactly the weights `qvl --dummy` runs (bf16-rounded
the same way). Pixel rows are the "pixel_values:bench" stream, as in `qvl bench vit`. --time cases are
timed (CUDA events, median of --iters after 2 warm-ups); --agree cases are compared with the features qvl
dumped (case i of --qvl-dump is --agree case i): per-token cosine (min, mean) and relative L2.
Prints one JSON line per case; with --qvl-json the line carries qvl's median and the speedup.
"""
import argparse
import json
import math
import os
import sys

import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import qvl_dummy  # noqa: E402

PREFIX = {"qwen2_5_vl": "visual.", "qwen3_vl": "model.visual."}


def build_tower(model_dir):
    config = transformers.AutoConfig.from_pretrained(model_dir)
    vc = config.vision_config
    vc._attn_implementation = "sdpa"
    if config.model_type == "qwen2_5_vl":
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel as cls
    elif config.model_type == "qwen3_vl":
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel as cls
    else:
        raise SystemExit(f"{model_dir}: model_type {config.model_type} is not a tower this script knows")
    with torch.device("cuda"):
        tower = cls._from_config(vc, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        for name, t in tower.state_dict(keep_vars=True).items():
            ckpt = PREFIX[config.model_type] + name
            center, scale = qvl_dummy.dummy_scale(ckpt, tuple(t.shape))
            t.copy_(torch.from_numpy(qvl_dummy.values(ckpt, tuple(t.shape), center, scale)).to(t.device, t.dtype))
    return config, vc, tower


def case_inputs(vc, spec):
    n, h, w = (int(x) for x in spec.split("x"))
    p = vc.patch_size
    grid = torch.tensor([[1, h // p, w // p]] * n, device="cuda")
    rows = n * (h // p) * (w // p)
    k = vc.in_channels * vc.temporal_patch_size * p * p
    pix = torch.from_numpy(qvl_dummy.stream("pixel_values:bench", 0, rows * k, 0.2, 1.8)).view(rows, k)
    return pix.to("cuda", torch.bfloat16), grid, rows


def features(out):
    return out.pooler_output if getattr(out, "pooler_output", None) is not None else out


def time_case(tower, pix, grid, iters):
    with torch.inference_mode():
        for _ in range(2):
            tower(pix, grid_thw=grid)
        torch.cuda.synchronize()
        ts = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            tower(pix, grid_thw=grid)
            b.record()
            torch.cuda.synchronize()
            ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def agreement(ref, got):
    ref, got = ref.float(), got.float()
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=1)
    rel = (torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref)).item()
    return cos.min().item(), cos.mean().item(), rel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--time", nargs="*", default=[])
    ap.add_argument("--agree", nargs="*", default=[])
    ap.add_argument("--qvl-json")
    ap.add_argument("--qvl-dump")
    ap.add_argument("--iters", type=int, default=5)
    a = ap.parse_args()
    config, vc, tower = build_tower(a.model)
    dev = torch.cuda.get_device_name()
    qvl = {}
    if a.qvl_json:
        for line in open(a.qvl_json):
            if line.startswith("{"):
                r = json.loads(line)
                qvl[r["images"]] = r
    for spec in a.time:
        pix, grid, rows = case_inputs(vc, spec)
        torch.cuda.reset_peak_memory_stats()
        ms = time_case(tower, pix, grid, a.iters)
        r = {"bench": "hf_vit", "arch": config.model_type, "device": dev, "images": spec, "patches": rows,
             "hf_median_ms": round(ms, 3), "hf_peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
             "transformers": transformers.__version__, "torch": torch.__version__}
        if spec in qvl:
            r["qvl_median_ms"] = qvl[spec]["median_ms"]
            r["speedup"] = round(ms / qvl[spec]["median_ms"], 2)
        print(json.dumps(r), flush=True)
        del pix
    if a.agree:
        from safetensors.torch import load_file
        dump = load_file(a.qvl_dump)
        for i, spec in enumerate(a.agree):
            pix, grid, rows = case_inputs(vc, spec)
            with torch.inference_mode():
                ref = features(tower(pix, grid_thw=grid))
            cmin, cmean, rel = agreement(ref, dump[f"case{i}.features"].to("cuda"))
            ok = cmin >= 0.999 and rel <= 3e-2
            print(json.dumps({"bench": "hf_vit_agreement", "arch": config.model_type, "images": spec,
                              "tokens": int(ref.shape[0]), "cos_min": round(cmin, 6), "cos_mean": round(cmean, 6),
                              "rel_l2": float(f"{rel:.3e}"), "pass": ok}), flush=True)


if __name__ == "__main__":
    main()
