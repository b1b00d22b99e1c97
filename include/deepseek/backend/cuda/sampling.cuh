// The sampler's passes over a logits row on the GPU (backend/cpu/sampling.hpp states the contract
// and holds the reference): the row [vocab] stays on the device; the host gets k candidates, a
// double or an id. With inv_t = 1 / temperature and m = max_i x[i] * inv_t:
//
//   top_logits       one block: the radix select of the DSA indexer (indexer.cuh's indexer_topk:
//                    the k largest, ties to the lower id, the CPU's set), a gather of their
//                    values, then the k pairs sorted on the host (descending, ties by id)
//   softmax_sum      one block: m by a max reduction, Z = sum_i exp(x[i] inv_t - m) in double
//   sample_softmax   one block: m and Z as above, then p_i = f32(exp(x[i] inv_t - m) / Z) a
//                    block-wide chunk at a time, an inclusive prefix sum P_i in double, and the
//                    first i with u - P_i < 0 (else the last id with p_i > 0)
//
// One block is enough: a row is V3's 129,280 floats (517 KB), read once or twice per sampled
// token; the point is the copy and the host pass it saves. Sums run in a tree, not in id order, so
// Z and P_i differ from the CPU's in the last bits: a draw differs only where u (or top-p's cut)
// lies within double rounding of a boundary.
#pragma once

#include "deepseek/backend/cuda/buffer.cuh"
#include "deepseek/backend/cuda/elementwise.cuh"
#include "deepseek/backend/cuda/indexer.cuh"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

namespace deepseek::backend::cuda {

namespace kernels {

struct SampleTraits {
  static constexpr int kThreads = 1024;  // one block per row
};

// m (scaled maximum) and Z of the row; every thread gets both.
__device__ __forceinline__ void softmax_stats(const float* x, int64_t n, float inv_t, double& m, double& z) {
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, x[i]);
  m = double(dev::block_max(mx)) * inv_t;
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += exp(double(x[i]) * inv_t - m);
  z = dev::block_sum(s);
}

static __global__ void softmax_sum_row(const float* x, int64_t n, float inv_t, double* out) {
  double m, z;
  softmax_stats(x, n, inv_t, m, z);
  if (threadIdx.x == 0) *out = z;
}

static __global__ void sample_softmax_row(const float* x, int64_t n, float inv_t, double u, int32_t* out) {
  double m, z;
  softmax_stats(x, n, inv_t, m, z);
  constexpr unsigned kNone = 0xffffffffu;
  __shared__ unsigned found;
  __shared__ int32_t last;
  if (threadIdx.x == 0) found = kNone, last = 0;
  __syncthreads();
  __shared__ double part[32];  // block_inclusive_scan's (indexer.cuh)
  double carry = 0;             // P of the ids before this chunk
  for (int64_t c0 = 0; c0 < n; c0 += blockDim.x) {
    const int64_t i = c0 + threadIdx.x;
    const float p = i < n ? float(exp(double(x[i]) * inv_t - m) / z) : 0.0f;
    double chunk;
    const double P = carry + block_inclusive_scan(p > 0 ? double(p) : 0.0, part, &chunk);
    // The lowest id of the chunk that hits wins (ids ascending); ids without mass never hit, as on the CPU.
    if (p > 0) {
      atomicMax(&last, int32_t(i));
      if (u - P < 0) atomicMin(&found, unsigned(i));
    }
    __syncthreads();
    const bool done = found != kNone;
    __syncthreads();  // every thread has read `found` before the next chunk's atomics
    if (done) break;
    carry += chunk;
  }
  if (threadIdx.x == 0) *out = found != kNone ? int32_t(found) : last;
}

// values[j] = x[ids[j]].
static __global__ void gather_values(const float* x, const int32_t* ids, int64_t k, float* values) {
  DEEPSEEK_GRID_STRIDE(j, k) values[j] = x[ids[j]];
}

}  // namespace kernels

namespace detail {
inline void check_sample_row(int64_t n, const char* what) {
  if (n <= 0 || n > int64_t(INT32_MAX)) throw Error(std::string(what) + ": row length " + std::to_string(n) + " is outside [1, 2^31)");
}
}  // namespace detail

// values[j], ids[j] (host arrays) for j < k: the k largest of x[0, n), descending, ties by lower id.
inline void top_logits(const float* x, int64_t n, int64_t k, float* values, int32_t* ids) {
  detail::check_sample_row(n, "top_logits");
  if (k <= 0 || k > n) throw Error("top_logits: k = " + std::to_string(k) + " is outside [1, " + std::to_string(n) + "]");
  IndexBuffer idx(static_cast<size_t>(k)), count(1);
  // indexer_topk's query 0 with p0 = n - 1 scores the positions [0, n): the whole row.
  DEEPSEEK_LAUNCH(indexer_topk, 1, kernels::SelectTraits::kThreads, x, n, int64_t(0), n - 1, k, idx.data(), count.data());
  Buffer vals(static_cast<size_t>(k));
  DEEPSEEK_LAUNCH(gather_values, kernels::grid_for(k), kernels::kThreads, x, idx.data(), k, vals.data());
  std::vector<int32_t> hid(static_cast<size_t>(k));
  std::vector<float> hv(static_cast<size_t>(k));
  download(idx.data(), size_t(k), hid.data());
  download(vals.data(), size_t(k), hv.data());
  std::vector<int64_t> order(static_cast<size_t>(k));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return hv[size_t(a)] > hv[size_t(b)] || (hv[size_t(a)] == hv[size_t(b)] && hid[size_t(a)] < hid[size_t(b)]);
  });
  for (int64_t j = 0; j < k; ++j) {
    values[j] = hv[size_t(order[size_t(j)])];
    ids[j] = hid[size_t(order[size_t(j)])];
  }
}

inline double softmax_sum(const float* x, int64_t n, float inv_t) {
  detail::check_sample_row(n, "softmax_sum");
  BasicBuffer<double> z(1);
  DEEPSEEK_LAUNCH(softmax_sum_row, 1, kernels::SampleTraits::kThreads, x, n, inv_t, z.data());
  double host = 0;
  download(z.data(), 1, &host);
  return host;
}

inline int32_t sample_softmax(const float* x, int64_t n, float inv_t, double u) {
  detail::check_sample_row(n, "sample_softmax");
  IndexBuffer id(1);
  DEEPSEEK_LAUNCH(sample_softmax_row, 1, kernels::SampleTraits::kThreads, x, n, inv_t, u, id.data());
  int32_t host = 0;
  download(id.data(), 1, &host);
  return host;
}

}  // namespace deepseek::backend::cuda
