#!/bin/bash
# session 13 call 6 (3cce7f7, the attention grid): ctest -L gpu, the towers of issue 4
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version --format=csv > $R/gpu.txt 2>&1
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build.txt 2>&1
timeout 250 ninja -C build-gpu >> $R/build.txt 2>&1; echo "build rc $?" >> $R/build.txt
date -u >> $R/date.txt
(cd build-gpu && timeout 280 ctest -L gpu -j3 --output-on-failure > $R/ctest.txt 2>&1)
date -u >> $R/date.txt
Q3="--model configs/Qwen3-VL-8B-Instruct --dummy"
Q2="--model configs/Qwen2.5-VL-7B-Instruct --dummy"
for i in 1 2 3; do timeout 60 build-gpu/qvl bench vit $Q3 --images 64x512x512 --iters 10 >> $R/q3.txt 2>> $R/err.txt; done
timeout 60 build-gpu/qvl bench vit $Q3 --images 20x960x1280 --iters 10 >> $R/q3.txt 2>> $R/err.txt
timeout 60 build-gpu/qvl bench vit $Q2 --images 1x448x448 --iters 20 >> $R/q2.txt 2>> $R/err.txt
timeout 60 build-gpu/qvl bench vit $Q2 --images 64x448x448 --iters 10 >> $R/q2.txt 2>> $R/err.txt
date -u >> $R/date.txt
cd $OUT && tar czf r.tgz r && rm -rf r
