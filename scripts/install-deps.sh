#!/usr/bin/env bash
# Installs the Debian packages qvl builds and tests with, only those missing. Idempotent; silent when
# everything is already present. Needs root (or sudo) only when something is missing.
set -euo pipefail
pkgs=(cmake ninja-build pkg-config gcc libcjson-dev libcmocka-dev libopenblas-openmp-dev libomp-dev
      libturbojpeg0-dev libpng-dev libwebp-dev libpcre2-dev libutf8proc-dev libmicrohttpd-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
