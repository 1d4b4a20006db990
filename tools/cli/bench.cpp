// bnorm bench — registers `bench bn`, `bench train`, `bench infer` and `bench conv` and turns their
// options into checked BnOptions / TrainOptions / InferOptions / ConvOptions. The work is in
// bench_bn.cpp, bench_train.cpp, bench_infer.cpp and bench_conv.cpp.
#include "bench.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>

#include "bnorm/io/idx.hpp"
#include "common.hpp"

namespace bnorm::cli {

namespace bench {

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

// Splits every value at commas, so "--x a,b --x c" and "--x a --x b,c" mean the same.
std::vector<std::string> split_commas(const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const auto& v : values) {
    std::string cur;
    for (char c : v) {
      if (c == ',') {
        out.push_back(trim(cur));
        cur.clear();
      } else {
        cur += c;
      }
    }
    out.push_back(trim(cur));
  }
  return out;
}

// A positive decimal integer below 2^40, or -1.
std::int64_t parse_positive(const std::string& text) {
  if (text.empty() || text.size() > 13) return -1;
  std::int64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

const char* layout_order(Layout layout) {
  switch (layout) {
    case Layout::nhwc:
      return "N x H x W x C";
    case Layout::nchw:
      return "N x C x H x W";
    case Layout::nc:
      return "N x C";
  }
  return "";
}

struct Peers {
  bool torch = false, onednn = false, keras = false, dlib = false, explicit_list = false;
};

// "auto", "none" or a list of names from `known`.
Peers parse_peers(const std::vector<std::string>& values, const std::vector<std::string>& known) {
  std::string choices = "auto, none, or a comma list of";
  for (std::size_t i = 0; i < known.size(); ++i) choices += (i ? ", " : " ") + known[i];
  Peers p;
  const auto names = split_commas(values);
  if (names.size() == 1 && (names[0] == "auto" || names[0] == "none")) {
    const bool on = names[0] == "auto";
    for (const auto& k : known) {
      if (k == "torch") p.torch = on;
      if (k == "onednn") p.onednn = on;
      if (k == "keras") p.keras = on;
      if (k == "dlib") p.dlib = on;
    }
    return p;
  }
  p.explicit_list = true;
  for (const auto& n : names) {
    if (std::find(known.begin(), known.end(), n) == known.end()) {
      throw UsageError("unknown --peers '" + n + "' (choose " + choices + ")");
    }
    if (n == "torch") p.torch = true;
    if (n == "onednn") p.onednn = true;
    if (n == "keras") p.keras = true;
    if (n == "dlib") p.dlib = true;
  }
  return p;
}

// The peer fields of BnOptions, TrainOptions, InferOptions and ConvOptions: --peers (names from
// `known`) and the interpreter of the Python peers.
template <class Options>
void set_peers(Options& o, const std::vector<std::string>& values,
               const std::vector<std::string>& known, const std::string& python) {
  const Peers p = parse_peers(values, known);
  o.want_torch = p.torch;
  if constexpr (requires { o.want_onednn; }) o.want_onednn = p.onednn;
  if constexpr (requires { o.want_keras; }) o.want_keras = p.keras;
  if constexpr (requires { o.want_dlib; }) o.want_dlib = p.dlib;
  o.peers_explicit = p.explicit_list;
  o.python = choose_python(python);
}

// --threads, or 1 and all cores when it is not given.
std::vector<int> threads_or_default(const std::vector<std::string>& values) {
  if (!values.empty()) return parse_threads(values);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return cores > 1 ? std::vector<int>{1, cores} : std::vector<int>{1};
}

void check_min_time(double min_time) {
  if (!(std::isfinite(min_time) && min_time > 0.0 && min_time <= 600.0)) {
    throw UsageError("--min-time must be a number of seconds in (0, 600]; received " +
                     std::to_string(min_time));
  }
}

}  // namespace

std::vector<std::int64_t> parse_shape(const std::string& text) {
  const std::string bad =
      "--shape '" + text + "' is not a shape like 64x56x56x64 (positive integers separated by 'x')";
  std::vector<std::int64_t> dims;
  std::string cur;
  const std::string t = text + "x";
  for (char c : t) {
    if (c != 'x') {
      cur += c;
      continue;
    }
    if (cur == "0" || (!cur.empty() && parse_positive(cur) == 0)) {
      throw UsageError("--shape '" + text + "': dimension " + std::to_string(dims.size() + 1) +
                       " is 0; every dimension must be at least 1");
    }
    const std::int64_t v = parse_positive(cur);
    if (v < 1) throw UsageError(bad);
    dims.push_back(v);
    cur.clear();
  }
  // Elements must be countable in int64 with room for the five buffers of a case.
  std::int64_t elements = 1;
  for (auto d : dims) {
    if (elements > (std::int64_t{1} << 36) / d) {
      throw UsageError("--shape '" + text + "' has more than 2^36 elements");
    }
    elements *= d;
  }
  return dims;
}

ConvCase parse_conv_case(const std::string& text) {
  const std::string bad = "--shape '" + text +
                          "' is not a convolution like 28x28x16:32:3:2 (HxWxC:filters[:kernel"
                          "[:stride]]) or 56x56x144:dw:3:1 (depthwise)";
  std::vector<std::string> parts;
  std::string cur;
  for (char ch : text + ":") {
    if (ch == ':') {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (parts.size() < 2 || parts.size() > 4) throw UsageError(bad);
  const std::vector<std::int64_t> hwc = parse_shape(parts[0]);
  if (hwc.size() != 3) throw UsageError(bad);
  const auto number = [&](const std::string& s, const char* what) {
    const std::int64_t v = parse_positive(s);
    if (v < 1 || v > 4096) {
      throw UsageError("--shape '" + text + "': " + what + " must be from 1 to 4096; received '" +
                       s + "'");
    }
    return v;
  };
  ConvCase c{"custom", hwc[0], hwc[1], hwc[2], hwc[2], 3, 1, parts[1] == "dw"};
  if (!c.depthwise) c.filters = number(parts[1], "filters");
  if (parts.size() > 2) c.kernel = number(parts[2], "the kernel size");
  if (parts.size() > 3) c.stride = number(parts[3], "the stride");
  if (c.kernel > c.h || c.kernel > c.w) {
    throw UsageError("--shape '" + text + "': the kernel " + std::to_string(c.kernel) + "x" +
                     std::to_string(c.kernel) + " is larger than the input");
  }
  return c;
}

Layout parse_layout(const std::string& text) {
  if (text == "nhwc") return Layout::nhwc;
  if (text == "nchw") return Layout::nchw;
  if (text == "nc") return Layout::nc;
  throw UsageError("unknown --layout '" + text + "' (choose nhwc, nchw or nc)");
}

std::vector<BnMode> parse_modes(const std::vector<std::string>& values) {
  std::vector<BnMode> modes;
  auto add = [&](BnMode m) {
    if (std::find(modes.begin(), modes.end(), m) == modes.end()) modes.push_back(m);
  };
  for (const auto& v : split_commas(values)) {
    if (v == "train") {
      add(BnMode::train);
    } else if (v == "infer") {
      add(BnMode::infer);
    } else if (v == "backward") {
      add(BnMode::backward);
    } else if (v == "all") {
      add(BnMode::train);
      add(BnMode::infer);
      add(BnMode::backward);
    } else {
      throw UsageError("unknown --mode '" + v + "' (choose train, infer, backward or all)");
    }
  }
  return modes;
}

std::vector<int> parse_threads(const std::vector<std::string>& values) {
  std::vector<int> threads;
  for (const auto& v : split_commas(values)) {
    const std::int64_t n = parse_positive(v);
    if (n < 1 || n > 4096) {
      throw UsageError("--threads must be a comma list of counts from 1 to 4096; received '" + v +
                       "'");
    }
    if (std::find(threads.begin(), threads.end(), static_cast<int>(n)) == threads.end()) {
      threads.push_back(static_cast<int>(n));
    }
  }
  return threads;
}

}  // namespace bench

Action add_bench_command(CLI::App& app) {
  using namespace bench;
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Benchmark bnorm's batch normalization, convolutions and training against oneDNN, PyTorch, "
      "Keras");
  cmd->require_subcommand(1);

  // ---- bench bn ----
  struct BnRaw {
    std::vector<std::string> shapes, modes{"all"}, threads, peers{"auto"};
    std::string layout;
    bool json = false;
    double min_time = 0.5;
    std::string python;
    std::int64_t triad_mib = 128;
  };
  auto bn_raw = std::make_shared<BnRaw>();
  CLI::App* bn = cmd->add_subcommand(
      "bn", "Time bnorm's BN kernels (train, infer, backward) against the STREAM triad and peers");
  bn->add_option("--shape", bn_raw->shapes,
                 "Tensor shape(s) in the layout's order, e.g. 64x56x56x64 (comma list or "
                 "repeated); default: the issue's cases")
      ->delimiter(',');
  bn->add_option("--layout", bn_raw->layout,
                 "nhwc (N x H x W x C), nchw (N x C x H x W) or nc (N x C); default: nhwc for 4-D "
                 "and nc for 2-D shapes (without --shape: only the default cases of that layout)");
  bn->add_option("--mode", bn_raw->modes, "train, infer, backward or all (comma list)")
      ->delimiter(',');
  bn->add_option("--threads", bn_raw->threads, "Thread counts, e.g. 1,2 (default: 1 and all cores)")
      ->delimiter(',');
  bn->add_flag("--json", bn_raw->json, "One JSON object per case instead of a table");
  bn->add_option("--min-time", bn_raw->min_time,
                 "Seconds of timed calls per implementation and case (default 0.5)");
  bn->add_option("--peers", bn_raw->peers, "auto, none, or a comma list of torch, onednn")
      ->delimiter(',');
  bn->add_option("--python", bn_raw->python,
                 "Python interpreter for the PyTorch peer (default: $BNORM_PYTHON, else python3)");
  bn->add_option("--triad-mib", bn_raw->triad_mib,
                 "MiB per STREAM triad array (default 128; three arrays)");

  // ---- bench train ----
  struct TrainRaw {
    std::string model = "seed";
    std::int64_t batch = 32;
    int threads = 1, epochs = 2;
    std::string python, data = io::kDefaultFashionMnistDir;
    bool json = false;
    std::vector<std::string> peers{"auto"};
    std::int64_t train_limit = 0;
    std::uint64_t seed = 42;
  };
  auto train_raw = std::make_shared<TrainRaw>();
  CLI::App* train = cmd->add_subcommand(
      "train",
      "Seconds per epoch and peak memory of Fashion-MNIST training: bnorm, PyTorch, Keras, dlib");
  train->add_option("--model", train_raw->model,
                    "seed (default), seed-nobn, cnn, cnn-nobn, resnet, resnet-nobn or a model "
                    "SPEC");
  train->add_option("--batch,--batch-size", train_raw->batch, "Batch size (default 32)");
  train->add_option("--threads", train_raw->threads,
                    "Threads for every implementation (default 1)");
  train->add_option("--epochs", train_raw->epochs,
                    "Epochs; the first is reported apart from the rest (default 2)");
  train->add_option("--python", train_raw->python,
                    "Python interpreter for the peers (default: $BNORM_PYTHON, else python3)");
  train->add_flag("--json", train_raw->json, "One JSON object instead of a table");
  train
      ->add_option("--peers", train_raw->peers, "auto, none, or a comma list of torch, keras, dlib")
      ->delimiter(',');
  train->add_option("--data", train_raw->data, "Directory with the Fashion-MNIST IDX files");
  train->add_option("--train-limit", train_raw->train_limit,
                    "Train on the first N images only (0 = all 60000)");
  train->add_option("--seed", train_raw->seed, "Seed for bnorm's initialization and shuffling");

  // ---- bench infer ----
  struct InferRaw {
    std::string model = "cnn";
    std::int64_t batch = 32;
    int threads = 1, repeats = 7, warmup = 1;
    std::string data = io::kDefaultFashionMnistDir;
    bool json = false;
    std::int64_t test_limit = 0;
    std::uint64_t seed = 42;
    std::vector<std::string> peers{"auto"};
    std::string python;
  };
  auto infer_raw = std::make_shared<InferRaw>();
  CLI::App* infer = cmd->add_subcommand(
      "infer",
      "Inference time over the Fashion-MNIST test images: BN folded, not folded, and without BN");
  infer->add_option("--model", infer_raw->model,
                    "cnn (default), cnn-nobn, seed, seed-nobn or a model SPEC");
  infer->add_option("--batch-size,--batch", infer_raw->batch, "Predict batch size (default 32)");
  infer->add_option("--threads", infer_raw->threads, "Threads (default 1)");
  infer->add_option("--repeats", infer_raw->repeats,
                    "Timed predicts per variant; the median is reported (default 7)");
  infer->add_option("--warmup", infer_raw->warmup,
                    "Untimed predicts per variant before them (default 1)");
  infer->add_flag("--json", infer_raw->json, "One JSON object instead of a table");
  infer->add_option("--data", infer_raw->data, "Directory with the Fashion-MNIST IDX files");
  infer->add_option("--test-limit", infer_raw->test_limit,
                    "Predict the first N test images only (0 = all 10000)");
  infer->add_option("--seed", infer_raw->seed, "Seed for the weights and BN statistics");
  infer->add_option("--peers", infer_raw->peers, "auto, none, or torch")->delimiter(',');
  infer->add_option(
      "--python", infer_raw->python,
      "Python interpreter for the PyTorch peer (default: $BNORM_PYTHON, else python3)");

  // ---- bench conv ----
  struct ConvRaw {
    std::vector<std::string> shapes, threads, peers{"auto"};
    std::int64_t batch = 64;
    bool json = false;
    double min_time = 0.5;
    std::string python;
  };
  auto conv_raw = std::make_shared<ConvRaw>();
  CLI::App* conv = cmd->add_subcommand(
      "conv",
      "Per-layer convolution timings (forward, dx, dkernel) against oneDNN and PyTorch, as GFLOP/s "
      "and % of the measured FP32 peak");
  conv->add_option("--shape", conv_raw->shapes,
                   "Convolution(s) HxWxC:filters[:kernel[:stride]] or HxWxC:dw[:kernel[:stride]] "
                   "(depthwise), e.g. 28x28x16:32:3:2 (comma list or repeated); default: the cnn "
                   "and resnet presets' and four MobileNetV2 convolutions")
      ->delimiter(',');
  conv->add_option("--batch", conv_raw->batch, "Batch size (default 64)");
  conv->add_option("--threads", conv_raw->threads,
                   "Thread counts, e.g. 1,2 (default: 1 and all cores)")
      ->delimiter(',');
  conv->add_flag("--json", conv_raw->json,
                 "One JSON object per convolution, pass and thread count");
  conv->add_option("--min-time", conv_raw->min_time,
                   "Seconds of timed calls per implementation, convolution and pass (default 0.5)");
  conv->add_option("--peers", conv_raw->peers, "auto, none, or a comma list of onednn, torch")
      ->delimiter(',');
  conv->add_option(
      "--python", conv_raw->python,
      "Python interpreter for the PyTorch peer (default: $BNORM_PYTHON, else python3)");

  return [bn, bn_raw, train, train_raw, infer, infer_raw, conv, conv_raw] {
    if (bn->parsed()) {
      BnOptions o;
      const BnRaw& r = *bn_raw;
      check_min_time(r.min_time);
      o.min_time = r.min_time;
      o.json = r.json;
      if (r.triad_mib < 1 || r.triad_mib > 65536) {
        throw UsageError("--triad-mib must be from 1 to 65536; received " +
                         std::to_string(r.triad_mib));
      }
      o.triad_mib = r.triad_mib;
      o.modes = parse_modes(r.modes);
      o.threads = threads_or_default(r.threads);
      set_peers(o, r.peers, {"torch", "onednn"}, r.python);
      const bool layout_given = !r.layout.empty();
      const Layout layout = layout_given ? parse_layout(r.layout) : Layout::nhwc;
      if (r.shapes.empty()) {
        for (const auto& c : bnorm::bench::default_bn_cases()) {
          if (!layout_given || c.layout == layout) o.cases.push_back(c);
        }
      }
      for (const auto& text : r.shapes) {
        BnCase c{parse_shape(trim(text)), layout};
        const int rank = static_cast<int>(c.shape.size());
        if (!layout_given) c.layout = rank == 2 ? Layout::nc : Layout::nhwc;
        if (rank != bnorm::bench::layout_rank(c.layout)) {
          throw UsageError("--shape '" + trim(text) + "' has " + std::to_string(rank) +
                           " dimension" + (rank == 1 ? "" : "s") + "; --layout " +
                           bnorm::bench::layout_name(c.layout) + " needs " +
                           std::to_string(bnorm::bench::layout_rank(c.layout)) + " (" +
                           layout_order(c.layout) + ")");
        }
        o.cases.push_back(std::move(c));
      }
      run_bench_bn(o);
    }
    if (train->parsed()) {
      const TrainRaw& r = *train_raw;
      TrainOptions o;
      o.model = r.model;
      if (r.batch < 1) {
        throw UsageError("--batch must be at least 1; received " + std::to_string(r.batch));
      }
      o.batch = r.batch;
      check_threads(r.threads);
      o.threads = r.threads;
      if (r.epochs < 1 || r.epochs > 1000) {
        throw UsageError("--epochs must be from 1 to 1000; received " + std::to_string(r.epochs));
      }
      o.epochs = r.epochs;
      o.json = r.json;
      set_peers(o, r.peers, {"torch", "keras", "dlib"}, r.python);
      o.data = r.data;
      check_limit(r.train_limit, "--train-limit");
      o.train_limit = r.train_limit;
      o.seed = r.seed;
      run_bench_train(o);
    }
    if (infer->parsed()) {
      const InferRaw& r = *infer_raw;
      InferOptions o;
      o.model = r.model;
      check_batch_size(r.batch);
      o.batch = r.batch;
      check_threads(r.threads);
      o.threads = r.threads;
      if (r.repeats < 1 || r.repeats > 1000) {
        throw UsageError("--repeats must be from 1 to 1000; received " + std::to_string(r.repeats));
      }
      o.repeats = r.repeats;
      if (r.warmup < 0 || r.warmup > 100) {
        throw UsageError("--warmup must be from 0 to 100; received " + std::to_string(r.warmup));
      }
      o.warmup = r.warmup;
      o.json = r.json;
      o.data = r.data;
      check_limit(r.test_limit, "--test-limit");
      o.test_limit = r.test_limit;
      o.seed = r.seed;
      set_peers(o, r.peers, {"torch"}, r.python);
      run_bench_infer(o);
    }
    if (conv->parsed()) {
      const ConvRaw& r = *conv_raw;
      ConvOptions o;
      check_min_time(r.min_time);
      o.min_time = r.min_time;
      if (r.batch < 1 || r.batch > 4096) {
        throw UsageError("--batch must be from 1 to 4096; received " + std::to_string(r.batch));
      }
      o.batch = r.batch;
      o.threads = threads_or_default(r.threads);
      o.json = r.json;
      set_peers(o, r.peers, {"torch", "onednn"}, r.python);
      if (r.shapes.empty()) o.cases = default_conv_cases();
      for (const auto& text : r.shapes) o.cases.push_back(parse_conv_case(trim(text)));
      run_bench_conv(o);
    }
  };
}

}  // namespace bnorm::cli
