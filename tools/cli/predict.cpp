// bnorm predict — class probabilities of a saved model for chosen test images.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/io/idx.hpp"
#include "common.hpp"

namespace bnorm::cli {

namespace {

struct PredictOptions {
  std::string model;
  std::string data = io::kDefaultFashionMnistDir;
  std::vector<std::int64_t> indices{0};
};

void run_predict(const PredictOptions& o) {
  configure_threads(false, 0);  // BNORM_NUM_THREADS, as train and evaluate
  Model model = load_model_for_inference(o.model);
  check_classifier_output(model, "model '" + o.model + "'");
  const TestSet test = load_test_set(o.data, 0);
  const std::int64_t n = test.x.shape()[0];
  for (auto i : o.indices) {
    if (i < 0 || i >= n) {
      throw UsageError("--index " + std::to_string(i) + " is outside the test set [0, " +
                       std::to_string(n) + ")");
    }
  }
  // Gather the chosen images into one batch.
  const std::int64_t k = static_cast<std::int64_t>(o.indices.size());
  const std::int64_t image_size = test.x.size() / n;
  std::vector<std::int64_t> dims{k};
  for (int d = 1; d < test.x.rank(); ++d) dims.push_back(test.x.shape()[d]);
  Tensor images{Shape(dims)};
  for (std::int64_t j = 0; j < k; ++j) {
    std::memcpy(images.data() + j * image_size, test.x.data() + o.indices[j] * image_size,
                static_cast<std::size_t>(image_size) * sizeof(float));
  }
  const Tensor probabilities = model.predict(as_model_input(std::move(images), model));

  for (std::int64_t j = 0; j < k; ++j) {
    const float* p = probabilities.data() + j * kNumClasses;
    int best = 0;
    for (int c = 1; c < kNumClasses; ++c) {
      if (p[c] > p[best]) best = c;
    }
    const int label = static_cast<int>(test.y[o.indices[j]]);
    std::printf("%stest image %lld: true %d (%s), predicted %d (%s)%s\n", j ? "\n" : "",
                static_cast<long long>(o.indices[j]), label, kClassNames[label], best,
                kClassNames[best], best == label ? "" : "  [wrong]");
    for (int c = 0; c < kNumClasses; ++c) {
      std::printf("  %d %-12s %.6f%s\n", c, kClassNames[c], static_cast<double>(p[c]),
                  c == best ? "  <" : "");
    }
  }
}

}  // namespace

Action add_predict_command(CLI::App& app) {
  auto o = std::make_shared<PredictOptions>();
  CLI::App* cmd = app.add_subcommand(
      "predict", "Predicted class and the 10 class probabilities for chosen test images");
  cmd->add_option("--model", o->model, "Model file written by bnorm train (.bnorm)")->required();
  cmd->add_option("--data", o->data, "Directory with the Fashion-MNIST IDX files")
      ->capture_default_str();
  cmd->add_option("--index", o->indices, "Test image indices, e.g. 0,5,7")
      ->delimiter(',')
      ->capture_default_str();
  return [o] { run_predict(*o); };
}

}  // namespace bnorm::cli
