// The vocabulary every backend implements (Eigen's style: one small set of primitives, specialised
// per backend). A block in nn/ is a short orchestration of Ops<B>::name(...) calls over buffers on
// B's device; it never loops over activations itself, never calls a backend's functions or thread
// pool by name, and never reads an activation on the host. A second backend (CUDA) implements this
// list and nothing else. This header names no backend's headers: the CPU specialisation is pulled
// in below for host compilers only, so a .cu file that names nn::Mla<cuda> does not see Eigen.
//
// Conventions shared by every primitive:
//   - activations are f32 row-major [rows, cols] with a row stride (ld*, -1 = cols) on B's device;
//     weights (BlockQuantMatrix) stay in their checkpoint dtype and are dequantized in the kernel
//   - Buffer<B>: f32 scratch on B's device (Buffer(n), resize(n), data(), size()); blocks allocate
//     it per call and never index it on the host; IndexBuffer<B>: the same for int32 (routing ids,
//     DSA selections; IndexBuffer(n, v) holds n copies of v)
//   - index arrays an activation decides (routing, selections) live on B's device too; the shape
//     metadata of a call (n, positions p0, segment offsets, cache descriptors) are host values
//
// The text-model primitives, by the block that uses them (CPU: backend/cpu/backend.hpp):
//   linear, linear_rows, linear_transposed_rows       y = x W^T, whole or a row range of W (any dtype)
//   rmsnorm, add, silu_mul, softmax                    the elementwise / row-wise ops
//   vector_f32(view)                                   a norm weight or bias as f32 on the device
//   embedding(table, ids, n, out)                      rows of a [vocab, d] table in any float dtype
//   rope(x, n, heads, ...)                             RoPE at positions p0 .. p0 + n - 1 (nn/rope.hpp)
//   store_rows / load_rows (CacheView)                 write / read cache rows in the cache dtype
//   mla_expanded_attention, mla_tiled_attention,       MLA's three exact orders (nn/mla.hpp), the
//   mla_absorb / mla_unabsorb, latent_attention        absorbed one over the latent rows directly
//   indexer_* (DSA, nn/dsa.hpp)                        key prep, scores, top-k selection
//   moe_route, moe_experts (nn/moe.hpp)                routing; the shared + routed expert FFNs
//   mha_attention (nn/attention.hpp)                   plain multi-head attention over a K/V cache
//   layernorm, add_bias, gelu_erf, quick_gelu,         the vision encoder (nn/sam_vit.hpp, clip_vision.hpp, conv2d.hpp)
//   im2col_hwc, patchify_chw, vit_attention,           and DeepSeek-OCR's row layout (copy2d, repeat_row); the tables
//   resize_bicubic_aa, resize_linear, round_to_dtype   resampled per input size, rounded to the stored dtype
//   hc_mix, hc_head_mix, hc_collapse, hc_expand,      DeepSeek-V4 (backend/cpu/v4_ops.hpp; CPU only so far): mHC
//   v4_compress, v4_attention, v4_indexer_select,      weights and stream mixing, the compressor, sink attention over
//   v4_route, v4_moe_experts                           window + compressed keys, the indexer, routing, clamped SwiGLU
//   all_finite(x, n)                                   the models' NaN / Inf check (a host bool)
//   argmax(x, n)                                       greedy decoding's id (a host int; ties: the lowest index)
//   top_logits(x, n, k, values, ids), softmax_sum,     sampling without the logits row on the host: the k largest
//   sample_softmax(x, n, inv_t, u)                     (host arrays), top-p's denominator, one temperature draw
//                                                      (backend/cpu/sampling.hpp states the contract)
//   download(x, n, host), upload(host, n, x)           f32 / int32 values between B's device and host memory
//                                                      (logits to sample, an error's first bad value; image pixels)
#pragma once

#include "deepseek/backend/params.hpp"

#include <cstdint>
#include <vector>

namespace deepseek::backend {

template <class B>
struct Ops;  // specialised by each backend; an unsupported backend fails to compile where it is named

// f32 scratch on B's device.
template <class B>
using Buffer = typename Ops<B>::Buffer;
// int32 scratch on B's device.
template <class B>
using IndexBuffer = typename Ops<B>::IndexBuffer;

}  // namespace deepseek::backend

#if !defined(__CUDACC__)
#include "deepseek/backend/cpu/backend.hpp"
#endif
