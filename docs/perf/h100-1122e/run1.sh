#!/bin/bash
# session 13 call 1: attention grid balance experiment
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version --format=csv > $R/gpu.txt 2>&1
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build.txt 2>&1
timeout 300 ninja -C build-gpu qvl >> $R/build.txt 2>&1; echo "build rc $?" >> $R/build.txt
date -u >> $R/date.txt
M3="--model configs/Qwen3-VL-8B-Instruct --dummy"
for rep in 1 2; do
for g in 0 131 -1 126 120; do
  for im in 64x512x512 64x480x512 64x448x448 20x960x1280; do
    echo "grid $g $im" >> $R/attn.txt
    QVL_DEV_GRID=$g timeout 60 build-gpu/qvl bench vit $M3 --images $im --iters 30 --attn-only >> $R/attn.txt 2>> $R/err.txt
  done
done
done
date -u >> $R/date.txt
for rep in 1 2 3; do
for g in 0 -1; do
  echo "grid $g" >> $R/q3.txt
  QVL_DEV_GRID=$g timeout 90 build-gpu/qvl bench vit $M3 --images 64x512x512 --iters 10 >> $R/q3.txt 2>> $R/err.txt
done
done
date -u >> $R/date.txt
QVL_PROFILE=2 timeout 90 build-gpu/qvl bench vit $M3 --images 64x512x512 --iters 5 > $R/prof2.txt 2>&1
date -u >> $R/date.txt
cd $OUT && tar czf r.tgz r && rm -rf r
