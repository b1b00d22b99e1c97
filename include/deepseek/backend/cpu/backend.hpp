// The CPU backend's primitive ops under the names every backend shares (Eigen's style: one small
// vocabulary, specialised per backend). Blocks in nn/ call Ops<B>::name(...).
#pragma once

#include "deepseek/backend/cpu/linear.hpp"
#include "deepseek/backend/cpu/ops.hpp"
#include "deepseek/core/device.hpp"

namespace deepseek::backend {

template <class B>
struct Ops;  // specialised by each backend; an unsupported backend fails to compile here

template <>
struct Ops<::deepseek::cpu> {
  static void linear(const BlockQuantMatrix& W, const float* x, int64_t n, float* y, int64_t ldx = -1, int64_t ldy = -1) {
    cpu::linear(W, x, n, y, ldx, ldy);
  }
  static void linear_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
                          int64_t ldx = -1, int64_t ldy = -1) {
    cpu::linear_rows(W, r0, r1, x, n, y, ldx, ldy);
  }
  static void linear_transposed_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n,
                                     float* y, int64_t ldx = -1, int64_t ldy = -1) {
    cpu::linear_transposed_rows(W, r0, r1, x, n, y, ldx, ldy);
  }
  static void rmsnorm(const float* x, int64_t n, int64_t d, const float* w, float eps, float* y, int64_t ldx = -1,
                      int64_t ldy = -1) {
    cpu::rmsnorm(x, n, d, w, eps, y, ldx, ldy);
  }
  static void silu_mul(float* g, const float* u, int64_t n) { cpu::silu_mul(g, u, n); }
  static void softmax(float* x, int64_t n) { cpu::softmax(x, n); }
  static float dot(const float* a, const float* b, int64_t n) { return cpu::dot(a, b, n); }
  static void axpy(float a, const float* x, float* y, int64_t n) { cpu::axpy(a, x, y, n); }
};

}  // namespace deepseek::backend
