// bnorm bench infer — what BatchNormalization folding buys at inference: predict over the
// Fashion-MNIST test images with the BN layers folded into the Dense/Conv2D before them (the
// default predict path), with folding turned off, and with the same network without BN (the
// spec's bn tokens dropped), measured interleaved in one process; then the same three variants in
// PyTorch (bench/peers/torch_infer.py: torch.fx fuse for the folded one) as a child process.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "bench.hpp"
#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"
#include "bnorm/core/random.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/model/sequential.hpp"
#include "bnorm/model/spec.hpp"
#include "bnorm/version.hpp"
#include "common.hpp"

namespace bnorm::cli::bench {

namespace {

using clock = std::chrono::steady_clock;

double seconds_since(clock::time_point t) {
  return std::chrono::duration<double>(clock::now() - t).count();
}

bool is_bn_token(const std::string& token) {
  std::string head = token.substr(0, token.find(':'));
  head.erase(std::remove_if(head.begin(), head.end(), [](char c) { return c == ' ' || c == '\t'; }),
             head.end());
  return head == "bn" || head == "batchnorm" || head == "batch_normalization";
}

// Moving statistics and affine parameters away from their initial values (0, 1, 1, 0), as after
// training, so that folding changes every kernel and bias. Deterministic in `seed`.
void randomize_batch_norm_state(Sequential& model, std::uint64_t seed) {
  Random rng(seed ^ 0x9e3779b97f4a7c15ULL);
  for (std::size_t i = 0; i < model.size(); ++i) {
    auto* bn = dynamic_cast<BatchNormalization*>(&model.layer(i));
    if (!bn) continue;
    for (Variable* v : bn->weights()) {
      Tensor& t = v->value;
      for (std::int64_t k = 0; k < t.size(); ++k) {
        if (v->name == "gamma") t[k] = rng.uniform(0.5f, 1.5f);
        if (v->name == "beta") t[k] = rng.uniform(-0.5f, 0.5f);
        if (v->name == "moving_mean") t[k] = rng.uniform(-0.5f, 0.5f);
        if (v->name == "moving_variance") t[k] = rng.uniform(0.25f, 2.0f);
      }
    }
  }
}

Sequential make_model(const std::string& spec, std::uint64_t seed, const char* name) {
  Sequential model(seed, name);
  add_layers_from_spec(model, spec);
  model.build(fashion_mnist_input_shape(model));
  check_classifier_output(model, "model '" + spec + "'");
  return model;
}

std::int64_t count_batch_norm(const Sequential& model) {
  std::int64_t n = 0;
  for (std::size_t i = 0; i < model.size(); ++i) {
    if (dynamic_cast<const BatchNormalization*>(&model.layer(i))) ++n;
  }
  return n;
}

// 1-minute load average (other work competing for the cores), or -1 when unknown.
double load_average() {
  double load[1];
  return getloadavg(load, 1) == 1 ? load[0] : -1.0;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double d = 0.0;
  for (std::int64_t i = 0; i < a.size(); ++i) {
    d = std::max(d, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  }
  return d;
}

struct Variant {
  const char* name;   // "folded", "unfolded", "no_bn"
  const char* label;  // for the table
  Sequential* model;
  std::vector<double> seconds;  // one per timed predict over all images
  Tensor output;                // of the last predict
  double median_s = 0.0;
};

const char* const kVariantNames[] = {"folded", "unfolded", "no_bn"};

// The PyTorch peer's three medians, or why it has none.
struct PeerRun {
  bool ok = false;
  std::string error;
  std::string label = "PyTorch";
  std::map<std::string, std::vector<double>> seconds;
  std::map<std::string, double> median_s;
  double max_abs_diff = 0.0;
  // ONNX Runtime on the unfolded model exported from PyTorch (when the peer's Python has it).
  std::string ort_label, ort_error;
  std::vector<double> ort_seconds;
  double ort_median_s = 0.0, ort_max_abs_diff = 0.0;
};

PeerRun run_torch(const InferOptions& o, const std::string& spec, const std::string& no_bn_spec) {
  PeerRun run;
  const std::string script = locate_peer_script("torch_infer.py");
  if (script.empty()) {
    run.error = "peer script bench/peers/torch_infer.py not found";
    return run;
  }
  auto env = python_peer_env(o.threads);
  env["CUDA_VISIBLE_DEVICES"] = "";
  ChildProcess proc({o.python,       script,
                     "--spec",       spec,
                     "--no-bn-spec", no_bn_spec,
                     "--batch",      std::to_string(o.batch),
                     "--threads",    std::to_string(o.threads),
                     "--repeats",    std::to_string(o.repeats),
                     "--warmup",     std::to_string(o.warmup),
                     "--data",       o.data,
                     "--test-limit", std::to_string(o.test_limit),
                     "--seed",       std::to_string(o.seed)},
                    env);
  std::string line, last;
  while (proc.read_line(line)) {
    if (!line.empty()) last = line;
  }
  const int status = proc.wait();
  const nlohmann::json j = nlohmann::json::parse(last, nullptr, false);
  if (status == 3 || (last.empty() && status != 0)) {
    run.error = "not installed (" + o.python + ")";
    if (j.is_object() && j.contains("error")) {
      run.error += ": " + j["error"].get<std::string>();
    } else if (const std::string tail = proc.stderr_tail(); !tail.empty()) {
      run.error += ": " + tail;
    }
    return run;
  }
  if (!j.is_object()) {
    run.error =
        last.empty() ? "no result: " + proc.stderr_tail() : "unreadable result '" + last + "'";
    return run;
  }
  if (j.contains("unsupported")) {
    run.error = "cannot build this model: " + j["unsupported"].get<std::string>();
    return run;
  }
  if (j.contains("error")) {
    run.error = j["error"].get<std::string>();
    return run;
  }
  try {
    for (const char* name : kVariantNames) {
      run.seconds[name] = j.at("results").at(name).at("seconds").get<std::vector<double>>();
      if (run.seconds[name].empty()) throw std::runtime_error("no timings");
      run.median_s[name] = median(run.seconds[name]);
    }
    run.max_abs_diff = j.value("max_abs_diff_folded_unfolded", 0.0);
    run.label += " " + j.value("version", std::string("?"));
    if (j.contains("onnxruntime")) {
      const auto& o = j["onnxruntime"];
      if (o.contains("error")) {
        run.ort_error = o["error"].get<std::string>();
      } else {
        run.ort_seconds = o.at("seconds").get<std::vector<double>>();
        if (run.ort_seconds.empty()) throw std::runtime_error("no ONNX Runtime timings");
        run.ort_median_s = median(run.ort_seconds);
        run.ort_max_abs_diff = o.value("max_abs_diff_vs_torch", 0.0);
        run.ort_label = "ONNX Runtime " + o.value("version", std::string("?"));
      }
    }
  } catch (const std::exception& e) {
    run.error = std::string("unreadable result: ") + e.what();
    return run;
  }
  run.ok = true;
  return run;
}

}  // namespace

std::string spec_without_batch_norm(const std::string& spec) {
  std::string out, token;
  auto flush = [&] {
    if (!is_bn_token(token)) out += (out.empty() ? "" : ",") + token;
    token.clear();
  };
  for (char c : spec) {
    if (c == ',') {
      flush();
    } else {
      token += c;
    }
  }
  flush();
  return out;
}

void run_bench_infer(const InferOptions& o) {
  const std::string spec = resolve_model_spec(o.model);
  if (is_resnet_preset(spec)) {
    throw UsageError(
        "bench infer takes Sequential models (seed, seed-nobn, cnn, cnn-nobn or a "
        "SPEC); --model " +
        o.model + " is a functional preset (use it with train or bench train)");
  }
  const std::string no_bn_spec = spec_without_batch_norm(spec);
  set_num_threads(o.threads);
  const double load = load_average();

  Sequential with_bn = make_model(spec, o.seed, "bench");
  randomize_batch_norm_state(with_bn, o.seed);
  Sequential unfolded = make_model(spec, o.seed, "bench_unfolded");
  unfolded.set_weights(with_bn.get_weights());
  unfolded.set_inference_folding(false);
  Sequential no_bn = make_model(no_bn_spec, o.seed, "bench_no_bn");
  if (no_bn.input_shape() != with_bn.input_shape()) {
    throw ValueError("model '" + spec + "' takes inputs of shape " + with_bn.input_shape()->str() +
                     " but without its BatchNormalization layers of shape " +
                     no_bn.input_shape()->str() + "; put the bn after the first layer");
  }
  const std::int64_t bn_layers = count_batch_norm(with_bn);
  const std::size_t folded_pairs = with_bn.foldable_pairs();

  TestSet data = load_test_set(o.data, o.test_limit);
  const std::int64_t n = data.x.shape()[0];
  const Tensor x = as_model_input(std::move(data.x), with_bn);
  const std::int64_t batches = (n + o.batch - 1) / o.batch;

  // The fold itself (part of every folded predict: it is recomputed from the current weights).
  std::vector<double> fold_seconds;
  for (int r = 0; r < std::max(3, o.repeats); ++r) {
    const auto t0 = clock::now();
    const Sequential copy = with_bn.folded();
    fold_seconds.push_back(seconds_since(t0));
  }

  std::vector<Variant> variants = {{"folded", "BN folded (default)", &with_bn, {}, {}, 0.0},
                                   {"unfolded", "BN not folded", &unfolded, {}, {}, 0.0},
                                   {"no_bn", "no BN layers", &no_bn, {}, {}, 0.0}};
  for (int w = 0; w < o.warmup; ++w) {
    for (auto& v : variants) v.output = v.model->predict(x, o.batch);
  }
  // Interleaved, the order rotating from one repeat to the next, so that a slow spell of a
  // loaded machine falls on every variant alike.
  for (int r = 0; r < o.repeats; ++r) {
    for (std::size_t k = 0; k < variants.size(); ++k) {
      Variant& v = variants[(k + static_cast<std::size_t>(r)) % variants.size()];
      const auto t0 = clock::now();
      v.output = v.model->predict(x, o.batch);
      v.seconds.push_back(seconds_since(t0));
    }
  }
  for (auto& v : variants) v.median_s = median(v.seconds);
  const Variant& folded = variants[0];
  const double fold_vs_unfold = folded.median_s / variants[1].median_s;
  const double fold_vs_no_bn = folded.median_s / variants[2].median_s;
  const double diff = max_abs_diff(folded.output, variants[1].output);
  const double fold_ms = 1e3 * median(fold_seconds);

  PeerRun torch;
  if (o.want_torch) {
    torch = run_torch(o, spec, no_bn_spec);
    if (!torch.ok && o.peers_explicit) throw Error("PyTorch: " + torch.error);
  }

  if (o.json) {
    nlohmann::json results = nlohmann::json::object();
    for (const auto& v : variants) {
      results[v.name] = {{"seconds", v.seconds},
                         {"median_s", v.median_s},
                         {"us_per_image", 1e6 * v.median_s / static_cast<double>(n)},
                         {"us_per_batch", 1e6 * v.median_s / static_cast<double>(batches)}};
    }
    nlohmann::json out = {{"model", o.model},
                          {"spec", spec},
                          {"no_bn_spec", no_bn_spec},
                          {"batch", o.batch},
                          {"threads", o.threads},
                          {"load_average", load},
                          {"images", n},
                          {"batches", batches},
                          {"repeats", o.repeats},
                          {"bn_layers", bn_layers},
                          {"folded_pairs", folded_pairs},
                          {"fold_ms", fold_ms},
                          {"max_abs_diff_folded_unfolded", diff},
                          {"folded_over_unfolded", fold_vs_unfold},
                          {"folded_over_no_bn", fold_vs_no_bn},
                          {"results", results},
                          {"peers", nlohmann::json::object()}};
    nlohmann::json& peers = out["peers"];
    if (o.want_torch && !torch.ok) peers["torch"] = {{"error", torch.error}};
    if (torch.ok) {
      nlohmann::json t = {
          {"label", torch.label},
          {"max_abs_diff_folded_unfolded", torch.max_abs_diff},
          {"folded_over_unfolded", torch.median_s["folded"] / torch.median_s["unfolded"]},
          {"folded_over_no_bn", torch.median_s["folded"] / torch.median_s["no_bn"]}};
      for (const auto& v : variants) {
        const double m = torch.median_s[v.name];
        t["results"][v.name] = {{"seconds", torch.seconds[v.name]},
                                {"median_s", m},
                                {"us_per_image", 1e6 * m / static_cast<double>(n)},
                                {"us_per_batch", 1e6 * m / static_cast<double>(batches)},
                                {"speedup", m / v.median_s}};
      }
      peers["torch"] = t;
      if (!torch.ort_error.empty()) peers["onnxruntime"] = {{"error", torch.ort_error}};
      if (!torch.ort_seconds.empty()) {
        const double m = torch.ort_median_s;
        peers["onnxruntime"] = {{"label", torch.ort_label},
                                {"seconds", torch.ort_seconds},
                                {"median_s", m},
                                {"us_per_image", 1e6 * m / static_cast<double>(n)},
                                {"us_per_batch", 1e6 * m / static_cast<double>(batches)},
                                {"max_abs_diff_vs_torch", torch.ort_max_abs_diff},
                                {"speedup_vs_folded", m / folded.median_s}};
      }
    }
    std::printf("%s\n", out.dump().c_str());
    return;
  }

  std::printf(
      "bnorm bench infer: model %s (%s), predict over %lld Fashion-MNIST test images in batches "
      "of %lld (%lld batches), %d thread%s; bnorm %s; load average %.2f.\n"
      "%lld BatchNormalization layer%s, %zu folded into the layer before; no-BN model: %s.\n"
      "Median of %d interleaved repeats after %d warm-up round%s; the folded time includes the "
      "fold (%.3f ms, redone on every predict). Folded vs unfolded outputs: max |diff| %.2g.\n\n",
      o.model.c_str(), spec.c_str(), static_cast<long long>(n), static_cast<long long>(o.batch),
      static_cast<long long>(batches), o.threads, o.threads == 1 ? "" : "s", BNORM_VERSION_STRING,
      load, static_cast<long long>(bn_layers), bn_layers == 1 ? "" : "s", folded_pairs,
      no_bn_spec.c_str(), o.repeats, o.warmup, o.warmup == 1 ? "" : "s", fold_ms, diff);
  std::printf("%-22s %10s %12s %12s %10s\n", "variant", "total_ms", "us_per_image", "us_per_batch",
              "vs_folded");
  for (const auto& v : variants) {
    std::printf("%-22s %10.2f %12.3f %12.2f %10s\n", v.label, 1e3 * v.median_s,
                1e6 * v.median_s / static_cast<double>(n),
                1e6 * v.median_s / static_cast<double>(batches),
                (fixed(v.median_s / folded.median_s, 3) + "x").c_str());
  }
  std::printf("\nfolded / unfolded = %.3f; folded / no-BN = %.3f (1.000: folding makes BN free)\n",
              fold_vs_unfold, fold_vs_no_bn);
  if (!o.want_torch) return;
  if (!torch.ok) {
    std::printf("\nPyTorch: %s\n", torch.error.c_str());
    return;
  }
  std::printf(
      "\n%s, same variants (folded: torch.fx fuse), interleaved likewise; speedup = PyTorch time "
      "/ bnorm time (> 1: bnorm is faster). Folded vs unfolded outputs: max |diff| %.2g.\n",
      torch.label.c_str(), torch.max_abs_diff);
  std::printf("%-22s %10s %12s %12s %10s\n", "variant", "total_ms", "us_per_image", "us_per_batch",
              "speedup");
  for (const auto& v : variants) {
    const double m = torch.median_s[v.name];
    std::printf("%-22s %10.2f %12.3f %12.2f %10s\n", v.label, 1e3 * m,
                1e6 * m / static_cast<double>(n), 1e6 * m / static_cast<double>(batches),
                (fixed(m / v.median_s, 2) + "x").c_str());
  }
  std::printf("PyTorch folded / unfolded = %.3f; folded / no-BN = %.3f\n",
              torch.median_s["folded"] / torch.median_s["unfolded"],
              torch.median_s["folded"] / torch.median_s["no_bn"]);
  if (!torch.ort_error.empty()) {
    std::printf("\nONNX Runtime: %s\n", torch.ort_error.c_str());
  } else if (!torch.ort_seconds.empty()) {
    const double m = torch.ort_median_s;
    std::printf(
        "\n%s on the unfolded model exported from PyTorch (ONNX opset 17; ORT's default graph "
        "optimizations fold BN itself); speedup = ORT time / bnorm folded time. ORT vs PyTorch "
        "outputs: max |diff| %.2g.\n",
        torch.ort_label.c_str(), torch.ort_max_abs_diff);
    std::printf("%-22s %10.2f %12.3f %12.2f %10s\n", "ONNX Runtime", 1e3 * m,
                1e6 * m / static_cast<double>(n), 1e6 * m / static_cast<double>(batches),
                (fixed(m / folded.median_s, 2) + "x").c_str());
  }
}

}  // namespace bnorm::cli::bench
