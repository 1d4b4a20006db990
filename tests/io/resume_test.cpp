// Exact resume: a checkpoint holds everything a run needs to continue (weights, moving
// statistics, the optimizer's slots and iteration count, the current learning rate, the random
// streams of shuffling and dropout, the epoch and the history), so training E1 epochs, saving,
// loading and continuing to E2 (fit with initial_epoch) gives the bits of training E2 epochs
// straight: the same weights, the same history and the same checkpoint file, byte for byte.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/layers/merge.hpp"
#include "bnorm/model/callbacks.hpp"
#include "bnorm/model/optimizers.hpp"
#include "bnorm/model/sequential.hpp"
#include "io/test_files.hpp"

namespace bnorm::io {
namespace {

using bnorm::testing::io_error;
using bnorm::testing::read_bytes;
using bnorm::testing::TempDir;
using bnorm::testing::write_bytes;
using json = nlohmann::ordered_json;

struct Data {
  Tensor x, y;
};

// 90 samples of 12 features, 4 classes; with validation_split 0.2 and batch 16 an epoch is 4
// full batches and a partial one.
Data make_data() {
  Random rng(11);
  Data d{Tensor(Shape{90, 12}), Tensor(Shape{90})};
  for (float& v : d.x.values()) v = rng.normal() * 1.5f + 0.5f;
  for (float& v : d.y.values()) v = static_cast<float>(rng.below(4));
  return d;
}

using OptimizerFactory = std::function<std::unique_ptr<Optimizer>()>;

// Dense -> Dropout -> BN -> Dense(softmax): dropout draws a mask every step, BN keeps moving
// statistics, and the optimizer keeps slots for every trainable weight.
Model make_model(const OptimizerFactory& optimizer) {
  Sequential model(5, "resume");
  model.add(Input{Shape{12}});
  model.add(Dense(16, "relu"));
  model.add(Dropout(0.3f));
  model.add(BatchNormalization());
  model.add(Dense(4, "softmax"));
  model.compile(optimizer(), LossKind::sparse_categorical_crossentropy);
  return model;
}

// A functional model with a Dropout layer called twice (a shared layer's second call has its
// own stream) and a residual Add.
Model make_functional_model(const OptimizerFactory& optimizer) {
  Input x(Shape{12});
  auto drop = std::make_shared<Dropout>(0.2f);
  SymbolicTensor h = Dense(12, "relu")(x);
  SymbolicTensor a = (*drop)(h);
  SymbolicTensor b = (*drop)(Dense(12, "tanh")(a));
  SymbolicTensor s = Add()({a, BatchNormalization()(b)});
  Model model(x, Dense(4, "softmax")(s), "shared", 9);
  model.compile(optimizer(), LossKind::sparse_categorical_crossentropy);
  return model;
}

FitOptions fit_options(int epochs, int initial_epoch, std::vector<Callback*> callbacks = {}) {
  FitOptions o;
  o.batch_size = 16;
  o.epochs = epochs;
  o.initial_epoch = initial_epoch;
  o.validation_split = 0.2;
  o.callbacks = std::move(callbacks);
  return o;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) == 0;
}

bool same_history(const std::map<std::string, std::vector<double>>& a,
                  const std::map<std::string, std::vector<double>>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [key, values] : a) {
    const auto it = b.find(key);
    if (it == b.end() || it->second.size() != values.size()) return false;
    if (std::memcmp(values.data(), it->second.data(), values.size() * sizeof(double)) != 0)
      return false;
  }
  return true;
}

// Appends one fit's History to another (what a user of fit(initial_epoch) does).
void append(std::map<std::string, std::vector<double>>& all, const History& h) {
  for (const auto& [key, values] : h.history)
    all[key].insert(all[key].end(), values.begin(), values.end());
}

void expect_same_model(Model& a, Model& b) {
  const auto wa = a.get_weights(), wb = b.get_weights();
  ASSERT_EQ(wa.size(), wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i)
    EXPECT_TRUE(bit_equal(wa[i], wb[i])) << "weight " << i << " differs";
  EXPECT_EQ(a.optimizer().iterations(), b.optimizer().iterations());
  EXPECT_EQ(a.optimizer().learning_rate(), b.optimizer().learning_rate());
  EXPECT_TRUE(same_history(a.training_state().history, b.training_state().history));
  EXPECT_EQ(a.training_state().epoch, b.training_state().epoch);
}

struct Case {
  const char* name;
  OptimizerFactory optimizer;
};

std::vector<Case> optimizer_cases() {
  return {
      {"sgd_momentum",
       [] {
         return std::make_unique<SGD>(SGD::Options{0.05f, 0.9f, false});
       }},
      {"sgd_nesterov",
       [] {
         return std::make_unique<SGD>(SGD::Options{0.05f, 0.9f, true});
       }},
      {"adam", [] { return std::make_unique<Adam>(Adam::Options{0.01f}); }},
      {"rmsprop", [] { return std::make_unique<RMSprop>(RMSprop::Options{0.005f}); }},
      {"rmsprop_centered_momentum",
       [] {
         RMSprop::Options o;
         o.learning_rate = 0.005f;
         o.momentum = 0.5f;
         o.centered = true;
         return std::make_unique<RMSprop>(o);
       }},
  };
}

// Trains `total` epochs straight, and `first` epochs then (from the checkpoint file) the rest;
// the two checkpoints must be the same bytes and the models the same bits. The resumed half runs
// at another thread count: the bits do not depend on it.
void check_resume_from_file(const std::function<Model()>& make, int first, int total,
                            const std::string& what) {
  SCOPED_TRACE(what);
  const Data d = make_data();
  TempDir dir;
  const int threads = num_threads();

  set_num_threads(1);
  Model straight = make();
  ModelCheckpoint straight_checkpoint(dir.file("straight.bnorm"));
  const History straight_history =
      straight.fit(d.x, d.y, fit_options(total, 0, {&straight_checkpoint}));

  Model interrupted = make();
  ModelCheckpoint interrupted_checkpoint(dir.file("resumed.bnorm"));
  std::map<std::string, std::vector<double>> history;
  append(history, interrupted.fit(d.x, d.y, fit_options(first, 0, {&interrupted_checkpoint})));
  set_num_threads(std::min(3, max_num_threads()));
  Model resumed = load_model(dir.file("resumed.bnorm"));
  EXPECT_EQ(resumed.training_state().epoch, first);
  ModelCheckpoint resumed_checkpoint(dir.file("resumed.bnorm"));
  const History rest = resumed.fit(d.x, d.y, fit_options(total, first, {&resumed_checkpoint}));
  append(history, rest);
  set_num_threads(threads);

  ASSERT_EQ(rest.history.at("loss").size(), static_cast<std::size_t>(total - first));
  expect_same_model(straight, resumed);
  EXPECT_TRUE(same_history(history, straight_history.history));
  EXPECT_TRUE(same_history(resumed.training_state().history, straight_history.history));
  EXPECT_EQ(read_bytes(dir.file("resumed.bnorm")), read_bytes(dir.file("straight.bnorm")));
}

TEST(ExactResume, FromACheckpointFileIsBitIdenticalForEveryOptimizer) {
  for (const Case& c : optimizer_cases()) {
    check_resume_from_file([&] { return make_model(c.optimizer); }, 1, 2,
                           std::string(c.name) + " 1 -> 2");
    check_resume_from_file([&] { return make_model(c.optimizer); }, 2, 3,
                           std::string(c.name) + " 2 -> 3");
  }
}

TEST(ExactResume, FunctionalModelWithASharedDropoutLayer) {
  for (const Case& c : optimizer_cases())
    check_resume_from_file([&] { return make_functional_model(c.optimizer); }, 1, 3, c.name);
}

// Without a file: the same model object continues with fit(initial_epoch), as in Keras.
TEST(ExactResume, FitAgainWithInitialEpochContinuesTheRun) {
  const Data d = make_data();
  const OptimizerFactory adam = [] { return std::make_unique<Adam>(Adam::Options{0.01f}); };
  Model straight = make_model(adam);
  straight.fit(d.x, d.y, fit_options(3, 0));
  Model split = make_model(adam);
  split.fit(d.x, d.y, fit_options(1, 0));
  split.fit(d.x, d.y, fit_options(2, 1));
  split.fit(d.x, d.y, fit_options(3, 2));
  expect_same_model(straight, split);
}

// The learning rate a schedule set, and the schedule's position (the epoch), come back: a
// schedule that reads the current rate (halving it every epoch) continues where it was.
TEST(ExactResume, LearningRateSchedulesContinue) {
  const Data d = make_data();
  const OptimizerFactory sgd = [] { return std::make_unique<SGD>(SGD::Options{0.1f, 0.9f}); };
  LearningRateScheduler halve([](int epoch, double rate) { return epoch == 0 ? rate : rate / 2; });
  LearningRateScheduler cosine(cosine_decay(0.1, 4));
  for (LearningRateScheduler* schedule : {&halve, &cosine}) {
    TempDir dir;
    Model straight = make_model(sgd);
    straight.fit(d.x, d.y, fit_options(4, 0, {schedule}));
    Model first = make_model(sgd);
    first.fit(d.x, d.y, fit_options(2, 0, {schedule}));
    save_model(first, dir.file("m.bnorm"));
    Model resumed = load_model(dir.file("m.bnorm"));
    EXPECT_EQ(resumed.optimizer().learning_rate(), first.optimizer().learning_rate());
    resumed.fit(d.x, d.y, fit_options(4, 2, {schedule}));
    expect_same_model(straight, resumed);
  }
}

// A rate of 0 (where a schedule may end) is a valid current rate to save and load.
TEST(ExactResume, ZeroLearningRateRoundTrips) {
  const Data d = make_data();
  TempDir dir;
  Model model = make_model([] { return std::make_unique<Adam>(); });
  LearningRateScheduler stop([](int, double) { return 0.0; });
  model.fit(d.x, d.y, fit_options(1, 0, {&stop}));
  save_model(model, dir.file("m.bnorm"));
  EXPECT_EQ(load_model(dir.file("m.bnorm")).optimizer().learning_rate(), 0.0f);
}

TEST(ExactResume, CheckpointHoldsTheOptimizerStateAndStreams) {
  const Data d = make_data();
  TempDir dir;
  Model model = make_model([] { return std::make_unique<Adam>(Adam::Options{0.01f}); });
  model.fit(d.x, d.y, fit_options(1, 0));
  save_model(model, dir.file("m.bnorm"));
  Model loaded = load_model(dir.file("m.bnorm"));
  EXPECT_EQ(loaded.optimizer().iterations(), 5);  // 72 training samples, batch 16
  const auto names = loaded.optimizer().slot_names();
  ASSERT_EQ(names, (std::vector<std::string>{"momentum", "velocity"}));
  std::size_t variables = 0;
  for (std::size_t i = 0; i < model.size(); ++i) {
    const auto mine = model.layer(i).weights();
    const auto theirs = loaded.layer(i).weights();
    for (std::size_t j = 0; j < mine.size(); ++j) {
      const auto* a = model.optimizer().slots_of(*mine[j]);
      const auto* b = loaded.optimizer().slots_of(*theirs[j]);
      ASSERT_EQ(a == nullptr, b == nullptr) << mine[j]->name;
      if (!a) continue;
      ++variables;
      for (std::size_t k = 0; k < a->size(); ++k) EXPECT_TRUE(bit_equal((*a)[k], (*b)[k]));
    }
  }
  EXPECT_EQ(variables, 6u);  // two kernels, two biases, gamma, beta
  const auto sa = model.random_streams(), sb = loaded.random_streams();
  EXPECT_EQ(sa.model, sb.model);
  ASSERT_EQ(sb.layers.size(), 1u);
  EXPECT_EQ(sb.layers[0].first, "dropout");
  EXPECT_EQ(sa.layers[0].second, sb.layers[0].second);
  EXPECT_EQ(loaded.training_state().samples, 72);
  EXPECT_EQ(loaded.training_state().shuffles, 1);
}

// A model that never trained is saved as before: no training section.
TEST(ExactResume, UntrainedModelHasNoTrainingSection) {
  TempDir dir;
  save_model(make_model([] { return std::make_unique<Adam>(); }), dir.file("m.bnorm"));
  const std::string bytes = read_bytes(dir.file("m.bnorm"));
  EXPECT_EQ(bytes.find("\"training\""), std::string::npos);
}

// A fit whose initial_epoch does not continue the model's run starts a new one numbered from
// initial_epoch (Keras's behaviour), and its state says so.
TEST(ExactResume, InitialEpochWithoutAMatchingRunStartsANewRun) {
  const Data d = make_data();
  Model model = make_model([] { return std::make_unique<Adam>(); });
  const History h = model.fit(d.x, d.y, fit_options(5, 3));
  EXPECT_EQ(h.history.at("loss").size(), 2u);
  EXPECT_EQ(model.training_state().epoch, 5);
  EXPECT_EQ(model.training_state().history.at("loss").size(), 2u);
  EXPECT_TRUE(model.fit(d.x, d.y, fit_options(5, 5)).history.empty());  // nothing left to train
  EXPECT_THROW(model.fit(d.x, d.y, fit_options(5, -1)), ValueError);
}

// --- temporary files of killed saves ------------------------------------------------------------

// A save killed between creating "<path>.tmp-<pid>" and renaming it leaves that file behind; the
// next save to the same path removes it. Temporary files of live processes (a save in progress)
// and files that only look similar are kept.
TEST(AtomicSave, NextSaveRemovesTheTemporaryFileOfAKilledSave) {
  TempDir dir;
  const std::string path = dir.file("model.bnorm");
  const Model model = make_model([] { return std::make_unique<Adam>(); });
  save_model(model, path);
  const std::string saved = read_bytes(path);
  // A child that starts a save the way write_file_atomic does and is killed before its rename
  // (only async-signal-safe calls after fork: the parent may have threads).
  const std::string prefix = path + ".tmp-";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    char name[4096];
    std::size_t n = prefix.copy(name, sizeof name - 32);
    char digits[24];
    int k = 0;
    for (long pid = ::getpid(); pid > 0; pid /= 10) digits[k++] = static_cast<char>('0' + pid % 10);
    while (k > 0) name[n++] = digits[--k];
    name[n] = '\0';
    const int fd = ::open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) (void)!::write(fd, saved.data(), saved.size() / 2);
    ::raise(SIGKILL);
    ::_exit(1);  // not reached
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));
  const std::string stale = path + ".tmp-" + std::to_string(child);
  ASSERT_TRUE(std::filesystem::exists(stale));
  const std::string live = path + ".tmp-1";  // init never exits
  const std::string other = dir.file("other.bnorm.tmp-" + std::to_string(child));
  const std::string not_a_pid = path + ".tmp-notes";
  for (const auto& p : {live, other, not_a_pid}) write_bytes(p, "x");

  save_model(model, path);
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_TRUE(std::filesystem::exists(live));
  EXPECT_TRUE(std::filesystem::exists(other));
  EXPECT_TRUE(std::filesystem::exists(not_a_pid));
  EXPECT_EQ(read_bytes(path), saved);
}

// --- damaged training sections: each is an IoError naming the problem --------------------------

class DamagedTrainingState : public ::testing::Test {
 protected:
  void SetUp() override {
    const Data d = make_data();
    Model model = make_model([] { return std::make_unique<Adam>(Adam::Options{0.01f}); });
    model.fit(d.x, d.y, fit_options(1, 0));
    path_ = dir_.file("m.bnorm");
    save_model(model, path_);
    bytes_ = read_bytes(path_);
  }
  // Edits the JSON description (header lengths and checksum fixed) and returns load's error.
  std::string error_after(const std::function<void(json&)>& edit) {
    write_bytes(path_, bytes_);
    const std::uint64_t json_len = le64(16), data_len = le64(24);
    json doc = json::parse(bytes_.substr(32, json_len));
    edit(doc);
    const std::string text = doc.dump();
    std::string out = bytes_.substr(0, 16);
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((text.size() >> (8 * i)) & 0xFF));
    out += bytes_.substr(24, 8) + text + bytes_.substr(32 + json_len, data_len);
    const auto crc = static_cast<std::uint32_t>(
        crc32(0L, reinterpret_cast<const Bytef*>(out.data()), static_cast<uInt>(out.size())));
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((crc >> (8 * i)) & 0xFF));
    write_bytes(path_, out);
    return io_error([&] { load_model(path_); });
  }
  std::uint64_t le64(std::size_t at) const {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes_[at + i]);
    return v;
  }
  TempDir dir_;
  std::string path_, bytes_;
};

TEST_F(DamagedTrainingState, EachProblemIsNamed) {
  EXPECT_CONTAINS(error_after([](json& d) { d["training"]["surprise"] = 1; }),
                  "unknown key 'surprise'");
  EXPECT_CONTAINS(error_after([](json& d) { d["training"]["shuffles"] = 2; }), "shuffles");
  EXPECT_CONTAINS(error_after([](json& d) {
                    d["training"]["random_streams"]["model"] = json::array({0, 0, 0, 0});
                  }),
                  "all-zero state");
  EXPECT_CONTAINS(
      error_after([](json& d) { d["training"]["random_streams"]["layers"][0]["layer"] = "dense"; }),
      "random numbers");
  EXPECT_CONTAINS(error_after([](json& d) {
                    auto& slot = d["training"]["optimizer"]["slots"][0];
                    slot["layer"] = "batch_normalization";
                    slot["weight"] = "gamma";
                  }),
                  "has shape");
  EXPECT_CONTAINS(
      error_after([](json& d) { d["training"]["optimizer"]["slots"][1]["slot"] = "momentum"; }),
      "slots of 'dense/kernel' in the file differ");
  EXPECT_CONTAINS(
      error_after([](json& d) { d["training"]["optimizer"]["slots"][0]["layer"] = "nowhere"; }),
      "which the model does not have");
  EXPECT_CONTAINS(
      error_after([](json& d) { d["training"]["optimizer"]["slots"][0]["offset"] = 4; }),
      "starts at byte 4");
  EXPECT_CONTAINS(error_after([](json& d) {
                    auto& slots = d["training"]["optimizer"]["slots"];
                    slots.erase(slots.size() - 1);
                  }),
                  "the manifest describes");
  EXPECT_CONTAINS(error_after([](json& d) { d["compile"] = nullptr; }), "without compile");
  EXPECT_CONTAINS(error_after([](json& d) {
                    d["training"]["history"]["loss"] = {1, 2};
                  }),
                  "at most one value per epoch");
}

}  // namespace
}  // namespace bnorm::io
