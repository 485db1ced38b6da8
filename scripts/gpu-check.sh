#!/usr/bin/env bash
# On the GPU machine (H100/H200; see ../shared/device/README.md, after `source .deps/env.sh`): build with
# the CUDA backend for sm_90a and run every test, the gpu-labelled ones included. Logs go to $1 (default .).
# QVL_TEST_TIMEOUT (s, default 240) stops a hung test; QVL_TEST_EXCLUDE is a ctest -E regex of tests to leave out.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
cmake -S . -B build-gpu -G Ninja -Wno-dev -DCMAKE_CUDA_ARCHITECTURES=90a > "$out/cmake.log" 2>&1
ninja -C build-gpu > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
(cd build-gpu && ctest --output-on-failure -j"$(nproc)" -V --timeout "${QVL_TEST_TIMEOUT:-240}" ${QVL_TEST_EXCLUDE:+-E "$QVL_TEST_EXCLUDE"}) > "$out/ctest.log" 2>&1 || true
grep -E "tests passed|tests failed|rel_l2|SKIPPED|FAILED|Failed" "$out/ctest.log" | head -80
