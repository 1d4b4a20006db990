// src/kernels/gemm.hpp — C = alpha * op(A) * op(B) + beta * C, row-major, through CBLAS.
#pragma once

#include <cstdint>
#include <string>

namespace bnorm::kernels {

struct GemmDims {
  std::int64_t m, n, k;  // op(A) is m x k, op(B) is k x n, C is m x n
};

// Row-major; lda/ldb/ldc are the row strides of the stored (untransposed) matrices.
void gemm(GemmDims dims, bool transpose_a, bool transpose_b, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
          std::int64_t ldc) noexcept;

// gemm with beta = 0 and alpha = 1, split by bnorm into fixed blocks of C's rows
// (gemm_row_blocks) or columns (gemm_column_blocks), one single-threaded BLAS call per block,
// blocks in parallel_for: at most 8 blocks of at least 64 rows/columns. Block sizes depend on the
// shapes only, so the bits do not depend on the thread count (the BLAS itself is pinned to one
// thread for that reason); products smaller than about a million multiply-adds are one call.
void gemm_row_blocks(GemmDims dims, bool transpose_a, bool transpose_b, const float* a,
                     std::int64_t lda, const float* b, std::int64_t ldb, float* c,
                     std::int64_t ldc) noexcept;
void gemm_column_blocks(GemmDims dims, bool transpose_a, bool transpose_b, const float* a,
                        std::int64_t lda, const float* b, std::int64_t ldb, float* c,
                        std::int64_t ldc) noexcept;

// The BLAS bnorm was configured with (CMake BNORM_BLAS): "OpenBLAS", "MKL", "BLIS" or "Generic".
const char* blas_name() noexcept;
// The kernel set OpenBLAS chose when it loaded ("Haswell", "SkylakeX", "Cooperlake", ...): its
// pick for this CPU, or what OPENBLAS_CORETYPE forced. Empty for the other libraries.
std::string blas_core();

// Triple loop with float64 accumulation: the specification gemm is tested against.
namespace reference {
void gemm(GemmDims dims, bool transpose_a, bool transpose_b, float alpha, const float* a,
          std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
          std::int64_t ldc) noexcept;
}

// out[r, c] += bias[c] for a rows x cols matrix.
void add_row_bias(std::int64_t rows, std::int64_t cols, const float* bias, float* out) noexcept;
// sums[c] = sum over rows of m[r, c] (float64 accumulation).
void sum_rows(std::int64_t rows, std::int64_t cols, const float* m, float* sums) noexcept;

}  // namespace bnorm::kernels
