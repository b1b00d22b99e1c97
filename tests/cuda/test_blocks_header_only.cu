// The nn/ blocks and models compile in a CUDA translation unit without the CPU backend: nvcc sees
// backend/ops.hpp's vocabulary, not Eigen (backend/ops.hpp pulls the CPU backend in for host
// compilers only), so a .cu file can name and instantiate nn::Mla<cuda>.
#include <deepseek/models/deepseek_v3.hpp>
#include <deepseek/nn/decoder_layer.hpp>
#include <deepseek/nn/mtp.hpp>

#ifdef EIGEN_WORLD_VERSION
#error "Eigen reached a CUDA translation unit through the nn/ or models/ headers"
#endif

#include <catch2/catch.hpp>

TEST_CASE("nn/ and models/ headers compile under nvcc without the CPU backend", "[cuda]") {
  // The class templates can be named for the CUDA tag (test_models_cuda.cu instantiates them). The
  // pointers are compared outside CHECK: Catch would stream them, and the argument-dependent lookup
  // of operator<< for a Mla<cuda>* instantiates Mla<cuda> (CI caught this on the first try).
  const deepseek::nn::Mla<deepseek::cuda>* mla = nullptr;
  const deepseek::models::DeepSeekV3<deepseek::cuda>* model = nullptr;
  const bool named = mla == nullptr && model == nullptr;
  CHECK(named);
}
