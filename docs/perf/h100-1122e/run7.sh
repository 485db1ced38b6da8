#!/bin/bash
# session 13 call 7 (3cce7f7): bench/vit_side_by_side.sh - qvl and transformers' towers in the same call
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version --format=csv > $R/gpu.txt 2>&1
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build.txt 2>&1
timeout 250 ninja -C build-gpu qvl >> $R/build.txt 2>&1; echo "build rc $?" >> $R/build.txt
date -u >> $R/date.txt
timeout 420 bash bench/vit_side_by_side.sh $R > $R/side_by_side.txt 2>&1; echo "rc $?" >> $R/side_by_side.txt
date -u >> $R/date.txt
rm -f $R/*.safetensors
Q3="--model configs/Qwen3-VL-8B-Instruct --dummy"
for i in 1 2; do timeout 60 build-gpu/qvl bench vit $Q3 --images 64x512x512 --iters 10 >> $R/q3.txt 2>> $R/err.txt; done
cd $OUT && tar czf r.tgz r && rm -rf r
