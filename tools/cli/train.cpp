// bnorm train — the main job: trains the seed model and the same model without BN on
// Fashion-MNIST, records train/validation/test metrics per epoch, and writes the reports.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/io/data.hpp"
#include "bnorm/io/idx.hpp"
#include "bnorm/model/callbacks.hpp"
#include "bnorm/model/sequential.hpp"
#include "bnorm/model/spec.hpp"
#include "bnorm/version.hpp"
#include "common.hpp"
#include "report.hpp"

namespace bnorm::cli {

namespace {

namespace fs = std::filesystem;

struct TrainOptions {
  std::vector<std::string> models;  // seed | seed-nobn | SPEC; empty = seed and seed-nobn
  int epochs = 10;
  std::int64_t batch_size = 32;
  std::string optimizer = "adam";
  double learning_rate = -1.0;  // < 0: the optimizer's Keras default (Adam: 1e-3)
  bool learning_rate_given = false;
  std::string lr_schedule = "constant";  // constant | cosine
  std::uint64_t seed = 42;
  int threads = 0;  // 0: leave bnorm's default
  bool threads_given = false;
  std::string data = io::kDefaultFashionMnistDir;  // a directory (IDX), FILE.npz or train.csv
  std::string test;                                // test.csv, with a CSV --data
  std::string label;                               // the CSV label column; empty = the last
  std::string rescale = "auto";                    // auto | none (uint8 .npz arrays)
  std::string out;
  bool quiet = false;
  double validation_split = 0.1;
  std::int64_t train_limit = 0;
  std::int64_t test_limit = 0;
};

struct ModelPlan {
  std::string name;
  std::string spec;
  std::unique_ptr<Model> model;
};

std::string timestamp(const char* format) {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[64];
  std::strftime(buf, sizeof buf, format, &local);
  return buf;
}

void validate(const TrainOptions& o) {
  if (o.epochs < 1) {
    throw UsageError("--epochs must be at least 1; received " + std::to_string(o.epochs));
  }
  check_batch_size(o.batch_size);
  if (o.threads_given) check_threads(o.threads);
  if (o.learning_rate_given && !(std::isfinite(o.learning_rate) && o.learning_rate > 0.0)) {
    throw UsageError("--lr must be a finite number > 0; received " +
                     std::to_string(o.learning_rate));
  }
  if (!(o.validation_split >= 0.0 && o.validation_split < 1.0)) {
    throw UsageError("--validation-split must be in [0, 1); received " +
                     std::to_string(o.validation_split));
  }
  std::string opt = o.optimizer;
  std::transform(opt.begin(), opt.end(), opt.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (opt != "sgd" && opt != "adam" && opt != "rmsprop") {
    throw UsageError("unknown --optimizer '" + o.optimizer + "' (choose sgd, adam or rmsprop)");
  }
  if (o.lr_schedule != "constant" && o.lr_schedule != "cosine") {
    throw UsageError("unknown --lr-schedule '" + o.lr_schedule + "' (choose constant or cosine)");
  }
  check_limit(o.train_limit, "--train-limit");
  check_limit(o.test_limit, "--test-limit");
  check_rescale(o.rescale);
}

enum class DataKind { fashion_mnist, npz, csv };

// --data names a directory of Fashion-MNIST IDX files (the default), an .npz archive or a CSV
// file; a file is recognized by its extension, else an existing file by its zip signature.
DataKind data_kind(const TrainOptions& o) {
  const fs::path path(o.data);
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  std::error_code ec;
  DataKind kind = DataKind::fashion_mnist;
  if (ext == ".npz") {
    kind = DataKind::npz;
  } else if (ext == ".csv") {
    kind = DataKind::csv;
  } else if (fs::is_regular_file(path, ec)) {
    if (!looks_like_zip(o.data)) {
      throw UsageError("--data " + o.data +
                       " is neither a directory of Fashion-MNIST IDX files nor an .npz or .csv "
                       "file");
    }
    kind = DataKind::npz;
  }
  if (kind == DataKind::csv && o.test.empty()) {
    throw UsageError("--data " + o.data + " is a CSV file: give the test split with --test FILE");
  }
  if (kind != DataKind::csv && !o.test.empty()) {
    throw UsageError("--test is for CSV data (--data train.csv --test test.csv)");
  }
  if (kind != DataKind::csv && !o.label.empty()) {
    throw UsageError("--label is for CSV data (--data train.csv --test test.csv --label COLUMN)");
  }
  return kind;
}

// The user's data set and what the named models are built for.
struct UserData {
  Shape sample;              // per-sample shape of x_train
  std::int64_t classes = 0;  // largest label + 1 (at least 2)
};

// The CLI's named models: name -> spec.
const std::vector<std::pair<std::string, std::string>>& named_models() {
  static const std::vector<std::pair<std::string, std::string>> named = {
      {"seed", kSeedSpec},        {"seed-nobn", kSeedNoBnSpec}, {"cnn", kCnnSpec},
      {"cnn-nobn", kCnnNoBnSpec}, {"resnet", kResNetPreset},    {"resnet-nobn", kResNetNoBnPreset}};
  return named;
}

// The named Fashion-MNIST spec rebuilt for `classes` outputs: its final dense10-softmax becomes
// dense<classes>-softmax.
std::string spec_for_classes(const std::string& spec, std::int64_t classes) {
  const std::string last = "dense10-softmax";
  if (classes == 10 || spec.size() < last.size() ||
      spec.compare(spec.size() - last.size(), last.size(), last) != 0) {
    return spec;
  }
  return spec.substr(0, spec.size() - last.size()) + "dense" + std::to_string(classes) + "-softmax";
}

// Builds and compiles every requested model (for Fashion-MNIST before any data is read, so a bad
// spec fails fast). Each model gets the samples in the shape its first layer takes: (784,) for
// dense models, (28, 28, 1) (or (1, 28, 28) for channels_first) for convolutional ones. With the
// user's data (`user` set) the named models are built for its sample shape and classes; a custom
// SPEC or a model file keeps the outputs it declares (the caller checks the labels against them).
std::vector<ModelPlan> plan_models(const TrainOptions& o, const UserData* user = nullptr) {
  std::vector<std::string> requested = o.models;
  if (requested.empty()) requested = {"seed", "seed-nobn"};
  auto named = [](const std::string& m) -> const std::string* {
    for (const auto& [name, spec] : named_models())
      if (name == m) return &spec;
    return nullptr;
  };
  const auto customs = std::count_if(requested.begin(), requested.end(),
                                     [&](const std::string& m) { return !named(m); });
  std::vector<ModelPlan> plans;
  int custom_index = 0;
  for (const auto& m : requested) {
    ModelPlan p;
    if (const std::string* spec = named(m)) {
      p.name = m;
      p.spec = user && !is_resnet_preset(*spec) ? spec_for_classes(*spec, user->classes) : *spec;
    } else {
      ++custom_index;
      p.name = customs > 1 ? "custom-" + std::to_string(custom_index) : "custom";
      p.spec = m;
    }
    for (const auto& other : plans) {
      if (other.name == p.name) throw UsageError("--model " + m + " is given twice");
    }
    std::error_code ec;
    const bool model_file = !named(m) && fs::is_regular_file(m, ec);
    if (model_file) {
      // A saved model (.bnorm, Keras .keras or .h5): trained further from its weights, with its
      // own compile settings when the file has them.
      p.name = fs::path(m).stem().string();
      p.spec = "file " + m;
      p.model = std::make_unique<Model>(io::load_model(m));
    } else if (is_resnet_preset(p.spec) && user) {
      const Shape image =
          user->sample.rank() == 2 ? Shape{user->sample[0], user->sample[1], 1} : user->sample;
      if (image.rank() != 3) {
        throw ShapeError("model '" + p.name + "' takes images (height, width[, channels]); " +
                         "the data's samples have shape " + user->sample.str());
      }
      p.model =
          std::make_unique<Model>(make_resnet_preset(p.spec, o.seed, p.name, image, user->classes));
    } else if (is_resnet_preset(p.spec)) {
      p.model = std::make_unique<Model>(make_resnet_preset(p.spec, o.seed, p.name));
    } else {
      auto chain = std::make_unique<Sequential>(o.seed, p.name);
      add_layers_from_spec(*chain, p.spec);
      chain->build(user ? model_input_shape(*chain, user->sample)
                        : fashion_mnist_input_shape(*chain));
      p.model = std::move(chain);
    }
    if (!user) {
      check_classifier_output(*p.model, "model '" + p.name + "' (" + p.spec + ")");
    } else if (p.model->output_shape().rank() != 1) {
      throw ShapeError("model '" + p.name + "' (" + p.spec + ") outputs shape " +
                       p.model->output_shape().str() +
                       " per sample; a classifier outputs one value per class");
    }
    if (!model_file || !p.model->compiled()) {
      p.model->compile(make_optimizer(o.optimizer, o.learning_rate),
                       LossKind::sparse_categorical_crossentropy, {"accuracy"});
    }
    plans.push_back(std::move(p));
  }
  return plans;
}

bool has_batch_norm(const Model& model) {
  for (std::size_t i = 0; i < model.size(); ++i) {
    if (model.layer(i).class_name() == "BatchNormalization") return true;
  }
  return false;
}

double log_value(const Logs& logs, const char* key) {
  const auto it = logs.find(key);
  return it == logs.end() ? kMissing : it->second;
}

// Times each epoch (training + validation) and evaluates the test set, in inference mode, at its
// end. Placed after ProgressBar so that its line follows the epoch's progress line.
class EpochRecorder final : public Callback {
 public:
  EpochRecorder(const Tensor& x, const Tensor& y, std::int64_t batch_size, bool print)
      : x_(x), y_(y), batch_size_(batch_size), print_(print) {}
  void on_epoch_begin(Model&, int) override { start_ = std::chrono::steady_clock::now(); }
  void on_epoch_end(Model& model, int epoch, const Logs& logs) override {
    EpochRecord r;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    r.epoch = epoch + 1;
    r.accuracy = log_value(logs, "accuracy");
    r.loss = log_value(logs, "loss");
    r.val_accuracy = log_value(logs, "val_accuracy");
    r.val_loss = log_value(logs, "val_loss");
    const EvaluateResult test = model.evaluate(x_, y_, batch_size_, Mode::inference);
    r.test_accuracy = test.accuracy;
    r.test_loss = test.loss;
    if (print_) {
      std::printf("test_accuracy: %.4f - test_loss: %.4f - %.2fs for the epoch\n", r.test_accuracy,
                  r.test_loss, r.seconds);
      std::fflush(stdout);
    }
    records.push_back(r);
  }
  std::vector<EpochRecord> records;

 private:
  const Tensor& x_;
  const Tensor& y_;
  std::int64_t batch_size_;
  bool print_;
  std::chrono::steady_clock::time_point start_;
};

std::string choose_out_dir(const std::string& requested) {
  if (!requested.empty()) return requested;
  const std::string base = "runs/" + timestamp("%Y%m%d-%H%M%S");
  std::string dir = base;
  std::error_code ec;
  for (int i = 2; fs::exists(dir, ec); ++i) dir = base + "-" + std::to_string(i);
  return dir;
}

void run_train(TrainOptions o) {
  validate(o);
  configure_threads(o.threads_given, o.threads);

  const DataKind kind = data_kind(o);
  std::vector<ModelPlan> plans;
  io::Dataset data;
  if (kind == DataKind::fashion_mnist) {
    plans = plan_models(o);
    data = io::load_fashion_mnist(o.data);
  } else {
    data = kind == DataKind::npz ? io::load_npz_dataset(o.data, rescale_mode(o.rescale))
                                 : io::load_csv_dataset(o.data, o.test, o.label);
    UserData user;
    const auto& dims = data.train_x.shape().dims();
    user.sample = Shape(std::vector<std::int64_t>(dims.begin() + 1, dims.end()));
    user.classes = std::max<std::int64_t>(io::count_classes(data), 2);
    plans = plan_models(o, &user);
    // Every label must be one of each model's classes (a custom SPEC may declare fewer).
    const std::string test_file = kind == DataKind::csv ? o.test : o.data;
    for (const auto& p : plans) {
      const std::int64_t classes = p.model->output_shape()[0];
      io::check_class_labels(data.train_y, classes,
                             "'" + o.data + "' y_train (model '" + p.name + "')");
      io::check_class_labels(data.test_y, classes,
                             "'" + test_file + "' y_test (model '" + p.name + "')");
    }
  }
  // Moved, not copied: the data set is held once (60000 images are 180 MiB as float32).
  Tensor train_images = first_rows(std::move(data.train_x), o.train_limit);
  Tensor train_y = first_rows(std::move(data.train_y), o.train_limit);
  Tensor test_images = first_rows(std::move(data.test_x), o.test_limit);
  Tensor test_y = first_rows(std::move(data.test_y), o.test_limit);
  data = {};
  const std::int64_t n_train = train_images.shape()[0];
  const std::int64_t n_test = test_images.shape()[0];

  TrainConfig config;
  config.epochs = o.epochs;
  config.batch_size = o.batch_size;
  config.optimizer = plans.front().model->optimizer().name();
  config.learning_rate = plans.front().model->optimizer().learning_rate();
  config.lr_schedule = o.lr_schedule;
  config.blas = blas_description();
  config.seed = o.seed;
  config.threads = num_threads();
  config.validation_split = o.validation_split;
  config.data_dir = o.data;
  config.train_limit = o.train_limit;
  config.test_limit = o.test_limit;
  config.train_samples = o.validation_split > 0.0
                             ? bnorm::validation_split_index(n_train, o.validation_split)
                             : n_train;
  config.validation_samples = n_train - config.train_samples;
  config.test_samples = n_test;
  if (config.train_samples < 1 || config.validation_samples < (o.validation_split > 0.0 ? 1 : 0)) {
    throw UsageError("--validation-split " + std::to_string(o.validation_split) + " of " +
                     std::to_string(n_train) +
                     " images leaves an empty training or validation set");
  }

  config.out_dir = choose_out_dir(o.out);
  {
    std::error_code ec;
    fs::create_directories(config.out_dir, ec);
    if (ec || !fs::is_directory(config.out_dir)) {
      throw IoError("cannot create output directory '" + config.out_dir + "'" +
                    (ec ? " (" + ec.message() + ")" : ""));
    }
  }
  const fs::path out(config.out_dir);

  if (!o.quiet) {
    const std::string source = kind == DataKind::fashion_mnist ? "Fashion-MNIST from " + o.data
                               : kind == DataKind::npz         ? o.data
                                                               : o.data + " and " + o.test;
    const char* what = kind == DataKind::fashion_mnist ? "images" : "samples";
    std::printf(
        "%s: %lld training %s (%lld held out for validation), "
        "%lld test %s; %d thread%s; BLAS %s; writing to %s\n",
        source.c_str(), static_cast<long long>(config.train_samples), what,
        static_cast<long long>(config.validation_samples), static_cast<long long>(n_test), what,
        config.threads, config.threads == 1 ? "" : "s", config.blas.c_str(),
        config.out_dir.c_str());
  }

  std::vector<ModelRun> runs;
  for (auto& plan : plans) {
    Model& model = *plan.model;
    // Each model sees the images in its own input shape ((N, 784) or (N, 28, 28, 1)): a view
    // of the same storage, never a copy.
    train_images = as_model_input(std::move(train_images), model);
    test_images = as_model_input(std::move(test_images), model);
    const Tensor& train_x = train_images;
    const Tensor& test_x = test_images;
    ModelRun run;
    run.name = plan.name;
    run.spec = plan.spec;
    run.params = model.count_params();
    run.trainable_params = model.count_trainable_params();
    run.history_file = "history_" + plan.name + ".csv";
    run.model_file = "model_" + plan.name + ".bnorm";
    run.has_batch_norm = has_batch_norm(model);
    const std::string model_path = (out / run.model_file).string();

    if (!o.quiet) {
      std::printf("\nModel '%s': %s\n%s", plan.name.c_str(), plan.spec.c_str(),
                  model.summary().c_str());
      std::fflush(stdout);
    }
    ProgressBar progress(stdout);
    EpochRecorder recorder(test_x, test_y, o.batch_size, !o.quiet);
    CSVLogger csv((out / run.history_file).string());
    io::ModelCheckpoint checkpoint(model_path);
    std::optional<LearningRateScheduler> scheduler;
    if (o.lr_schedule == "cosine")
      scheduler.emplace(cosine_decay(model.optimizer().learning_rate(), o.epochs));
    FitOptions fit;
    fit.batch_size = o.batch_size;
    fit.epochs = o.epochs;
    fit.validation_split = o.validation_split;
    if (scheduler) fit.callbacks.push_back(&*scheduler);
    if (!o.quiet) fit.callbacks.push_back(&progress);
    fit.callbacks.push_back(&recorder);
    fit.callbacks.push_back(&csv);
    fit.callbacks.push_back(&checkpoint);
    try {
      model.fit(train_x, train_y, fit);
    } catch (const NonFiniteError& e) {
      std::error_code ec;
      const std::string kept = fs::exists(model_path, ec)
                                   ? "the last good checkpoint is " + model_path
                                   : "no checkpoint was written (no epoch completed)";
      throw NonFiniteError("model '" + plan.name + "': " + e.what() + "; " + kept);
    }
    run.epochs = recorder.records;
    const EvaluateResult inference = model.evaluate(test_x, test_y, o.batch_size, Mode::inference);
    run.test_accuracy = inference.accuracy;
    run.test_loss = inference.loss;
    if (run.has_batch_norm) {
      const EvaluateResult training = model.evaluate(test_x, test_y, o.batch_size, Mode::training);
      run.training_mode_accuracy = training.accuracy;
      run.training_mode_loss = training.loss;
      run.inference_mode_accuracy = inference.accuracy;
      run.inference_mode_loss = inference.loss;
    }
    runs.push_back(std::move(run));
  }

  std::printf("%s", render_summary_table(config, runs).c_str());
  write_text_file(
      (out / "summary.json").string(),
      render_summary_json(config, runs, timestamp("%Y-%m-%dT%H:%M:%S%z"), BNORM_VERSION_STRING));
  write_text_file((out / "curves.svg").string(), render_curves_svg(runs));
  std::printf("\nWrote %s: ", config.out_dir.c_str());
  for (const auto& r : runs) std::printf("%s, %s, ", r.history_file.c_str(), r.model_file.c_str());
  std::printf("summary.json, curves.svg\n");
  std::fflush(stdout);
}

}  // namespace

Action add_train_command(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train on Fashion-MNIST or the user's data (--data FILE.npz, or train.csv --test test.csv) "
      "(default: the seed model and the same model without BN) and write "
      "histories, checkpoints, summary.json and curves.svg");
  cmd->add_option(
         "--model", o->models,
         "seed | seed-nobn | cnn | cnn-nobn | resnet | resnet-nobn | SPEC (e.g. "
         "\"dense64-relu,bn,dense10-softmax\") | a model file (.bnorm, Keras .keras or .h5, "
         "trained further with its own compile settings); repeat to train several; default: seed "
         "and seed-nobn")
      ->allow_extra_args(false);
  cmd->add_option("--epochs", o->epochs, "Number of epochs")->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "Batch size")->capture_default_str();
  cmd->add_option("--optimizer", o->optimizer, "sgd | adam | rmsprop")->capture_default_str();
  cmd->add_option("--lr", o->learning_rate,
                  "Learning rate (default: the optimizer's Keras default; Adam 0.001)");
  cmd->add_option("--lr-schedule", o->lr_schedule,
                  "constant | cosine (Keras CosineDecay over the epochs: epoch e of E trains at "
                  "lr * (1 + cos(pi * e / E)) / 2)")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed for initialization, shuffling and dropout")
      ->capture_default_str();
  cmd->add_option("--threads", o->threads,
                  "Threads for bnorm's kernels (default: $BNORM_NUM_THREADS, else all cores)");
  cmd->add_option("--data", o->data,
                  "Directory with the Fashion-MNIST IDX files (raw or .gz), or the user's data: "
                  "FILE.npz (x_train, y_train, x_test, y_test) or train.csv (with --test)")
      ->capture_default_str();
  cmd->add_option("--test", o->test, "With --data train.csv: the test split's CSV file");
  cmd->add_option("--label", o->label,
                  "With CSV data: the label column's name (default: the last column)");
  cmd->add_option("--rescale", o->rescale,
                  "auto: uint8 arrays of an .npz are divided by 255, as the Fashion-MNIST "
                  "default is; none: values as stored")
      ->capture_default_str();
  cmd->add_option("--out", o->out, "Output directory (default: runs/<YYYYmmdd-HHMMSS>)");
  cmd->add_flag("--quiet", o->quiet, "No progress bars; print only the final summary");
  cmd->add_option("--validation-split", o->validation_split,
                  "Fraction of the training images held out (the last ones, as Keras does)")
      ->capture_default_str();
  cmd->add_option("--train-limit", o->train_limit,
                  "Use only the first N training images (0 = all)");
  cmd->add_option("--test-limit", o->test_limit, "Use only the first N test images (0 = all)");
  return [o, cmd] {
    o->learning_rate_given = cmd->count("--lr") > 0;
    o->threads_given = cmd->count("--threads") > 0;
    run_train(*o);
  };
}

}  // namespace bnorm::cli
