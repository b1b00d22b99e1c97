// Ops<cpu>'s MLA attention primitives on host arrays (declared in cpu_reference_mla.hpp), compiled
// by the host compiler: the references test_mla.cu compares the CUDA primitives with.
#include "cpu_reference_mla.hpp"

#include <deepseek/backend/ops.hpp>
#include <deepseek/core/device.hpp>

namespace cpu_reference {

using Ops = deepseek::backend::Ops<deepseek::cpu>;
using deepseek::BlockQuantMatrix;
using deepseek::CacheView;
using deepseek::backend::MlaDims;

void mla_absorb(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, const float* q, int64_t n, float* qa) {
  Ops::mla_absorb(kv_b_proj, m, q, n, qa);
}
void mla_unabsorb(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, const float* ot, int64_t n, float* o) {
  Ops::mla_unabsorb(kv_b_proj, m, ot, n, o);
}
void mla_latent_attention(const MlaDims& m, float scale, const float* qa, int64_t n, int64_t p0, const CacheView& cache,
                          const int32_t* sel_idx, const int32_t* sel_count, int64_t sel_k, bool bf16_products,
                          float* ot) {
  Ops::mla_latent_attention(m, scale, qa, n, p0, cache, sel_idx, sel_count, sel_k, bf16_products, ot);
}
void mla_expanded_attention(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, float scale, const float* q, int64_t n,
                            int64_t p0, const CacheView& cache, const int32_t* sel_idx, const int32_t* sel_count,
                            int64_t sel_k, float* o) {
  Ops::mla_expanded_attention(kv_b_proj, m, scale, q, n, p0, cache, sel_idx, sel_count, sel_k, o);
}
void mla_tiled_attention(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, float scale, const float* q, int64_t n,
                         int64_t p0, const CacheView& cache, float* o) {
  Ops::mla_tiled_attention(kv_b_proj, m, scale, q, n, p0, cache, o);
}

}  // namespace cpu_reference
