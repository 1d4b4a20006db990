#include "report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common.hpp"

namespace bnorm::cli {

double ModelRun::mean_epoch_seconds() const {
  if (epochs.empty()) return kMissing;
  double total = 0.0;
  for (const auto& e : epochs) total += e.seconds;
  return total / static_cast<double>(epochs.size());
}

namespace {

std::string pad(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

std::string seconds_str(double s) { return fixed(s, s < 10.0 ? 2 : 1) + " s"; }

// The shortest decimal that reads back as the same float32 (0.001f -> 0.001, not
// 0.0010000000474974513), for hyper-parameters that are stored as floats.
double shortest_float(double value) {
  const auto f = static_cast<float>(value);
  for (int digits = 1; digits <= 9; ++digits) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*g", digits, static_cast<double>(f));
    const double candidate = std::strtod(buf, nullptr);
    if (static_cast<float>(candidate) == f) return candidate;
  }
  return value;
}

}  // namespace

std::string render_summary_table(const TrainConfig& config, const std::vector<ModelRun>& runs) {
  std::size_t label_width = 24;
  std::size_t col = 20;
  for (const auto& r : runs) col = std::max(col, r.name.size() + 2);
  std::ostringstream out;
  out << "\nSummary: test accuracy on " << config.test_samples << " test images after each epoch ("
      << config.optimizer << ", learning rate " << config.learning_rate
      << (config.lr_schedule == "constant" ? "" : " (" + config.lr_schedule + " decay)")
      << ", batch size " << config.batch_size << ", seed " << config.seed << ")\n\n";
  out << pad("", label_width);
  for (const auto& r : runs) out << pad(r.name, col);
  out << "\n";
  std::size_t max_epochs = 0;
  for (const auto& r : runs) max_epochs = std::max(max_epochs, r.epochs.size());
  for (std::size_t e = 0; e < max_epochs; ++e) {
    out << pad("epoch " + std::to_string(e + 1), label_width);
    for (const auto& r : runs) {
      if (e < r.epochs.size()) {
        const auto& rec = r.epochs[e];
        out << pad(fixed(rec.test_accuracy, 4) + "  (" + seconds_str(rec.seconds) + ")", col);
      } else {
        out << pad("-", col);
      }
    }
    out << "\n";
  }
  out << pad("final test accuracy", label_width);
  for (const auto& r : runs) out << pad(fixed(r.test_accuracy, 4), col);
  out << "\n" << pad("final test loss", label_width);
  for (const auto& r : runs) out << pad(fixed(r.test_loss, 4), col);
  out << "\n" << pad("seconds per epoch", label_width);
  for (const auto& r : runs) out << pad(fixed(r.mean_epoch_seconds(), 2), col);
  out << "\n";

  bool any_bn = false;
  for (const auto& r : runs) any_bn = any_bn || r.has_batch_norm;
  if (any_bn) {
    out << "\nBatchNormalization at test time: test accuracy normalizing with batch statistics\n"
           "(training mode, batches of "
        << config.batch_size << ") vs the moving statistics (inference mode)\n\n";
    out << pad("", label_width) << pad("training mode", col) << pad("inference mode", col) << "\n";
    for (const auto& r : runs) {
      if (!r.has_batch_norm) continue;
      out << pad(r.name, label_width) << pad(fixed(r.training_mode_accuracy, 4), col)
          << pad(fixed(r.inference_mode_accuracy, 4), col) << "\n";
    }
  }
  // No trailing blanks from the padded last column.
  std::string text = out.str(), trimmed;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    line.erase(line.find_last_not_of(' ') + 1);
    trimmed += line + "\n";
  }
  return trimmed;
}

std::string render_summary_json(const TrainConfig& config, const std::vector<ModelRun>& runs,
                                const std::string& created, const std::string& version) {
  using json = nlohmann::ordered_json;
  json doc;
  doc["bnorm_version"] = version;
  doc["created"] = created;
  doc["threads"] = config.threads;
  doc["blas"] = config.blas;
  doc["config"] = {{"epochs", config.epochs},
                   {"batch_size", config.batch_size},
                   {"optimizer", config.optimizer},
                   {"learning_rate", shortest_float(config.learning_rate)},
                   {"lr_schedule", config.lr_schedule},
                   {"seed", config.seed},
                   {"validation_split", config.validation_split},
                   {"data_dir", config.data_dir},
                   {"out_dir", config.out_dir},
                   {"train_limit", config.train_limit},
                   {"test_limit", config.test_limit},
                   {"train_samples", config.train_samples},
                   {"validation_samples", config.validation_samples},
                   {"test_samples", config.test_samples}};
  if (!config.distributed.empty()) {
    doc["distributed"] = {{"communicator", config.distributed},
                          {"processes", config.processes},
                          {"global_batch_size", config.batch_size},
                          {"sync_bn", config.sync_bn}};
  }
  json models = json::array();
  for (const auto& r : runs) {
    json m;
    m["name"] = r.name;
    m["spec"] = r.spec;
    m["params"] = r.params;
    m["trainable_params"] = r.trainable_params;
    json epochs = json::array();
    for (const auto& e : r.epochs) {
      epochs.push_back({{"epoch", e.epoch},
                        {"accuracy", e.accuracy},
                        {"loss", e.loss},
                        {"val_accuracy", e.val_accuracy},
                        {"val_loss", e.val_loss},
                        {"test_accuracy", e.test_accuracy},
                        {"test_loss", e.test_loss},
                        {"seconds", e.seconds}});
    }
    m["epochs"] = epochs;
    m["seconds_per_epoch"] = r.mean_epoch_seconds();
    if (!r.bn_monitor.empty()) {
      json records = json::array();
      const auto num = [](double v) { return std::isnan(v) ? json(nullptr) : json(v); };
      for (const auto& b : r.bn_monitor) {
        records.push_back({{"epoch", b.epoch},
                           {"layer", b.layer},
                           {"mean_gap", num(b.mean_gap)},
                           {"variance_ratio", num(b.variance_ratio)},
                           {"gamma_mean", num(b.gamma_mean)},
                           {"gamma_std", num(b.gamma_std)},
                           {"beta_mean", num(b.beta_mean)},
                           {"beta_std", num(b.beta_std)},
                           {"dead_fraction", num(b.dead_fraction)},
                           {"steps", b.steps},
                           {"momentum", b.momentum}});
      }
      m["batch_norm_monitor"] = {{"file", r.bn_monitor_file}, {"records", records}};
    }
    if (!std::isnan(r.fit_seconds)) {
      m["fit_seconds"] = r.fit_seconds;
      m["communication_seconds"] = r.communication_seconds;
    }
    m["final_test"] = {{"accuracy", r.test_accuracy}, {"loss", r.test_loss}};
    if (r.has_batch_norm) {
      m["batch_norm_test_modes"] = {
          {"batch_size", config.batch_size},
          {"training_mode",
           {{"accuracy", r.training_mode_accuracy}, {"loss", r.training_mode_loss}}},
          {"inference_mode",
           {{"accuracy", r.inference_mode_accuracy}, {"loss", r.inference_mode_loss}}}};
    } else {
      m["batch_norm_test_modes"] = nullptr;
    }
    m["history_csv"] = r.history_file;
    m["model_file"] = r.model_file;
    models.push_back(m);
  }
  doc["models"] = models;
  return doc.dump(2) + "\n";  // NaN (a metric that was not recorded) is written as null
}

// ---------------------------------------------------------------------------------------------
// SVG chart.

namespace {

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// "Nice" axis ticks (steps of 1, 2 or 5 times a power of ten) covering [lo, hi].
std::vector<double> nice_ticks(double& lo, double& hi, int target = 5) {
  if (!(hi > lo)) {
    const double padding = std::max(std::abs(lo) * 0.05, 0.05);
    lo -= padding;
    hi += padding;
  }
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (raw <= step) break;
  }
  lo = std::floor(lo / step + 1e-9) * step;
  hi = std::ceil(hi / step - 1e-9) * step;
  std::vector<double> ticks;
  for (double t = lo; t <= hi + step * 0.5; t += step)
    ticks.push_back(std::abs(t) < 1e-12 ? 0.0 : t);
  return ticks;
}

std::string tick_label(double v, double step) {
  const int digits = step >= 1.0 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  return fixed(v, std::clamp(digits, 0, 6));
}

struct Series {
  const ModelRun* run;
  std::size_t color;
  int kind;  // 0 train, 1 validation, 2 test
};

constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c",
                                   "#9467bd", "#ff7f0e", "#8c564b"};
constexpr const char* kDash[] = {"", "7 4", "2 3"};
constexpr const char* kKindName[] = {"train", "validation", "test"};

double value_of(const EpochRecord& e, bool accuracy, int kind) {
  if (accuracy) return kind == 0 ? e.accuracy : kind == 1 ? e.val_accuracy : e.test_accuracy;
  return kind == 0 ? e.loss : kind == 1 ? e.val_loss : e.test_loss;
}

void draw_panel(std::ostringstream& svg, const std::vector<Series>& series, bool accuracy,
                double x0, double y0, double width, double height, int max_epoch) {
  // Value range over every finite point.
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& s : series) {
    for (const auto& e : s.run->epochs) {
      const double v = value_of(e, accuracy, s.kind);
      if (std::isfinite(v)) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
    }
  }
  if (!std::isfinite(lo)) {
    lo = 0.0;
    hi = 1.0;
  }
  const std::vector<double> yt = nice_ticks(lo, hi);
  if (accuracy) {
    lo = std::max(lo, 0.0);
    hi = std::min(hi, 1.0);
    if (!(hi > lo)) hi = lo + 0.1;
  }
  const double xlo = max_epoch > 1 ? 1.0 : 0.5;
  const double xhi = max_epoch > 1 ? static_cast<double>(max_epoch) : 1.5;
  auto px = [&](double epoch) { return x0 + (epoch - xlo) / (xhi - xlo) * width; };
  auto py = [&](double v) { return y0 + height - (v - lo) / (hi - lo) * height; };

  svg << "<text x=\"" << num(x0 + width / 2) << "\" y=\"" << num(y0 - 14)
      << "\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">"
      << (accuracy ? "Accuracy" : "Loss") << "</text>\n";
  // Grid and y ticks.
  const double ystep = yt.size() > 1 ? yt[1] - yt[0] : 1.0;
  for (double t : yt) {
    if (t < lo - 1e-9 || t > hi + 1e-9) continue;
    svg << "<line x1=\"" << num(x0) << "\" y1=\"" << num(py(t)) << "\" x2=\"" << num(x0 + width)
        << "\" y2=\"" << num(py(t)) << "\" stroke=\"#e5e5e5\"/>\n";
    svg << "<text x=\"" << num(x0 - 6) << "\" y=\"" << num(py(t) + 4)
        << "\" text-anchor=\"end\" font-size=\"11\">" << tick_label(t, ystep) << "</text>\n";
  }
  // x ticks at whole epochs.
  const int xstep = std::max(1, (max_epoch + 9) / 10);
  for (int e = 1; e <= std::max(max_epoch, 1); e += xstep) {
    svg << "<line x1=\"" << num(px(e)) << "\" y1=\"" << num(y0 + height) << "\" x2=\"" << num(px(e))
        << "\" y2=\"" << num(y0 + height + 5) << "\" stroke=\"#333\"/>\n";
    svg << "<text x=\"" << num(px(e)) << "\" y=\"" << num(y0 + height + 18)
        << "\" text-anchor=\"middle\" font-size=\"11\">" << e << "</text>\n";
  }
  // Axes and labels.
  svg << "<polyline points=\"" << num(x0) << "," << num(y0) << " " << num(x0) << ","
      << num(y0 + height) << " " << num(x0 + width) << "," << num(y0 + height)
      << "\" fill=\"none\" stroke=\"#333\"/>\n";
  svg << "<text x=\"" << num(x0 + width / 2) << "\" y=\"" << num(y0 + height + 36)
      << "\" text-anchor=\"middle\" font-size=\"12\">epoch</text>\n";
  svg << "<text transform=\"translate(" << num(x0 - 46) << "," << num(y0 + height / 2)
      << ") rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">"
      << (accuracy ? "accuracy" : "loss") << "</text>\n";
  // Curves: a line through the points and a marker on each.
  for (const auto& s : series) {
    std::string points;
    std::string markers;
    for (const auto& e : s.run->epochs) {
      const double v = value_of(e, accuracy, s.kind);
      if (!std::isfinite(v)) continue;
      const double cx = px(e.epoch);
      const double cy = py(std::clamp(v, lo, hi));
      points += num(cx) + "," + num(cy) + " ";
      markers += "<circle cx=\"" + num(cx) + "\" cy=\"" + num(cy) + "\" r=\"2.5\" fill=\"" +
                 kColors[s.color] + "\"/>\n";
    }
    if (points.empty()) continue;
    svg << "<g><title>" << xml_escape(s.run->name) << " " << kKindName[s.kind] << "</title>\n";
    svg << "<polyline points=\"" << points << "\" fill=\"none\" stroke=\"" << kColors[s.color]
        << "\" stroke-width=\"2\"";
    if (*kDash[s.kind]) svg << " stroke-dasharray=\"" << kDash[s.kind] << "\"";
    svg << "/>\n" << markers << "</g>\n";
  }
}

}  // namespace

std::string render_curves_svg(const std::vector<ModelRun>& runs) {
  std::vector<Series> series;
  int max_epoch = 0;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    for (int kind = 0; kind < 3; ++kind) {
      series.push_back({&runs[i], i % std::size(kColors), kind});
    }
    for (const auto& e : runs[i].epochs) max_epoch = std::max(max_epoch, e.epoch);
  }
  const double panel_w = 400, panel_h = 280, left = 80, top = 70, gap = 110;
  const double legend_top = top + panel_h + 60;
  const double width = left + 2 * panel_w + gap + 40;
  const double height = legend_top + 24.0 * static_cast<double>(runs.size()) + 20;

  std::ostringstream svg;
  svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(width) << "\" height=\""
      << num(height) << "\" viewBox=\"0 0 " << num(width) << " " << num(height)
      << "\" font-family=\"sans-serif\">\n"
      << "<title>bnorm training curves</title>\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg << "<text x=\"" << num(width / 2)
      << "\" y=\"24\" text-anchor=\"middle\" font-size=\"17\">Fashion-MNIST: ";
  for (std::size_t i = 0; i < runs.size(); ++i)
    svg << (i ? " vs " : "") << xml_escape(runs[i].name);
  svg << "</text>\n";
  draw_panel(svg, series, true, left, top, panel_w, panel_h, max_epoch);
  draw_panel(svg, series, false, left + panel_w + gap, top, panel_w, panel_h, max_epoch);

  // Legend: a row per model (its color), then the three line styles.
  auto sample = [&](double x, double y, const char* color, int kind) {
    svg << "<line x1=\"" << num(x) << "\" y1=\"" << num(y) << "\" x2=\"" << num(x + 36)
        << "\" y2=\"" << num(y) << "\" stroke=\"" << color << "\" stroke-width=\"2\"";
    if (*kDash[kind]) svg << " stroke-dasharray=\"" << kDash[kind] << "\"";
    svg << "/>\n";
  };
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const double y = legend_top + 24.0 * static_cast<double>(i);
    sample(left, y, kColors[i % std::size(kColors)], 0);
    svg << "<text x=\"" << num(left + 44) << "\" y=\"" << num(y + 4) << "\" font-size=\"13\">"
        << xml_escape(runs[i].name)
        << (runs[i].spec.empty() ? "" : " (" + xml_escape(runs[i].spec) + ")") << "</text>\n";
  }
  for (int kind = 0; kind < 3; ++kind) {
    const double x = left + panel_w + gap + 130.0 * kind;
    sample(x, legend_top, "#555", kind);
    svg << "<text x=\"" << num(x + 42) << "\" y=\"" << num(legend_top + 4) << "\" font-size=\"12\">"
        << kKindName[kind] << "</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace bnorm::cli
