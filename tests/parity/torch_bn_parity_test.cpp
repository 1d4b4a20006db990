// PyTorch BatchNorm1d/2d vs bnorm's layer with BatchNormalization::pytorch_defaults().
#include <gtest/gtest.h>

#include <cctype>

#include "bnorm/layers/batch_normalization.hpp"
#include "fixture.hpp"
#include "tolerances.hpp"

namespace bnorm::parity {
namespace {

class TorchBn : public ::testing::TestWithParam<std::string> {
 protected:
  TorchBn() : fx_(fixtures_root() / "torch_bn" / GetParam()) {}

  // PyTorch's arguments in this layer's terms: Keras momentum = 1 - PyTorch momentum;
  // momentum=None is the cumulative average; affine=False drops gamma and beta.
  BatchNormalization make_layer() const {
    const auto& c = fx_.config();
    auto o = BatchNormalization::pytorch_defaults();
    o.axis = 1;
    o.epsilon = c.at("eps").get<float>();
    if (c.at("momentum").is_null()) {
      o.cumulative_moving_average = true;
    } else {
      o.momentum = 1.0 - c.at("momentum").get<double>();
    }
    o.center = o.scale = c.at("affine").get<bool>();
    o.track_moving_statistics = c.at("track_running_stats").get<bool>();
    BatchNormalization bn(o);
    auto dims = c.at("input_shape").get<std::vector<std::int64_t>>();
    Random rng(0);
    bn.build(Shape(std::vector<std::int64_t>(dims.begin() + 1, dims.end())), rng);
    if (bn.gamma()) bn.gamma()->value = fx_.tensor("weight");
    if (bn.beta()) bn.beta()->value = fx_.tensor("bias");
    if (bn.moving_mean()) {
      bn.moving_mean()->value = fx_.tensor("running_mean");
      bn.moving_variance()->value = fx_.tensor("running_var");
    }
    return bn;
  }

  void check(const std::string& quantity, const Tensor& actual, const std::string& array,
             double tol) {
    const auto e = compare(actual, fx_.array(array), kRelFloor);
    report(fx_.name(), quantity, e);
    EXPECT_LE(e.max_rel, tol) << fx_.name() << " " << quantity;
  }

  Fixture fx_;
};

TEST_P(TorchBn, TrainingForwardAndGradients) {
  auto bn = make_layer();
  const Tensor x = fx_.tensor("x");
  check("y_training", bn.forward(x, Mode::training), "y_training", kForwardTol);
  const Tensor dx = bn.backward(fx_.tensor("dy"));
  check("dx", dx, "dx", kGradientTol);
  if (bn.gamma()) check("dweight", bn.gamma()->gradient, "dweight", kGradientTol);
  if (bn.beta()) check("dbias", bn.beta()->gradient, "dbias", kGradientTol);
}

TEST_P(TorchBn, EvalForward) {
  auto bn = make_layer();
  const Tensor x = fx_.tensor("x");
  check("y_inference", bn.forward(x, Mode::inference), "y_inference", kForwardTol);
}

TEST_P(TorchBn, RunningStatisticsAfterFiveTrainingCalls) {
  auto bn = make_layer();
  const Tensor steps = fx_.tensor("x_steps");
  std::vector<std::int64_t> dims(steps.shape().dims().begin() + 1, steps.shape().dims().end());
  for (std::int64_t i = 0; i < steps.shape()[0]; ++i) {
    const Tensor xi = steps.slice_rows(i, i + 1).reshaped(Shape(dims));
    bn.forward(xi, Mode::training);
  }
  if (fx_.has("running_mean_after")) {
    check("running_mean_after", bn.moving_mean()->value, "running_mean_after", kForwardTol);
    check("running_var_after", bn.moving_variance()->value, "running_var_after", kForwardTol);
    EXPECT_EQ(bn.num_batches_tracked(),
              static_cast<std::int64_t>(fx_.array("num_batches_tracked_after").values.at(0)));
  }
  const Tensor x = fx_.tensor("x");
  check("y_inference_after", bn.forward(x, Mode::inference), "y_inference_after", kForwardTol);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TorchBn, ::testing::ValuesIn(list_cases("torch_bn")),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(TorchBnFixtures, Present) { EXPECT_GE(list_cases("torch_bn").size(), 7u); }

}  // namespace
}  // namespace bnorm::parity
