#!/bin/bash
# device call 9 (0d9dee0, final: lm generated pads): ctest -L gpu, Qwen3-VL 64 x 512 x2
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version --format=csv > $R/gpu.txt 2>&1
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build.txt 2>&1
ninja -C build-gpu >> $R/build.txt 2>&1; echo "build rc $?" >> $R/build.txt
date -u >> $R/date.txt
(cd build-gpu && timeout 280 ctest -L gpu -j3 --output-on-failure > $R/ctest.txt 2>&1)
date -u >> $R/date.txt
Q3="--model configs/Qwen3-VL-8B-Instruct --dummy --images 64x512x512 --iters 10"
for i in 1 2; do timeout 90 build-gpu/qvl bench vit $Q3 >> $R/q3.txt 2>> $R/err.txt; done
date -u >> $R/date.txt
