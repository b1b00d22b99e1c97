#!/usr/bin/env bash
# The CUDA backend's check on a GPU machine (#16), in one go, well inside 10 minutes: configure with
# the header-only dependencies carried in .deps/ (bench/cuda/prepare_deps.sh, run on the Debian
# machine), build the CUDA tests, deepseek-cli and the CUDA benchmarks, run them, and write every
# result under $OUT (the device tool's result folder; default ./device-results):
#   build.log, test_cuda.txt, test_models_cuda.txt, cli_generate.txt (generate and chat with --backend cuda
#   against the CPU), bench_cuda.json / .txt, summary.txt
# Usage (from the repository root): bench/cuda/device_check.sh [--no-bench]
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${OUT:-$root/device-results}"
deps="$root/.deps"
build="$root/build-device"
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
start=$SECONDS
step() {  # name, command...: runs it, records rc and seconds
  local name="$1"; shift
  local t=$SECONDS
  "$@"
  local rc=$?
  note "$(printf '%-18s rc %3d  %4d s' "$name" "$rc" $((SECONDS - t)))"
  return $rc
}

if [[ ! -d "$deps/cmake" ]]; then
  note "no .deps/: run bench/cuda/prepare_deps.sh on the Debian machine and carry .deps"
  exit 2
fi
export PATH="/usr/local/cuda/bin:$PATH"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
arch="${arch:-90}"
note "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1), sm_$arch"
note "nvcc: $(nvcc --version | tail -2 | head -1)"
bench=ON
[[ "${1:-}" == "--no-bench" ]] && bench=OFF

configure() {
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDEEPSEEK_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
    -DDEEPSEEK_BUILD_TESTS=ON -DDEEPSEEK_BUILD_EXAMPLES=ON -DDEEPSEEK_BUILD_BENCH="$bench" \
    -DEigen3_DIR="$deps/cmake/Eigen3" -Dnlohmann_json_DIR="$deps/cmake/nlohmann_json" -DCatch2_DIR="$deps/cmake/Catch2" \
    -DDEEPSEEK_STB_INCLUDE_DIR="$deps/include" -DDEEPSEEK_CLI_POPPLER=OFF -DDEEPSEEK_CLI_HTTPLIB=OFF
}
targets=(test_cuda test_models_cuda deepseek-cli)
[[ $bench == ON ]] && targets+=(bench_cuda)
compile() { cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"; }
step configure configure > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
step build compile >> "$out/build.log" 2>&1 || { grep -E "error|Error" "$out/build.log" | head -60; exit 1; }

failed=0
step test_cuda "$build/tests/cuda/test_cuda" --durations yes > "$out/test_cuda.txt" 2>&1 || failed=1
tail -4 "$out/test_cuda.txt" | tee -a "$summary"
(cd "$root/tests/fixtures" && step test_models_cuda "$build/tests/cuda/test_models_cuda" --durations yes) > "$out/test_models_cuda.txt" 2>&1 || failed=1
tail -4 "$out/test_models_cuda.txt" | tee -a "$summary"
cli_generate() {
  local rc=0
  for variant in v3_fp8 v2_softmax_group_limited v2_mha_ocr_decoder; do
    cmake -DCLI="$build/examples/cli/deepseek-cli" -DMODEL="$root/tests/fixtures/models/$variant" \
      -DEXPECTED="$root/tests/fixtures/models/$variant/cli_greedy.txt" -DBACKEND=cuda -P "$root/tests/cli/check_generate.cmake" || rc=1
  done
  "$build/examples/cli/deepseek-cli" generate --model "$root/examples/models/deepseek-v3-demo" --prompt "Once upon a time" \
    --max-new 64 --greedy --backend cuda --stats || rc=1
  # chat on the device: a two-turn greedy conversation must equal --backend cpu's answers
  (cd "$out" && cmake -DCLI="$build/examples/cli/deepseek-cli" -DMODEL="$root/examples/models/deepseek-v3-demo" -DBACKEND=cuda \
    -P "$root/tests/cli/check_chat_backend.cmake") || rc=1
  return $rc
}
step cli_generate cli_generate > "$out/cli_generate.txt" 2>&1 || failed=1
if [[ $bench == ON ]]; then
  step bench_cuda "$build/bench/cuda/bench_cuda" --benchmark_out="$out/bench_cuda.json" --benchmark_out_format=json \
    > "$out/bench_cuda.txt" 2>&1 || failed=1
fi
note "total $((SECONDS - start)) s, failed=$failed"
exit $failed
