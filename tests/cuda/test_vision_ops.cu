// The vision primitives of the CUDA backend (backend/cuda/vision_ops.cuh) against Ops<cpu> on the
// same random inputs (cpu_reference_vision.cpp runs the CPU side, compiled by g++). Shapes are odd on
// purpose: partial pixel ranges, grids that are not a multiple of the window (padded regions), head
// dims that do not fill a warp's lanes, query and key counts that leave partial tiles.
// Tolerances: the copies are exact (==). Attention sums in another order than Eigen's products and
// uses the device's expf: 1e-5 relative (|a - b| / max(1, |b|)). The resamplers build the same f32
// tap tables with the same roundings and sum in the CPU's order: 1e-6 (in practice equal or an ulp).
// Without a GPU (CI) each case warns and returns.
#include "cuda_test_util.hpp"
#include "cpu_reference_vision.hpp"

#include <deepseek/backend/cuda/vision_ops.cuh>
#include <deepseek/cuda.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace {

using namespace deepseek::cuda_test;

namespace dc = deepseek::backend::cuda;
namespace ref = cpu_reference::vision;


// An output buffer full of NaN: a value the kernel fails to write cannot pass a comparison.
dc::Buffer poisoned(size_t n) {
  dc::Buffer b(n);
  dc::fill(b.data(), int64_t(n), std::numeric_limits<float>::quiet_NaN());
  return b;
}
// max |a - b| / max(1, |b|); NaN (an unwritten or non-finite output) counts as infinite.

}  // namespace

TEST_CASE("cuda im2col_hwc and patchify_chw copy exactly what the CPU copies", "[cuda][vision]") {
  if (!have_gpu()) return;
  // 7 x 9 x 5 map, 3x3 kernels: stride 2 pad 1 (Ho 4, Wo 5) over a partial pixel range, and stride 1
  // pad 1 over all pixels; 2x2 stride 1 pad 0 (no padded taps).
  const int64_t H = 7, W = 9, C = 5;
  const auto x = random_vector(size_t(H * W * C), 1);
  auto dx = upload(x);
  struct Conv {
    int64_t k, stride, pad, p0, p1;
  };
  for (const Conv cv : {Conv{3, 2, 1, 3, 17}, Conv{3, 1, 1, 0, 63}, Conv{2, 1, 0, 5, 48}}) {
    const int64_t Wo = (W + 2 * cv.pad - cv.k) / cv.stride + 1, width = cv.k * cv.k * C, rows = cv.p1 - cv.p0;
    INFO("k " << cv.k << " stride " << cv.stride << " pad " << cv.pad << " pixels [" << cv.p0 << ", " << cv.p1 << ")");
    std::vector<float> want(size_t(rows * width));
    ref::im2col_hwc(x.data(), H, W, C, cv.k, cv.stride, cv.pad, Wo, cv.p0, cv.p1, want.data());
    auto dcols = poisoned(want.size());
    dc::im2col_hwc(dx.data(), H, W, C, cv.k, cv.stride, cv.pad, Wo, cv.p0, cv.p1, dcols.data());
    CHECK(download(dcols.data(), want.size()) == want);
  }

  // CHW image 3 x 12 x 20, 4 x 4 patches (3 x 5 of them).
  const int64_t Ci = 3, Hi = 12, Wi = 20, p = 4;
  const auto img = random_vector(size_t(Ci * Hi * Wi), 2);
  auto dimg = upload(img);
  std::vector<float> want(size_t((Hi / p) * (Wi / p) * Ci * p * p));
  ref::patchify_chw(img.data(), Ci, Hi, Wi, p, want.data());
  auto dcols = poisoned(want.size());
  dc::patchify_chw(dimg.data(), Ci, Hi, Wi, p, dcols.data());
  CHECK(download(dcols.data(), want.size()) == want);
}

TEST_CASE("cuda vit_attention equals the CPU's windowed / global attention with relative positions", "[cuda][vision]") {
  if (!have_gpu()) return;
  struct Case {
    int64_t H, W, heads, hd, window;
    bool tables;
  };
  // 7 x 9 global and in 5 x 5 windows (padded to 10 x 10: pads in 3 of the 4 regions), heads 3, hd 8;
  // SAM-like 20 x 20 in 14 x 14 windows (196 tokens: partial query blocks and key tiles) and 16 x 16
  // global at hd 64; CLIP-like 1 x 77 without tables at hd 40 (lanes with one and two dims).
  const Case cases[] = {{7, 9, 3, 8, 0, true},    {7, 9, 3, 8, 5, true},    {20, 20, 2, 64, 14, true},
                        {16, 16, 2, 64, 0, true}, {1, 77, 2, 40, 0, false}, {7, 9, 3, 8, 5, false}};
  uint32_t seed = 10;
  for (const Case& cs : cases) {
    INFO("grid " << cs.H << " x " << cs.W << " heads " << cs.heads << " hd " << cs.hd << " window " << cs.window
                 << (cs.tables ? " with" : " without") << " rel-pos tables");
    const int64_t C = cs.heads * cs.hd, N = cs.H * cs.W;
    const int64_t rh = cs.window > 0 ? cs.window : cs.H, rw = cs.window > 0 ? cs.window : cs.W;
    const auto qkv = random_vector(size_t(N * 3 * C), seed++);
    const auto pad = random_vector(size_t(3 * C), seed++, -0.5f, 0.5f);
    const auto rel_h = random_vector(size_t((2 * rh - 1) * cs.hd), seed++, -0.5f, 0.5f);
    const auto rel_w = random_vector(size_t((2 * rw - 1) * cs.hd), seed++, -0.5f, 0.5f);
    const float scale = 1.0f / std::sqrt(float(cs.hd));
    const bool padded = cs.window > 0 && (cs.H % cs.window != 0 || cs.W % cs.window != 0);

    std::vector<float> want(size_t(N * C));
    ref::vit_attention(qkv.data(), cs.H, cs.W, cs.heads, cs.hd, cs.window, padded ? pad.data() : nullptr,
                       cs.tables ? rel_h.data() : nullptr, cs.tables ? rel_w.data() : nullptr, scale, want.data());
    auto dqkv = upload(qkv), dpad = upload(pad), drh = upload(rel_h), drw = upload(rel_w);
    auto dout = poisoned(want.size());
    dc::vit_attention(dqkv.data(), cs.H, cs.W, cs.heads, cs.hd, cs.window, padded ? dpad.data() : nullptr,
                      cs.tables ? drh.data() : nullptr, cs.tables ? drw.data() : nullptr, scale, dout.data());
    CHECK(max_rel(download(dout.data(), want.size()), want) < 1e-5);
  }
}

TEST_CASE("cuda resize_bicubic_aa and resize_linear equal the CPU resamplers", "[cuda][vision]") {
  if (!have_gpu()) return;
  struct Resize {
    int64_t h_in, w_in, C, h_out, w_out;
  };
  // Down (antialiased: widened support), up, mixed, and a position-table-like 16 x 16 x 40 grid.
  const Resize cases[] = {
      {11, 13, 3, 5, 6}, {7, 5, 3, 16, 11}, {9, 20, 3, 14, 7}, {16, 16, 40, 10, 10}, {16, 16, 40, 23, 23}};
  uint32_t seed = 40;
  for (const Resize& r : cases) {
    INFO(r.h_in << " x " << r.w_in << " x " << r.C << " -> " << r.h_out << " x " << r.w_out);
    const auto x = random_vector(size_t(r.h_in * r.w_in * r.C), seed++);
    std::vector<float> want(size_t(r.h_out * r.w_out * r.C));
    ref::resize_bicubic_aa(x.data(), r.h_in, r.w_in, r.C, r.h_out, r.w_out, want.data());
    auto dx = upload(x);
    auto dy = poisoned(want.size());
    dc::resize_bicubic_aa(dx.data(), r.h_in, r.w_in, r.C, r.h_out, r.w_out, dy.data());
    CHECK(max_rel(download(dy.data(), want.size()), want) < 1e-6);
  }

  struct Linear {
    int64_t L, C, M;
  };
  // SAM's rel-pos tables: 127 -> 39 (a 20 x 20 grid's global block), 127 -> 159; and small odd ones.
  for (const Linear ln :
       {Linear{27, 8, 13}, Linear{27, 8, 63}, Linear{127, 64, 39}, Linear{127, 64, 159}, Linear{1, 5, 3}}) {
    INFO("L " << ln.L << " -> M " << ln.M << ", C " << ln.C);
    const auto x = random_vector(size_t(ln.L * ln.C), seed++);
    std::vector<float> want(size_t(ln.M * ln.C));
    ref::resize_linear(x.data(), ln.L, ln.C, ln.M, want.data());
    auto dx = upload(x);
    auto dy = poisoned(want.size());
    dc::resize_linear(dx.data(), ln.L, ln.C, ln.M, dy.data());
    CHECK(max_rel(download(dy.data(), want.size()), want) < 1e-6);
  }
}
