#include "bnorm/model/callbacks.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numbers>
#include <sstream>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/model/model.hpp"
#include "bnorm/model/optimizers.hpp"
#include "bnorm/model/sequential.hpp"
#include "layers/batch_norm_dims.hpp"

namespace bnorm {

namespace {
std::string format_duration(double seconds) {
  char buf[32];
  if (seconds >= 3600) {
    std::snprintf(buf, sizeof buf, "%d:%02d:%02d", static_cast<int>(seconds) / 3600,
                  static_cast<int>(seconds) / 60 % 60, static_cast<int>(seconds) % 60);
  } else if (seconds >= 60) {
    std::snprintf(buf, sizeof buf, "%d:%02d", static_cast<int>(seconds) / 60,
                  static_cast<int>(seconds) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ds", static_cast<int>(std::lround(seconds)));
  }
  return buf;
}

std::string format_per_step(double seconds) {
  char buf[32];
  if (seconds >= 1.0)
    std::snprintf(buf, sizeof buf, "%.0fs/step", seconds);
  else if (seconds >= 1e-3)
    std::snprintf(buf, sizeof buf, "%.0fms/step", seconds * 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0fus/step", seconds * 1e6);
  return buf;
}
}  // namespace

ProgressBar::ProgressBar(std::FILE* out, int width)
    : ProgressBar(
          [out](const std::string& text) {
            std::fputs(text.c_str(), out);
            std::fflush(out);
          },
          isatty(fileno(out)) != 0, width) {}

ProgressBar::ProgressBar(Writer write, bool interactive, int width)
    : write_(std::move(write)), width_(width), tty_(interactive) {}

void ProgressBar::on_train_begin(Model&, int epochs, std::int64_t steps_per_epoch) {
  epochs_ = epochs;
  steps_ = steps_per_epoch;
}

void ProgressBar::on_epoch_begin(Model&, int epoch) {
  write_("Epoch " + std::to_string(epoch + 1) + "/" + std::to_string(epochs_) + "\n");
  epoch_start_ = last_draw_ = std::chrono::steady_clock::now();
}

void ProgressBar::on_train_batch_end(Model&, std::int64_t step, const Logs& logs) {
  if (!tty_) return;
  const auto now = std::chrono::steady_clock::now();
  if (step + 1 < steps_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(step + 1, logs, false);
}

void ProgressBar::on_epoch_end(Model&, int, const Logs& logs) { draw(steps_, logs, true); }

void ProgressBar::draw(std::int64_t done, const Logs& logs, bool final_line) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start_).count();
  const int digits = static_cast<int>(std::to_string(steps_).size());
  std::string line = tty_ ? "\r" : "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%*lld/%lld ", digits, static_cast<long long>(done),
                static_cast<long long>(steps_));
  line += buf;
  const int filled = steps_ ? static_cast<int>(width_ * done / steps_) : width_;
  for (int i = 0; i < width_; ++i) line += i < filled ? "\u2501" : "\u2500";
  const double per_step = done ? elapsed / static_cast<double>(done) : 0.0;
  line += final_line ? " " : " ETA ";
  line += format_duration(final_line ? elapsed : per_step * static_cast<double>(steps_ - done));
  if (final_line) {
    line += ' ';
    line += format_per_step(per_step);
  }
  for (const auto& [key, value] : logs) {
    std::snprintf(buf, sizeof buf, " - %s: %.4f", key.c_str(), value);
    line += buf;
  }
  if (tty_) line += "\033[K";  // clear what a longer previous line left
  if (final_line) line += "\n";
  write_(line);
}

// ---- CSVLogger ----
CSVLogger::CSVLogger(std::string path) : path_(std::move(path)) {}

void CSVLogger::on_train_begin(Model&, int, std::int64_t) {
  keys_.clear();
  contents_.clear();
}

void CSVLogger::on_epoch_end(Model&, int epoch, const Logs& logs) {
  if (keys_.empty()) {
    contents_ = "epoch";
    for (const auto& [key, value] : logs) {
      keys_.push_back(key);
      contents_ += "," + key;
    }
    contents_ += "\n";
  }
  std::ostringstream row;
  row.precision(std::numeric_limits<double>::max_digits10 - 2);
  row << epoch;
  for (const auto& key : keys_) {
    auto it = logs.find(key);
    row << ",";
    if (it != logs.end()) row << it->second;
  }
  contents_ += row.str() + "\n";
  // Whole file to a temp name, then rename: readers never see a half-written row.
  const std::string tmp = path_ + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << contents_;
    f.flush();
    if (!f) {
      std::filesystem::remove(tmp);
      throw IoError("CSVLogger: cannot write '" + path_ + "'");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path_, ec);
  if (ec) {
    std::filesystem::remove(tmp);
    throw IoError("CSVLogger: cannot write '" + path_ + "': " + ec.message());
  }
}

// ---- EarlyStopping ----
EarlyStopping::EarlyStopping(std::string monitor, int patience, double min_delta)
    : monitor_(std::move(monitor)), patience_(patience), min_delta_(std::abs(min_delta)) {}

void EarlyStopping::on_train_begin(Model&, int, std::int64_t) {
  wait_ = 0;
  stopped_epoch_ = -1;
  best_ = std::numeric_limits<double>::quiet_NaN();
}

void EarlyStopping::on_epoch_end(Model& model, int epoch, const Logs& logs) {
  auto it = logs.find(monitor_);
  if (it == logs.end()) {
    throw ValueError("EarlyStopping: monitored metric '" + monitor_ + "' is not in the logs");
  }
  // Keras mode="auto": metrics with "acc" in their name are maximized, the rest minimized.
  const bool maximize = monitor_.find("acc") != std::string::npos;
  const double value = it->second;
  const bool improved =
      std::isnan(best_) || (maximize ? value - min_delta_ > best_ : value + min_delta_ < best_);
  if (improved) {
    best_ = value;
    wait_ = 0;
    return;
  }
  if (++wait_ >= patience_ && epoch > 0) {
    stopped_epoch_ = epoch;
    model.stop_training = true;
  }
}

// ---- LearningRateScheduler ----
LearningRateScheduler::LearningRateScheduler(Schedule schedule) : schedule_(std::move(schedule)) {
  if (!schedule_) throw ValueError("LearningRateScheduler: the schedule is empty");
}

void LearningRateScheduler::on_epoch_begin(Model& model, int epoch) {
  Optimizer& optimizer = model.optimizer();
  const double rate = schedule_(epoch, optimizer.learning_rate());
  if (!(rate >= 0.0) || !std::isfinite(rate)) {
    throw ValueError("LearningRateScheduler: the schedule returned learning rate " +
                     std::to_string(rate) + " for epoch " + std::to_string(epoch) +
                     "; it must be a finite number >= 0");
  }
  optimizer.set_learning_rate(rate);
}

LearningRateScheduler::Schedule cosine_decay(double initial_learning_rate, int decay_epochs,
                                             double alpha) {
  if (!(initial_learning_rate > 0.0) || !std::isfinite(initial_learning_rate)) {
    throw ValueError("cosine_decay: initial learning rate must be a finite number > 0; received " +
                     std::to_string(initial_learning_rate));
  }
  if (decay_epochs < 1) {
    throw ValueError("cosine_decay: decay_epochs must be at least 1; received " +
                     std::to_string(decay_epochs));
  }
  if (!(alpha >= 0.0 && alpha <= 1.0)) {
    throw ValueError("cosine_decay: alpha must be in [0, 1]; received " + std::to_string(alpha));
  }
  return [=](int epoch, double) {
    const double progress =
        static_cast<double>(std::clamp(epoch, 0, decay_epochs)) / static_cast<double>(decay_epochs);
    const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    return initial_learning_rate * ((1.0 - alpha) * cosine + alpha);
  };
}

// --- BatchNormMonitor ---------------------------------------------------------------------------

namespace {
std::vector<BatchNormalization*> monitored(Model& model) {
  std::vector<BatchNormalization*> out;
  for (auto& l : model.layers())
    if (auto* bn = dynamic_cast<BatchNormalization*>(l.get())) out.push_back(bn);
  return out;
}

struct Summary {
  double mean = std::numeric_limits<double>::quiet_NaN(), std = mean, min = mean, max = mean;
};
Summary summarize(const Variable* v) {
  Summary s;
  if (!v || v->value.size() == 0) return s;
  double sum = 0.0, sq = 0.0;
  s.min = s.max = v->value[0];
  for (float f : v->value.values()) {
    sum += f;
    s.min = std::min(s.min, static_cast<double>(f));
    s.max = std::max(s.max, static_cast<double>(f));
  }
  const double n = static_cast<double>(v->value.size());
  s.mean = sum / n;
  for (float f : v->value.values()) sq += (f - s.mean) * (f - s.mean);
  s.std = std::sqrt(sq / n);
  return s;
}
}  // namespace

void BatchNormMonitor::on_epoch_begin(Model& model, int /*epoch*/) {
  layers_ = monitored(model);
  sums_.assign(layers_.size(), Sums{});
}

void BatchNormMonitor::on_train_batch_end(Model&, std::int64_t /*step*/, const Logs&) {
  for (std::size_t k = 0; k < layers_.size(); ++k) {
    BatchNormalization& bn = *layers_[k];
    if (!bn.used_batch_statistics() || !bn.moving_mean() || bn.batch_mean().size() == 0) continue;
    const std::int64_t c_n = bn.channels();
    const float* mm = bn.moving_mean()->value.data();
    const float* mv = bn.moving_variance()->value.data();
    double gap = 0.0, ratio = 0.0;
    for (std::int64_t c = 0; c < c_n; ++c) {
      const double sd = std::sqrt(static_cast<double>(mv[c]) + bn.options().epsilon);
      gap += std::fabs(bn.batch_mean()[c] - mm[c]) / sd;
      ratio += mv[c] > 0.0f ? bn.batch_variance()[c] / static_cast<double>(mv[c]) : 0.0;
    }
    Sums& s = sums_[k];
    s.gap += gap / static_cast<double>(c_n);
    s.ratio += ratio / static_cast<double>(c_n);
    ++s.steps;
    if (bn.fused_relu() && bn.last_output().size() > 0) {
      // A channel is dead in this batch when none of its outputs (after the ReLU) is positive.
      const Tensor& y = bn.last_output();
      const auto d = detail::dims_of(y.shape(), bn.axis());
      alive_.assign(static_cast<std::size_t>(c_n), 0);
      auto& alive = alive_;
      for (std::int64_t o = 0; o < d.outer; ++o)
        for (std::int64_t c = 0; c < c_n; ++c)
          for (std::int64_t i = 0; i < d.inner; ++i)
            if (y[(o * c_n + c) * d.inner + i] > 0.0f) alive[static_cast<std::size_t>(c)] = 1;
      std::int64_t dead = 0;
      for (char a : alive) dead += a ? 0 : 1;
      s.dead += static_cast<double>(dead) / static_cast<double>(c_n);
      ++s.dead_steps;
    }
  }
}

void BatchNormMonitor::on_epoch_end(Model&, int epoch, const Logs&) {
  for (std::size_t k = 0; k < layers_.size(); ++k) {
    const Sums& s = sums_[k];
    if (s.steps == 0) continue;  // frozen, or no moving statistics: nothing measured
    BatchNormalization& bn = *layers_[k];
    BatchNormRecord r;
    r.epoch = epoch;
    r.layer = bn.name();
    r.mean_gap = s.gap / static_cast<double>(s.steps);
    r.variance_ratio = s.ratio / static_cast<double>(s.steps);
    const Summary g = summarize(bn.gamma()), b = summarize(bn.beta());
    r.gamma_mean = g.mean;
    r.gamma_std = g.std;
    r.gamma_min = g.min;
    r.gamma_max = g.max;
    r.beta_mean = b.mean;
    r.beta_std = b.std;
    r.dead_fraction = s.dead_steps > 0 ? s.dead / static_cast<double>(s.dead_steps)
                                       : std::numeric_limits<double>::quiet_NaN();
    r.steps = bn.num_batches_tracked();
    r.momentum = bn.options().momentum;
    records_.push_back(r);
  }
}

std::string BatchNormMonitor::csv() const {
  std::ostringstream out;
  out << "epoch,layer,mean_gap,variance_ratio,gamma_mean,gamma_std,gamma_min,gamma_max,"
         "beta_mean,beta_std,dead_fraction,steps,momentum\n";
  out.precision(9);
  const auto num = [&](double v) -> std::ostream& {
    if (std::isnan(v)) return out << "";
    return out << v;
  };
  for (const auto& r : records_) {
    out << r.epoch << ',' << r.layer << ',';
    for (double v : {r.mean_gap, r.variance_ratio, r.gamma_mean, r.gamma_std, r.gamma_min,
                     r.gamma_max, r.beta_mean, r.beta_std, r.dead_fraction}) {
      num(v) << ',';
    }
    out << r.steps << ',' << r.momentum << '\n';
  }
  return out.str();
}

}  // namespace bnorm
