#!/usr/bin/env bash
# Runs every test: configures and builds the whole project (tests, examples, benches, and the
# CUDA code when nvcc is found) in build/, then runs ctest. Works from any directory. Extra
# arguments go to the configure step (e.g. scripts/test.sh -DDEEPSEEK_CUDA=OFF); DEEPSEEK_JOBS
# sets the build/test parallelism (default: all cores).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build"
jobs="${DEEPSEEK_JOBS:-$(nproc)}"

# Debian packages the full build needs. As root they are installed when absent; otherwise the
# missing ones are named.
need=(cmake g++ make libeigen3-dev nlohmann-json3-dev catch2 libbenchmark-dev libstb-dev)
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

cmake -S "$root" -B "$build" "$@"
cmake --build "$build" -j "$jobs"
cd "$build"
ctest --output-on-failure -j "$jobs"
