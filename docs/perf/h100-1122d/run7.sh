#!/bin/bash
# device call 7 (71039d8): bench/vit_side_by_side.sh - qvl and transformers' towers in the same call
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version --format=csv > $R/gpu.txt 2>&1
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build.txt 2>&1
ninja -C build-gpu qvl >> $R/build.txt 2>&1; echo "build rc $?" >> $R/build.txt
date -u >> $R/date.txt
timeout 500 bash bench/vit_side_by_side.sh $R > $R/side_by_side.txt 2>&1; echo "rc $?" >> $R/side_by_side.txt
date -u >> $R/date.txt
rm -f $R/*.safetensors
