#!/usr/bin/env python3
"""serve_throughput.py - the tagging workload of issue 7 against a running `qvl serve` (standard library only).

    python3 bench/serve_throughput.py make-jpegs DIR [--n 1000] [--size 448]     (needs Pillow and NumPy)
    python3 bench/serve_throughput.py run --port P --jpegs DIR [--clients 64] [--requests 1000] [--max-tokens 5]
                                          [--warmup 64]
    python3 bench/serve_throughput.py ttft --port P --jpegs DIR [--requests 100] [--warmup 8]

make-jpegs writes N distinct JPEGs (seeded noise over gradients, quality 90), so no two requests share an image and
the encoder cache cannot help, 64 more under DIR/warmup/ that run and ttft send first, untimed (CUDA graph captures,
attention plans), without giving the timed requests a cache hit, and 100 more under DIR/ttft/ that only ttft sends:
its requests follow a run over DIR, so they need images the server has not seen (an image seen before hits the
encoder and prefix caches and its time to first token is that of a cached prompt). run sends --requests completions,
each one JPEG as a data: URL and the same ~30-token question, max_tokens 5, temperature 0, from --clients threads at
once; it prints one JSON line with the wall time, images/s, and the latency percentiles, and exits 1 unless every
answer is a 200 with 1..max_tokens completion tokens; a second line, serve_phase, has what /metrics counted during
the timed requests alone (the differences of two scrapes: steps, step tokens, host seconds per stage, vision passes
over 50 ms, steps whose outputs the scheduler found ready (waited under 1 ms for them: the device had waited for the
host), and with QVL_PROFILE set on the server the device seconds per kind and their share of the wall time). ttft
sends DIR/ttft/ one at a time, streamed, and reports the time to the first content chunk (p50/p99).
bench/hf_tagging.py runs the same JPEGs and question through transformers' batched generate.
"""
import argparse
import base64
import glob
import http.client
import json
import os
import statistics
import sys
import threading
import time

QUESTION = ("Give up to five short tags for this picture: the main objects, their colours, the setting and the "
            "mood, separated by commas.")


def make_jpegs(a):
    import numpy as np
    from PIL import Image
    os.makedirs(a.dir, exist_ok=True)
    y, x = np.mgrid[0:a.size, 0:a.size].astype(np.float32) / a.size
    for sub in ("warmup", "ttft"):
        os.makedirs(os.path.join(a.dir, sub), exist_ok=True)
    for i in range(a.n + 64 + 100):
        rng = np.random.default_rng(i if i < a.n else 1000000 + i)
        base = np.stack([x * rng.uniform(50, 255), y * rng.uniform(50, 255), (x + y) * rng.uniform(20, 127)], -1)
        img = np.clip(base + rng.normal(0, 24, base.shape), 0, 255).astype(np.uint8)
        name = (f"{i:06d}.jpg" if i < a.n else os.path.join("warmup", f"{i - a.n:06d}.jpg") if i < a.n + 64 else
                os.path.join("ttft", f"{i - a.n - 64:06d}.jpg"))
        Image.fromarray(img).save(os.path.join(a.dir, name), quality=90)
    print(json.dumps({"made": a.n, "dir": a.dir, "size": a.size}))


def body(path, max_tokens, stream=False):
    url = "data:image/jpeg;base64," + base64.b64encode(open(path, "rb").read()).decode()
    b = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                    {"type": "text", "text": QUESTION}]}],
         "max_tokens": max_tokens, "temperature": 0}
    if stream:
        b["stream"] = True
    return json.dumps(b)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * len(v)))] if v else None


def scrape(port):
    """/metrics as {'name{labels}': value} (comments skipped)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, val = line.rpartition(" ")
            out[key] = float(val)
    return out


def phase(before, after, wall):
    """What the server counted between two scrapes, as one JSON object."""
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    out = {"bench": "serve_phase", "wall_s": round(wall, 3), "steps": int(d.get("qvl_steps_total", 0)),
           "step_tokens": int(d.get("qvl_step_tokens_total", 0))}
    for st in ("preprocess", "vision", "step", "gap", "wait"):
        out[f"{st}_s"] = round(d.get(f'qvl_stage_seconds_sum{{stage="{st}"}}', 0.0), 3)
        out[f"{st}_n"] = int(d.get(f'qvl_stage_seconds_count{{stage="{st}"}}', 0))
    out["vision_over_50ms"] = int(out["vision_n"] - d.get('qvl_stage_seconds_bucket{stage="vision",le="0.05"}', 0))
    out["wait_under_1ms"] = int(d.get('qvl_stage_seconds_bucket{stage="wait",le="0.001"}', 0))
    dev = {k: d[f'qvl_device_seconds_total{{kind="{k}"}}'] for k in ("gemm", "attention", "other")
           if f'qvl_device_seconds_total{{kind="{k}"}}' in d}
    if dev:
        out.update({f"device_{k}_s": round(v, 3) for k, v in dev.items()})
        out["device_busy_share"] = round(sum(dev.values()) / wall, 3)
    return out


def warm_up(a):
    warm = sorted(glob.glob(os.path.join(a.jpegs, "warmup", "*.jpg")))[:a.warmup]
    if warm:
        n, a.requests = a.requests, len(warm)
        run(a, warm, quiet=True)
        a.requests = n


def run(a, jpegs, quiet=False):
    bodies = [body(jpegs[i % len(jpegs)], a.max_tokens) for i in range(a.requests)]
    nxt, lock, lat, bad, tokens = [0], threading.Lock(), [], [], [0]

    def client():
        c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=600)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(bodies):
                break
            t0 = time.perf_counter()
            try:
                c.request("POST", "/v1/chat/completions", bodies[i], {"Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read()
                ok = r.status == 200
                n = json.loads(data)["usage"]["completion_tokens"] if ok else 0
                ok = ok and 1 <= n <= a.max_tokens
            except Exception as e:  # noqa: BLE001 - any failure counts
                ok, n, data = False, 0, repr(e).encode()
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=600)
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                tokens[0] += n
                if not ok:
                    bad.append(data[:200])
        c.close()

    before = None if quiet else scrape(a.port)
    stamp("warm-up" if quiet else "timed", "start")
    t0 = time.perf_counter()
    ts = [threading.Thread(target=client) for _ in range(a.clients)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    wall = time.perf_counter() - t0
    stamp("warm-up" if quiet else "timed", "end")
    if quiet:
        return 1 if bad else 0
    after = scrape(a.port)
    print(json.dumps({"bench": "serve_throughput", "requests": a.requests, "clients": a.clients,
                      "max_tokens": a.max_tokens, "failed": len(bad), "wall_s": round(wall, 3),
                      "images_per_s": round(a.requests / wall, 2), "generated_tokens": tokens[0],
                      "latency_p50_s": round(pct(lat, 50), 4), "latency_p99_s": round(pct(lat, 99), 4)}), flush=True)
    print(json.dumps(phase(before, after, wall)), flush=True)
    if bad:
        print("failures:", bad[:3], file=sys.stderr)
    return 1 if bad else 0


def stamp(what, edge):
    """The phase boundaries on stderr in Unix time, to line up with a time-stamped server log."""
    print(f"# {what} {edge} {time.time():.3f}", file=sys.stderr, flush=True)


def ttft(a, jpegs):
    firsts, bad = [], 0
    stamp("ttft", "start")
    for i in range(a.requests):
        b = body(jpegs[i % len(jpegs)], a.max_tokens, stream=True)
        c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=600)
        t0 = time.perf_counter()
        c.request("POST", "/v1/chat/completions", b, {"Content-Type": "application/json"})
        r = c.getresponse()
        first = None
        while True:
            line = r.readline()
            if not line:
                break
            if first is None and line.startswith(b"data: {") and b'"content"' in line and b'"role"' not in line:
                first = time.perf_counter() - t0
            if line.startswith(b"data: [DONE]"):
                break
        c.close()
        if r.status != 200 or first is None:
            bad += 1
        else:
            firsts.append(first)
    stamp("ttft", "end")
    print(json.dumps({"bench": "serve_ttft", "requests": a.requests, "failed": bad,
                      "ttft_p50_ms": round(pct(firsts, 50) * 1e3, 2) if firsts else None,
                      "ttft_p99_ms": round(pct(firsts, 99) * 1e3, 2) if firsts else None,
                      "ttft_mean_ms": round(statistics.mean(firsts) * 1e3, 2) if firsts else None}), flush=True)
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-jpegs")
    m.add_argument("dir")
    m.add_argument("--n", type=int, default=1000)
    m.add_argument("--size", type=int, default=448)
    for name, req in (("run", 1000), ("ttft", 100)):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--jpegs", required=True)
        p.add_argument("--clients", type=int, default=64)
        p.add_argument("--requests", type=int, default=req)
        p.add_argument("--max-tokens", type=int, default=5)
        p.add_argument("--warmup", type=int, default=64 if name == "run" else 8)
    a = ap.parse_args()
    if a.cmd == "make-jpegs":
        return make_jpegs(a)
    jpegs = sorted(glob.glob(os.path.join(a.jpegs, "*.jpg" if a.cmd == "run" else "ttft/*.jpg")))
    if not jpegs:
        raise SystemExit(f"no .jpg in {a.jpegs}{'' if a.cmd == 'run' else '/ttft'} (make-jpegs writes them)")
    warm_up(a)
    return run(a, jpegs) if a.cmd == "run" else ttft(a, jpegs)


if __name__ == "__main__":
    sys.exit(main() or 0)
