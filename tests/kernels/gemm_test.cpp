// gemm (CBLAS) and reference::gemm against a float64 triple loop; bias and row-sum helpers.
#include "kernels/gemm.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "bnorm/core/parallel.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

struct GemmCase {
  std::int64_t m, n, k;
  bool ta, tb;
  float alpha, beta;
  std::int64_t pad;  // extra row stride beyond the minimum
};
void PrintTo(const GemmCase& c, std::ostream* os) {
  *os << "m" << c.m << " n" << c.n << " k" << c.k << (c.ta ? " A^T" : " A")
      << (c.tb ? " B^T" : " B") << " alpha " << c.alpha << " beta " << c.beta << " pad " << c.pad;
}

std::string gemm_name(const ::testing::TestParamInfo<GemmCase>& info) {
  const GemmCase& c = info.param;
  std::string s = "m" + std::to_string(c.m) + "n" + std::to_string(c.n) + "k" +
                  std::to_string(c.k) + (c.ta ? "_At" : "_A") + (c.tb ? "Bt" : "B") + "_pad" +
                  std::to_string(c.pad) + "_" + std::to_string(info.index);
  return s;
}

class GemmTest : public ::testing::TestWithParam<GemmCase> {};

TEST_P(GemmTest, MatchesFloat64) {
  const GemmCase c = GetParam();
  // Stored shapes (row-major): A is m x k, or k x m when transposed; B is k x n, or n x k.
  const std::int64_t a_rows = c.ta ? c.k : c.m, a_cols = c.ta ? c.m : c.k;
  const std::int64_t b_rows = c.tb ? c.n : c.k, b_cols = c.tb ? c.k : c.n;
  const std::int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.n + c.pad;
  Random rng(static_cast<std::uint64_t>(c.m * 1000 + c.n * 100 + c.k) + (c.ta ? 7 : 0) +
             (c.tb ? 13 : 0));
  std::vector<float> a(static_cast<std::size_t>(std::max<std::int64_t>(a_rows * lda, 1)));
  std::vector<float> b(static_cast<std::size_t>(std::max<std::int64_t>(b_rows * ldb, 1)));
  std::vector<float> c0(static_cast<std::size_t>(std::max<std::int64_t>(c.m * ldc, 1)));
  for (float& v : a) v = rng.uniform(-1.0f, 1.0f);
  for (float& v : b) v = rng.uniform(-1.0f, 1.0f);
  for (float& v : c0) v = rng.uniform(-1.0f, 1.0f);
  auto A = [&](std::int64_t i, std::int64_t p) -> double {
    return c.ta ? a[static_cast<std::size_t>(p * lda + i)]
                : a[static_cast<std::size_t>(i * lda + p)];
  };
  auto B = [&](std::int64_t p, std::int64_t j) -> double {
    return c.tb ? b[static_cast<std::size_t>(j * ldb + p)]
                : b[static_cast<std::size_t>(p * ldb + j)];
  };
  // Expected over the whole stored C: padding columns must stay untouched.
  std::vector<double> expected(c0.begin(), c0.end());
  for (std::int64_t i = 0; i < c.m; ++i)
    for (std::int64_t j = 0; j < c.n; ++j) {
      double s = 0.0;
      for (std::int64_t p = 0; p < c.k; ++p) s += A(i, p) * B(p, j);
      const auto idx = static_cast<std::size_t>(i * ldc + j);
      expected[idx] = c.alpha * s + static_cast<double>(c.beta) * c0[idx];
    }
  const double atol = 1e-5 * static_cast<double>(c.k + 1);
  for (int impl = 0; impl < 2; ++impl) {
    SCOPED_TRACE(impl == 0 ? "gemm" : "reference::gemm");
    std::vector<float> out = c0;
    auto fn = impl == 0 ? &kernels::gemm : &kernels::reference::gemm;
    fn({c.m, c.n, c.k}, c.ta, c.tb, c.alpha, a.data(), lda, b.data(), ldb, c.beta, out.data(), ldc);
    test::expect_close(out, expected, 1e-5, atol);
  }
}

std::vector<GemmCase> gemm_cases() {
  std::vector<GemmCase> cases;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      cases.push_back({1, 1, 1, ta, tb, 1.0f, 0.0f, 0});
      cases.push_back({7, 5, 3, ta, tb, 1.0f, 0.0f, 0});
      cases.push_back({33, 17, 65, ta, tb, 1.0f, 0.0f, 0});
      cases.push_back({32, 64, 784, ta, tb, 1.0f, 0.0f, 0});
      cases.push_back({13, 11, 9, ta, tb, 0.5f, 1.0f, 0});
      cases.push_back({6, 10, 4, ta, tb, -2.0f, 0.25f, 3});
      cases.push_back({1, 129, 3, ta, tb, 1.0f, 1.0f, 1});
    }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemmTest, ::testing::ValuesIn(gemm_cases()), gemm_name);

// The blocked GEMMs (Dense's forward and backward) against one BLAS call's float64 reference,
// with every transpose, and with the same bits at 1, 2 and 3 threads.
TEST(Gemm, RowAndColumnBlocksMatchFloat64AndDoNotDependOnThreads) {
  Random rng(5);
  const std::int64_t m = 70, n = 100, k = 300;  // above the split threshold, ragged last blocks
  const int saved = num_threads();
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const Tensor a = test::random_uniform(ta ? Shape{k, m} : Shape{m, k}, rng);
      const Tensor b = test::random_uniform(tb ? Shape{n, k} : Shape{k, n}, rng);
      const std::int64_t lda = ta ? m : k, ldb = tb ? k : n;
      Tensor expect(Shape{m, n});
      kernels::reference::gemm({m, n, k}, ta, tb, 1.0f, a.data(), lda, b.data(), ldb, 0.0f,
                               expect.data(), n);
      std::vector<Tensor> rows, cols;
      for (int threads : {1, 2, 3}) {
        set_num_threads(threads);
        Tensor r(Shape{m, n}), c(Shape{m, n});
        kernels::gemm_row_blocks({m, n, k}, ta, tb, a.data(), lda, b.data(), ldb, r.data(), n);
        kernels::gemm_column_blocks({m, n, k}, ta, tb, a.data(), lda, b.data(), ldb, c.data(), n);
        test::expect_close(r, expect, 1e-5, 1e-5);
        test::expect_close(c, expect, 1e-5, 1e-5);
        rows.push_back(r);
        cols.push_back(c);
      }
      for (std::size_t i = 1; i < rows.size(); ++i) {
        EXPECT_TRUE(test::bitwise_equal(rows[i], rows[0])) << ta << tb;
        EXPECT_TRUE(test::bitwise_equal(cols[i], cols[0])) << ta << tb;
      }
    }
  }
  set_num_threads(saved);
}

TEST(Gemm, BetaZeroIgnoresGarbageInC) {
  // BLAS semantics: with beta == 0, C is not read, so uninitialized (even NaN) output buffers
  // are fine. Layers rely on this when they resize an output without clearing it.
  const std::vector<float> a{1, 2, 3, 4};  // 2 x 2
  const std::vector<float> b{1, 0, 0, 1};  // identity
  for (int impl = 0; impl < 2; ++impl) {
    SCOPED_TRACE(impl == 0 ? "gemm" : "reference::gemm");
    std::vector<float> c(4, std::numeric_limits<float>::quiet_NaN());
    auto fn = impl == 0 ? &kernels::gemm : &kernels::reference::gemm;
    fn({2, 2, 2}, false, false, 1.0f, a.data(), 2, b.data(), 2, 0.0f, c.data(), 2);
    EXPECT_EQ(c, a);
  }
}

TEST(Gemm, ZeroInnerDimensionScalesC) {
  // k == 0: op(A) op(B) is the zero matrix, so C = beta * C.
  std::vector<float> c{1, 2, 3, 4, 5, 6};
  const float dummy = 0.0f;
  kernels::reference::gemm({2, 3, 0}, false, false, 1.0f, &dummy, 1, &dummy, 3, 0.5f, c.data(), 3);
  EXPECT_EQ(c, (std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3}));
}

TEST(Gemm, AddRowBiasAndSumRows) {
  const std::int64_t rows = 5, cols = 7;
  Random rng(3);
  std::vector<float> m(rows * cols), bias(cols);
  for (float& v : m) v = rng.normal();
  for (float& v : bias) v = rng.normal();
  std::vector<float> out = m;
  kernels::add_row_bias(rows, cols, bias.data(), out.data());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const auto i = static_cast<std::size_t>(r * cols + c);
      EXPECT_EQ(out[i], m[i] + bias[static_cast<std::size_t>(c)]);
    }
  std::vector<float> sums(cols, 123.0f);
  kernels::sum_rows(rows, cols, m.data(), sums.data());
  std::vector<double> expected(cols, 0.0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      expected[static_cast<std::size_t>(c)] += m[static_cast<std::size_t>(r * cols + c)];
  test::expect_close(sums, expected, 1e-6, 1e-6);
  // Zero rows: sums are zero (written, not accumulated into).
  kernels::sum_rows(0, cols, m.data(), sums.data());
  for (float s : sums) EXPECT_EQ(s, 0.0f);
}

TEST(Gemm, SumRowsIsAccurateForLongColumns) {
  // 1e6 rows of 1 + 1e-4: a float32 running sum stalls far from the exact 1000100.
  const std::int64_t rows = 1000000;
  std::vector<float> m(static_cast<std::size_t>(rows), 1.0001f);
  float sum = 0.0f;
  kernels::sum_rows(rows, 1, m.data(), &sum);
  EXPECT_NEAR(sum, static_cast<double>(1.0001f) * rows, 0.5);
}

}  // namespace
}  // namespace bnorm
