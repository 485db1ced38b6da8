#!/bin/bash
# device call 8 (9d5822a, final): ctest -L gpu, the towers, Qwen3-VL 64 x 512 x4 (one with QVL_GEMM_LOG=1)
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version --format=csv > $R/gpu.txt 2>&1
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build.txt 2>&1
ninja -C build-gpu >> $R/build.txt 2>&1; echo "build rc $?" >> $R/build.txt
date -u >> $R/date.txt
Q3="--model configs/Qwen3-VL-8B-Instruct --dummy --images 64x512x512 --iters 10"
for i in 1 2 3; do timeout 90 build-gpu/qvl bench vit $Q3 >> $R/q3.txt 2>> $R/err.txt; done
QVL_GEMM_LOG=1 QVL_PROFILE=1 timeout 90 build-gpu/qvl bench vit $Q3 >> $R/q3.txt 2> $R/gemm_log.txt
timeout 120 build-gpu/qvl bench vit --model configs/Qwen2.5-VL-7B-Instruct --dummy --images 1x448x448 --images 64x448x448 --iters 10 >> $R/towers.txt 2>&1
timeout 120 build-gpu/qvl bench vit --model configs/Qwen3-VL-8B-Instruct --dummy --images 20x960x1280 --iters 10 >> $R/towers.txt 2>&1
date -u >> $R/date.txt
(cd build-gpu && timeout 280 ctest -L gpu -j3 --output-on-failure > $R/ctest.txt 2>&1)
date -u >> $R/date.txt
