#!/bin/bash
# session 13 call 4: attention kernel SASS and ncu source counters / stall reasons
source .deps/env.sh
R=$OUT/r; mkdir -p $R
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build.txt 2>&1
timeout 300 ninja -C build-gpu qvl >> $R/build.txt 2>&1; echo "build rc $?" >> $R/build.txt
O=$(find build-gpu -name 'attn_vit_wgmma.cu.o' | head -1); echo $O >> $R/build.txt
cuobjdump -sass $O > $R/attn.sass 2>&1
M3="--model configs/Qwen3-VL-8B-Instruct --dummy"
QVL_ATTN=rope+wgmma timeout 200 ncu --kernel-name regex:attn_vit_wgmma --launch-skip 3 --launch-count 1 \
  --section WarpStateStats --section SourceCounters --section InstructionStats --print-details all \
  build-gpu/qvl bench vit $M3 --images 64x512x512 --iters 2 --attn-only > $R/ncu.txt 2>&1
QVL_ATTN=rope+wgmma timeout 200 ncu --kernel-name regex:attn_vit_wgmma --launch-skip 3 --launch-count 1 \
  --metrics smsp__inst_executed_op_mufu.sum,smsp__inst_executed_pipe_fma.sum,smsp__inst_executed_pipe_alu.sum,smsp__inst_executed_pipe_fp16.sum,smsp__inst_executed_pipe_xu.sum,smsp__inst_executed_pipe_uniform.sum,smsp__inst_executed_pipe_lsu.sum,smsp__inst_executed_pipe_adu.sum,smsp__inst_executed_pipe_cbu.sum,smsp__inst_executed.sum,smsp__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active \
  build-gpu/qvl bench vit $M3 --images 64x512x512 --iters 2 --attn-only > $R/ncu_pipes.txt 2>&1
cd $OUT && tar czf r.tgz r && rm -rf r
