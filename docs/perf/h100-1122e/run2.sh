#!/bin/bash
# session 13 call 2: attention schedule variants (QVL_DEV_SCHED bits: 1 turn at tile 0, 2 PV inside the turn), grid
source .deps/env.sh
R=$OUT/r; mkdir -p $R
date -u > $R/date.txt
nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,driver_version --format=csv > $R/gpu.txt 2>&1
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release > $R/build.txt 2>&1
timeout 300 ninja -C build-gpu qvl test_gpu_attn_vit >> $R/build.txt 2>&1; echo "build rc $?" >> $R/build.txt
date -u >> $R/date.txt
export QVL_DEV_GRID=-1
for v in 0 1 2 3; do
  (cd build-gpu && QVL_DEV_SCHED=$v timeout 120 ctest -R test_gpu_attn_vit --output-on-failure > $R/test_s$v.txt 2>&1; echo "rc $?" >> $R/test_s$v.txt)
done
date -u >> $R/date.txt
M3="--model configs/Qwen3-VL-8B-Instruct --dummy"
M2="--model configs/Qwen2.5-VL-7B-Instruct --dummy"
for rep in 1 2; do
for v in 0 1 2 3; do
  for im in 64x512x512 20x960x1280; do
    echo "sched $v $im" >> $R/attn.txt
    QVL_DEV_SCHED=$v timeout 60 build-gpu/qvl bench vit $M3 --images $im --iters 30 --attn-only >> $R/attn.txt 2>> $R/err.txt
  done
  echo "sched $v q25 64x448x448" >> $R/attn.txt
  QVL_DEV_SCHED=$v timeout 60 build-gpu/qvl bench vit $M2 --images 64x448x448 --iters 30 --attn-only >> $R/attn.txt 2>> $R/err.txt
done
done
date -u >> $R/date.txt
best=$(python3 - $R/attn.txt <<'PY'
import json,sys
t={}
v=None
for l in open(sys.argv[1]):
    if l.startswith('sched'): v=l.split()[1]; im=l.split()[-1]; continue
    d=json.loads(l)
    if d['sequences']=='full' and im=='64x512x512': t.setdefault(v,[]).append(d['median_ms'])
print(min(t,key=lambda k: sum(t[k])))
PY
)
echo "best $best" >> $R/attn.txt
for rep in 1 2 3; do
for v in 0 $best; do
  echo "sched $v" >> $R/q3.txt
  QVL_DEV_SCHED=$v timeout 90 build-gpu/qvl bench vit $M3 --images 64x512x512 --iters 10 >> $R/q3.txt 2>> $R/err.txt
done
done
date -u >> $R/date.txt
cd $OUT && tar czf r.tgz r && rm -rf r
