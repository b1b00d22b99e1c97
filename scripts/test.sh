#!/usr/bin/env bash
# Runs every test: configures and builds the whole project (tests, examples, benches, and the
# CUDA code when nvcc is found) in build/, then runs ctest. Works from any directory. Extra
# arguments go to the configure step (e.g. scripts/test.sh -DDEEPSEEK_CUDA=OFF); DEEPSEEK_JOBS
# sets the build/test parallelism (default: all cores).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build"
jobs="${DEEPSEEK_JOBS:-$(nproc)}"

source "$root/scripts/ensure_deps.sh"
ensure_deps cmake g++ make libeigen3-dev nlohmann-json3-dev catch2 libbenchmark-dev libstb-dev libjpeg62-turbo-dev pkg-config libpoppler-cpp-dev \
  libcpp-httplib-dev curl

cmake -S "$root" -B "$build" "$@"
cmake --build "$build" -j "$jobs"
cd "$build"
ctest --output-on-failure -j "$jobs"
