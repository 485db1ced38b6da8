#!/bin/bash
# device call 6: test_gpu_ops run directly (no ctest environment) vs with OMP_NUM_THREADS=2: c1's slow test_attention
source .deps/env.sh
R=$OUT/r; mkdir -p $R
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build.txt 2>&1
ninja -C build-gpu test_gpu_ops >> $R/build.txt 2>&1; echo "build rc $?" >> $R/build.txt
stamp() { while IFS= read -r l; do printf '%s %s\n' "$(date +%s.%N | cut -c1-14)" "$l"; done; }
( time OMP_NUM_THREADS=2 timeout 150 build-gpu/test_gpu_ops ) 2>&1 | stamp > $R/omp2.txt
( time timeout 200 build-gpu/test_gpu_ops ) 2>&1 | stamp > $R/direct.txt
nproc > $R/nproc.txt
