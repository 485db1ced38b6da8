#!/bin/bash
# device call: A/B of gemm.c's search (new = working tree, old = HEAD) on Qwen3-VL 64 x 512
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version --format=csv > $R/gpu.txt 2>&1
mkdir -p /tmp/old && cp -a CMakeLists.txt apps fuzz include src tests configs scripts bench /tmp/old/
cp dev/gemm_old.c /tmp/old/src/backend/cuda/gemm.c
CM="-G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release"
( cmake -S . -B build-gpu $CM > $R/build.txt 2>&1 && timeout 400 ninja -C build-gpu -j10 qvl test_gpu_ops >> $R/build.txt 2>&1 ) &
( cmake -S /tmp/old -B /tmp/old/build $CM > $R/build_old.txt 2>&1 && timeout 400 ninja -C /tmp/old/build -j6 qvl >> $R/build_old.txt 2>&1 ) &
wait
tail -3 $R/build.txt $R/build_old.txt
Q3="--model configs/Qwen3-VL-8B-Instruct --dummy --images 64x512x512 --iters 10"
for i in 1 2 3; do
  timeout 90 build-gpu/qvl bench vit $Q3 >> $R/ab.txt 2>> $R/err.txt; echo "^ new $i" >> $R/ab.txt
  timeout 90 /tmp/old/build/qvl bench vit $Q3 >> $R/ab.txt 2>> $R/err.txt; echo "^ old $i" >> $R/ab.txt
done
for i in 1 2; do
  QVL_PROFILE=1 QVL_GEMM_LOG=1 timeout 90 build-gpu/qvl bench vit $Q3 >> $R/ab.txt 2> $R/log_new_$i.txt; echo "^ new profile $i" >> $R/ab.txt
  QVL_PROFILE=1 QVL_GEMM_LOG=1 timeout 90 /tmp/old/build/qvl bench vit $Q3 >> $R/ab.txt 2> $R/log_old_$i.txt; echo "^ old profile $i" >> $R/ab.txt
done
timeout 120 build-gpu/test_gpu_ops > $R/test_gpu_ops.txt 2>&1; echo "test_gpu_ops rc $?" >> $R/test_gpu_ops.txt
cd $OUT && tar czf r.tgz r && rm -rf r
