// DeepSeek-V4's KV compressor and lightning indexer (V4_NOTES §6). Per token t of the attention
// input x [d]: a_t = x . wkv^T, z_t = x . wgate^T + ape[t mod m], each [coff Dc]. Block w = tokens
// w m .. w m + m - 1; only complete blocks emit an entry, per channel:
//   HCA (coff 1):            C_w = sum_{r<m} softmax_r(z_{wm+r}) a_{wm+r}
//   CSA (coff 2, overlap):   the softmax runs over 2m slots, the first halves [:Dc] of block w - 1
//                            and the second halves [Dc:] of block w (block -1 absent)
//   C_w = RoPE(rms(C_w; norm), position w m) on the trailing rd channels (compress rope)
// Query t may use entry w only when w < (t + 1) / m (the token that closes a block sees it).
// Indexer (CSA; m = 4): keys K_w = the CSA compressor at width c over its own weights; queries
// qI = RoPE((qr . wq_b^T).view(nI, c), t) with qr the attention's q_norm output; head weights
// omega = (x . weights_proj^T) nI^-1/2; score(t, w) = sum_h omega_h ReLU(qI_h . K_w) c^-1/2; the
// attention then reads the top index_topk visible entries (all of them when fewer).
// Tensors under "layers.N.attn.": compressor.{wkv,wgate}.weight [coff D, d], compressor.ape [m, coff D],
// compressor.norm.weight [D]; indexer.compressor.* the same at width c (coff 2, ape [4, 2c]),
// indexer.wq_b.weight [nI c, q_lora], indexer.weights_proj.weight [nI, d].
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/nn/v4_weights.hpp"

#include <cmath>
#include <string>

namespace deepseek::nn {

// What a compressor carries from one call to the next (V4_NOTES §10): the projected rows a, z
// (z with ape) of the open block, preceded in CSA by the last complete block's rows (its first
// halves feed the next entry), and every entry emitted so far.
template <class B>
struct V4CompressorState {
  backend::Buffer<B> a, z;  // [rows, coff Dc], rows = positions start .. (cache length - 1)
  int64_t start = 0;
  backend::Buffer<B> entries;  // [count, Dc], after norm + RoPE
  int64_t count = 0;
};

template <class B>
class V4Compressor {
 public:
  using Ops = backend::Ops<B>;
  V4Compressor() = default;
  V4Compressor(const io::Weights& w, int64_t d, int64_t Dc, int64_t m, bool overlap, float eps,
               const backend::RopeParams& rope)
      : Dc_(Dc),
        m_(m),
        width_((overlap ? 2 : 1) * Dc),
        overlap_(overlap),
        eps_(eps),
        rope_(rope),
        wkv_(v4_matrix(w, "wkv", width_, d)),
        wgate_(v4_matrix(w, "wgate", width_, d)),
        ape_(Ops::vector_f32(w.get("ape", Shape{m, width_}, {DType::f32, DType::bf16}))),
        norm_(Ops::vector_f32(w.get("norm.weight", Shape{Dc}, {DType::f32, DType::bf16}))) {}

  int64_t ratio() const { return m_; }
  int64_t width() const { return Dc_; }

  // Feeds the attention inputs x [n, d] of positions p0 .. p0 + n - 1 (p0 = tokens already fed)
  // and appends the entries of every block they complete.
  void update(const float* x, int64_t n, int64_t p0, V4CompressorState<B>& st) const {
    const int64_t held = p0 - st.start, rows = held + n, W = width_;
    backend::Buffer<B> a(size_t(rows * W)), z(size_t(rows * W));
    Ops::copy2d(st.a.data(), W, a.data(), W, held, W);
    Ops::copy2d(st.z.data(), W, z.data(), W, held, W);
    Ops::linear(wkv_, x, n, a.data() + held * W);
    float* zn = z.data() + held * W;
    Ops::linear(wgate_, x, n, zn);
    for (int64_t r = 0; r < std::min(m_, n); ++r)  // ape row (p0 + i) mod m for rows i = r, r + m, ...
      Ops::add_bias(zn + r * W, (n - r + m_ - 1) / m_, W, ape_.data() + ((p0 + r) % m_) * W, m_ * W);
    const int64_t count = (p0 + n) / m_;
    if (count > st.count) {
      const int64_t off = st.count * m_ - st.start, nb = count - st.count;
      st.entries.resize(size_t(count * Dc_));
      Ops::v4_compress(a.data() + off * W, z.data() + off * W, W, st.count, nb, m_, Dc_, overlap_, norm_.data(), eps_,
                       rope_, st.entries.data() + st.count * Dc_);
      st.count = count;
    }
    const int64_t start = overlap_ && count > 0 ? (count - 1) * m_ : count * m_, keep = p0 + n - start;
    st.a.resize(size_t(keep * W));
    st.z.resize(size_t(keep * W));
    Ops::copy2d(a.data() + (start - st.start) * W, W, st.a.data(), W, keep, W);
    Ops::copy2d(z.data() + (start - st.start) * W, W, st.z.data(), W, keep, W);
    st.start = start;
  }

 private:
  int64_t Dc_ = 0, m_ = 0, width_ = 0;
  bool overlap_ = false;
  float eps_ = 0;
  backend::RopeParams rope_;
  BlockQuantMatrix wkv_, wgate_;
  backend::Buffer<B> ape_, norm_;
};

template <class B>
class V4Indexer {
 public:
  using Ops = backend::Ops<B>;
  V4Indexer() = default;
  V4Indexer(const io::Weights& w, int64_t d, int64_t q_lora, int nI, int64_t c, int64_t topk, int64_t m, float eps,
            const backend::RopeParams& rope)
      : nI_(nI),
        c_(c),
        topk_(topk),
        rope_(rope),
        compressor_(w.sub("compressor"), d, c, m, true, eps, rope),
        wq_b_(v4_matrix(w, "wq_b", nI * c, q_lora)),
        weights_proj_(v4_matrix(w, "weights_proj", nI, d)) {}

  int64_t topk() const { return topk_; }

  // Feeds x [n, d] to its compressor, then picks for each query row its entries: idx [n, topk]
  // (ascending, -1 padded), count [n]. qr [n, q_lora]: the attention's q_norm output.
  void select(const float* qr, const float* x, int64_t n, int64_t p0, V4CompressorState<B>& st, int32_t* idx,
              int32_t* count) const {
    compressor_.update(x, n, p0, st);
    backend::Buffer<B> q(size_t(n * nI_ * c_)), wt(size_t(n * nI_));
    Ops::linear(wq_b_, qr, n, q.data());
    Ops::rope(q.data() + c_ - rope_.dim, n, nI_, nI_ * c_, c_, p0, rope_);
    Ops::linear(weights_proj_, x, n, wt.data());
    Ops::scale(wt.data(), n * nI_, float(1.0 / std::sqrt(double(nI_))));
    Ops::v4_indexer_select(q.data(), wt.data(), n, p0, nI_, c_, float(1.0 / std::sqrt(double(c_))), st.entries.data(),
                           compressor_.ratio(), topk_, idx, count);
  }

 private:
  int nI_ = 0;
  int64_t c_ = 0, topk_ = 0;
  backend::RopeParams rope_;
  V4Compressor<B> compressor_;
  BlockQuantMatrix wq_b_, weights_proj_;
};

}  // namespace deepseek::nn
