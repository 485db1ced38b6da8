#!/bin/bash
# device call 4: rope.cu's row kernel (working tree) against 00daefc (old): tests, attention tuning log, towers A/B
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version --format=csv > $R/gpu.txt 2>&1
mkdir -p /tmp/old && cp -a CMakeLists.txt apps fuzz include src tests configs scripts bench /tmp/old/
cp dev/rope_old.cu /tmp/old/src/backend/cuda/rope.cu
CM="-G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release"
( cmake -S . -B build-gpu $CM > $R/build.txt 2>&1 && ninja -C build-gpu -j10 qvl test_gpu_ops test_gpu_attn_vit >> $R/build.txt 2>&1; echo "rc $?" >> $R/build.txt ) &
( cmake -S /tmp/old -B /tmp/old/build $CM > $R/build_old.txt 2>&1 && ninja -C /tmp/old/build -j6 qvl >> $R/build_old.txt 2>&1 ) &
wait
date -u >> $R/date.txt
Q3="--model configs/Qwen3-VL-8B-Instruct --dummy --images 64x512x512 --iters 10"
for i in 1 2 3; do
  for v in new old; do
    b=build-gpu/qvl; [ $v != new ] && b=/tmp/old/build/qvl
    QVL_SDPA_LOG=1 timeout 90 $b bench vit $Q3 >> $R/ab.txt 2> $R/sdpa_${v}_$i.txt; echo "^ $v $i" >> $R/ab.txt
  done
done
date -u >> $R/date.txt
Q25="--model configs/Qwen2.5-VL-7B-Instruct --dummy --images 64x448x448 --iters 10"
for v in new old; do
  b=build-gpu/qvl; [ $v != new ] && b=/tmp/old/build/qvl
  QVL_SDPA_LOG=1 timeout 90 $b bench vit $Q25 >> $R/ab.txt 2> $R/sdpa25_${v}.txt; echo "^ q25 $v" >> $R/ab.txt
done
date -u >> $R/date.txt
(cd build-gpu && timeout 200 ctest -R "test_gpu_(ops|attn_vit)$" -j2 -V > $R/tests.txt 2>&1; echo "rc $?" >> $R/tests.txt)
date -u >> $R/date.txt
