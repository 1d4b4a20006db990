// The synchronized-BN kernels: partial moments merged in any split equal the two-pass float64
// moments of the whole batch; the backward from global sums equals the reference backward.
#include "kernels/batch_norm_sync.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/batch_norm.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

using kernels::BatchNormDims;

// Splits rows [0, outer) at `cuts`, merges the parts' moments left to right.
void merged_moments(BatchNormDims d, const std::vector<float>& x, const std::vector<int>& cuts,
                    std::vector<double>& mean, std::vector<double>& m2, double& n) {
  const auto c = static_cast<std::size_t>(d.channels);
  mean.assign(c, 0.0);
  m2.assign(c, 0.0);
  n = 0.0;
  std::vector<double> pm(c), pm2(c);
  int begin = 0;
  for (std::size_t k = 0; k <= cuts.size(); ++k) {
    const int end = k < cuts.size() ? std::max(begin, std::min(cuts[k], static_cast<int>(d.outer)))
                                    : static_cast<int>(d.outer);
    BatchNormDims part = d;
    part.outer = end - begin;
    if (part.outer > 0) {
      kernels::batch_norm_partial_moments(part, x.data() + begin * d.channels * d.inner, pm.data(),
                                          pm2.data());
      kernels::batch_norm_merge_moments(d.channels, n, mean.data(), m2.data(),
                                        static_cast<double>(part.count()), pm.data(), pm2.data());
      n += static_cast<double>(part.count());
    } else {
      kernels::batch_norm_merge_moments(d.channels, n, mean.data(), m2.data(), 0.0, pm.data(),
                                        pm2.data());
    }
    begin = end;
  }
}

TEST(BatchNormSync, MergedPartialMomentsAreTheWholeBatchsAtAnyOffset) {
  for (const float offset : {0.0f, 3.0f, 1e4f, 1e6f}) {
    for (const BatchNormDims d : {BatchNormDims{37, 3, 1}, BatchNormDims{11, 2, 7}}) {
      Random rng(5);
      Tensor t = test::random_normal(Shape{d.outer, d.channels, d.inner}, rng, offset, 1.0f);
      const auto x = test::to_vector(t);
      const auto ref = test::naive_bn_moments(test::bn_view(t.shape(), 1), x);
      for (const std::vector<int>& cuts :
           {std::vector<int>{}, {1}, {5, 5, 20}, {0, 36}, {3, 4, 5, 6, 7, 8}}) {
        std::vector<double> mean, m2;
        double n = 0.0;
        merged_moments(d, x, cuts, mean, m2, n);
        ASSERT_EQ(n, static_cast<double>(d.count()));
        for (std::size_t c = 0; c < mean.size(); ++c) {
          EXPECT_NEAR(mean[c], ref.mean[c], 1e-12 * std::fabs(ref.mean[c]) + 1e-12);
          // At offset 1e6 float32 data is quantized to 1/16, the variance still ~1: the merged
          // float64 variance keeps ~12 digits of it.
          EXPECT_NEAR(m2[c] / n, ref.variance[c], 1e-10 * ref.variance[c]) << "offset " << offset;
        }
      }
    }
  }
}

TEST(BatchNormSync, EmptyPartsChangeNothing) {
  std::vector<double> mean = {0.0}, m2 = {0.0};
  const double b_mean[] = {2.5}, b_m2[] = {4.0};
  kernels::batch_norm_merge_moments(1, 0.0, mean.data(), m2.data(), 3.0, b_mean, b_m2);
  EXPECT_EQ(mean[0], 2.5);  // copied exactly
  EXPECT_EQ(m2[0], 4.0);
  kernels::batch_norm_merge_moments(1, 3.0, mean.data(), m2.data(), 0.0, b_mean, b_m2);
  EXPECT_EQ(mean[0], 2.5);
  EXPECT_EQ(m2[0], 4.0);
}

TEST(BatchNormSync, BackwardFromSumsIsTheReferenceBackward) {
  for (const BatchNormDims d : {BatchNormDims{29, 4, 1}, BatchNormDims{5, 3, 9}}) {
    Random rng(9);
    const Shape s{d.outer, d.channels, d.inner};
    Tensor x = test::random_normal(s, rng, 2.0f, 3.0f), dy = test::random_normal(s, rng);
    Tensor gamma = test::random_normal(Shape{d.channels}, rng);
    std::vector<float> mean(static_cast<std::size_t>(d.channels)),
        variance(static_cast<std::size_t>(d.channels));
    kernels::reference::batch_norm_moments(d, x.data(), mean.data(), variance.data());
    std::vector<float> dx_ref(static_cast<std::size_t>(d.size())),
        dgamma(static_cast<std::size_t>(d.channels)), dbeta(static_cast<std::size_t>(d.channels));
    kernels::reference::batch_norm_backward(d, x.data(), dy.data(), mean.data(), variance.data(),
                                            gamma.data(), 1e-3f, true, dx_ref.data(), dgamma.data(),
                                            dbeta.data());
    std::vector<double> sum_dy(static_cast<std::size_t>(d.channels)),
        sum_dy_xhat(static_cast<std::size_t>(d.channels)),
        scratch(3 * static_cast<std::size_t>(d.channels));
    kernels::batch_norm_backward_sums(d, x.data(), dy.data(), mean.data(), variance.data(), 1e-3f,
                                      sum_dy.data(), sum_dy_xhat.data(), scratch.data());
    for (std::size_t c = 0; c < sum_dy.size(); ++c) {
      EXPECT_NEAR(sum_dy[c], dbeta[c], 1e-5 * (1 + std::fabs(dbeta[c])));
      EXPECT_NEAR(sum_dy_xhat[c], dgamma[c], 1e-5 * (1 + std::fabs(dgamma[c])));
    }
    std::vector<float> dx(static_cast<std::size_t>(d.size()));
    kernels::batch_norm_backward_dx_from_sums(d, x.data(), dy.data(), mean.data(), variance.data(),
                                              gamma.data(), 1e-3f, static_cast<double>(d.count()),
                                              sum_dy.data(), sum_dy_xhat.data(), scratch.data(),
                                              dx.data());
    test::expect_close(dx, dx_ref, 1e-5, 1e-6);
  }
}

}  // namespace
}  // namespace bnorm
