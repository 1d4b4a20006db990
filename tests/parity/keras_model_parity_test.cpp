// Whole-model parity with Keras: the seed model trained 20 steps (SGD with momentum, Adam) and a
// model whose BatchNormalization has trainable=False, trained with fit.
#include <gtest/gtest.h>

#include <cctype>

#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/model/sequential.hpp"
#include "fixture.hpp"
#include "tolerances.hpp"

namespace bnorm::parity {
namespace {

const std::vector<std::string> kWeightNames = {
    "dense_kernel",   "dense_bias",         "bn_gamma",       "bn_beta",
    "bn_moving_mean", "bn_moving_variance", "dense_1_kernel", "dense_1_bias"};

// Input(sizes[0]) -> Dense(sizes[1], hidden) -> BatchNormalization -> Dense(sizes[2], softmax),
// with the fixture's initial weights.
Sequential make_model(const Fixture& fx, bool bn_trainable) {
  const auto sizes = fx.config().at("layer_sizes").get<std::vector<std::int64_t>>();
  Sequential model(0);
  model.add(Input{Shape{sizes[0]}});
  model.add(Dense(sizes[1], fx.config().at("hidden_activation").get<std::string>()));
  BatchNormalization::Options o;
  o.momentum = fx.config().at("bn_momentum").get<double>();
  o.epsilon = fx.config().at("bn_epsilon").get<float>();
  model.add(BatchNormalization(o)).set_trainable(bn_trainable);
  model.add(Dense(sizes[2], "softmax"));
  std::vector<Tensor> weights;
  for (const auto& n : kWeightNames) weights.push_back(fx.tensor(n));
  model.set_weights(weights);
  return model;
}

void check_weights_after(const Fixture& fx, const Sequential& model, double tol) {
  const auto weights = model.get_weights();
  for (std::size_t i = 0; i < kWeightNames.size(); ++i) {
    const auto e = compare(weights[i], fx.array(kWeightNames[i] + "_after"), kRelFloor);
    report(fx.name(), kWeightNames[i] + "_after", e);
    EXPECT_LE(e.max_rel, tol) << fx.name() << " " << kWeightNames[i];
  }
}

class KerasSeed : public ::testing::TestWithParam<std::string> {};

TEST_P(KerasSeed, TwentyTrainOnBatchStepsMatchKeras) {
  Fixture fx(fixtures_root() / "keras_seed" / GetParam());
  Sequential model = make_model(fx, true);
  const auto& oc = fx.config().at("optimizer_config");
  std::map<std::string, double> config;
  for (const auto& key : {"learning_rate", "momentum", "beta_1", "beta_2", "epsilon", "rho"})
    if (oc.contains(key) && oc.at(key).is_number()) config[key] = oc.at(key).get<double>();
  if (oc.contains("nesterov")) config["nesterov"] = oc.at("nesterov").get<bool>() ? 1.0 : 0.0;
  model.compile(make_optimizer(fx.config().at("optimizer").get<std::string>(), config),
                LossKind::sparse_categorical_crossentropy);

  const Tensor xb = fx.tensor("x_batches"), yb = fx.tensor("y_batches");
  const auto losses = fx.array("losses");
  const std::int64_t steps = xb.shape()[0];
  Tensor loss_values(Shape{steps});
  for (std::int64_t s = 0; s < steps; ++s) {
    const Tensor x = xb.slice_rows(s, s + 1).reshaped(Shape{xb.shape()[1], xb.shape()[2]});
    const Tensor y = yb.slice_rows(s, s + 1).reshaped(Shape{yb.shape()[1]});
    loss_values[s] = static_cast<float>(model.train_on_batch(x, y));
  }
  const auto le = compare(loss_values, losses, kRelFloor);
  report(fx.name(), "losses", le);
  EXPECT_LE(le.max_rel, kTrajectoryTol);
  check_weights_after(fx, model, kTrajectoryTol);
  const auto pe =
      compare(model.predict(fx.tensor("x_eval")), fx.array("predictions_after"), kRelFloor);
  report(fx.name(), "predictions_after", pe);
  EXPECT_LE(pe.max_rel, kTrajectoryTol);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KerasSeed, ::testing::ValuesIn(list_cases("keras_seed")),
                         [](const auto& info) { return info.param; });

class KerasFrozen : public ::testing::TestWithParam<std::string> {};

// Keras: BatchNormalization(trainable=False) runs in inference mode inside fit, its gamma, beta
// and moving statistics stay as they were; the other layers train.
TEST_P(KerasFrozen, FitMatchesKeras) {
  Fixture fx(fixtures_root() / "keras_frozen" / GetParam());
  const bool bn_trainable = fx.config().at("bn_trainable").get<bool>();
  Sequential model = make_model(fx, bn_trainable);
  model.compile(make_optimizer("sgd", fx.config().at("learning_rate").get<double>()),
                LossKind::sparse_categorical_crossentropy);
  FitOptions o;
  o.batch_size = fx.config().at("batch_size").get<std::int64_t>();
  o.epochs = fx.config().at("epochs").get<int>();
  o.shuffle = fx.config().at("shuffle").get<bool>();
  model.fit(fx.tensor("x"), fx.tensor("y"), o);
  check_weights_after(fx, model, kTrajectoryTol);
  const auto pe = compare(model.predict(fx.tensor("x")), fx.array("predictions_after"), kRelFloor);
  report(fx.name(), "predictions_after", pe);
  EXPECT_LE(pe.max_rel, kTrajectoryTol);
  if (!bn_trainable) {
    // Frozen means bit-identical, not just close.
    const auto w = model.get_weights();
    for (std::size_t i = 2; i < 6; ++i) {
      const auto before = fx.array(kWeightNames[i]);
      for (std::size_t k = 0; k < before.values.size(); ++k)
        EXPECT_EQ(w[i][static_cast<std::int64_t>(k)], static_cast<float>(before.values[k]))
            << kWeightNames[i];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KerasFrozen, ::testing::ValuesIn(list_cases("keras_frozen")),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace bnorm::parity
