#!/usr/bin/env bash
# The demo: builds deepseek-cli (in build-demo/, CPU only) and describes DeepSeek-V3 from its
# config.json fixture: architecture, parameter counts, KV-cache bytes per token. Works from any
# directory; extra arguments are passed to `deepseek-cli info`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-demo"

# Debian packages the demo needs. As root they are installed when absent; otherwise the missing
# ones are named.
need=(cmake g++ make libeigen3-dev nlohmann-json3-dev)
missing=()
if command -v dpkg-query >/dev/null; then
  for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

echo "building deepseek-cli in $build" >&2
cmake -S "$root" -B "$build" -DDEEPSEEK_BUILD_TESTS=OFF -DDEEPSEEK_BUILD_BENCH=OFF -DDEEPSEEK_CUDA=OFF >/dev/null
cmake --build "$build" --target deepseek-cli -j "$(nproc)" >/dev/null
"$build/examples/cli/deepseek-cli" info --model "$root/tests/fixtures/configs/deepseek-v3" "$@"
