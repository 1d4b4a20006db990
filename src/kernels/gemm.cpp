#include "kernels/gemm.hpp"

#include <cblas.h>

#include <algorithm>

namespace bnorm::kernels {

namespace {
// OpenBLAS splits work differently for different thread counts, and the sums come out in a
// different order: results would depend on --threads. bnorm keeps BLAS on one thread so that a
// seed gives the same bits at any thread count (DESIGN convention 7); bnorm's own kernels use
// parallel_for with fixed chunks instead.
void pin_blas_to_one_thread() {
  static const bool pinned = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)pinned;
}
}  // namespace

void gemm(GemmDims d, bool transpose_a, bool transpose_b, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
          std::int64_t ldc) noexcept {
  if (d.m == 0 || d.n == 0) return;
  pin_blas_to_one_thread();
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
              transpose_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(d.m),
              static_cast<blasint>(d.n), static_cast<blasint>(d.k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

namespace reference {
void gemm(GemmDims d, bool transpose_a, bool transpose_b, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
          std::int64_t ldc) noexcept {
  for (std::int64_t i = 0; i < d.m; ++i) {
    for (std::int64_t j = 0; j < d.n; ++j) {
      double acc = 0.0;
      for (std::int64_t p = 0; p < d.k; ++p) {
        const double av = transpose_a ? a[p * lda + i] : a[i * lda + p];
        const double bv = transpose_b ? b[j * ldb + p] : b[p * ldb + j];
        acc += av * bv;
      }
      float& out = c[i * ldc + j];
      // beta == 0 overwrites (BLAS semantics: C is not read, so NaN in C does not propagate).
      out =
          static_cast<float>(alpha * acc + (beta == 0.0f ? 0.0 : beta * static_cast<double>(out)));
    }
  }
}
}  // namespace reference

void add_row_bias(std::int64_t rows, std::int64_t cols, const float* bias, float* out) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* o = out + r * cols;
    for (std::int64_t c = 0; c < cols; ++c) o[c] += bias[c];
  }
}

void sum_rows(std::int64_t rows, std::int64_t cols, const float* m, float* sums) noexcept {
  constexpr std::int64_t kBlock = 256;
  for (std::int64_t c0 = 0; c0 < cols; c0 += kBlock) {
    const std::int64_t nc = std::min(kBlock, cols - c0);
    double acc[kBlock] = {};
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* row = m + r * cols + c0;
      for (std::int64_t j = 0; j < nc; ++j) acc[j] += row[j];
    }
    for (std::int64_t j = 0; j < nc; ++j) sums[c0 + j] = static_cast<float>(acc[j]);
  }
}

}  // namespace bnorm::kernels
