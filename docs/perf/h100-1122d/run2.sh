#!/bin/bash
# device call 2: A/B/C (new 00daefc / old b99b17d / wide: WIDE_TOP 72) on Qwen3-VL 64 x 512, other towers, HF agreement
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version --format=csv > $R/gpu.txt 2>&1
for v in old wide; do mkdir -p /tmp/$v && cp -a CMakeLists.txt apps fuzz include src tests configs scripts bench /tmp/$v/; done
cp dev/gemm_old.c /tmp/old/src/backend/cuda/gemm.c
sed -i 's/WIDE_TOP = 36,/WIDE_TOP = 72,/' /tmp/wide/src/backend/cuda/gemm.c
grep -c "WIDE_TOP = 72" /tmp/wide/src/backend/cuda/gemm.c > $R/wide_check.txt
CM="-G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release"
( cmake -S . -B build-gpu $CM > $R/build.txt 2>&1 && ninja -C build-gpu -j8 qvl >> $R/build.txt 2>&1 ) &
for v in old wide; do ( cmake -S /tmp/$v -B /tmp/$v/build $CM > $R/build_$v.txt 2>&1 && ninja -C /tmp/$v/build -j4 qvl >> $R/build_$v.txt 2>&1 ) & done
wait
date -u >> $R/date.txt
Q3="--model configs/Qwen3-VL-8B-Instruct --dummy --images 64x512x512 --iters 10"
for i in 1 2 3; do
  for v in new old wide; do
    b=build-gpu/qvl; [ $v != new ] && b=/tmp/$v/build/qvl
    QVL_GEMM_LOG=1 timeout 90 $b bench vit $Q3 >> $R/ab.txt 2> $R/log_${v}_$i.txt; echo "^ $v $i" >> $R/ab.txt
  done
done
date -u >> $R/date.txt
Q25=configs/Qwen2.5-VL-7B-Instruct; Q3M=configs/Qwen3-VL-8B-Instruct
timeout 120 build-gpu/qvl bench vit --model $Q25 --dummy --images 1x448x448 --images 64x448x448 --iters 10 >> $R/towers.txt 2>&1
timeout 120 build-gpu/qvl bench vit --model $Q3M --dummy --images 20x960x1280 --iters 10 >> $R/towers.txt 2>&1
date -u >> $R/date.txt
# transformers agreement on the searched configurations (3 resolutions per tower, as bench/vit_side_by_side.sh)
A25="1x644x812 2x336x1008 1x1120x224"; A3="1x640x800 2x352x992 1x1216x224"
QVL_GEMM_SEARCH=1 timeout 60 build-gpu/qvl bench vit --model $Q25 --dummy $(printf -- "--images %s " $A25) --iters 1 --warmup 0 --dump /tmp/q25.st > /dev/null 2>> $R/agree_err.txt
QVL_GEMM_SEARCH=1 timeout 60 build-gpu/qvl bench vit --model $Q3M --dummy $(printf -- "--images %s " $A3) --iters 1 --warmup 0 --dump /tmp/q3.st > /dev/null 2>> $R/agree_err.txt
timeout 150 python3 bench/hf_vit.py --model $Q25 --agree $A25 --qvl-dump /tmp/q25.st >> $R/agree.txt 2>> $R/agree_err.txt
timeout 150 python3 bench/hf_vit.py --model $Q3M --agree $A3 --qvl-dump /tmp/q3.st >> $R/agree.txt 2>> $R/agree_err.txt
date -u >> $R/date.txt
