#!/bin/bash
# session 13 call 3: grid rule (coprime) A/B vs a743da6 in the tower; clocks; ncu probe of the attention kernel
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version --format=csv > $R/gpu.txt 2>&1
mkdir -p /tmp/old && cp -r CMakeLists.txt apps fuzz include src tests configs scripts bench /tmp/old/
cp dev/old_attn_vit_wgmma.cu /tmp/old/src/backend/cuda/attn_vit_wgmma.cu
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build.txt 2>&1
timeout 300 ninja -C build-gpu qvl test_gpu_attn_vit >> $R/build.txt 2>&1; echo "build rc $?" >> $R/build.txt
(cd /tmp/old && cmake -S . -B b -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build_old.txt 2>&1 && timeout 300 ninja -C b qvl >> $R/build_old.txt 2>&1; echo "build rc $?" >> $R/build_old.txt)
date -u >> $R/date.txt
(cd build-gpu && timeout 120 ctest -R test_gpu_attn_vit --output-on-failure > $R/test.txt 2>&1)
date -u >> $R/date.txt
M3="--model configs/Qwen3-VL-8B-Instruct --dummy"
for rep in 1 2 3 4; do
  echo new >> $R/q3.txt; timeout 90 build-gpu/qvl bench vit $M3 --images 64x512x512 --iters 10 >> $R/q3.txt 2>> $R/err.txt
  echo old >> $R/q3.txt; timeout 90 /tmp/old/b/qvl bench vit $M3 --images 64x512x512 --iters 10 >> $R/q3.txt 2>> $R/err.txt
done
date -u >> $R/date.txt
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu --format=csv,noheader -lms 20 > $R/clk_tower.txt 2>&1 &
CP=$!
timeout 90 build-gpu/qvl bench vit $M3 --images 64x512x512 --iters 40 > $R/q3_clk.txt 2>> $R/err.txt
kill $CP
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu --format=csv,noheader -lms 20 > $R/clk_attn.txt 2>&1 &
CP=$!
timeout 90 build-gpu/qvl bench vit $M3 --images 64x512x512 --iters 3000 --attn-only > $R/attn_clk.txt 2>> $R/err.txt
kill $CP
date -u >> $R/date.txt
which ncu > $R/ncu.txt 2>&1; ls /usr/local/cuda/bin | grep -i nsight >> $R/ncu.txt
NCU=$(which ncu || echo /usr/local/cuda/bin/ncu)
timeout 150 $NCU --kernel-name regex:attn_vit_wgmma --launch-skip 3 --launch-count 1 --section SpeedOfLight \
  --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis --section InstructionStats \
  --section MemoryWorkloadAnalysis --section Occupancy build-gpu/qvl bench vit $M3 --images 64x512x512 --iters 2 --attn-only >> $R/ncu.txt 2>&1
date -u >> $R/date.txt
cd $OUT && tar czf r.tgz r && rm -rf r
