// Host wrappers over Ops<cpu>'s DSA indexer and plain attention (backend/cpu/indexer.hpp,
// indexer_scores.hpp, mha_attention.hpp), compiled by g++ in cpu_reference_indexer.cpp so the .cu
// tests compare with the CPU backend without Eigen in nvcc. Same arguments and layouts as the
// primitives; every pointer, and a CacheView's storage and block table, is host memory.
#pragma once

#include <deepseek/backend/params.hpp>
#include <deepseek/core/cache_view.hpp>

#include <cstdint>

namespace cpu_reference::indexer {

void indexer_keys(float* k, int64_t n, int64_t D, const float* norm_weight, const float* norm_bias, float eps,
                  int64_t p0, const deepseek::backend::RopeParams& r, bool fp8_hadamard);
void indexer_queries(float* q, int64_t n, int64_t H, int64_t D, int64_t p0, const deepseek::backend::RopeParams& r,
                     bool fp8_hadamard);
void indexer_select(const float* q, const float* w, int64_t n, int64_t p0, int64_t H, int64_t D, float scale,
                    const deepseek::CacheView& cache, int64_t col, int64_t topk, int32_t* idx, int32_t* count);
// The scores indexer_select ranks for one query (q [H, D], w [H]) over the keys of rows [0, len):
// the CPU's own indexer_scores, so a test can check the margin at the top-k cut.
void indexer_scores(const float* q, const float* w, int64_t H, int64_t D, float scale, const deepseek::CacheView& cache,
                    int64_t col, int64_t len, float* scores);
void mha_attention(const float* q, int64_t n, int64_t p0, int64_t H, int64_t G, int64_t hd, float scale,
                   const deepseek::CacheView& cache, float* o);

}  // namespace cpu_reference::indexer
