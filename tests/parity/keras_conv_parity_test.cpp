// Keras 3 image layers (TensorFlow backend) vs bnorm's, one layer per case, from committed
// fixtures: Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D and Flatten, forward
// and the gradients of sum(y * dy).
#include <gtest/gtest.h>

#include <array>
#include <cctype>

#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/flatten.hpp"
#include "bnorm/layers/pooling.hpp"
#include "fixture.hpp"
#include "tolerances.hpp"

namespace bnorm::parity {
namespace {

// The per-sample shape of a fixture's (batch, ...) input shape.
Shape per_sample(const nlohmann::json& input_shape) {
  const auto dims = input_shape.get<std::vector<std::int64_t>>();
  return Shape(std::vector<std::int64_t>(dims.begin() + 1, dims.end()));
}

std::string test_name(const std::string& c) {
  std::string n = c;
  for (auto& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

void check(const Fixture& fx, const std::string& quantity, const Tensor& actual, double tol) {
  const auto e = compare(actual, fx.array(quantity), kRelFloor);
  report(fx.name(), quantity, e);
  EXPECT_LE(e.max_rel, tol) << fx.name() << " " << quantity;
}

// Runs forward (training mode: what GradientTape recorded) and backward on the fixture's x and
// dy and checks y and dx; the layer's weights must already hold the fixture's values.
void check_forward_backward(const Fixture& fx, Layer& layer, double dx_tol) {
  const Tensor x = fx.tensor("x");
  const Tensor& y = layer.forward(x, Mode::training);
  ASSERT_EQ(y.shape().dims(), fx.array("y").shape) << fx.name();
  check(fx, "y", y, kForwardTol);
  check(fx, "dx", layer.backward(fx.tensor("dy")), dx_tol);
}

class KerasConv : public ::testing::TestWithParam<std::string> {};

TEST_P(KerasConv, ForwardAndGradientsMatchKeras) {
  const Fixture fx(fixtures_root() / "keras_conv" / GetParam());
  const auto& c = fx.config();
  const Conv2D::Options o = keras_conv2d_options(c);
  Conv2D conv(o);
  Random rng(0);
  conv.build(per_sample(c.at("input_shape")), rng);
  const auto weights = conv.weights();
  ASSERT_EQ(weights.size(), o.use_bias ? 2u : 1u);
  weights[0]->value = fx.tensor("kernel");
  if (o.use_bias) weights[1]->value = fx.tensor("bias");
  EXPECT_EQ(conv.output_shape(conv.input_shape()), per_sample(c.at("output_shape")));
  check_forward_backward(fx, conv, kGradientTol);
  check(fx, "dkernel", weights[0]->gradient, kGradientTol);
  if (o.use_bias) check(fx, "dbias", weights[1]->gradient, kGradientTol);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KerasConv, ::testing::ValuesIn(list_cases("keras_conv")),
                         [](const auto& info) { return test_name(info.param); });

class KerasPool : public ::testing::TestWithParam<std::string> {};

TEST_P(KerasPool, ForwardAndGradientMatchKeras) {
  const Fixture fx(fixtures_root() / "keras_pool" / GetParam());
  const auto& c = fx.config();
  const std::string kind = c.at("layer").get<std::string>();
  std::unique_ptr<Layer> layer;
  if (kind == "keras.layers.GlobalAveragePooling2D") {
    GlobalAveragePooling2D::Options o;
    o.data_format = c.at("data_format").get<std::string>();
    o.keepdims = c.at("keepdims").get<bool>();
    layer = std::make_unique<GlobalAveragePooling2D>(o);
  } else {
    const Pooling2D::Options o = keras_pooling_options(c);
    if (kind == "keras.layers.MaxPooling2D") {
      layer = std::make_unique<MaxPooling2D>(o);
    } else {
      ASSERT_EQ(kind, "keras.layers.AveragePooling2D");
      layer = std::make_unique<AveragePooling2D>(o);
    }
  }
  Random rng(0);
  layer->build(per_sample(c.at("input_shape")), rng);
  EXPECT_EQ(layer->output_shape(layer->input_shape()), per_sample(c.at("output_shape")));
  // A max or a mean of at most 9 values, and dx a sum of at most 9 routed or scaled dy values:
  // no long sums, so the forward tolerance holds for dx too (a wrong tie or window is O(1)).
  check_forward_backward(fx, *layer, kForwardTol);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KerasPool, ::testing::ValuesIn(list_cases("keras_pool")),
                         [](const auto& info) { return test_name(info.param); });

class KerasFlatten : public ::testing::TestWithParam<std::string> {};

TEST_P(KerasFlatten, ElementOrderMatchesKeras) {
  const Fixture fx(fixtures_root() / "keras_flatten" / GetParam());
  Flatten::Options o;
  o.data_format = fx.config().at("data_format").get<std::string>();
  Flatten flatten(o);
  Random rng(0);
  flatten.build(per_sample(fx.config().at("input_shape")), rng);
  // A permutation: exact.
  check_forward_backward(fx, flatten, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KerasFlatten, ::testing::ValuesIn(list_cases("keras_flatten")),
                         [](const auto& info) { return test_name(info.param); });

TEST(KerasImageFixtures, AllFamiliesPresent) {
  // Guards against an empty fixture directory turning the suites into no-ops.
  EXPECT_GE(list_cases("keras_conv").size(), 20u);
  EXPECT_GE(list_cases("keras_pool").size(), 20u);
  EXPECT_GE(list_cases("keras_flatten").size(), 3u);
}

}  // namespace
}  // namespace bnorm::parity
