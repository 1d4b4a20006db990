// Whole-model parity with Keras for a small CNN with BatchNormalization: Conv2D -> BN -> ReLU ->
// MaxPooling2D -> Conv2D -> BN -> ReLU -> Flatten -> Dense -> BN -> ReLU -> Dense(softmax),
// channels_last and channels_first, trained three steps with fit (SGD with momentum, Adam).
// The model is rebuilt from the Keras layer configs stored in the fixture.
#include <gtest/gtest.h>

#include <array>

#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/flatten.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/model/sequential.hpp"
#include "fixture.hpp"
#include "tolerances.hpp"

namespace bnorm::parity {
namespace {

// One bnorm layer from a Keras class name and config (the keys the generator keeps).
std::unique_ptr<Layer> make_layer(const std::string& class_name, const nlohmann::json& c) {
  if (class_name == "Conv2D") return std::make_unique<Conv2D>(keras_conv2d_options(c));
  if (class_name == "BatchNormalization")
    return std::make_unique<BatchNormalization>(keras_bn_options(c));
  if (class_name == "Activation") return std::make_unique<Activation>(c.at("activation"));
  if (class_name == "MaxPooling2D") return std::make_unique<MaxPooling2D>(keras_pooling_options(c));
  if (class_name == "Flatten") {
    Flatten::Options o;
    o.data_format = c.at("data_format").get<std::string>();
    return std::make_unique<Flatten>(o);
  }
  if (class_name == "Dense") {
    Dense::Options o;
    o.units = c.at("units").get<std::int64_t>();
    o.activation = c.at("activation").get<std::string>();
    o.use_bias = c.at("use_bias").get<bool>();
    return std::make_unique<Dense>(o);
  }
  throw std::runtime_error("no bnorm layer for Keras class " + class_name);
}

// The fixture's model with its initial weights.
Sequential make_model(const Fixture& fx) {
  const auto& c = fx.config();
  Sequential model(0);
  model.add(Input{Shape(c.at("input_shape").get<std::vector<std::int64_t>>())});
  for (const auto& l : c.at("layers")) {
    model.add(make_layer(l.at("class_name").get<std::string>(), l.at("config")))
        .set_name(l.at("name").get<std::string>());
  }
  model.build();
  std::vector<Tensor> weights;
  for (const auto& n : c.at("weight_names")) weights.push_back(fx.tensor(n.get<std::string>()));
  model.set_weights(weights);
  return model;
}

std::unique_ptr<Optimizer> make_fixture_optimizer(const Fixture& fx) {
  const auto& oc = fx.config().at("optimizer_config");
  std::map<std::string, double> config;
  for (const auto& key : {"learning_rate", "momentum", "beta_1", "beta_2", "epsilon", "rho"})
    if (oc.contains(key) && oc.at(key).is_number()) config[key] = oc.at(key).get<double>();
  if (oc.contains("nesterov")) config["nesterov"] = oc.at("nesterov").get<bool>() ? 1.0 : 0.0;
  return make_optimizer(fx.config().at("optimizer").get<std::string>(), config);
}

class BatchLosses final : public Callback {
 public:
  void on_train_batch_end(Model&, std::int64_t, const Logs& logs) override {
    losses.push_back(logs.at("loss"));
  }
  std::vector<double> losses;
};

void check(const Fixture& fx, const std::string& quantity, const Tensor& actual,
           const std::string& array, double tol) {
  const auto e = compare(actual, fx.array(array), kRelFloor);
  report(fx.name(), quantity, e);
  EXPECT_LE(e.max_rel, tol) << fx.name() << " " << quantity;
}

class KerasCnn : public ::testing::TestWithParam<std::string> {
 protected:
  KerasCnn() : fx_(fixtures_root() / "keras_cnn" / GetParam()) {}
  Fixture fx_;
};

// Inference through the whole network with the initial weights: one forward pass, no
// training, so only float32 rounding (summed over the layers) separates bnorm from Keras.
TEST_P(KerasCnn, InitialPredictionsMatchKeras) {
  Sequential model = make_model(fx_);
  const Tensor x_eval = fx_.tensor("x_eval");
  // predict folds each Conv2D/Dense -> BatchNormalization pair; check both paths.
  EXPECT_GE(model.foldable_pairs(), 1u);
  check(fx_, "predictions_initial", model.predict(x_eval), "predictions_initial", kForwardTol);
  model.set_inference_folding(false);
  check(fx_, "predictions_initial[unfolded]", model.predict(x_eval), "predictions_initial",
        kForwardTol);
}

TEST_P(KerasCnn, ThreeFitStepsMatchKeras) {
  Sequential model = make_model(fx_);
  model.compile(make_fixture_optimizer(fx_), LossKind::sparse_categorical_crossentropy);
  BatchLosses losses;
  FitOptions o;
  o.batch_size = fx_.config().at("batch_size").get<std::int64_t>();
  o.epochs = 1;
  o.shuffle = false;
  o.callbacks = {&losses};
  model.fit(fx_.tensor("x"), fx_.tensor("y"), o);

  const auto steps = fx_.config().at("steps").get<std::int64_t>();
  ASSERT_EQ(static_cast<std::int64_t>(losses.losses.size()), steps);
  Tensor loss_values(Shape{steps});
  for (std::int64_t s = 0; s < steps; ++s)
    loss_values[s] = static_cast<float>(losses.losses[static_cast<std::size_t>(s)]);
  check(fx_, "batch_losses", loss_values, "batch_losses", kTrajectoryTol);

  const auto weights = model.get_weights();
  const auto& names = fx_.config().at("weight_names");
  ASSERT_EQ(weights.size(), names.size());
  for (std::size_t i = 0; i < weights.size(); ++i) {
    const std::string n = names[i].get<std::string>() + "_after";
    check(fx_, n, weights[i], n, kTrajectoryTol);
  }
  const Tensor x_eval = fx_.tensor("x_eval");
  check(fx_, "predictions_after", model.predict(x_eval), "predictions_after", kTrajectoryTol);
  const auto batch = fx_.config().at("batch_size").get<std::int64_t>();
  Tensor eval_loss(Shape{1});
  eval_loss[0] = static_cast<float>(model.evaluate(x_eval, fx_.tensor("y_eval"), batch).loss);
  check(fx_, "evaluate_loss_after", eval_loss, "evaluate_loss_after", kTrajectoryTol);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KerasCnn, ::testing::ValuesIn(list_cases("keras_cnn")),
                         [](const auto& info) { return info.param; });

TEST(KerasCnnFixtures, BothDataFormatsPresent) {
  int channels_first = 0;
  for (const auto& c : list_cases("keras_cnn")) {
    const Fixture fx(fixtures_root() / "keras_cnn" / c);
    channels_first += fx.config().at("data_format") == "channels_first";
  }
  EXPECT_GE(list_cases("keras_cnn").size(), 4u);
  EXPECT_GE(channels_first, 2);
}

}  // namespace
}  // namespace bnorm::parity
