// Optimizers against float64 transcriptions of the Keras 3 update rules
// (keras/src/optimizers/sgd.py, adam.py, rmsprop.py), fed the same gradient sequence.
#include "bnorm/model/optimizers.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

constexpr int kElements = 6;
constexpr int kSteps = 7;

// A fixed gradient sequence with sign changes, a zero and different magnitudes per element.
double gradient_at(int step, int i) {
  static const double base[kElements] = {0.5, -1.5, 2e-3, 0.0, 10.0, -0.25};
  if (i == 3) return 0.0;
  return base[i] * (1.0 + 0.3 * std::sin(1.7 * step + i)) * (step % 3 == 2 ? -1.0 : 1.0);
}

const double kInitial[kElements] = {1.0, -2.0, 0.5, 3.0, -0.75, 0.0};

Variable make_variable() {
  Variable v;
  v.name = "w";
  v.value = Tensor(Shape{kElements});
  v.gradient = Tensor(Shape{kElements});
  for (int i = 0; i < kElements; ++i) v.value[i] = static_cast<float>(kInitial[i]);
  return v;
}

// Runs kSteps of `opt` and of the float64 `reference(step, g, w)` and compares after each step.
template <class Ref>
void compare(Optimizer& opt, Ref reference, double rtol = 1e-5) {
  Variable v = make_variable();
  Variable* vars[] = {&v};
  std::vector<double> w(kInitial, kInitial + kElements);
  for (int step = 1; step <= kSteps; ++step) {
    std::vector<double> g(kElements);
    for (int i = 0; i < kElements; ++i) {
      v.gradient[i] = static_cast<float>(gradient_at(step, i));
      g[static_cast<std::size_t>(i)] = v.gradient[i];
    }
    opt.apply(vars);
    reference(step, g, w);
    SCOPED_TRACE("step " + std::to_string(step));
    test::expect_close(v.value.values(), w, rtol, 1e-7);
    EXPECT_EQ(opt.iterations(), step);
  }
}

TEST(SGD, Plain) {
  SGD opt({.learning_rate = 0.1f});
  EXPECT_EQ(opt.name(), "SGD");
  const double lr = 0.1f;
  compare(opt, [&](int, const std::vector<double>& g, std::vector<double>& w) {
    for (int i = 0; i < kElements; ++i) w[i] -= lr * g[i];
  });
}

TEST(SGD, Momentum) {
  SGD opt({.learning_rate = 0.05f, .momentum = 0.9f});
  const double lr = 0.05f, mom = 0.9f;
  std::vector<double> m(kElements, 0.0);
  compare(opt, [&](int, const std::vector<double>& g, std::vector<double>& w) {
    for (int i = 0; i < kElements; ++i) {
      m[i] = mom * m[i] - lr * g[i];
      w[i] += m[i];
    }
  });
}

TEST(SGD, Nesterov) {
  SGD opt({.learning_rate = 0.05f, .momentum = 0.8f, .nesterov = true});
  const double lr = 0.05f, mom = 0.8f;
  std::vector<double> m(kElements, 0.0);
  compare(opt, [&](int, const std::vector<double>& g, std::vector<double>& w) {
    for (int i = 0; i < kElements; ++i) {
      m[i] = mom * m[i] - lr * g[i];
      w[i] += mom * m[i] - lr * g[i];
    }
  });
}

TEST(Adam, KerasUpdate) {
  Adam opt({.learning_rate = 0.01f});
  EXPECT_EQ(opt.name(), "Adam");
  const double lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-7f;
  std::vector<double> m(kElements, 0.0), v(kElements, 0.0);
  compare(opt, [&](int t, const std::vector<double>& g, std::vector<double>& w) {
    const double alpha = lr * std::sqrt(1 - std::pow(b2, t)) / (1 - std::pow(b1, t));
    for (int i = 0; i < kElements; ++i) {
      m[i] += (g[i] - m[i]) * (1 - b1);
      v[i] += (g[i] * g[i] - v[i]) * (1 - b2);
      w[i] -= alpha * m[i] / (std::sqrt(v[i]) + eps);
    }
  });
}

TEST(Adam, CustomBetasAndEpsilon) {
  Adam opt({.learning_rate = 0.003f, .beta_1 = 0.5f, .beta_2 = 0.9f, .epsilon = 1e-3f});
  const double lr = 0.003f, b1 = 0.5f, b2 = 0.9f, eps = 1e-3f;
  std::vector<double> m(kElements, 0.0), v(kElements, 0.0);
  compare(opt, [&](int t, const std::vector<double>& g, std::vector<double>& w) {
    const double alpha = lr * std::sqrt(1 - std::pow(b2, t)) / (1 - std::pow(b1, t));
    for (int i = 0; i < kElements; ++i) {
      m[i] += (g[i] - m[i]) * (1 - b1);
      v[i] += (g[i] * g[i] - v[i]) * (1 - b2);
      w[i] -= alpha * m[i] / (std::sqrt(v[i]) + eps);
    }
  });
}

void rmsprop_reference(const RMSprop::Options& o, std::vector<double>& vel,
                       std::vector<double>& avg, std::vector<double>& mom,
                       const std::vector<double>& g, std::vector<double>& w) {
  const double lr = o.learning_rate, rho = o.rho, eps = o.epsilon, momentum = o.momentum;
  for (int i = 0; i < kElements; ++i) {
    vel[i] = rho * vel[i] + (1 - rho) * g[i] * g[i];
    double denominator;
    if (o.centered) {
      avg[i] = rho * avg[i] + (1 - rho) * g[i];
      denominator = vel[i] - avg[i] * avg[i] + eps;
    } else {
      denominator = vel[i] + eps;
    }
    const double increment = lr * g[i] / std::sqrt(denominator);
    if (momentum > 0) {
      mom[i] = momentum * mom[i] + increment;
      w[i] -= mom[i];
    } else {
      w[i] -= increment;
    }
  }
}

}  // namespace
void PrintTo(const RMSprop::Options& o, std::ostream* os) {
  *os << "lr " << o.learning_rate << " rho " << o.rho << " momentum " << o.momentum << " eps "
      << o.epsilon << (o.centered ? " centered" : "");
}
namespace {

class RMSpropTest : public ::testing::TestWithParam<RMSprop::Options> {};

TEST_P(RMSpropTest, KerasUpdate) {
  const RMSprop::Options o = GetParam();
  RMSprop opt(o);
  EXPECT_EQ(opt.name(), "RMSprop");
  std::vector<double> vel(kElements, 0.0), avg(kElements, 0.0), mom(kElements, 0.0);
  // Centered RMSprop divides by sqrt(v - a^2 + eps), tiny for the all-same-sign elements
  // early on: float32 rounding of v - a^2 is amplified, so allow a little more there.
  compare(
      opt,
      [&](int, const std::vector<double>& g, std::vector<double>& w) {
        rmsprop_reference(o, vel, avg, mom, g, w);
      },
      o.centered ? 1e-4 : 1e-5);
}

std::vector<RMSprop::Options> rmsprop_variants() {
  return {RMSprop::Options{.learning_rate = 0.01f},
          RMSprop::Options{.learning_rate = 0.01f, .momentum = 0.9f},
          RMSprop::Options{.learning_rate = 0.01f, .rho = 0.8f, .centered = true},
          RMSprop::Options{.learning_rate = 0.005f, .momentum = 0.5f, .centered = true}};
}

std::string rmsprop_name(const ::testing::TestParamInfo<RMSprop::Options>& info) {
  static const char* const names[] = {"plain", "momentum", "centered", "centered_momentum"};
  return names[info.index];
}

INSTANTIATE_TEST_SUITE_P(Variants, RMSpropTest, ::testing::ValuesIn(rmsprop_variants()),
                         rmsprop_name);

TEST(RMSpropTest, KerasDocstringExample) {
  // keras.optimizers.RMSprop docstring: var = 10, loss = var^2 / 2, learning_rate = 0.1,
  // one minimize step -> 9.683772.
  RMSprop opt({.learning_rate = 0.1f});
  Variable v;
  v.value = Tensor::full(Shape{1}, 10.0f);
  v.gradient = Tensor::full(Shape{1}, 10.0f);
  Variable* vars[] = {&v};
  opt.apply(vars);
  EXPECT_NEAR(v.value[0], 9.683772f, 1e-5);
}

TEST(Optimizer, KerasDefaults) {
  const SGD::Options s;
  EXPECT_EQ(s.learning_rate, 0.01f);
  EXPECT_EQ(s.momentum, 0.0f);
  EXPECT_FALSE(s.nesterov);
  const Adam::Options a;
  EXPECT_EQ(a.learning_rate, 0.001f);
  EXPECT_EQ(a.beta_1, 0.9f);
  EXPECT_EQ(a.beta_2, 0.999f);
  EXPECT_EQ(a.epsilon, 1e-7f);
  const RMSprop::Options r;
  EXPECT_EQ(r.learning_rate, 0.001f);
  EXPECT_EQ(r.rho, 0.9f);
  EXPECT_EQ(r.momentum, 0.0f);
  EXPECT_EQ(r.epsilon, 1e-7f);
  EXPECT_FALSE(r.centered);
}

TEST(Optimizer, SlotsArePerVariable) {
  // Two variables updated together equal each updated alone.
  Adam together({.learning_rate = 0.01f});
  Adam alone_a({.learning_rate = 0.01f}), alone_b({.learning_rate = 0.01f});
  Variable a = make_variable(), b = make_variable(), a2 = make_variable(), b2 = make_variable();
  Variable* both[] = {&a, &b};
  Variable* only_a[] = {&a2};
  Variable* only_b[] = {&b2};
  for (int step = 1; step <= 4; ++step) {
    for (int i = 0; i < kElements; ++i) {
      a.gradient[i] = a2.gradient[i] = static_cast<float>(gradient_at(step, i));
      b.gradient[i] = b2.gradient[i] = static_cast<float>(-3.0 * gradient_at(step + 5, i));
    }
    together.apply(both);
    alone_a.apply(only_a);
    alone_b.apply(only_b);
  }
  EXPECT_TRUE(test::bitwise_equal(a.value, a2.value));
  EXPECT_TRUE(test::bitwise_equal(b.value, b2.value));
  EXPECT_EQ(together.iterations(), 4);
}

TEST(Optimizer, MakeOptimizerByName) {
  auto sgd = make_optimizer("sgd");
  EXPECT_EQ(sgd->name(), "SGD");
  EXPECT_FLOAT_EQ(sgd->learning_rate(), 0.01f);
  auto adam = make_optimizer("Adam");
  EXPECT_EQ(adam->name(), "Adam");
  EXPECT_FLOAT_EQ(adam->learning_rate(), 0.001f);
  auto rms = make_optimizer("RMSPROP", 0.05);
  EXPECT_EQ(rms->name(), "RMSprop");
  EXPECT_FLOAT_EQ(rms->learning_rate(), 0.05f);
  EXPECT_FLOAT_EQ(make_optimizer("adam", -1.0)->learning_rate(), 0.001f);
  EXPECT_EQ(adam->iterations(), 0);
  EXPECT_FLOAT_EQ(static_cast<float>(adam->config().at("learning_rate")), 0.001f);
}

TEST(Optimizer, MakeOptimizerErrors) {
  try {
    make_optimizer("adagrad_supreme");
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("adagrad_supreme"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_optimizer("", 0.1), ValueError);
  EXPECT_THROW(make_optimizer("adam", 0.0), ValueError);
  EXPECT_THROW(make_optimizer("adam", std::numeric_limits<double>::infinity()), ValueError);
  EXPECT_THROW(make_optimizer("sgd", std::numeric_limits<double>::quiet_NaN()), ValueError);
  EXPECT_THROW(make_optimizer("nadam", std::map<std::string, double>{}), ValueError);
}

TEST(Optimizer, ConfigRoundTrip) {
  std::vector<std::unique_ptr<Optimizer>> opts;
  opts.push_back(std::make_unique<SGD>(
      SGD::Options{.learning_rate = 0.2f, .momentum = 0.7f, .nesterov = true}));
  opts.push_back(std::make_unique<Adam>(
      Adam::Options{.learning_rate = 0.02f, .beta_1 = 0.8f, .beta_2 = 0.99f, .epsilon = 1e-6f}));
  opts.push_back(std::make_unique<RMSprop>(RMSprop::Options{
      .learning_rate = 0.03f, .rho = 0.95f, .momentum = 0.1f, .epsilon = 1e-5f, .centered = true}));
  for (const auto& o : opts) {
    SCOPED_TRACE(o->name());
    const auto config = o->config();
    EXPECT_TRUE(config.count("learning_rate"));
    auto rebuilt = make_optimizer(o->name(), config);
    EXPECT_EQ(rebuilt->name(), o->name());
    EXPECT_EQ(rebuilt->config(), config);
    // And it behaves identically.
    Variable v1 = make_variable(), v2 = make_variable();
    Variable* a[] = {&v1};
    Variable* b[] = {&v2};
    for (int step = 1; step <= 3; ++step) {
      for (int i = 0; i < kElements; ++i)
        v1.gradient[i] = v2.gradient[i] = static_cast<float>(gradient_at(step, i));
      o->apply(a);
      rebuilt->apply(b);
    }
    EXPECT_TRUE(test::bitwise_equal(v1.value, v2.value));
  }
  const auto sgd_config = opts[0]->config();
  EXPECT_NEAR(sgd_config.at("momentum"), 0.7, 1e-6);
  EXPECT_EQ(sgd_config.at("nesterov"), 1.0);
}

}  // namespace
}  // namespace bnorm
