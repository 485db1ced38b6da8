#!/usr/bin/env bash
# On the GPU machine, after a CUDA build in build-gpu (scripts/gpu-check.sh): qvl's vision towers and
# transformers' on the same synthetic weights, same GPU, same run. JSON lines into $1 (default .).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
q=build-gpu/qvl
run() { # model, timing cases, agreement cases, graph on/off cases
  local m=$1 name; name=$(basename "$m")
  $q bench vit --model "$m" --dummy $2 --iters 20 | tee "$out/qvl_$name.jsonl"
  QVL_PROFILE=2 $q bench vit --model "$m" --dummy $2 --iters 5 2> "$out/qvl_${name}_profile_ops.txt" |
    tee "$out/qvl_${name}_profile.jsonl"
  $q bench vit --model "$m" --dummy $3 --iters 1 --warmup 0 --dump "$out/qvl_$name.dump.safetensors" > /dev/null
  python3 bench/hf_vit.py --model "$m" --time ${2//--images /} --agree ${3//--images /} \
    --qvl-json "$out/qvl_$name.jsonl" --qvl-dump "$out/qvl_$name.dump.safetensors" | tee "$out/hf_$name.jsonl"
  rm -f "$out/qvl_$name.dump.safetensors"
  # graph replay on and off (the default replays calls of up to 16,384 patches), the attention op alone
  for g in on off; do
    $q bench vit --model "$m" --dummy $4 --iters 20 --graphs $g | tee "$out/qvl_${name}_graphs_$g.jsonl"
  done
  QVL_SDPA_LOG=1 $q bench vit --model "$m" --dummy $2 --iters 10 --attn-only 2> "$out/qvl_${name}_sdpa.log" |
    tee "$out/qvl_${name}_attn.jsonl"
}
run configs/Qwen2.5-VL-7B-Instruct "--images 1x448x448 --images 64x448x448" \
  "--images 1x644x812 --images 2x336x1008 --images 1x1120x224" "--images 1x448x448"
run configs/Qwen3-VL-8B-Instruct "--images 20x960x1280 --images 64x512x512 --images 1x960x1280" \
  "--images 1x640x800 --images 2x352x992 --images 1x1216x224" "--images 1x960x1280"
