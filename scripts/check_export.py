#!/usr/bin/env python3
"""check_export.py - proves that transformers loads a `qvl export` checkpoint with exactly qvl's weights.

    python3 scripts/check_export.py DIR [DIR ...]

For each checkpoint directory written by `qvl export --model M --dummy -o DIR`: load it with the class named
in its config.json (bf16, CPU), require that transformers reports no missing, unexpected or mismatched keys,
and compare every state_dict tensor with the qvl_dummy stream of its on-disk name rounded to bf16 (in full up
to 4M elements, else the first and last 1M), bit for bit. Exits nonzero on the first difference.
"""
import json
import os
import sys
import time

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qvl_dummy  # noqa: E402

FULL = 4 << 20
EDGE = 1 << 20


def expected(name, shape, first, n):
    center, scale = qvl_dummy.dummy_scale(name, shape)
    return torch.from_numpy(qvl_dummy.stream(name, first, n, center, scale)).to(torch.bfloat16)


def check_tensor(key, name, tensor):
    flat = tensor.detach().reshape(-1)
    numel = flat.numel()
    spans = [(0, numel)] if numel <= FULL else [(0, EDGE), (numel - EDGE, EDGE)]
    for first, n in spans:
        want = expected(name, tuple(tensor.shape), first, n)
        got = flat[first:first + n]
        if not torch.equal(got.view(torch.int16), want.view(torch.int16)):
            bad = (got.view(torch.int16) != want.view(torch.int16)).nonzero()[0].item() + first
            raise SystemExit(f"{key} ({name}): element {bad} is {flat[bad].item()}, qvl wrote "
                             f"{expected(name, tuple(tensor.shape), bad, 1)[0].item()}")
    return sum(n for _, n in spans)


def check_dir(path):
    t0 = time.time()
    cfg = json.load(open(os.path.join(path, "config.json")))
    arch = cfg["model_type"]
    cls = getattr(transformers, cfg["architectures"][0])
    model, info = cls.from_pretrained(path, dtype=torch.bfloat16, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise SystemExit(f"{path}: transformers reported {problems}")
    state = model.state_dict()
    tied = qvl_dummy._tied_aliases(model.state_dict(keep_vars=True), arch)
    checked = n_params = 0
    for key, tensor in state.items():
        if key in tied:
            continue
        checked += check_tensor(key, qvl_dummy.checkpoint_name(key, arch), tensor)
        n_params += tensor.numel()
    print(f"{path}: {cls.__name__} loaded with no missing/unexpected/mismatched keys; {len(state)} tensors, "
          f"{n_params / 1e9:.3f} B params, {checked / 1e6:.1f} M values compared bit for bit with qvl's "
          f"bf16 weights ({time.time() - t0:.1f} s)")


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for path in sys.argv[1:]:
        check_dir(path)


if __name__ == "__main__":
    main()
