// bnorm predict — class probabilities of a saved model for chosen Fashion-MNIST test images, or
// any model's outputs for the rows of a .npy file (--input, --output).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/io/data.hpp"
#include "bnorm/io/idx.hpp"
#include "common.hpp"

namespace bnorm::cli {

namespace {

struct PredictOptions {
  std::string model;
  std::string data = io::kDefaultFashionMnistDir;
  std::vector<std::int64_t> indices{0};
  std::vector<std::string> inputs;   // FILE.npy per model input: predict every row
  std::vector<std::string> outputs;  // FILE.npy per model output, float32
  std::string rescale = "auto";
  std::int64_t batch_size = 32;
  bool no_fold = false;
  bool indices_given = false;
  bool data_given = false;
};

// Rows printed without --output; the rest are counted.
constexpr std::int64_t kPrintedRows = 20;

// An input file viewed as (N, per_sample...): samples whose size is the per-sample size (e.g.
// (N, 28, 28) for a (784,) input, as train does), or one sample of exactly that shape.
Tensor as_batch(Tensor x, const Shape& per_sample, const std::string& input_name,
                const std::string& path) {
  if (x.shape() == per_sample && x.rank() < Shape::kMaxRank) {
    std::vector<std::int64_t> dims{1};
    for (auto d : per_sample.dims()) dims.push_back(d);
    return std::move(x).reshaped(Shape(dims));
  }
  if (x.rank() < 1) throw ShapeError("'" + path + "' holds a scalar; expected rows of samples");
  const std::vector<std::int64_t> sample(x.shape().dims().begin() + 1, x.shape().dims().end());
  if (Shape(sample).size() != per_sample.size()) {
    throw ShapeError("'" + path + "' holds shape " + x.shape().str() + ", samples of shape " +
                     Shape(sample).str() + "; input '" + input_name + "' takes samples of shape " +
                     per_sample.str() + " (" + std::to_string(per_sample.size()) + " values)");
  }
  std::vector<std::int64_t> dims{x.shape()[0]};
  for (auto d : per_sample.dims()) dims.push_back(d);
  return std::move(x).reshaped(Shape(dims));
}

// Prints each row's argmax (or its value, for one output per row) of the first rows.
void print_rows(const Tensor& y) {
  const std::int64_t n = y.shape()[0];
  const std::int64_t per_row = n > 0 ? y.size() / n : 0;
  for (std::int64_t i = 0; i < n && i < kPrintedRows; ++i) {
    const float* row = y.data() + i * per_row;
    if (per_row == 1) {
      std::printf("row %lld: %.6f\n", static_cast<long long>(i), static_cast<double>(row[0]));
      continue;
    }
    std::int64_t best = 0;
    for (std::int64_t c = 1; c < per_row; ++c) {
      if (row[c] > row[best]) best = c;
    }
    std::printf("row %lld: argmax %lld (%.6f)\n", static_cast<long long>(i),
                static_cast<long long>(best), static_cast<double>(row[best]));
  }
  if (n > kPrintedRows) {
    std::printf("... %lld more rows (--output FILE.npy writes every output)\n",
                static_cast<long long>(n - kPrintedRows));
  }
}

void run_predict_input(const PredictOptions& o) {
  if (o.indices_given || o.data_given) {
    throw UsageError(std::string(o.indices_given ? "--index" : "--data") +
                     " picks Fashion-MNIST test images; with --input every row of the file is "
                     "predicted");
  }
  check_batch_size(o.batch_size);
  configure_threads(false, 0);
  Model model = load_model_for_inference(o.model);
  model.set_inference_folding(!o.no_fold);
  const auto& model_inputs = model.inputs();
  if (model_inputs.empty()) {
    throw ShapeError("model '" + model.name() + "' has no input shape (it was saved unbuilt)");
  }
  if (o.inputs.size() != model_inputs.size()) {
    throw UsageError("model '" + o.model + "' takes " + std::to_string(model_inputs.size()) +
                     " input" + (model_inputs.size() == 1 ? "" : "s") + "; received " +
                     std::to_string(o.inputs.size()) + " --input file" +
                     (o.inputs.size() == 1 ? "" : "s") + " (one per input, in order)");
  }
  if (!o.outputs.empty() && o.outputs.size() != model.outputs().size()) {
    throw UsageError("model '" + o.model + "' has " + std::to_string(model.outputs().size()) +
                     " output" + (model.outputs().size() == 1 ? "" : "s") + "; received " +
                     std::to_string(o.outputs.size()) + " --output file" +
                     (o.outputs.size() == 1 ? "" : "s") + " (one per output, in order)");
  }
  std::vector<Tensor> xs;
  for (std::size_t i = 0; i < o.inputs.size(); ++i) {
    xs.push_back(as_batch(io::read_npy(o.inputs[i], rescale_mode(o.rescale)),
                          model_inputs[i].shape(), model_inputs[i].producer_name(), o.inputs[i]));
    if (xs[i].shape()[0] != xs[0].shape()[0]) {
      throw ShapeError("'" + o.inputs[i] + "' has " + std::to_string(xs[i].shape()[0]) +
                       " rows; '" + o.inputs[0] + "' has " + std::to_string(xs[0].shape()[0]));
    }
  }
  std::vector<const Tensor*> ptrs;
  for (const auto& x : xs) ptrs.push_back(&x);
  const std::vector<Tensor> ys = model.predict_all(ptrs, o.batch_size);
  const std::int64_t n = xs[0].shape()[0];
  const std::string source =
      o.inputs.size() == 1 ? o.inputs[0] : std::to_string(o.inputs.size()) + " input files";
  if (!o.outputs.empty()) {
    for (std::size_t k = 0; k < ys.size(); ++k) {
      io::write_npy(o.outputs[k], ys[k]);
      std::printf("%s: %lld sample%s -> outputs %s written to %s\n", source.c_str(),
                  static_cast<long long>(n), n == 1 ? "" : "s", ys[k].shape().str().c_str(),
                  o.outputs[k].c_str());
    }
    return;
  }
  for (std::size_t k = 0; k < ys.size(); ++k) {
    std::printf("%s: %lld sample%s -> model '%s' output %zu of %zu: %s\n", source.c_str(),
                static_cast<long long>(n), n == 1 ? "" : "s", model.name().c_str(), k + 1,
                ys.size(), ys[k].shape().str().c_str());
    print_rows(ys[k]);
  }
}

void run_predict(const PredictOptions& o) {
  if (!o.inputs.empty()) return run_predict_input(o);
  if (!o.outputs.empty()) throw UsageError("--output needs --input FILE.npy");
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
      "predict",
      "Predicted class and the 10 class probabilities for chosen Fashion-MNIST test images, or "
      "any model's outputs for every row of a .npy file (--input)");
  cmd->add_option("--model", o->model, "Model file (.bnorm, .keras, .h5)")->required();
  cmd->add_option("--input", o->inputs,
                  "FILE.npy: predict every row (shape (N, ...) matching the model's input, or one "
                  "sample of exactly its input shape); repeat once per input of a model with "
                  "several, in order")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--output", o->outputs,
                  "With --input: write the outputs as a float32 FILE.npy instead of printing "
                  "each row's argmax; repeat once per output of a model with several")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--rescale", o->rescale,
                  "With --input: auto divides a uint8 file by 255 (as train does); none keeps "
                  "the stored values")
      ->capture_default_str();
  cmd->add_flag("--no-fold", o->no_fold,
                "With --input: run each Conv2D/Dense -> BatchNormalization pair as two layers "
                "instead of one folded layer (the default; equal within float32 rounding)");
  cmd->add_option("--batch-size", o->batch_size, "With --input: rows per forward pass")
      ->capture_default_str();
  cmd->add_option("--data", o->data, "Directory with the Fashion-MNIST IDX files")
      ->capture_default_str();
  cmd->add_option("--index", o->indices, "Test image indices, e.g. 0,5,7")
      ->delimiter(',')
      ->capture_default_str();
  return [o, cmd] {
    o->indices_given = cmd->count("--index") > 0;
    o->data_given = cmd->count("--data") > 0;
    run_predict(*o);
  };
}

}  // namespace bnorm::cli
