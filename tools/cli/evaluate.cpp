// bnorm evaluate — loss and accuracy of a saved model on the Fashion-MNIST test set.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "bnorm/core/parallel.hpp"
#include "bnorm/io/idx.hpp"
#include "common.hpp"

namespace bnorm::cli {

namespace {

struct EvaluateOptions {
  std::string model;
  std::string data = io::kDefaultFashionMnistDir;
  std::int64_t batch_size = 32;
  std::string mode = "inference";
  std::int64_t test_limit = 0;
  int threads = 0;
  bool threads_given = false;
};

void run_evaluate(const EvaluateOptions& o) {
  check_batch_size(o.batch_size);
  check_limit(o.test_limit, "--test-limit");
  if (o.threads_given) check_threads(o.threads);
  if (o.mode != "inference" && o.mode != "training") {
    throw UsageError("--mode must be inference or training; received '" + o.mode + "'");
  }
  configure_threads(o.threads_given, o.threads);
  Model model = load_model_for_inference(o.model);
  check_classifier_output(model, "model '" + o.model + "'");
  TestSet test = load_test_set(o.data, o.test_limit);
  const Tensor x = as_model_input(std::move(test.x), model);
  const Mode mode = o.mode == "training" ? Mode::training : Mode::inference;
  const EvaluateResult r = model.evaluate(x, test.y, o.batch_size, mode);
  std::printf("%s on %lld test images (%s mode, batch size %lld)\n", o.model.c_str(),
              static_cast<long long>(x.shape()[0]), o.mode.c_str(),
              static_cast<long long>(o.batch_size));
  std::printf("test_loss: %.6f\ntest_accuracy: %.6f\n", r.loss, r.accuracy);
}

}  // namespace

Action add_evaluate_command(CLI::App& app) {
  auto o = std::make_shared<EvaluateOptions>();
  CLI::App* cmd =
      app.add_subcommand("evaluate", "Test loss and accuracy of a saved model on Fashion-MNIST");
  cmd->add_option("--model", o->model, "Model file: .bnorm, Keras .keras or legacy .h5 (format read from the content)")->required();
  cmd->add_option("--data", o->data, "Directory with the Fashion-MNIST IDX files")
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "Batch size")->capture_default_str();
  cmd->add_option("--mode", o->mode,
                  "inference (moving statistics) or training (batch statistics; nothing is "
                  "updated)")
      ->capture_default_str();
  cmd->add_option("--test-limit", o->test_limit, "Use only the first N test images (0 = all)");
  cmd->add_option("--threads", o->threads,
                  "Threads for bnorm's kernels (default: $BNORM_NUM_THREADS, else all cores)");
  return [o, cmd] {
    o->threads_given = cmd->count("--threads") > 0;
    run_evaluate(*o);
  };
}

}  // namespace bnorm::cli
