// bnorm train — the main job: trains the seed model and the same model without BN on
// Fashion-MNIST, records train/validation/test metrics per epoch, and writes the reports.
// `--resume RUN_DIR` continues such a run from its checkpoints with the bits of a run that was
// never interrupted.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"
#include "bnorm/dist/communicator.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/io/data.hpp"
#include "bnorm/io/idx.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/model/callbacks.hpp"
#include "bnorm/model/sequential.hpp"
#include "bnorm/model/spec.hpp"
#include "bnorm/version.hpp"
#include "common.hpp"
#include "distributed.hpp"
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
  std::string resume;  // a run directory to continue; empty = a new run
  bool epochs_given = false;
  bool distributed = false;         // mpirun -np N bnorm train --distributed
  bool sync_bn = false;             // every BatchNormalization synchronized=True
  std::int64_t check_replicas = 0;  // check weights are identical on every rank every K steps
  bool monitor_bn = false;          // BatchNormMonitor: bn_monitor_<model>.csv
};

struct ModelPlan {
  std::string name;
  std::string spec;
  std::unique_ptr<Model> model;
  // Resumed from the run directory's checkpoint (its optimizer, streams and epoch restored).
  bool resumed = false;
  // The optimizer's rate when the run started: where a learning-rate schedule starts from.
  double initial_learning_rate = 0.0;
};

using json = nlohmann::json;

// ---- The run directory: what --resume needs beside the checkpoints -------------------------
//
// run.json holds the options of the run (rewritten with the new --epochs on a resume) and each
// model's initial learning rate; records_<model>.json holds the per-epoch records of the summary
// (test metrics, seconds), written before the checkpoint at every epoch's end, so it never has
// fewer epochs than the checkpoint (extra ones, from a run killed in between, are dropped).

constexpr const char* kRunFile = "run.json";
constexpr int kRunFormatVersion = 1;

std::string checkpoint_file(const std::string& model) { return "model_" + model + ".bnorm"; }
std::string records_file(const std::string& model) { return "records_" + model + ".json"; }
std::string history_file(const std::string& model) { return "history_" + model + ".csv"; }

json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

json records_json(const std::vector<EpochRecord>& records) {
  json list = json::array();
  for (const auto& r : records) {
    list.push_back({{"epoch", r.epoch},
                    {"accuracy", number_or_null(r.accuracy)},
                    {"loss", number_or_null(r.loss)},
                    {"val_accuracy", number_or_null(r.val_accuracy)},
                    {"val_loss", number_or_null(r.val_loss)},
                    {"test_accuracy", number_or_null(r.test_accuracy)},
                    {"test_loss", number_or_null(r.test_loss)},
                    {"seconds", r.seconds}});
  }
  return list;
}

json read_json_file(const fs::path& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw IoError(what + " '" + path.string() + "' cannot be read");
  std::stringstream text;
  text << f.rdbuf();
  json doc = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) throw IoError(what + " '" + path.string() + "' is not valid JSON");
  return doc;
}

// Reads a field of run.json with the type of `value` (IoError naming the field otherwise).
template <class T>
void read_field(const json& options, const char* key, T& value, const fs::path& path) {
  try {
    value = options.at(key).get<T>();
  } catch (const json::exception&) {
    throw IoError("run file '" + path.string() + "': field '" + key + "' is missing or invalid");
  }
}

void write_run_file(const fs::path& out, const TrainOptions& o,
                    const std::vector<std::pair<std::string, double>>& initial_rates) {
  json models = json::array();
  for (const auto& [name, rate] : initial_rates)
    models.push_back({{"name", name}, {"initial_learning_rate", rate}});
  const json doc = {{"format", "bnorm-train-run"},
                    {"format_version", kRunFormatVersion},
                    {"options",
                     {{"models", o.models},
                      {"epochs", o.epochs},
                      {"batch_size", o.batch_size},
                      {"optimizer", o.optimizer},
                      {"learning_rate", o.learning_rate},
                      {"lr_schedule", o.lr_schedule},
                      {"seed", o.seed},
                      {"data", o.data},
                      {"test", o.test},
                      {"label", o.label},
                      {"rescale", o.rescale},
                      {"validation_split", o.validation_split},
                      {"train_limit", o.train_limit},
                      {"test_limit", o.test_limit}}},
                    {"models", models}};
  io::remove_stale_temporaries((out / kRunFile).string());
  write_text_file((out / kRunFile).string(), doc.dump(1) + "\n");
}

// The options of the run in `dir` (what its run.json says), with --epochs, --threads and --quiet
// from this command line.
TrainOptions read_run_file(const TrainOptions& given) {
  const fs::path path = fs::path(given.resume) / kRunFile;
  std::error_code ec;
  if (!fs::is_directory(given.resume, ec)) {
    throw IoError("--resume " + given.resume + ": no such run directory");
  }
  if (!fs::is_regular_file(path, ec)) {
    throw IoError("--resume " + given.resume + ": not a bnorm train run directory (no " + kRunFile +
                  "; runs written before --resume existed cannot be resumed)");
  }
  const json doc = read_json_file(path, "run file");
  if (!doc.is_object() || doc.value("format", "") != "bnorm-train-run" ||
      !doc.contains("options") || !doc["options"].is_object()) {
    throw IoError("run file '" + path.string() + "' is not a bnorm train run description");
  }
  if (doc.value("format_version", 0) != kRunFormatVersion) {
    throw IoError("run file '" + path.string() + "': format_version " +
                  doc.value("format_version", json(nullptr)).dump() + " is not supported");
  }
  const json& opt = doc["options"];
  TrainOptions o;
  read_field(opt, "models", o.models, path);
  read_field(opt, "epochs", o.epochs, path);
  read_field(opt, "batch_size", o.batch_size, path);
  read_field(opt, "optimizer", o.optimizer, path);
  read_field(opt, "learning_rate", o.learning_rate, path);
  read_field(opt, "lr_schedule", o.lr_schedule, path);
  read_field(opt, "seed", o.seed, path);
  read_field(opt, "data", o.data, path);
  read_field(opt, "test", o.test, path);
  read_field(opt, "label", o.label, path);
  read_field(opt, "rescale", o.rescale, path);
  read_field(opt, "validation_split", o.validation_split, path);
  read_field(opt, "train_limit", o.train_limit, path);
  read_field(opt, "test_limit", o.test_limit, path);
  o.learning_rate_given = o.learning_rate >= 0.0;
  o.out = given.resume;
  o.resume = given.resume;
  if (given.epochs_given) o.epochs = given.epochs;
  o.epochs_given = given.epochs_given;
  o.threads = given.threads;
  o.threads_given = given.threads_given;
  o.quiet = given.quiet;
  return o;
}

// The initial learning rate run.json recorded for `model`, or nullopt.
std::optional<double> recorded_initial_rate(const std::string& dir, const std::string& model) {
  const json doc = read_json_file(fs::path(dir) / kRunFile, "run file");
  if (!doc.contains("models") || !doc["models"].is_array()) return std::nullopt;
  for (const auto& m : doc["models"]) {
    if (m.is_object() && m.value("name", "") == model && m.contains("initial_learning_rate") &&
        m["initial_learning_rate"].is_number())
      return m["initial_learning_rate"].get<double>();
  }
  return std::nullopt;
}

double record_value(const json& r, const char* key) {
  return r.contains(key) && r[key].is_number() ? r[key].get<double>() : kMissing;
}

// The records of the `epochs` epochs a resumed model completed: from records_<model>.json, or,
// for epochs it lacks, the training metrics from the checkpoint's history (no test metrics).
std::vector<EpochRecord> resumed_records(const fs::path& dir, const std::string& model,
                                         const TrainingState& state) {
  std::vector<EpochRecord> records;
  std::error_code ec;
  const fs::path path = dir / records_file(model);
  if (fs::is_regular_file(path, ec)) {
    const json doc = read_json_file(path, "records file");
    if (doc.is_array()) {
      for (const auto& r : doc) {
        if (records.size() == static_cast<std::size_t>(state.epoch) || !r.is_object()) break;
        EpochRecord e;
        e.epoch = static_cast<int>(records.size()) + 1;
        e.accuracy = record_value(r, "accuracy");
        e.loss = record_value(r, "loss");
        e.val_accuracy = record_value(r, "val_accuracy");
        e.val_loss = record_value(r, "val_loss");
        e.test_accuracy = record_value(r, "test_accuracy");
        e.test_loss = record_value(r, "test_loss");
        e.seconds = std::max(0.0, record_value(r, "seconds"));
        records.push_back(e);
      }
    }
  }
  const auto from_history = [&](const char* key, std::size_t epoch) {
    const auto it = state.history.find(key);
    if (it == state.history.end()) return kMissing;
    // The history holds the run's epochs; a run started at a later epoch holds the last ones.
    const std::size_t first = static_cast<std::size_t>(state.epoch) - it->second.size();
    return epoch >= first ? it->second[epoch - first] : kMissing;
  };
  while (records.size() < static_cast<std::size_t>(state.epoch)) {
    EpochRecord e;
    const std::size_t i = records.size();
    e.epoch = static_cast<int>(i) + 1;
    e.accuracy = from_history("accuracy", i);
    e.loss = from_history("loss", i);
    e.val_accuracy = from_history("val_accuracy", i);
    e.val_loss = from_history("val_loss", i);
    records.push_back(e);
  }
  return records;
}

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
  const fs::path run_dir(o.resume);
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
    if (model_file) p.name = fs::path(m).stem().string();
    const fs::path checkpoint = run_dir / checkpoint_file(p.name);
    if (!o.resume.empty() && fs::is_regular_file(checkpoint, ec)) {
      // Resumed: the checkpoint holds the weights and the state to continue the run exactly.
      p.model = std::make_unique<Model>(io::load_model(checkpoint.string()));
      p.resumed = true;
      if (model_file) p.spec = "file " + m;
      if (!p.model->compiled() || p.model->training_state().epoch < 1) {
        throw IoError("checkpoint '" + checkpoint.string() +
                      "' holds no training state to resume from (it was not written by "
                      "bnorm train after a completed epoch)");
      }
    } else if (model_file) {
      // A saved model (.bnorm, Keras .keras or .h5): trained further from its weights, with its
      // own compile settings when the file has them.
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
    if (!p.resumed && (!model_file || !p.model->compiled())) {
      p.model->compile(make_optimizer(o.optimizer, o.learning_rate),
                       LossKind::sparse_categorical_crossentropy, {"accuracy"});
    }
    p.initial_learning_rate = p.model->optimizer().learning_rate();
    if (p.resumed) {
      const auto rate = recorded_initial_rate(o.resume, p.name);
      if (!rate) {
        throw IoError("run file '" + (run_dir / kRunFile).string() +
                      "' has no initial learning rate for model '" + p.name + "'");
      }
      p.initial_learning_rate = *rate;
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
  // `records`: the epochs a resumed run already has; `path`: where the records are written
  // (atomically) after every epoch, for a later --resume.
  EpochRecorder(const Tensor& x, const Tensor& y, std::int64_t batch_size, bool print,
                std::vector<EpochRecord> past, std::string path)
      : records(std::move(past)),
        x_(x),
        y_(y),
        batch_size_(batch_size),
        print_(print),
        path_(std::move(path)) {}
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
    write_text_file(path_, records_json(records).dump(1) + "\n");
  }
  std::vector<EpochRecord> records;

 private:
  const Tensor& x_;
  const Tensor& y_;
  std::int64_t batch_size_;
  bool print_;
  std::string path_;
  std::chrono::steady_clock::time_point start_;
};

// Keras's CSVLogger for a resumed run: the history file starts with the epochs the checkpoint
// completed (from its history, so rows a killed run wrote after its last checkpoint are dropped)
// and goes on with the new ones; the same bytes as the file of a run never interrupted.
class ResumableCsvLogger final : public Callback {
 public:
  ResumableCsvLogger(std::string path, TrainingState past)
      : csv_(std::move(path)), past_(std::move(past)) {}
  void on_train_begin(Model& model, int epochs, std::int64_t steps) override {
    csv_.on_train_begin(model, epochs, steps);
    std::size_t n = 0;
    for (const auto& [key, values] : past_.history) n = std::max(n, values.size());
    const int first = past_.epoch - static_cast<int>(n);
    for (std::size_t i = 0; i < n; ++i) {
      Logs logs;
      for (const auto& [key, values] : past_.history)
        if (i + values.size() >= n) logs[key] = values[i + values.size() - n];
      csv_.on_epoch_end(model, first + static_cast<int>(i), logs);
    }
  }
  void on_epoch_end(Model& model, int epoch, const Logs& logs) override {
    csv_.on_epoch_end(model, epoch, logs);
  }

 private:
  CSVLogger csv_;
  TrainingState past_;
};

std::string choose_out_dir(const std::string& requested) {
  if (!requested.empty()) return requested;
  const std::string base = "runs/" + timestamp("%Y%m%d-%H%M%S");
  std::string dir = base;
  std::error_code ec;
  for (int i = 2; fs::exists(dir, ec); ++i) dir = base + "-" + std::to_string(i);
  return dir;
}

// How far inference mode (moving statistics) may fall below training mode (batch statistics) on
// the test set before bnorm train warns: 2 accuracy points. Below it the two differ by the usual
// batch-to-batch noise of batch statistics (batches of 32: ~0.5 points on the seed model).
constexpr double kModeGapWarning = 0.02;

// The end-of-training check of docs/cli.md: a one-line warning naming the likely cause and the
// fix when the moving statistics make the model worse than its own batch statistics do.
void warn_if_moving_statistics_lag(Model& model, const ModelRun& run, const std::string& name,
                                   const std::string& model_path) {
  const double gap = run.training_mode_accuracy - run.inference_mode_accuracy;
  if (!(gap > kModeGapWarning)) return;
  // The layer whose moving averages still hold the most of their initial values.
  const BatchNormalization* worst = nullptr;
  double initial = -1.0;
  for (const auto& l : model.layers()) {
    const auto* bn = dynamic_cast<const BatchNormalization*>(l.get());
    if (!bn || !bn->trainable() || !bn->options().track_moving_statistics) continue;
    const double left =
        bn->options().cumulative_moving_average
            ? 0.0
            : std::pow(bn->options().momentum, static_cast<double>(bn->num_batches_tracked()));
    if (left > initial) {
      initial = left;
      worst = bn;
    }
  }
  if (!worst) return;
  const double m = worst->options().momentum;
  const long long steps = static_cast<long long>(worst->num_batches_tracked());
  char cause[320];
  if (initial >= 0.01) {
    std::snprintf(cause, sizeof cause,
                  "layer '%s' has averaged %lld training batches at momentum %g, so its moving "
                  "statistics still hold %g^%lld = %.0f%% of their initial values",
                  worst->name().c_str(), steps, m, m, steps, 100.0 * initial);
  } else {
    std::snprintf(cause, sizeof cause,
                  "the moving statistics (momentum %g) lag the last weight updates", m);
  }
  std::printf(
      "warning: model '%s': test accuracy with moving statistics (inference mode) %.4f is %.1f "
      "points below batch statistics (training mode) %.4f: %s; fix: bnorm recalibrate --model "
      "%s --out FILE (PreciseBN), or a lower BN momentum (e.g. bn:momentum=0.9)\n",
      name.c_str(), run.inference_mode_accuracy, 100.0 * gap, run.training_mode_accuracy, cause,
      model_path.c_str());
}

// What every rank's fit of `plan` gets: the schedule (kept in `scheduler`), the batches, the
// epochs, the validation split and the distributed settings.
FitOptions common_fit_options(const TrainOptions& o, const ModelPlan& plan,
                              dist::Communicator* comm,
                              std::optional<LearningRateScheduler>& scheduler) {
  if (o.lr_schedule == "cosine")
    scheduler.emplace(cosine_decay(plan.initial_learning_rate, o.epochs));
  FitOptions fit;
  fit.batch_size = o.batch_size;
  fit.epochs = o.epochs;
  fit.validation_split = o.validation_split;
  fit.communicator = comm;
  fit.check_replicas_every = o.check_replicas;
  if (scheduler) fit.callbacks.push_back(&*scheduler);
  return fit;
}

// Ranks other than 0 of a distributed run: the same fits (same models, options and data, so
// the same sequence of collectives), with no output, no files and no test-set evaluation.
void train_distributed_replica(const TrainOptions& o, std::vector<ModelPlan>& plans,
                               Tensor& train_images, const Tensor& train_y,
                               dist::Communicator* comm) {
  for (auto& plan : plans) {
    Model& model = *plan.model;
    train_images = as_model_input(std::move(train_images), model);
    std::optional<LearningRateScheduler> scheduler;
    model.fit(train_images, train_y, common_fit_options(o, plan, comm, scheduler));
  }
}

// Distributed (comm != nullptr): every rank runs this with the same options and data; rank 0
// alone prints, evaluates the test set and writes the run directory.
void run_train(TrainOptions o, dist::Communicator* comm = nullptr) {
  if (!o.resume.empty()) o = read_run_file(o);
  validate(o);
  const bool writer = !comm || comm->rank() == 0;
  if (!writer) o.quiet = true;
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
  if (o.sync_bn) {
    for (auto& p : plans)
      for (auto& l : p.model->layers())
        if (auto* bn = dynamic_cast<BatchNormalization*>(l.get())) bn->set_synchronized(true);
  }

  TrainConfig config;
  config.epochs = o.epochs;
  config.batch_size = o.batch_size;
  config.optimizer = plans.front().model->optimizer().name();
  config.learning_rate = plans.front().initial_learning_rate;
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
  if (comm) {
    config.distributed = comm->description();
    config.processes = comm->size();
    config.sync_bn = o.sync_bn;
  }
  if (config.train_samples < 1 || config.validation_samples < (o.validation_split > 0.0 ? 1 : 0)) {
    throw UsageError("--validation-split " + std::to_string(o.validation_split) + " of " +
                     std::to_string(n_train) +
                     " images leaves an empty training or validation set");
  }

  if (!writer) {
    train_distributed_replica(o, plans, train_images, train_y, comm);
    return;
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
  // The run's options for a later --resume (a resume rewrites them with its --epochs). Data and
  // model files are recorded by absolute path, so a resume works from any directory.
  {
    TrainOptions recorded = o;
    std::error_code ec;
    const auto absolute = [&](const std::string& p) {
      return p.empty() ? p : fs::absolute(p, ec).lexically_normal().string();
    };
    recorded.data = absolute(o.data);
    recorded.test = absolute(o.test);
    for (auto& m : recorded.models)
      if (fs::is_regular_file(m, ec)) m = absolute(m);
    std::vector<std::pair<std::string, double>> rates;
    for (const auto& p : plans) rates.emplace_back(p.name, p.initial_learning_rate);
    write_run_file(out, recorded, rates);
  }

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
    if (comm) {
      const dist::Range share = dist::block_of(o.batch_size, 0, comm->size());
      std::printf(
          "Distributed: %s; each global batch of %lld is split over the processes "
          "(%lld on rank 0); %s\n",
          comm->description().c_str(), static_cast<long long>(o.batch_size),
          static_cast<long long>(share.end - share.begin),
          o.sync_bn ? "BatchNormalization synchronized over every process"
                    : "BatchNormalization statistics per process (rank 0's moving "
                      "statistics kept; --sync-bn synchronizes them)");
    }
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
    run.history_file = history_file(plan.name);
    run.model_file = checkpoint_file(plan.name);
    run.has_batch_norm = has_batch_norm(model);
    const std::string model_path = (out / run.model_file).string();
    // A resumed model continues its run from the checkpoint's epoch; the rest start at 0.
    const TrainingState past = plan.resumed ? model.training_state() : TrainingState{};
    if (plan.resumed && past.samples != config.train_samples) {
      throw IoError("checkpoint '" + model_path + "' was trained on " +
                    std::to_string(past.samples) + " samples per epoch; this run has " +
                    std::to_string(config.train_samples) +
                    " (the data set changed since the run started)");
    }
    if (past.epoch > o.epochs) {
      throw UsageError("--epochs " + std::to_string(o.epochs) + " is below the " +
                       std::to_string(past.epoch) + " epochs model '" + plan.name +
                       "' has completed");
    }
    for (const std::string& file : {run.history_file, records_file(plan.name)})
      io::remove_stale_temporaries((out / file).string());

    if (!o.quiet) {
      std::printf("\nModel '%s': %s\n", plan.name.c_str(), plan.spec.c_str());
      if (plan.resumed) {
        std::printf("Resuming from %s after epoch %d of %d\n", model_path.c_str(), past.epoch,
                    o.epochs);
      }
      std::printf("%s", model.summary().c_str());
      std::fflush(stdout);
    }
    ProgressBar progress(stdout);
    EpochRecorder recorder(
        test_x, test_y, o.batch_size, !o.quiet,
        plan.resumed ? resumed_records(out, plan.name, past) : std::vector<EpochRecord>{},
        (out / records_file(plan.name)).string());
    ResumableCsvLogger csv((out / run.history_file).string(), past);
    io::ModelCheckpoint checkpoint(model_path);
    std::optional<LearningRateScheduler> scheduler;
    FitOptions fit = common_fit_options(o, plan, comm, scheduler);
    fit.initial_epoch = past.epoch;
    if (!o.quiet) fit.callbacks.push_back(&progress);
    BatchNormMonitor monitor;
    if (o.monitor_bn && run.has_batch_norm) {
      fit.callbacks.push_back(&monitor);
      run.bn_monitor_file = "bn_monitor_" + plan.name + ".csv";
      io::remove_stale_temporaries((out / run.bn_monitor_file).string());
    }
    fit.callbacks.push_back(&recorder);
    fit.callbacks.push_back(&csv);
    fit.callbacks.push_back(&checkpoint);
    const double comm_start = comm ? comm->seconds() : 0.0;
    const auto fit_start = std::chrono::steady_clock::now();
    try {
      model.fit(train_x, train_y, fit);
      if (comm) {
        run.fit_seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - fit_start).count();
        run.communication_seconds = comm->seconds() - comm_start;
        if (!o.quiet) {
          std::printf("Rank 0 spent %.2f s of %.2f s in communication (%.0f%%)\n",
                      run.communication_seconds, run.fit_seconds,
                      100.0 * run.communication_seconds / run.fit_seconds);
        }
      }
    } catch (const NonFiniteError& e) {
      std::error_code ec;
      const std::string kept = fs::exists(model_path, ec)
                                   ? "the last good checkpoint is " + model_path
                                   : "no checkpoint was written (no epoch completed)";
      throw NonFiniteError("model '" + plan.name + "': " + e.what() + "; " + kept);
    }
    run.epochs = recorder.records;
    if (!run.bn_monitor_file.empty()) {
      run.bn_monitor = monitor.records();
      write_text_file((out / run.bn_monitor_file).string(), monitor.csv());
    }
    const EvaluateResult inference = model.evaluate(test_x, test_y, o.batch_size, Mode::inference);
    run.test_accuracy = inference.accuracy;
    run.test_loss = inference.loss;
    if (run.has_batch_norm) {
      const EvaluateResult training = model.evaluate(test_x, test_y, o.batch_size, Mode::training);
      run.training_mode_accuracy = training.accuracy;
      run.training_mode_loss = training.loss;
      run.inference_mode_accuracy = inference.accuracy;
      run.inference_mode_loss = inference.loss;
      warn_if_moving_statistics_lag(model, run, plan.name, model_path);
    }
    runs.push_back(std::move(run));
  }

  std::printf("%s", render_summary_table(config, runs).c_str());
  for (const char* file : {"summary.json", "curves.svg"})
    io::remove_stale_temporaries((out / file).string());
  write_text_file(
      (out / "summary.json").string(),
      render_summary_json(config, runs, timestamp("%Y-%m-%dT%H:%M:%S%z"), BNORM_VERSION_STRING));
  write_text_file((out / "curves.svg").string(), render_curves_svg(runs));
  std::printf("\nWrote %s: ", config.out_dir.c_str());
  for (const auto& r : runs) {
    std::printf("%s, %s, ", r.history_file.c_str(), r.model_file.c_str());
    if (!r.bn_monitor_file.empty()) std::printf("%s, ", r.bn_monitor_file.c_str());
  }
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
  cmd->add_option("--resume", o->resume,
                  "Continue the run in RUN_DIR (a --out directory of an earlier bnorm train) from "
                  "its checkpoints, with its settings; --epochs sets the new total (default: the "
                  "run's), --threads and --quiet may be given. The result is bit-identical to a "
                  "run that was never interrupted")
      ->type_name("RUN_DIR");
  cmd->add_flag("--distributed", o->distributed,
                "Data-parallel training over MPI: run as mpirun -np N bnorm train --distributed "
                "...; each global batch of --batch-size is split over the N processes, gradients "
                "are all-reduced, rank 0 prints and writes the files (threads per process: the "
                "cores divided by the processes on this machine, unless --threads)");
  cmd->add_flag("--sync-bn", o->sync_bn,
                "With --distributed: every BatchNormalization uses the global batch's statistics "
                "(Keras synchronized=True), as one process with the whole batch would");
  cmd->add_flag("--monitor-bn", o->monitor_bn,
                "Record per BatchNormalization layer and epoch the gap between batch and moving "
                "statistics, gamma/beta summaries and dead units after BN+ReLU, into "
                "bn_monitor_<model>.csv and summary.json");
  cmd->add_option("--check-replicas", o->check_replicas,
                  "With --distributed: every K steps, check that the weights are bit-identical on "
                  "every process (an error otherwise; 0 = never)")
      ->type_name("K");
  return [o, cmd] {
    o->learning_rate_given = cmd->count("--lr") > 0;
    o->threads_given = cmd->count("--threads") > 0;
    o->epochs_given = cmd->count("--epochs") > 0;
    if (!o->resume.empty()) {
      for (const char* option : {"--model", "--batch-size", "--optimizer", "--lr", "--lr-schedule",
                                 "--seed", "--data", "--test", "--label", "--rescale", "--out",
                                 "--validation-split", "--train-limit", "--test-limit"}) {
        if (cmd->count(option) > 0) {
          throw UsageError(std::string("--resume continues the run with the settings in ") +
                           "RUN_DIR/run.json; " + option +
                           " cannot be given with it (only --epochs, --threads and --quiet)");
        }
      }
    }
    if (!o->distributed) {
      if (o->sync_bn || o->check_replicas != 0) {
        throw UsageError(std::string(o->sync_bn ? "--sync-bn" : "--check-replicas") +
                         " is for distributed training; add --distributed (under mpirun)");
      }
      if (const int n = launcher_processes(); n > 1) {
        throw UsageError("bnorm train is running as one of " + std::to_string(n) +
                         " processes started by mpirun; add --distributed to train one model "
                         "on all of them (without it each process trains alone and they write "
                         "the same files)");
      }
      run_train(*o);
      return;
    }
    if (!o->resume.empty())
      throw UsageError(
          "--resume continues a run in one process; it cannot be used with --distributed");
    if (o->check_replicas < 0) {
      throw UsageError("--check-replicas must be >= 0; received " +
                       std::to_string(o->check_replicas));
    }
    if (!o->threads_given && !std::getenv(kThreadsEnv)) {
      // Processes on one machine share its cores: one team of threads per process.
      o->threads_given = true;
      o->threads = std::max(1, max_num_threads() / 4 / launcher_local_processes());
    }
    const auto comm = make_communicator();
    dist::run_or_abort(*comm, [&] {
      run_train(*o, comm.get());
      return 0;
    });
  };
}

}  // namespace bnorm::cli
