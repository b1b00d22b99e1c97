// The CPU backend's MLA attention primitives (Ops<cpu>, backend/cpu/mla.hpp) behind plain
// declarations, so test_mla.cu (nvcc) can call them without seeing Eigen: cpu_reference_mla.cpp
// (g++) forwards each to Ops<cpu>. Every pointer is host memory, the CacheView's storage and block
// table included; the arguments mean what they mean there.
#pragma once

#include "deepseek/backend/params.hpp"
#include "deepseek/core/block_quant.hpp"
#include "deepseek/core/cache_view.hpp"

#include <cstdint>

namespace cpu_reference {

void mla_absorb(const deepseek::BlockQuantMatrix& kv_b_proj, const deepseek::backend::MlaDims& m, const float* q,
                int64_t n, float* qa);
void mla_unabsorb(const deepseek::BlockQuantMatrix& kv_b_proj, const deepseek::backend::MlaDims& m, const float* ot,
                  int64_t n, float* o);
void mla_latent_attention(const deepseek::backend::MlaDims& m, float scale, const float* qa, int64_t n, int64_t p0,
                          const deepseek::CacheView& cache, const int32_t* sel_idx, const int32_t* sel_count,
                          int64_t sel_k, bool bf16_products, float* ot);
void mla_expanded_attention(const deepseek::BlockQuantMatrix& kv_b_proj, const deepseek::backend::MlaDims& m,
                            float scale, const float* q, int64_t n, int64_t p0, const deepseek::CacheView& cache,
                            const int32_t* sel_idx, const int32_t* sel_count, int64_t sel_k, float* o);
void mla_tiled_attention(const deepseek::BlockQuantMatrix& kv_b_proj, const deepseek::backend::MlaDims& m, float scale,
                         const float* q, int64_t n, int64_t p0, const deepseek::CacheView& cache, float* o);

}  // namespace cpu_reference
