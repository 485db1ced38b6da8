/* fuzz_jpeg.c - libFuzzer target: arbitrary bytes through the JPEG decoder (scripts/fuzz.sh builds and runs it). */
#include "fuzz_image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_decode(data, size); }
