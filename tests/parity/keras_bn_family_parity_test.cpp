// The BN family against the real frameworks, from committed fixtures
// (tests/parity/generate_bn_family.py): Batch Renormalization (Keras 3 renorm=True) and Ghost BN
// (tf.keras 2 virtual_batch_size): the training forward, the gradients, every weight after one
// step and after three more, and inference before and after.
#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <vector>

#include "bnorm/layers/batch_normalization.hpp"
#include "fixture.hpp"
#include "tolerances.hpp"

namespace bnorm::parity {
namespace {

class BnFamily : public ::testing::TestWithParam<std::string> {
 protected:
  BnFamily() : fx_(fixtures_root() / "keras_bn_family" / GetParam()) {}

  BatchNormalization::Options options() const {
    const auto& c = fx_.config();
    BatchNormalization::Options o;
    o.axis = c.at("axis").get<int>();
    o.momentum = c.at("momentum").get<double>();
    o.epsilon = c.at("epsilon").get<float>();
    o.center = c.at("center").get<bool>();
    o.scale = c.at("scale").get<bool>();
    if (c.at("kind") == "renorm") {
      o.renorm = true;
      o.renorm_momentum = c.at("renorm_momentum").get<double>();
      const auto& clip = c.at("renorm_clipping");
      if (clip.is_object()) {
        if (clip.contains("rmax")) o.renorm_rmax = clip.at("rmax").get<double>();
        if (clip.contains("rmin")) o.renorm_rmin = clip.at("rmin").get<double>();
        if (clip.contains("dmax")) o.renorm_dmax = clip.at("dmax").get<double>();
      }
    } else {
      o.virtual_batch_size = c.at("virtual_batch_size").get<std::int64_t>();
    }
    return o;
  }

  // A layer with the fixture's arguments and initial weights, in Keras's weight order.
  BatchNormalization make_layer() const {
    BatchNormalization bn(options());
    const auto dims = fx_.config().at("input_shape").get<std::vector<std::int64_t>>();
    Random rng(0);
    bn.build(Shape(std::vector<std::int64_t>(dims.begin() + 1, dims.end())), rng);
    const auto order = fx_.config().at("weight_order").get<std::vector<std::string>>();
    const auto weights = bn.weights();
    EXPECT_EQ(weights.size(), order.size()) << fx_.name();
    for (std::size_t i = 0; i < weights.size() && i < order.size(); ++i) {
      EXPECT_EQ(weights[i]->name, order[i]) << fx_.name() << ": Keras's weight order";
      weights[i]->value = fx_.tensor("init_" + order[i]);
    }
    return bn;
  }

  void check(const std::string& quantity, const Tensor& actual, const std::string& array,
             double tol) {
    const auto e = compare(actual, fx_.array(array), kRelFloor);
    report(fx_.name(), quantity, e);
    EXPECT_LE(e.max_rel, tol) << fx_.name() << " " << quantity;
  }

  void check_weights(BatchNormalization& bn, const std::string& prefix, double tol) {
    for (const Variable* w : std::as_const(bn).weights())
      check(prefix + w->name, w->value, prefix + w->name, tol);
  }

  Fixture fx_;
};

TEST_P(BnFamily, TrainingStepGradientsAndWeights) {
  auto bn = make_layer();
  const Tensor x = fx_.tensor("x");
  check("y_training", bn.forward(x, Mode::training), "y_training", kForwardTol);
  const Tensor dx = bn.backward(fx_.tensor("dy"));
  check("dx", dx, "dx", kGradientTol);
  if (bn.gamma()) check("dgamma", bn.gamma()->gradient, "dgamma", kGradientTol);
  if (bn.beta()) check("dbeta", bn.beta()->gradient, "dbeta", kGradientTol);
  check_weights(bn, "after1_", kForwardTol);
}

TEST_P(BnFamily, InferenceAndSeveralSteps) {
  auto bn = make_layer();
  const Tensor x = fx_.tensor("x");
  check("y_inference", bn.forward(x, Mode::inference), "y_inference", kForwardTol);
  const Tensor steps = fx_.tensor("x_steps");
  const std::int64_t n = fx_.config().at("steps").get<std::int64_t>();
  const std::int64_t per_step = steps.size() / n;
  for (std::int64_t i = 0; i < n; ++i) {
    Tensor xi(x.shape());
    std::copy(steps.data() + i * per_step, steps.data() + (i + 1) * per_step, xi.data());
    bn.forward(xi, Mode::training);
  }
  check_weights(bn, "after_steps_", kTrajectoryTol);
  check("y_inference_after", bn.forward(x, Mode::inference), "y_inference_after", kForwardTol);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BnFamily, ::testing::ValuesIn(list_cases("keras_bn_family")),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

}  // namespace
}  // namespace bnorm::parity
