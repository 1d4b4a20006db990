// Optimizer update kernels: the vectorized bodies (whichever clone this CPU runs) give exactly the
// bits of the scalar Keras formulas, including the loop tails. The formulas themselves are checked
// against float64 Keras transcriptions in tests/model/optimizers_test.cpp.
#include "kernels/optimizer.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "bnorm/core/random.hpp"

namespace bnorm {
namespace {

// Plain scalar transcriptions; volatile keeps the compiler from vectorizing or fusing them.
float sqrt_scalar(float x) {
  volatile float r = std::sqrt(x);
  return r;
}

struct State {
  std::vector<float> g, w, a, b, c;
};

State make_state(std::int64_t n, std::uint64_t seed) {
  Random rng(seed);
  State s;
  for (auto* v : {&s.g, &s.w, &s.a, &s.b, &s.c}) v->resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    s.g[k] = rng.normal();
    s.w[k] = rng.normal();
    s.a[k] = 0.1f * rng.normal();
    s.b[k] = std::abs(0.01f * rng.normal());  // second moments are >= 0
    s.c[k] = 0.1f * rng.normal();
  }
  s.g[0] = 0.0f;
  return s;
}

constexpr std::int64_t kSizes[] = {1, 7, 16, 33, 1003};

TEST(OptimizerKernel, AdamBitsEqualTheScalarFormula) {
  for (std::int64_t n : kSizes) {
    State s = make_state(n, 5), r = s;
    const float alpha = 1.3e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-7f;
    kernels::adam_update(n, s.g.data(), alpha, b1, b2, eps, s.w.data(), s.a.data(), s.b.data());
    for (std::size_t i = 0; i < r.g.size(); ++i) {
      volatile float m = r.a[i] + (r.g[i] - r.a[i]) * (1.0f - b1);
      volatile float v = r.b[i] + (r.g[i] * r.g[i] - r.b[i]) * (1.0f - b2);
      volatile float step = (m * alpha) / (sqrt_scalar(v) + eps);
      r.a[i] = m;
      r.b[i] = v;
      r.w[i] = r.w[i] - step;
    }
    EXPECT_EQ(s.w, r.w) << "n=" << n;
    EXPECT_EQ(s.a, r.a) << "n=" << n;
    EXPECT_EQ(s.b, r.b) << "n=" << n;
  }
}

TEST(OptimizerKernel, SgdBitsEqualTheScalarFormula) {
  for (bool nesterov : {false, true}) {
    for (std::int64_t n : kSizes) {
      State s = make_state(n, 7), r = s, plain = s;
      const std::vector<float> start = s.w;
      const float lr = 0.01f, mu = 0.9f;
      kernels::sgd_update(n, s.g.data(), lr, mu, nesterov, s.w.data(), s.a.data());
      kernels::sgd_update(n, plain.g.data(), lr, 0.0f, false, plain.w.data(), nullptr);
      for (std::size_t i = 0; i < r.g.size(); ++i) {
        volatile float m = r.a[i] * mu - r.g[i] * lr;
        r.a[i] = m;
        volatile float inc = nesterov ? m * mu - r.g[i] * lr : m;
        r.w[i] = r.w[i] + inc;
        volatile float p = r.g[i] * lr;
        r.c[i] = start[i] - p;  // plain SGD from the same start
      }
      EXPECT_EQ(s.w, r.w) << "n=" << n << " nesterov=" << nesterov;
      EXPECT_EQ(s.a, r.a) << "n=" << n;
      EXPECT_EQ(plain.w, r.c) << "n=" << n;
    }
  }
}

TEST(OptimizerKernel, RmspropBitsEqualTheScalarFormula) {
  for (bool centered : {false, true}) {
    for (float mu : {0.0f, 0.9f}) {
      for (std::int64_t n : kSizes) {
        State s = make_state(n, 11), r = s;
        const float lr = 1e-3f, rho = 0.9f, eps = 1e-7f;
        kernels::rmsprop_update(n, s.g.data(), lr, rho, mu, eps, s.w.data(), s.b.data(),
                                centered ? s.a.data() : nullptr, mu > 0.0f ? s.c.data() : nullptr);
        for (std::size_t i = 0; i < r.g.size(); ++i) {
          volatile float v = rho * r.b[i] + (1.0f - rho) * r.g[i] * r.g[i];
          r.b[i] = v;
          float denominator = v;
          if (centered) {
            volatile float a = rho * r.a[i] + (1.0f - rho) * r.g[i];
            r.a[i] = a;
            volatile float d = denominator - a * a;
            denominator = d;
          }
          volatile float inc = lr * r.g[i] / sqrt_scalar(denominator + eps);
          if (mu > 0.0f) {
            volatile float m = mu * r.c[i] + inc;
            r.c[i] = m;
            r.w[i] = r.w[i] - m;
          } else {
            r.w[i] = r.w[i] - inc;
          }
        }
        SCOPED_TRACE(testing::Message() << "n=" << n << " centered=" << centered << " mu=" << mu);
        // NaN where a centered denominator goes negative: compare as bits.
        ASSERT_EQ(s.w.size(), r.w.size());
        for (std::size_t i = 0; i < r.w.size(); ++i) {
          if (std::isnan(r.w[i])) {
            EXPECT_TRUE(std::isnan(s.w[i])) << i;
          } else {
            EXPECT_EQ(s.w[i], r.w[i]) << i;
          }
        }
        EXPECT_EQ(s.b, r.b);
      }
    }
  }
}

}  // namespace
}  // namespace bnorm
