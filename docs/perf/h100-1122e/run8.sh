#!/bin/bash
# session 13 call 8 (3cce7f7, final): Qwen3-VL 64 x 512 on a fresh machine, 5 runs, with the board's clocks
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version,serial,pci.bus_id --format=csv > $R/gpu.txt 2>&1
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build.txt 2>&1
timeout 250 ninja -C build-gpu qvl >> $R/build.txt 2>&1; echo "build rc $?" >> $R/build.txt
date -u >> $R/date.txt
Q3="--model configs/Qwen3-VL-8B-Instruct --dummy --images 64x512x512 --iters 10"
for i in 1 2 3 4 5; do timeout 60 build-gpu/qvl bench vit $Q3 >> $R/q3.txt 2>> $R/err.txt; done
QVL_PROFILE=1 timeout 60 build-gpu/qvl bench vit $Q3 >> $R/q3_profile.txt 2>> $R/err.txt
date -u >> $R/date.txt
cd $OUT && tar czf r.tgz r && rm -rf r
