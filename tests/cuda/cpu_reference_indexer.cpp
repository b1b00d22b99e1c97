// Ops<cpu>'s DSA indexer and plain attention on host arrays (cpu_reference_indexer.hpp).
#include "cpu_reference_indexer.hpp"

#include <deepseek/deepseek.hpp>

#include <vector>

namespace cpu_reference::indexer {

using Ops = deepseek::backend::Ops<deepseek::cpu>;

void indexer_keys(float* k, int64_t n, int64_t D, const float* norm_weight, const float* norm_bias, float eps,
                  int64_t p0, const deepseek::backend::RopeParams& r, bool fp8_hadamard) {
  Ops::indexer_keys(k, n, D, norm_weight, norm_bias, eps, p0, r, fp8_hadamard);
}
void indexer_queries(float* q, int64_t n, int64_t H, int64_t D, int64_t p0, const deepseek::backend::RopeParams& r,
                     bool fp8_hadamard) {
  Ops::indexer_queries(q, n, H, D, p0, r, fp8_hadamard);
}
void indexer_select(const float* q, const float* w, int64_t n, int64_t p0, int64_t H, int64_t D, float scale,
                    const deepseek::CacheView& cache, int64_t col, int64_t topk, int32_t* idx, int32_t* count) {
  Ops::indexer_select(q, w, n, p0, H, D, scale, cache, col, topk, idx, count);
}
void indexer_scores(const float* q, const float* w, int64_t H, int64_t D, float scale, const deepseek::CacheView& cache,
                    int64_t col, int64_t len, float* scores) {
  namespace cpu = deepseek::backend::cpu;
  // The key format and addresses exactly as cpu::indexer_select derives them.
  const cpu::KeyFormat fmt = cache.dtype == deepseek::CacheDType::f32 ? cpu::KeyFormat::f32
                             : cache.index_fp8 > 0                    ? cpu::KeyFormat::fp8
                                                                      : cpu::KeyFormat::bf16;
  std::vector<const void*> keys;
  for (int64_t t = 0; t < len; ++t) keys.push_back(cache.values_at(t, col));
  cpu::indexer_scores(q, w, H, D, scale, keys.data(), fmt, len, scores);
}
void mha_attention(const float* q, int64_t n, int64_t p0, int64_t H, int64_t G, int64_t hd, float scale,
                   const deepseek::CacheView& cache, float* o) {
  Ops::mha_attention(q, n, p0, H, G, hd, scale, cache, o);
}

}  // namespace cpu_reference::indexer
