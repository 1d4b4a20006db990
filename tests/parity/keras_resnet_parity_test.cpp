// Whole-model parity with Keras for a small residual network built with the functional API
// (keras_resnet fixtures): stem Conv2D -> BN -> ReLU, an identity block (two Conv2D/BN with a
// ReLU between, Add with the block input, ReLU), a stride-2 projection block (its shortcut a 1x1
// stride-2 Conv2D -> BN), GlobalAveragePooling2D and Dense(3, softmax). Checks the initial
// inference predictions, the gradients of the first batch, three train_on_batch steps (SGD with
// momentum, Adam): per-step losses, every weight afterwards including BN's moving statistics, and
// the predictions after training. Every layer carries the same explicit name on both sides, so
// weights are matched by "<layer>_<variable>" whatever order either side keeps them in.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>

#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/elementwise.hpp"
#include "bnorm/layers/merge.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/model/model.hpp"
#include "fixture.hpp"
#include "tolerances.hpp"

namespace bnorm::parity {
namespace {

template <class L, class... Args>
SymbolicTensor call(const std::string& name, const std::vector<SymbolicTensor>& in,
                    Args&&... args) {
  auto layer = std::make_shared<L>(std::forward<Args>(args)...);
  layer->set_name(name);
  return in.size() == 1 ? (*layer)(in[0]) : (*layer)(in);
}

SymbolicTensor conv(const std::string& name, const SymbolicTensor& x, std::int64_t filters,
                    std::int64_t k, std::int64_t s) {
  Conv2D::Options o;
  o.filters = filters;
  o.kernel_size = {k, k};
  o.strides = {s, s};
  o.padding = "same";
  o.use_bias = false;
  return call<Conv2D>(name, {x}, o);
}

SymbolicTensor bn(const std::string& name, const SymbolicTensor& x, double momentum = 0.99,
                  float epsilon = 1e-3f) {
  BatchNormalization::Options o;
  o.momentum = momentum;
  o.epsilon = epsilon;
  return call<BatchNormalization>(name, {x}, o);
}

// The generator's build_resnet(), layer for layer.
Model build_resnet(const Shape& input_shape) {
  Input x(input_shape, "input");
  SymbolicTensor h = conv("stem_conv", x, 4, 3, 1);
  h = bn("stem_bn", h, 0.9);
  h = call<ReLU>("stem_relu", {h});
  SymbolicTensor b = conv("block1_conv1", h, 4, 3, 1);
  b = bn("block1_bn1", b);
  b = call<Activation>("block1_relu1", {b}, "relu");
  b = conv("block1_conv2", b, 4, 3, 1);
  b = bn("block1_bn2", b, 0.99, 1e-5f);
  h = call<Add>("block1_add", {b, h});
  h = call<ReLU>("block1_out", {h});
  b = conv("block2_conv1", h, 8, 3, 2);
  b = bn("block2_bn1", b);
  b = call<ReLU>("block2_relu1", {b});
  b = conv("block2_conv2", b, 8, 3, 1);
  b = bn("block2_bn2", b);
  SymbolicTensor s = conv("block2_shortcut_conv", h, 8, 1, 2);
  s = bn("block2_shortcut_bn", s);
  h = call<Add>("block2_add", {b, s});
  h = call<Activation>("block2_out", {h}, "relu");
  h = call<GlobalAveragePooling2D>("pool", {h});
  Dense::Options d;
  d.units = 3;
  d.activation = "softmax";
  SymbolicTensor out = call<Dense>("head", {h}, d);
  return Model(x, out, "resnet", 0);
}

// "<layer>_<variable>" for every weight, in bnorm's get_weights order.
std::vector<std::pair<std::string, Variable*>> named_weights(Model& model) {
  std::vector<std::pair<std::string, Variable*>> out;
  for (const auto& layer : model.layers())
    for (Variable* v : layer->weights()) out.emplace_back(layer->name() + "_" + v->name, v);
  return out;
}

std::unique_ptr<Optimizer> make_fixture_optimizer(const Fixture& fx) {
  const auto& oc = fx.config().at("optimizer_config");
  std::map<std::string, double> config;
  for (const auto& key : {"learning_rate", "momentum", "beta_1", "beta_2", "epsilon", "rho"})
    if (oc.contains(key) && oc.at(key).is_number()) config[key] = oc.at(key).get<double>();
  if (oc.contains("nesterov")) config["nesterov"] = oc.at("nesterov").get<bool>() ? 1.0 : 0.0;
  return make_optimizer(fx.config().at("optimizer").get<std::string>(), config);
}

void check(const Fixture& fx, const std::string& quantity, const Tensor& actual, double tol) {
  const auto e = compare(actual, fx.array(quantity), kRelFloor);
  report(fx.name(), quantity, e);
  EXPECT_LE(e.max_rel, tol) << fx.name() << " " << quantity;
}

Tensor scalars(const std::vector<double>& v) {
  Tensor t(Shape{static_cast<std::int64_t>(v.size())});
  for (std::size_t i = 0; i < v.size(); ++i)
    t[static_cast<std::int64_t>(i)] = static_cast<float>(v[i]);
  return t;
}

class KerasResnet : public ::testing::TestWithParam<std::string> {
 protected:
  KerasResnet() : fx_(fixtures_root() / "keras_resnet" / GetParam()) {}

  Shape input_shape() const {
    return Shape(fx_.config().at("input_shape").get<std::vector<std::int64_t>>());
  }

  // Gives the model the fixture's initial weights after checking its layers against Keras's.
  void init_model(Model& model) {
    for (const auto& l : fx_.config().at("layers")) {
      const std::string cls = l.at("class_name").get<std::string>();
      if (cls == "InputLayer") continue;
      const Layer& mine = model.layer(l.at("name").get<std::string>());
      EXPECT_EQ(mine.class_name(), cls) << l.at("name");
    }
    const auto named = named_weights(model);
    std::vector<std::string> names;
    std::vector<Tensor> values;
    for (const auto& [n, v] : named) {
      names.push_back(n);
      values.push_back(fx_.tensor(n));
    }
    auto keras_names = fx_.config().at("weight_names").get<std::vector<std::string>>();
    std::sort(keras_names.begin(), keras_names.end());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, keras_names);
    model.set_weights(values);
  }

  Fixture fx_;
};

TEST_P(KerasResnet, InitialPredictionsMatchKeras) {
  Model model = build_resnet(input_shape());
  init_model(model);
  // predict folds the Conv2D -> BatchNormalization pairs whose conv feeds only the BN.
  EXPECT_GE(model.foldable_pairs(), 1u);
  check(fx_, "predictions_initial", model.predict(fx_.tensor("x_eval")), kForwardTol);
}

// The same predictions through the unfolded layers (BN + ReLU and BN + Add + ReLU fused).
TEST_P(KerasResnet, UnfoldedPredictionsMatchKeras) {
  Model model = build_resnet(input_shape());
  init_model(model);
  model.set_inference_folding(false);
  check(fx_, "predictions_initial", model.predict(fx_.tensor("x_eval")), kForwardTol);
}

TEST_P(KerasResnet, ThreeTrainStepsMatchKeras) {
  Model model = build_resnet(input_shape());
  init_model(model);
  model.compile(make_fixture_optimizer(fx_), LossKind::sparse_categorical_crossentropy);
  const auto batch = fx_.config().at("batch_size").get<std::int64_t>();
  const auto steps = fx_.config().at("steps").get<std::int64_t>();
  const Tensor x = fx_.tensor("x"), y = fx_.tensor("y");
  const std::int64_t per_sample = x.size() / x.shape()[0];
  std::vector<double> losses;
  for (std::int64_t s = 0; s < steps; ++s) {
    std::vector<std::int64_t> dims = x.shape().dims();
    dims[0] = batch;
    Tensor xb{Shape(dims)}, yb{Shape{batch}};
    std::copy(x.data() + s * batch * per_sample, x.data() + (s + 1) * batch * per_sample,
              xb.data());
    std::copy(y.data() + s * batch, y.data() + (s + 1) * batch, yb.data());
    losses.push_back(model.train_on_batch(xb, yb));
    if (s == 0) {
      // The gradients the first step applied (written by backward, read before the next step).
      check(fx_, "loss0", scalars({losses[0]}), kForwardTol);
      for (const auto& [n, v] : named_weights(model))
        if (v->trainable) check(fx_, "grad0_" + n, v->gradient, kGradientTol);
    }
  }
  check(fx_, "step_losses", scalars(losses), kTrajectoryTol);
  for (const auto& [n, v] : named_weights(model))
    check(fx_, n + "_after", v->value, kTrajectoryTol);
  check(fx_, "predictions_after", model.predict(fx_.tensor("x_eval")), kTrajectoryTol);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KerasResnet, ::testing::ValuesIn(list_cases("keras_resnet")),
                         [](const auto& info) { return info.param; });

TEST(KerasResnetFixtures, BothOptimizersPresent) {
  EXPECT_GE(list_cases("keras_resnet").size(), 2u);
}

}  // namespace
}  // namespace bnorm::parity
