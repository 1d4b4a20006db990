// Callbacks: call order and arguments, stop_training, EarlyStopping, CSVLogger, ProgressBar.
#include "bnorm/model/callbacks.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/model/optimizers.hpp"
#include "bnorm/model/sequential.hpp"
#include "bnorm/model/spec.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

struct Data {
  Tensor x, y;
};

Data make_data(std::int64_t n, std::uint64_t seed) {
  Random rng(seed);
  Data d{test::random_normal(Shape{n, 4}, rng), Tensor(Shape{n})};
  for (std::int64_t i = 0; i < n; ++i) d.y[i] = d.x[i * 4] + d.x[i * 4 + 1] > 0 ? 1.0f : 0.0f;
  return d;
}

Sequential small_model(std::uint64_t seed = 1) {
  Sequential m(seed);
  m.add(Input{Shape{4}});
  add_layers_from_spec(m, "dense8-relu,bn,dense2-softmax");
  m.compile(make_optimizer("adam", 0.01), LossKind::sparse_categorical_crossentropy);
  return m;
}

class Recorder final : public Callback {
 public:
  void on_train_begin(Model&, int epochs, std::int64_t steps) override {
    events.push_back("train_begin " + std::to_string(epochs) + " " + std::to_string(steps));
  }
  void on_epoch_begin(Model&, int epoch) override {
    events.push_back("epoch_begin " + std::to_string(epoch));
  }
  void on_train_batch_end(Model&, std::int64_t step, const Logs& logs) override {
    events.push_back("batch_end " + std::to_string(step));
    batch_logs.push_back(logs);
  }
  void on_epoch_end(Model& model, int epoch, const Logs& logs) override {
    events.push_back("epoch_end " + std::to_string(epoch));
    epoch_logs.push_back(logs);
    if (stop_after_epoch == epoch) model.stop_training = true;
  }
  void on_train_end(Model&) override { events.push_back("train_end"); }

  int stop_after_epoch = -1;
  std::vector<std::string> events;
  std::vector<Logs> batch_logs, epoch_logs;
};

TEST(Callbacks, CallOrderAndArguments) {
  const Data d = make_data(40, 1), v = make_data(10, 2);
  Sequential m = small_model();
  Recorder r;
  FitOptions o;
  o.batch_size = 16;
  o.epochs = 2;
  o.validation_x = &v.x;
  o.validation_y = &v.y;
  o.callbacks = {&r};
  const History h = m.fit(d.x, d.y, o);
  const std::vector<std::string> expected{"train_begin 2 3", "epoch_begin 0", "batch_end 0",
                                          "batch_end 1",     "batch_end 2",   "epoch_end 0",
                                          "epoch_begin 1",   "batch_end 0",   "batch_end 1",
                                          "batch_end 2",     "epoch_end 1",   "train_end"};
  EXPECT_EQ(r.events, expected);
  ASSERT_EQ(r.epoch_logs.size(), 2u);
  for (int e = 0; e < 2; ++e) {
    for (const char* key : {"loss", "accuracy", "val_loss", "val_accuracy"}) {
      ASSERT_TRUE(r.epoch_logs[e].count(key)) << key;
      EXPECT_EQ(r.epoch_logs[e].at(key), h.history.at(key)[static_cast<std::size_t>(e)]) << key;
    }
  }
  // Batch logs are running means over the epoch: the last one equals the epoch's loss.
  ASSERT_EQ(r.batch_logs.size(), 6u);
  EXPECT_NEAR(r.batch_logs[2].at("loss"), h.history.at("loss")[0], 1e-9);
  EXPECT_NEAR(r.batch_logs[5].at("loss"), h.history.at("loss")[1], 1e-9);
  EXPECT_EQ(r.batch_logs[0].count("val_loss"), 0u);
}

TEST(Callbacks, StopTrainingEndsAfterTheCurrentEpoch) {
  const Data d = make_data(32, 3);
  Sequential m = small_model();
  Recorder r;
  r.stop_after_epoch = 1;
  FitOptions o;
  o.epochs = 10;
  o.callbacks = {&r};
  const History h = m.fit(d.x, d.y, o);
  EXPECT_EQ(h.history.at("loss").size(), 2u);
  EXPECT_EQ(r.events.back(), "train_end");
}

// Keras LearningRateScheduler: the schedule sees (epoch, current rate) before each epoch and its
// result is the rate of that epoch's updates.
TEST(LearningRateScheduler, SetsTheRateBeforeEachEpoch) {
  const Data d = make_data(32, 6);
  Sequential m = small_model();
  std::vector<std::pair<int, double>> seen;
  std::vector<float> during;
  LearningRateScheduler scheduler([&](int epoch, double rate) {
    seen.emplace_back(epoch, rate);
    return rate / 2;
  });
  class Probe final : public Callback {
   public:
    explicit Probe(std::vector<float>& out) : out_(out) {}
    void on_epoch_end(Model& model, int, const Logs&) override {
      out_.push_back(model.optimizer().learning_rate());
    }

   private:
    std::vector<float>& out_;
  } probe(during);
  FitOptions o;
  o.epochs = 3;
  o.callbacks = {&scheduler, &probe};
  m.fit(d.x, d.y, o);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].first, 0);
  EXPECT_FLOAT_EQ(static_cast<float>(seen[0].second), 0.01f);
  EXPECT_FLOAT_EQ(static_cast<float>(seen[2].second), 0.0025f);
  EXPECT_EQ(during, (std::vector<float>{0.005f, 0.0025f, 0.00125f}));

  // A rate of 0 freezes the weights; a negative or NaN rate is an error naming the epoch.
  Sequential frozen = small_model();
  const auto before = frozen.get_weights();
  LearningRateScheduler zero([](int, double) { return 0.0; });
  o.callbacks = {&zero};
  frozen.fit(d.x, d.y, o);
  const auto after = frozen.get_weights();
  ASSERT_EQ(before.size(), 8u);
  for (std::size_t i = 0; i < before.size(); ++i) {
    // Weights 4 and 5 are BN's moving mean and variance, which still move; nothing else may.
    if (i == 4 || i == 5) continue;
    EXPECT_TRUE(test::bitwise_equal(before[i], after[i])) << "weight " << i;
  }
  LearningRateScheduler bad([](int epoch, double) { return epoch == 1 ? -1.0 : 0.01; });
  o.callbacks = {&bad};
  Sequential m2 = small_model();
  EXPECT_THROW(
      {
        try {
          m2.fit(d.x, d.y, o);
        } catch (const ValueError& e) {
          EXPECT_NE(std::string(e.what()).find("for epoch 1"), std::string::npos) << e.what();
          throw;
        }
      },
      ValueError);
}

// cosine_decay follows Keras CosineDecay with epochs as steps.
TEST(LearningRateScheduler, CosineDecayMatchesKerasFormula) {
  const auto s = cosine_decay(0.001, 10);
  EXPECT_DOUBLE_EQ(s(0, 123.0), 0.001);
  EXPECT_NEAR(s(5, 0.0), 0.0005, 1e-18);
  EXPECT_NEAR(s(10, 0.0), 0.0, 1e-18);
  EXPECT_NEAR(s(20, 0.0), 0.0, 1e-18);  // past decay_epochs it stays at alpha * initial
  // Keras: 0.001 * (0.9 * 0.5 * (1 + cos(pi * 3 / 10)) + 0.1)
  EXPECT_NEAR(cosine_decay(0.001, 10, 0.1)(3, 0.0), 0.000814503363531613, 1e-15);
  EXPECT_THROW(cosine_decay(0.0, 10), ValueError);
  EXPECT_THROW(cosine_decay(0.001, 0), ValueError);
  EXPECT_THROW(cosine_decay(0.001, 10, 1.5), ValueError);
  EXPECT_THROW(LearningRateScheduler({}), ValueError);
}

TEST(EarlyStopping, StopsWhenTheMonitorStopsImproving) {
  // Keras semantics: an epoch improves when current + min_delta < best (mode min); training
  // stops once `patience` epochs in a row have not improved. min_delta huge: only the first
  // epoch (against best = inf) improves.
  const Data d = make_data(32, 4);
  Sequential m = small_model();
  EarlyStopping es("loss", /*patience=*/2, /*min_delta=*/1e6);
  FitOptions o;
  o.epochs = 10;
  o.callbacks = {&es};
  const History h = m.fit(d.x, d.y, o);
  EXPECT_EQ(h.history.at("loss").size(), 3u);
  EXPECT_EQ(es.stopped_epoch(), 2);

  // patience 0 stops right after the first non-improving epoch.
  Sequential m0 = small_model();
  EarlyStopping es0("loss", 0, 1e6);
  o.callbacks = {&es0};
  EXPECT_EQ(m0.fit(d.x, d.y, o).history.at("loss").size(), 2u);
  EXPECT_EQ(es0.stopped_epoch(), 1);
}

TEST(EarlyStopping, AccuracyIsMaximized) {
  // "accuracy" is monitored in max mode: with a huge min_delta nothing after epoch 0 improves.
  const Data d = make_data(32, 5);
  Sequential m = small_model();
  EarlyStopping es("accuracy", 1, 1e6);
  FitOptions o;
  o.epochs = 10;
  o.callbacks = {&es};
  EXPECT_EQ(m.fit(d.x, d.y, o).history.at("loss").size(), 2u);
}

TEST(EarlyStopping, DoesNotStopWhileImproving) {
  // Patience longer than the run: training is never stopped early.
  const Data d = make_data(32, 6);
  Sequential m = small_model();
  EarlyStopping es("loss", 100);
  FitOptions o;
  o.epochs = 4;
  o.callbacks = {&es};
  EXPECT_EQ(m.fit(d.x, d.y, o).history.at("loss").size(), 4u);
  EXPECT_LT(es.stopped_epoch(), 1);  // never stopped (Keras reports 0, bnorm -1)
}

TEST(EarlyStopping, ReusableAcrossFits) {
  const Data d = make_data(32, 7);
  Sequential m = small_model();
  EarlyStopping es("loss", 0, 1e6);
  FitOptions o;
  o.epochs = 5;
  o.callbacks = {&es};
  EXPECT_EQ(m.fit(d.x, d.y, o).history.at("loss").size(), 2u);
  m.stop_training = false;
  // on_train_begin resets the state (Keras "Allow instances to be re-used").
  EXPECT_EQ(m.fit(d.x, d.y, o).history.at("loss").size(), 2u);
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, sep);) out.push_back(item);
  return out;
}

TEST(CSVLogger, WritesKerasHeaderAndOneRowPerEpoch) {
  const std::string path = ::testing::TempDir() + "bnorm_csvlogger_test.csv";
  std::filesystem::remove(path);
  const Data d = make_data(40, 8), v = make_data(12, 9);
  Sequential m = small_model();
  CSVLogger logger(path);
  FitOptions o;
  o.epochs = 3;
  o.batch_size = 8;
  o.validation_x = &v.x;
  o.validation_y = &v.y;
  o.callbacks = {&logger};
  const History h = m.fit(d.x, d.y, o);
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "epoch,accuracy,loss,val_accuracy,val_loss");
  const char* keys[] = {"accuracy", "loss", "val_accuracy", "val_loss"};
  for (int e = 0; e < 3; ++e) {
    const auto cells = split(lines[static_cast<std::size_t>(e + 1)], ',');
    ASSERT_EQ(cells.size(), 5u) << lines[static_cast<std::size_t>(e + 1)];
    EXPECT_EQ(cells[0], std::to_string(e));
    for (int k = 0; k < 4; ++k) {
      const double expected = h.history.at(keys[k])[static_cast<std::size_t>(e)];
      EXPECT_NEAR(std::stod(cells[static_cast<std::size_t>(k + 1)]), expected,
                  1e-6 * std::max(1.0, std::abs(expected)))
          << keys[k] << " epoch " << e;
    }
  }
  // No temporary file is left next to it.
  for (const auto& entry : std::filesystem::directory_iterator(::testing::TempDir())) {
    const std::string name = entry.path().filename().string();
    EXPECT_FALSE(name.rfind("bnorm_csvlogger_test.csv", 0) == 0 &&
                 name != "bnorm_csvlogger_test.csv")
        << "left over: " << name;
  }
  std::filesystem::remove(path);
}

TEST(CSVLogger, WithoutValidationOnlyTrainingColumns) {
  const std::string path = ::testing::TempDir() + "bnorm_csvlogger_test2.csv";
  const Data d = make_data(20, 10);
  Sequential m = small_model();
  CSVLogger logger(path);
  FitOptions o;
  o.epochs = 1;
  o.callbacks = {&logger};
  m.fit(d.x, d.y, o);
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "epoch,accuracy,loss");
  std::filesystem::remove(path);
}

TEST(ProgressBar, PrintsFinalLinePerEpochWhenNotATerminal) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  const Data d = make_data(40, 11);
  Sequential m = small_model();
  ProgressBar bar(f);
  FitOptions o;
  o.epochs = 2;
  o.batch_size = 10;
  o.callbacks = {&bar};
  m.fit(d.x, d.y, o);
  std::fflush(f);
  std::rewind(f);
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  std::fclose(f);
  EXPECT_NE(out.find("Epoch 1/2"), std::string::npos) << out;
  EXPECT_NE(out.find("Epoch 2/2"), std::string::npos) << out;
  EXPECT_NE(out.find("4/4"), std::string::npos) << out;
  EXPECT_NE(out.find("loss: "), std::string::npos) << out;
  EXPECT_NE(out.find("accuracy: "), std::string::npos) << out;
  EXPECT_EQ(out.find('\r'), std::string::npos) << "no redraws when not a terminal";
}

TEST(ProgressBar, WriterReceivesRedrawsWhenInteractive) {
  const Data d = make_data(40, 11);
  Sequential m = small_model();
  std::vector<std::string> pieces;
  ProgressBar bar([&](const std::string& text) { pieces.push_back(text); }, /*interactive=*/true);
  FitOptions o;
  o.epochs = 1;
  o.batch_size = 10;
  o.callbacks = {&bar};
  m.fit(d.x, d.y, o);
  ASSERT_GE(pieces.size(), 3u);  // the epoch header, at least one redraw, the final line
  EXPECT_EQ(pieces.front(), "Epoch 1/1\n");
  EXPECT_EQ(pieces.back().front(), '\r') << "an interactive bar redraws its line";
  EXPECT_NE(pieces.back().find("4/4"), std::string::npos) << pieces.back();
  EXPECT_EQ(pieces.back().back(), '\n');
}

TEST(TrainOnBatch, ReportsTheBatchsCorrectCount) {
  const Data d = make_data(16, 12);
  Sequential m = small_model();
  double correct = -1.0;
  const double loss = m.train_on_batch({&d.x}, {&d.y}, &correct);
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_GE(correct, 0.0);
  EXPECT_LE(correct, 16.0);
  EXPECT_EQ(correct, std::floor(correct)) << "a count of samples";
  // The count is the forward pass's, before the update: the same model state evaluated in
  // training mode (batch statistics) before the step gives the same count and loss.
  Sequential fresh = small_model();
  const EvaluateResult r = fresh.evaluate(d.x, d.y, 16, Mode::training);
  EXPECT_DOUBLE_EQ(correct, r.accuracy * 16.0);
  EXPECT_NEAR(loss, r.loss, 1e-6);
}

}  // namespace
}  // namespace bnorm
