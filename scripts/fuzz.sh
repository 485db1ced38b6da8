#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (-fsanitize=fuzzer,address,undefined) and runs each for
# a given time on a seed corpus of every decoder variant (fuzz/seeds.c). docs/FUZZ.md records the runs.
#   [FUZZ_OUT=DIR] bash scripts/fuzz.sh [SECONDS=600] [TARGET...]   targets: jpeg png webp base64 tokenize request
#   (default: all; tokenize needs the real tokenizer: scripts/fetch-tokenizer.sh)
# Each run writes build-fuzz/TARGET.log; a crash, leak or timeout leaves its input in build-fuzz/ and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(jpeg png webp base64 tokenize request)
CC=${CC:-clang}
out=${FUZZ_OUT:-build-fuzz}  # one per concurrent run
mkdir -p "$out"
flags=(-g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unknown-pragmas -Iinclude -Isrc -Itests
       $(pkg-config --cflags libturbojpeg libpng libwebp))
san=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
lib=(src/core/err.c src/core/base64.c src/core/hash.c src/image/decode.c src/image/decode_jpeg.c
     src/image/decode_png.c src/image/decode_webp.c src/image/resize.c src/image/patchify.c)
libs=($(pkg-config --libs libturbojpeg libpng libwebp) -lm)
# tokenize: the text stage with the real Qwen tokenizer
tok_lib=(src/core/err.c src/io/config.c src/text/*.c)
tok_libs=($(pkg-config --libs libpcre2-8 libutf8proc libcjson) -lm)
# request: the server's chat.completions body parser (src/server/request.c)
req_lib=(src/server/request.c src/core/err.c src/core/base64.c)
req_libs=($(pkg-config --libs libcjson) -lpthread -lm)
export QVL_TOKENIZER="$PWD/.cache/tokenizer/tokenizer.json"

# Seed corpus: the encoders of the tests, built without sanitizers.
$CC "${flags[@]}" fuzz/seeds.c -o "$out/seeds" "${libs[@]}"
for t in jpeg png webp base64; do mkdir -p "$out/corpus/$t"; done
"$out/seeds" "$out/corpus/jpeg" "$out/corpus/png" "$out/corpus/webp"
printf 'aGVsbG8gd29ybGQ=' >"$out/corpus/base64/hello"
printf 'data:image/png;base64,iVBORw0KGgo=' >"$out/corpus/base64/url"
mkdir -p "$out/corpus/tokenize"
printf 'Hello, world! How'"'"'s it going? 3141592653' >"$out/corpus/tokenize/en"
printf '\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9' >"$out/corpus/tokenize/cjk"
printf 'cafe\xcc\x81 \xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8\r\n\t  x' >"$out/corpus/tokenize/nfc"
printf '<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>' >"$out/corpus/tokenize/special"

mkdir -p "$out/corpus/request"
printf '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0}' \
  >"$out/corpus/request/text"
printf '{"messages": [{"role": "system", "content": null}, {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}, {"type": "text", "text": "x"}]}], "stream": true, "stream_options": {"include_usage": true}, "stop": ["a", "b"], "mm_processor_kwargs": {"min_pixels": 1024, "max_pixels": 4096}, "seed": -3, "top_k": -1}' \
  >"$out/corpus/request/parts"

status=0
for t in "${targets[@]}"; do
  if [ "$t" = tokenize ]; then src=("${tok_lib[@]}") l=("${tok_libs[@]}");
  elif [ "$t" = request ]; then src=("${req_lib[@]}") l=("${req_libs[@]}");
  else src=("${lib[@]}") l=("${libs[@]}"); fi
  $CC "${flags[@]}" "${san[@]}" "fuzz/fuzz_$t.c" "${src[@]}" -o "$out/fuzz_$t" "${l[@]}"
  echo "fuzz_$t: ${secs}s, log $out/$t.log"
  if ! (cd "$out" && ASAN_OPTIONS=detect_leaks=1 "./fuzz_$t" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 "corpus/$t" >"$t.log" 2>&1); then
    echo "fuzz_$t FAILED: see $out/$t.log"
    status=1
  fi
  grep -E '^Done|stat::number_of_executed_units|stat::peak_rss_mb' "$out/$t.log" || true
done
exit $status
