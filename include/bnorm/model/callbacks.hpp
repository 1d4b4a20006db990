// bnorm/model/callbacks.hpp — Keras-style training callbacks.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace bnorm {

class Model;
class BatchNormalization;
// Metric name -> value, Keras's `logs` ("loss", "accuracy", "val_loss", "val_accuracy").
using Logs = std::map<std::string, double>;

class Callback {
 public:
  virtual ~Callback() = default;
  // Model::fit calls these; epochs count from 0 as in Keras's on_epoch_end(epoch, logs).
  virtual void on_train_begin(Model&, int /*epochs*/, std::int64_t /*steps_per_epoch*/) {}
  virtual void on_epoch_begin(Model&, int /*epoch*/) {}
  // Logs hold the running means over the epoch so far.
  virtual void on_train_batch_end(Model&, std::int64_t /*step*/, const Logs&) {}
  virtual void on_epoch_end(Model&, int /*epoch*/, const Logs&) {}
  virtual void on_train_end(Model&) {}
};

// Every epoch's logs, as Keras's History: history["val_accuracy"][epoch].
struct History {
  std::map<std::string, std::vector<double>> history;
  std::vector<double> epoch_seconds;
};

// Keras verbose=1 progress bar: "  12/1875 ━━━━━━━━━━━━━━━━━━━━ 3s 2ms/step - accuracy: ... - loss:
// ...". On a terminal it redraws one line (at most ~10 times a second); otherwise it prints only
// each epoch's final line.
class ProgressBar final : public Callback {
 public:
  // Writes to `out`; a terminal (isatty) gets the redrawn line.
  explicit ProgressBar(std::FILE* out = stdout, int width = 20);
  // Writes each piece of text through `write` (e.g. a Python front end's sys.stdout);
  // `interactive` as a terminal would be.
  using Writer = std::function<void(const std::string&)>;
  ProgressBar(Writer write, bool interactive, int width = 20);
  void on_train_begin(Model&, int epochs, std::int64_t steps_per_epoch) override;
  void on_epoch_begin(Model&, int epoch) override;
  void on_train_batch_end(Model&, std::int64_t step, const Logs& logs) override;
  void on_epoch_end(Model&, int epoch, const Logs& logs) override;

 private:
  void draw(std::int64_t done, const Logs& logs, bool final_line);
  Writer write_;
  int width_;
  bool tty_;
  int epochs_ = 0;
  std::int64_t steps_ = 0;
  std::chrono::steady_clock::time_point epoch_start_, last_draw_;
};

// Keras CSVLogger: header "epoch,<sorted log keys>", one row per epoch; written to a temp file
// and renamed after every epoch, so the file on disk is always complete.
class CSVLogger final : public Callback {
 public:
  explicit CSVLogger(std::string path);
  void on_train_begin(Model&, int epochs, std::int64_t steps_per_epoch) override;
  void on_epoch_end(Model&, int epoch, const Logs& logs) override;

 private:
  std::string path_;
  std::vector<std::string> keys_;
  std::string contents_;
};

// Keras EarlyStopping(monitor, min_delta, patience, mode="auto").
class EarlyStopping final : public Callback {
 public:
  explicit EarlyStopping(std::string monitor = "val_loss", int patience = 0,
                         double min_delta = 0.0);
  void on_train_begin(Model&, int epochs, std::int64_t steps_per_epoch) override;
  void on_epoch_end(Model&, int epoch, const Logs& logs) override;
  int stopped_epoch() const noexcept { return stopped_epoch_; }

 private:
  std::string monitor_;
  int patience_;
  double min_delta_;
  double best_ = 0.0;
  int wait_ = 0;
  int stopped_epoch_ = -1;
};

// Keras LearningRateScheduler(schedule): at the start of each epoch sets the optimizer's learning
// rate to schedule(epoch, current learning rate); epochs count from 0. ValueError when the
// schedule returns a rate that is not finite and >= 0.
class LearningRateScheduler final : public Callback {
 public:
  using Schedule = std::function<double(int epoch, double learning_rate)>;
  explicit LearningRateScheduler(Schedule schedule);
  void on_epoch_begin(Model& model, int epoch) override;

 private:
  Schedule schedule_;
};

// What BatchNormMonitor records for one BatchNormalization layer over one epoch.
struct BatchNormRecord {
  int epoch = 0;
  std::string layer;
  // Over the epoch's training steps and the channels: how far the step's batch statistics are
  // from the moving ones (after the step's update), in moving standard deviations, and the ratio
  // of the batch variance to the moving variance. Large gaps at the end of training mean the
  // moving statistics (what inference uses) do not describe what the layer sees.
  double mean_gap = 0.0;        // mean of |batch_mean - moving_mean| / sqrt(moving_variance + eps)
  double variance_ratio = 0.0;  // mean of batch_variance / moving_variance
  // gamma and beta at the epoch's end (NaN when the layer has none).
  double gamma_mean = 0.0, gamma_std = 0.0, gamma_min = 0.0, gamma_max = 0.0;
  double beta_mean = 0.0, beta_std = 0.0;
  // For a BN fused with the ReLU after it: the fraction of channels with no positive output in a
  // step's batch (dead units), averaged over the epoch's steps; NaN for other BN layers.
  double dead_fraction = 0.0;
  // Training batches that entered the moving averages so far, and the layer's momentum: the
  // moving statistics still hold momentum^steps of their initial values.
  std::int64_t steps = 0;
  double momentum = 0.0;
};

// BN diagnostics during fit (bnorm train --monitor-bn): one BatchNormRecord per
// BatchNormalization layer that normalizes with batch statistics in training, per epoch.
class BatchNormMonitor final : public Callback {
 public:
  void on_epoch_begin(Model& model, int epoch) override;
  void on_train_batch_end(Model& model, std::int64_t step, const Logs& logs) override;
  void on_epoch_end(Model& model, int epoch, const Logs& logs) override;
  const std::vector<BatchNormRecord>& records() const noexcept { return records_; }
  // "epoch,layer,mean_gap,variance_ratio,gamma_mean,...": one row per record.
  std::string csv() const;

 private:
  struct Sums {
    double gap = 0.0, ratio = 0.0, dead = 0.0;
    std::int64_t steps = 0, dead_steps = 0;
  };
  std::vector<BatchNormalization*> layers_;  // the model's BN layers, found at each epoch start
  std::vector<Sums> sums_;                   // per layer of layers_
  std::vector<char> alive_;                  // scratch: channels with a positive output
  std::vector<BatchNormRecord> records_;
};

// Keras CosineDecay(initial_learning_rate, decay_steps, alpha) with epochs as the steps:
//   initial * ((1 - alpha) * 0.5 * (1 + cos(pi * min(epoch, decay_epochs) / decay_epochs)) + alpha)
// so epoch 0 trains at the initial rate and the rate falls towards initial * alpha.
// ValueError for initial <= 0, decay_epochs < 1 or alpha outside [0, 1].
LearningRateScheduler::Schedule cosine_decay(double initial_learning_rate, int decay_epochs,
                                             double alpha = 0.0);

}  // namespace bnorm
