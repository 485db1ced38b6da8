#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, builds the library, the qvl tool and the
# CUDA backend (when nvcc is present), runs every test (gpu-labelled ones skip without a GPU), then builds
# the CPU path with ASan + UBSan and runs its tests again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/fetch-tokenizer.sh
[ -x /usr/local/cuda/bin/nvcc ] && export PATH=/usr/local/cuda/bin:$PATH
jobs=$(nproc)
cmake -S . -B build -G Ninja -Wno-dev >/dev/null
ninja -C build
(cd build && ctest --output-on-failure -j"$jobs")
cmake -S . -B build-asan -G Ninja -Wno-dev -DQVL_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
ninja -C build-asan
(cd build-asan && ctest --output-on-failure -j"$jobs" -LE gpu)
