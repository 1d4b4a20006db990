// bnorm recalibrate — PreciseBN: re-estimates a saved model's BatchNormalization moving
// statistics as the average of the batch statistics of K training batches
// (Model::recalibrate_batch_norm), and writes the model with them.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "bnorm/core/error.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/io/data.hpp"
#include "bnorm/io/idx.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "common.hpp"

namespace bnorm::cli {

namespace {

struct RecalibrateOptions {
  std::string model;
  std::string out;
  std::string data = io::kDefaultFashionMnistDir;
  std::int64_t batches = 200;
  std::int64_t batch_size = 32;
  std::int64_t test_limit = 0;
  int threads = 0;
  bool threads_given = false;
};

void run_recalibrate(const RecalibrateOptions& o) {
  check_batch_size(o.batch_size);
  check_limit(o.test_limit, "--test-limit");
  if (o.batches < 1) {
    throw UsageError("--batches must be at least 1; received " + std::to_string(o.batches));
  }
  if (o.threads_given) check_threads(o.threads);
  configure_threads(o.threads_given, o.threads);
  Model model = load_model_for_inference(o.model);
  std::size_t layers = 0;
  for (const auto& l : model.layers()) {
    const auto* bn = dynamic_cast<const BatchNormalization*>(l.get());
    if (bn && bn->trainable() && bn->options().track_moving_statistics) ++layers;
  }
  if (layers == 0) {
    throw ValueError("model '" + o.model +
                     "' has no trainable BatchNormalization with moving statistics to "
                     "recalibrate");
  }
  // Training images (what the statistics are estimated from) and test images (to show the
  // effect), from Fashion-MNIST or an .npz of the user's.
  Tensor train_x, test_x, test_y;
  if (std::filesystem::path(o.data).extension() == ".npz") {
    io::Dataset d = io::load_npz_dataset(o.data);
    train_x = std::move(d.train_x);
    test_x = first_rows(std::move(d.test_x), o.test_limit);
    test_y = first_rows(std::move(d.test_y), o.test_limit);
  } else {
    train_x = load_train_set(o.data, 0).x;
    TestSet test = load_test_set(o.data, o.test_limit);
    test_x = std::move(test.x);
    test_y = std::move(test.y);
  }
  train_x = as_model_input(std::move(train_x), model);
  test_x = as_model_input(std::move(test_x), model);
  // load_model_for_inference compiled the model when its file did not.
  const EvaluateResult before = model.evaluate(test_x, test_y, o.batch_size);
  const std::int64_t used = model.recalibrate_batch_norm(train_x, o.batch_size, o.batches);
  const EvaluateResult after = model.evaluate(test_x, test_y, o.batch_size);
  io::save_model(model, o.out);
  std::printf(
      "Recalibrated the moving statistics of %zu BatchNormalization layer%s from %lld "
      "batches of %lld training samples (PreciseBN: the average of the batch statistics)\n",
      layers, layers == 1 ? "" : "s", static_cast<long long>(used),
      static_cast<long long>(o.batch_size));
  std::printf("test accuracy (inference mode): %.4f before, %.4f after\n", before.accuracy,
              after.accuracy);
  std::printf("test loss (inference mode):     %.4f before, %.4f after\n", before.loss, after.loss);
  std::printf("Wrote %s\n", o.out.c_str());
}

}  // namespace

Action add_recalibrate_command(CLI::App& app) {
  auto o = std::make_shared<RecalibrateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "recalibrate",
      "PreciseBN: re-estimate a saved model's BatchNormalization moving statistics as the "
      "average of K training batches' statistics, and write the model");
  cmd->add_option("--model", o->model, "Model file: .bnorm, Keras .keras or legacy .h5")
      ->required();
  cmd->add_option("--out", o->out, "Where to write the recalibrated model (.bnorm, .keras, .h5)")
      ->required();
  cmd->add_option("--batches", o->batches, "Batches to average (fvcore's default: 200)")
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "Samples per batch")->capture_default_str();
  cmd->add_option("--data", o->data,
                  "Directory with the Fashion-MNIST IDX files, or FILE.npz (x_train, y_train, "
                  "x_test, y_test)")
      ->capture_default_str();
  cmd->add_option("--test-limit", o->test_limit,
                  "Evaluate before/after on only the first N test samples (0 = all)");
  cmd->add_option("--threads", o->threads,
                  "Threads for bnorm's kernels (default: $BNORM_NUM_THREADS, else all cores)");
  return [o, cmd] {
    o->threads_given = cmd->count("--threads") > 0;
    run_recalibrate(*o);
  };
}

}  // namespace bnorm::cli
