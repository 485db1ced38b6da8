#!/bin/bash
# session 13 call 5: row sums through P V (V's ones column) A/B against 3cce7f7
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version --format=csv > $R/gpu.txt 2>&1
mkdir -p /tmp/old && cp -r CMakeLists.txt apps fuzz include src tests configs scripts bench /tmp/old/
cp dev/old_attn_vit_wgmma.cu /tmp/old/src/backend/cuda/attn_vit_wgmma.cu
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build.txt 2>&1
timeout 300 ninja -C build-gpu qvl test_gpu_attn_vit test_gpu_vision >> $R/build.txt 2>&1; echo "build rc $?" >> $R/build.txt
(cd /tmp/old && cmake -S . -B b -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build_old.txt 2>&1 && timeout 300 ninja -C b qvl >> $R/build_old.txt 2>&1; echo "build rc $?" >> $R/build_old.txt)
date -u >> $R/date.txt
(cd build-gpu && timeout 200 ctest -R "test_gpu_attn_vit|test_gpu_vision" --output-on-failure > $R/test.txt 2>&1)
date -u >> $R/date.txt
M3="--model configs/Qwen3-VL-8B-Instruct --dummy"
M2="--model configs/Qwen2.5-VL-7B-Instruct --dummy"
for rep in 1 2; do
  for b in build-gpu/qvl /tmp/old/b/qvl; do
    for im in 64x512x512 20x960x1280; do
      echo "$b $im" >> $R/attn.txt
      timeout 60 $b bench vit $M3 --images $im --iters 30 --attn-only >> $R/attn.txt 2>> $R/err.txt
    done
    echo "$b q25" >> $R/attn.txt
    timeout 60 $b bench vit $M2 --images 64x448x448 --iters 30 --attn-only >> $R/attn.txt 2>> $R/err.txt
  done
done
date -u >> $R/date.txt
for rep in 1 2 3 4; do
  echo new >> $R/q3.txt; timeout 90 build-gpu/qvl bench vit $M3 --images 64x512x512 --iters 10 >> $R/q3.txt 2>> $R/err.txt
  echo old >> $R/q3.txt; timeout 90 /tmp/old/b/qvl bench vit $M3 --images 64x512x512 --iters 10 >> $R/q3.txt 2>> $R/err.txt
done
date -u >> $R/date.txt
cd $OUT && tar czf r.tgz r && rm -rf r
