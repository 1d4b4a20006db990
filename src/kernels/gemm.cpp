#include "kernels/gemm.hpp"

#include "bnorm/core/parallel.hpp"

// BNORM_BLAS (CMake) selects the library and defines BNORM_BLAS_<NAME> for this file only.
#if defined(BNORM_BLAS_MKL)
#include <mkl_cblas.h>
#elif defined(BNORM_BLAS_BLIS)
#include <blis.h>
#include <cblas.h>
#else
#include <cblas.h>
#endif

#include <algorithm>

#ifndef BNORM_BLAS_NAME
#define BNORM_BLAS_NAME "OpenBLAS"
#define BNORM_BLAS_OPENBLAS
#endif

#if defined(BNORM_BLAS_OPENBLAS)
extern "C" char* openblas_get_corename(void);
#endif

#if defined(BNORM_BLAS_GENERIC)
// Generic links whatever CBLAS FindBLAS found (Debian's libblas.so.3 may even be OpenBLAS or
// BLIS). Weak references: null unless the loaded library defines them.
extern "C" {
void openblas_set_num_threads(int) __attribute__((weak));
void bli_thread_set_num_threads(std::int64_t) __attribute__((weak));
}
#endif

namespace bnorm::kernels {

namespace {
// Threaded BLAS libraries split the work differently for different thread counts, and the sums
// come out in a different order: results would depend on --threads. bnorm keeps BLAS on one
// thread so that a seed gives the same bits at any thread count (DESIGN convention 7); bnorm's
// own kernels use parallel_for with fixed chunks instead. MKL is linked sequential (one thread by
// construction). A Generic library that is none of these follows its own settings
// (e.g. OMP_NUM_THREADS=1): see docs/architecture.md.
void pin_blas_to_one_thread() {
  static const bool pinned = [] {
#if defined(BNORM_BLAS_OPENBLAS)
    openblas_set_num_threads(1);
#elif defined(BNORM_BLAS_BLIS)
    bli_thread_set_num_threads(1);
#elif defined(BNORM_BLAS_GENERIC)
    if (openblas_set_num_threads) openblas_set_num_threads(1);
    if (bli_thread_set_num_threads) bli_thread_set_num_threads(1);
#endif
    return true;
  }();
  (void)pinned;
}
}  // namespace

const char* blas_name() noexcept { return BNORM_BLAS_NAME; }

std::string blas_core() {
#if defined(BNORM_BLAS_OPENBLAS)
  const char* core = openblas_get_corename();
  return core ? core : "";
#else
  return "";
#endif
}

void gemm(GemmDims d, bool transpose_a, bool transpose_b, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
          std::int64_t ldc) noexcept {
  if (d.m == 0 || d.n == 0) return;
  pin_blas_to_one_thread();
  // Every vendor's integer type (int, MKL_INT, f77_int, blasint) takes an int: dims < 2^31.
  const auto i = [](std::int64_t v) { return static_cast<int>(v); };
  cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
              transpose_b ? CblasTrans : CblasNoTrans, i(d.m), i(d.n), i(d.k), alpha, a, i(lda), b,
              i(ldb), beta, c, i(ldc));
}

namespace {
constexpr std::int64_t kMinSplitWork = std::int64_t{1} << 20;  // multiply-adds
// At most kBlocks blocks of at least kMinBlock rows or columns (multiples of 16): enough blocks
// to share among a few threads, few enough that one thread pays little for the extra calls.
constexpr std::int64_t kBlocks = 8, kMinBlock = 64;
std::int64_t block_of(std::int64_t extent, std::int64_t work) {
  if (work < kMinSplitWork) return extent;
  const std::int64_t even = ((extent + kBlocks - 1) / kBlocks + 15) / 16 * 16;
  return std::max(kMinBlock, even);
}
}  // namespace

void gemm_row_blocks(GemmDims d, bool transpose_a, bool transpose_b, const float* a,
                     std::int64_t lda, const float* b, std::int64_t ldb, float* c,
                     std::int64_t ldc) noexcept {
  const std::int64_t grain = block_of(d.m, d.m * d.n * d.k);
  parallel_for(d.m, grain, [&](std::int64_t m0, std::int64_t m1) {
    // Rows m0.. of op(A): columns of the stored A when transposed.
    const float* a0 = transpose_a ? a + m0 : a + m0 * lda;
    gemm({m1 - m0, d.n, d.k}, transpose_a, transpose_b, 1.0f, a0, lda, b, ldb, 0.0f, c + m0 * ldc,
         ldc);
  });
}

void gemm_column_blocks(GemmDims d, bool transpose_a, bool transpose_b, const float* a,
                        std::int64_t lda, const float* b, std::int64_t ldb, float* c,
                        std::int64_t ldc) noexcept {
  const std::int64_t grain = block_of(d.n, d.m * d.n * d.k);
  parallel_for(d.n, grain, [&](std::int64_t n0, std::int64_t n1) {
    // Columns n0.. of op(B): rows of the stored B when transposed.
    const float* b0 = transpose_b ? b + n0 * ldb : b + n0;
    gemm({d.m, n1 - n0, d.k}, transpose_a, transpose_b, 1.0f, a, lda, b0, ldb, 0.0f, c + n0, ldc);
  });
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
