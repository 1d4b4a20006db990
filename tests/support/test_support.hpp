// tests/support/test_support.hpp — shared helpers for the unit tests: seeded random tensors,
// tensor comparison with useful failure messages, a float64 naive batch-normalization reference
// and a central-difference gradient checker for any Layer.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <source_location>
#include <span>
#include <string>
#include <vector>

#include "bnorm/core/random.hpp"
#include "bnorm/core/tensor.hpp"
#include "bnorm/layers/layer.hpp"

namespace bnorm::test {

// ---------------------------------------------------------------------------------------------
// Errors and image layouts.

// f() throws an E whose message contains `needle` (a test failure otherwise).
template <class E, class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one naming '" << needle << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not contain '" << needle << "'";
  }
}

// (N, C, H, W) <-> (N, H, W, C) copies of image test data.
Tensor to_channels_last(const Tensor& x);
Tensor to_channels_first(const Tensor& x);

// ---------------------------------------------------------------------------------------------
// Random data (bnorm::Random, so every test is deterministic on every platform).

// Uniform in [low, high).
Tensor random_uniform(const Shape& shape, Random& rng, float low = -1.0f, float high = 1.0f);
// Normal(mean, stddev).
Tensor random_normal(const Shape& shape, Random& rng, float mean = 0.0f, float stddev = 1.0f);
void fill_uniform(Tensor& t, Random& rng, float low = -1.0f, float high = 1.0f);
void fill_normal(Tensor& t, Random& rng, float mean = 0.0f, float stddev = 1.0f);
// Class labels in [0, classes) stored as floats, shape (n,).
Tensor random_labels(std::int64_t n, std::int64_t classes, Random& rng);
std::vector<float> to_vector(const Tensor& t);
std::vector<double> to_double(std::span<const float> values);

// ---------------------------------------------------------------------------------------------
// Comparison: |actual - expected| <= atol + rtol * |expected| elementwise. NaN never matches.
// The failure message names the number of mismatches, the worst element (flat index and
// multi-index when a shape is known) and its values.

::testing::AssertionResult all_close(std::span<const float> actual,
                                     std::span<const double> expected, double rtol, double atol,
                                     const Shape* shape = nullptr);
::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, double rtol,
                                     double atol);

void expect_close(const Tensor& actual, const Tensor& expected, double rtol, double atol,
                  std::source_location where = std::source_location::current());
void expect_close(std::span<const float> actual, std::span<const double> expected, double rtol,
                  double atol, std::source_location where = std::source_location::current());
void expect_close(std::span<const float> actual, std::span<const float> expected, double rtol,
                  double atol, std::source_location where = std::source_location::current());
// Bitwise equality (for determinism tests); reports the first differing element.
::testing::AssertionResult bitwise_equal(const Tensor& a, const Tensor& b);

// ---------------------------------------------------------------------------------------------
// Naive batch normalization in float64 over an [outer, channels, inner] view (the layout of
// src/kernels/batch_norm.hpp). Written from the textbook formulas, independently of the kernels.

struct BnView {
  std::int64_t outer = 1;
  std::int64_t channels = 0;
  std::int64_t inner = 1;
  std::int64_t count() const { return outer * inner; }
  std::int64_t size() const { return outer * channels * inner; }
  std::int64_t index(std::int64_t o, std::int64_t c, std::int64_t i) const {
    return (o * channels + c) * inner + i;
  }
};
// View of a full batch tensor's shape normalized along `axis` (negative counts from the end).
BnView bn_view(const Shape& full_shape, int axis);

struct BnMoments {
  std::vector<double> mean, variance;  // biased variance (divide by count)
};
// Two-pass, float64.
BnMoments naive_bn_moments(const BnView& v, std::span<const float> x);
// y = (x - mean) / sqrt(variance + epsilon) * gamma + beta; empty gamma/beta = scale/center off.
std::vector<double> naive_bn_forward(const BnView& v, std::span<const float> x,
                                     std::span<const double> mean, std::span<const double> variance,
                                     std::span<const float> gamma, std::span<const float> beta,
                                     double epsilon);
struct BnGradients {
  std::vector<double> dx, dgamma, dbeta;
};
// Gradients by the explicit chain rule of Ioffe & Szegedy (2015), Algorithm/eq. in Sec. 3:
// dxhat = dy * gamma; dvar = sum(dxhat * (x - mu)) * -1/2 (var + eps)^(-3/2);
// dmu = -sum(dxhat) / sqrt(var + eps) + dvar * sum(-2 (x - mu)) / m;
// dx = dxhat / sqrt(var + eps) + dvar * 2 (x - mu) / m + dmu / m.
// batch_statistics = false treats mean/variance as constants (dx = dxhat / sqrt(var + eps)).
BnGradients naive_bn_backward(const BnView& v, std::span<const float> x, std::span<const float> dy,
                              std::span<const double> mean, std::span<const double> variance,
                              std::span<const float> gamma, double epsilon, bool batch_statistics);

// ---------------------------------------------------------------------------------------------
// Gradient check by central differences. The scalar loss is L = sum(y * r) for a fixed random
// r, so dL/dy = r; the analytic gradients come from layer.backward(r). Every input element and
// every element of every trainable weight is perturbed by +-h (h scaled by max(1, |value|)); the
// step actually taken in float32 is used in the quotient. A value passes when
// |numeric - analytic| <= atol + rtol * max(|numeric|, |analytic|).
// allow_kinks: for piecewise-linear layers (relu), an element also passes when the analytic
// value matches one of the one-sided differences (the perturbation crossed a kink).
// For BatchNormalization in Mode::training every forward recomputes the batch statistics; the
// moving statistics it also updates do not affect a training-mode output.
struct GradCheckOptions {
  Mode mode = Mode::training;
  double h = 1e-2;
  double rtol = 1e-2;
  double atol = 1e-3;
  bool allow_kinks = false;
  bool check_weights = true;
  std::uint64_t seed = 1234;
};
::testing::AssertionResult check_layer_gradients(Layer& layer, const Tensor& x,
                                                 const GradCheckOptions& options = {});

// Forward of `layer` on x in `mode`, returned as a copy.
Tensor forward_copy(Layer& layer, const Tensor& x, Mode mode);

// Adds a shape with a leading batch dimension: (batch, dims...).
Shape with_batch(std::int64_t batch, const Shape& per_sample);

// Row-wise log_softmax / softmax of a rows x cols matrix, computed in float64.
std::vector<double> log_softmax64(const std::vector<float>& z, std::int64_t rows,
                                  std::int64_t cols);
std::vector<double> softmax64(const std::vector<float>& z, std::int64_t rows, std::int64_t cols);

}  // namespace bnorm::test
