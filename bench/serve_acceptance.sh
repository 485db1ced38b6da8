#!/usr/bin/env bash
# serve_acceptance.sh - issue 7's GPU throughput acceptance in one go, from the repository root on the GPU machine:
#
#   bash bench/serve_acceptance.sh [BUILD_DIR=build] [MODEL=configs/Qwen2.5-VL-7B-Instruct] [OUT_DIR=${OUT:-/tmp/qvl_serve}]
#
# 1,000 distinct 448x448 JPEGs + a ~30-token question, max_tokens 5, through `qvl serve` (synthetic weights) from 64
# concurrent clients (after 64 untimed warm-up requests on other JPEGs): images/s and latency percentiles; then one
# request at a time, streamed, on 100 images not sent before, for p50/p99 TTFT; then /metrics. Unless SKIP_HF=1, the same JPEGs and question through
# transformers' batched generate (bench/hf_tagging.py) on the `qvl export` of the same weights, and the ratio.
# Needs the tokenizer at .cache/tokenizer/tokenizer.json (scripts/fetch-tokenizer.sh), Python with NumPy and Pillow
# (and torch + transformers for the HF part). Writes qvl_throughput.json, qvl_ttft.json, metrics.txt, serve.log,
# hf_tagging.json into OUT_DIR.
set -euo pipefail
build=${1:-build}
model=${2:-configs/Qwen2.5-VL-7B-Instruct}
out=${3:-${OUT:-/tmp/qvl_serve}}
jpegs=${JPEGS:-/tmp/qvl_jpegs}
port=${PORT:-8123}
mkdir -p "$out"
[ -f "$jpegs/ttft/000099.jpg" ] || python3 bench/serve_throughput.py make-jpegs "$jpegs" --n 1000
# each line of the server's output stamped with Unix time, to line up with the phase stamps serve_throughput.py
# prints (e.g. a tuning that QVL_GEMM_LOG=1 or QVL_SDPA_LOG=1 reports inside the timed phase)
stamp_lines() { while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done; }
"$build/qvl" serve --model "$model" --dummy --port "$port" --quiet --tokenizer .cache/tokenizer/tokenizer.json \
  > >(stamp_lines >"$out/serve.log") 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
python3 - "$port" "$pid" <<'EOF'
import os, sys, time, urllib.request
for _ in range(900):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2)
        sys.exit(0)
    except Exception:
        if not os.path.exists(f"/proc/{sys.argv[2]}"):
            sys.exit("qvl serve exited: see serve.log")
        time.sleep(1)
sys.exit("qvl serve did not come up in 900 s")
EOF
python3 bench/serve_throughput.py run --port "$port" --jpegs "$jpegs" --clients 64 --requests 1000 |
  tee "$out/qvl_throughput.json"
python3 bench/serve_throughput.py ttft --port "$port" --jpegs "$jpegs" --requests 100 | tee "$out/qvl_ttft.json"
# (both print their phase boundaries, "# timed start <unix time>", on stderr)
python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$port/metrics').read().decode())" \
  >"$out/metrics.txt"
kill "$pid"
wait "$pid" || true
trap - EXIT
if [ "${SKIP_HF:-0}" != 1 ]; then
  [ -f /tmp/qvl_export/config.json ] || "$build/qvl" export --model "$model" --dummy -o /tmp/qvl_export
  python3 bench/hf_tagging.py --model /tmp/qvl_export --jpegs "$jpegs" --qvl-json "$out/qvl_throughput.json" |
    tee "$out/hf_tagging.json"
fi
