#!/usr/bin/env bash
# The demo: builds deepseek-cli (in build-demo/, CPU only) and generates text with the small
# DeepSeek-V3-architecture model that ships in examples/models/deepseek-v3-demo (MLA, DeepSeekMoE,
# FP8 weights, an MTP module). Works from any directory. Extra arguments go to `deepseek-cli
# generate` (e.g. --prompt "..." --max-new 100 --mtp).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-demo"

source "$root/scripts/ensure_deps.sh"
ensure_deps cmake g++ make libeigen3-dev nlohmann-json3-dev libstb-dev libjpeg62-turbo-dev

echo "building deepseek-cli in $build" >&2
cmake -S "$root" -B "$build" -DDEEPSEEK_BUILD_TESTS=OFF -DDEEPSEEK_BUILD_BENCH=OFF -DDEEPSEEK_CUDA=OFF >/dev/null
cmake --build "$build" --target deepseek-cli -j "$(nproc)" >/dev/null
model="$root/examples/models/deepseek-v3-demo"
if [[ $# -eq 0 ]]; then
  set -- --prompt "The Python interpreter" --max-new 60 --temperature 0.8 --top-p 0.95 --seed 1 --stats
fi
"$build/examples/cli/deepseek-cli" generate --model "$model" "$@"
