// tools/cli/report.hpp — what `bnorm train` records, and its renderings: the side-by-side
// summary table, summary.json and the curves chart (self-contained SVG).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "bnorm/model/callbacks.hpp"

namespace bnorm::cli {

inline constexpr double kMissing = std::numeric_limits<double>::quiet_NaN();

struct EpochRecord {
  int epoch = 0;  // from 1
  double accuracy = kMissing, loss = kMissing;
  double val_accuracy = kMissing, val_loss = kMissing;
  double test_accuracy = kMissing, test_loss = kMissing;
  double seconds = 0.0;  // training + validation of this epoch
};

struct ModelRun {
  std::string name;  // "seed", "seed-nobn", "custom"
  std::string spec;
  std::int64_t params = 0, trainable_params = 0;
  std::vector<EpochRecord> epochs;
  double test_loss = kMissing, test_accuracy = kMissing;  // after the last epoch (inference)
  // Models with BatchNormalization: the test set evaluated with batch statistics (training mode)
  // and with the moving statistics (inference mode).
  bool has_batch_norm = false;
  double training_mode_accuracy = kMissing, training_mode_loss = kMissing;
  double inference_mode_accuracy = kMissing, inference_mode_loss = kMissing;
  std::string history_file, model_file;  // relative to the output directory
  // --monitor-bn: per BN layer and epoch (BatchNormMonitor).
  std::vector<BatchNormRecord> bn_monitor;
  std::string bn_monitor_file;  // relative to the output directory; empty without --monitor-bn
  // Distributed runs: seconds this rank (0) spent in collectives during fit, of fit_seconds.
  double communication_seconds = kMissing, fit_seconds = kMissing;

  double mean_epoch_seconds() const;
};

struct TrainConfig {
  int epochs = 10;
  std::int64_t batch_size = 32;
  std::string optimizer = "adam";
  double learning_rate = 1e-3;
  std::string lr_schedule = "constant";  // "constant" | "cosine"
  std::string blas;                      // "OpenBLAS (SkylakeX)"
  std::uint64_t seed = 42;
  int threads = 1;
  double validation_split = 0.1;
  std::string data_dir;
  std::string out_dir;
  std::int64_t train_limit = 0, test_limit = 0;  // 0 = all
  std::int64_t train_samples = 0, validation_samples = 0, test_samples = 0;
  // Distributed runs: "MPI (Open MPI v4.1.4), 2 processes" and whether BN is synchronized.
  std::string distributed;
  int processes = 1;
  bool sync_bn = false;
};

// Plain-text comparison printed after training.
std::string render_summary_table(const TrainConfig& config, const std::vector<ModelRun>& runs);
// summary.json contents.
std::string render_summary_json(const TrainConfig& config, const std::vector<ModelRun>& runs,
                                const std::string& created, const std::string& version);
// curves.svg: accuracy and loss against epoch (train, validation, test for each model); no
// scripts, fonts or links, so it renders offline anywhere.
std::string render_curves_svg(const std::vector<ModelRun>& runs);

}  // namespace bnorm::cli
