#!/usr/bin/env python3
"""hf_lm.py - transformers' own language model timed on the cases `qvl bench lm` runs, in the same GPU job.

    python3 bench/hf_lm.py --model configs/Qwen2.5-VL-7B-Instruct --prompt 20 --prompt 1024 --batch 1 --batch 8

For every (prompt length, batch) it runs `generate` greedily on text-only prompts (ids chosen as qvl bench lm
chooses them): TTFT = one generate of 1 new token, TPOT = (generate of gen+1 tokens - TTFT) / gen, both medians
of --runs after a warm-up, wall clock with torch.cuda.synchronize around each call (transformers' generate
synchronises every step anyway). Prints one JSON line per case in qvl bench lm's field names.

The model is built from the config (SDPA attention, bf16, on the GPU) with transformers' random initialisation:
timing does not depend on the weight values (every run is forced to generate exactly gen tokens), and filling
8B parameters from qvl's synthetic stream on the host would cost minutes of GPU-machine time. Output agreement on
identical weights is measured separately (bench/lm_agree.py).
"""
import argparse
import json
import statistics
import time

import torch
import transformers


def prompt_ids(n, cfg, vocab):
    """qvl bench lm's synthetic prompt: ((i * 7919 + 13) % 150000) % vocab, image/video pad ids replaced by 100."""
    ids = [((i * 7919 + 13) % 150000) % vocab for i in range(n)]
    return [100 if t in (cfg.image_token_id, cfg.video_token_id) else t for t in ids]


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="directory with config.json (configs/<model>)")
    ap.add_argument("--prompt", type=int, action="append", required=True)
    ap.add_argument("--batch", type=int, action="append")
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    cfg = transformers.AutoConfig.from_pretrained(a.model)
    for c in (cfg, cfg.vision_config, cfg.text_config):
        c._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = getattr(transformers, cfg.architectures[0])._from_config(cfg, dtype=torch.bfloat16).eval()
    vocab = cfg.text_config.vocab_size
    for n in a.prompt:
        for bsz in a.batch or [1]:
            ids = torch.tensor([prompt_ids(n, cfg, vocab)] * bsz, device="cuda")
            kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, eos_token_id=None,
                      pad_token_id=0)
            torch.cuda.reset_peak_memory_stats()
            try:
                with torch.inference_mode():
                    model.generate(**kw, max_new_tokens=2, min_new_tokens=2)  # warm-up
                    ttft = [timed(lambda: model.generate(**kw, max_new_tokens=1, min_new_tokens=1))
                            for _ in range(a.runs)]
                    full = [timed(lambda: model.generate(**kw, max_new_tokens=a.gen + 1, min_new_tokens=a.gen + 1))
                            for _ in range(a.runs)]
            except torch.OutOfMemoryError:
                print(json.dumps({"bench": "hf_lm", "model": a.model, "prompt_tokens": n, "batch": bsz,
                                  "error": "out of memory"}), flush=True)
                torch.cuda.empty_cache()
                continue
            ft = statistics.median(ttft)
            tp = (statistics.median(full) - ft) / a.gen
            print(json.dumps({
                "bench": "hf_lm", "model": a.model, "device": torch.cuda.get_device_name(),
                "transformers": transformers.__version__, "torch": torch.__version__, "prompt_tokens": n,
                "batch": bsz, "gen_tokens": a.gen, "ttft_ms": round(ft, 3),
                "prefill_tokens_per_s": round(n * bsz / ft * 1e3), "tpot_ms": round(tp, 3),
                "decode_tokens_per_s": round(bsz / tp * 1e3, 1),
                "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "runs": a.runs}), flush=True)


if __name__ == "__main__":
    main()
