// bnorm bench train — seconds per epoch and peak resident memory of Fashion-MNIST training:
// bnorm (in a forked child, so that its ru_maxrss is the training's alone), then the same model
// in PyTorch and Keras (bench/peers/torch_train.py, keras_train.py) and in dlib, a C++ framework
// (bnorm-dlib-train, bench/peers/dlib_train.cpp, built next to bnorm), as child processes.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench.hpp"
#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"
#include "bnorm/model/optimizers.hpp"
#include "bnorm/model/sequential.hpp"
#include "bnorm/model/spec.hpp"
#include "bnorm/version.hpp"
#include "common.hpp"

namespace bnorm::cli::bench {

namespace {

struct TrainRun {
  std::string name;   // "bnorm", "torch", "keras"
  std::string label;  // "bnorm 0.1.0", "PyTorch 2.15.0", ...
  bool ok = false;
  std::string error;
  std::vector<double> epoch_seconds;
  double loss = 0.0, accuracy = 0.0;
  double peak_rss_mib = 0.0;  // ru_maxrss of the process that trained
};

double first_epoch(const TrainRun& r) { return r.epoch_seconds.front(); }
// Median of the epochs after the first (the first when there is only one).
double steady_epoch(const TrainRun& r) {
  if (r.epoch_seconds.size() < 2) return r.epoch_seconds.front();
  return median({r.epoch_seconds.begin() + 1, r.epoch_seconds.end()});
}

double rss_mib(const rusage& ru) { return static_cast<double>(ru.ru_maxrss) / 1024.0; }

// What a trainer prints: {"epoch_seconds": [...], "loss": x, "accuracy": x, "version": "..."},
// {"unsupported": "..."} for a spec it cannot build, or {"error": "..."}.
void read_result(const std::string& text, TrainRun& run) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) {
    run.error = text.empty() ? "no result" : "unreadable result '" + text + "'";
    return;
  }
  if (j.contains("unsupported")) {
    run.error = "cannot build this model: " + j["unsupported"].get<std::string>();
    return;
  }
  if (j.contains("error")) {
    run.error = j["error"].get<std::string>();
    return;
  }
  run.epoch_seconds = j.at("epoch_seconds").get<std::vector<double>>();
  run.loss = j.value("loss", 0.0);
  run.accuracy = j.value("accuracy", 0.0);
  if (j.contains("version")) run.label += " " + j["version"].get<std::string>();
  run.ok = !run.epoch_seconds.empty();
  if (!run.ok) run.error = "no epochs recorded";
}

// The training itself, in the forked child: result JSON on `fd`.
std::string train_in_child(const TrainOptions& o, const std::string& spec) {
  nlohmann::json out;
  try {
    set_num_threads(o.threads);
    std::unique_ptr<Model> built;
    if (is_resnet_preset(spec)) {
      built = std::make_unique<Model>(make_resnet_preset(spec, o.seed, "bench"));
    } else {
      auto chain = std::make_unique<Sequential>(o.seed, "bench");
      add_layers_from_spec(*chain, spec);
      // (784,) for dense models, (28, 28, 1) when the first layer is an image layer.
      chain->build(fashion_mnist_input_shape(*chain));
      built = std::move(chain);
    }
    Model& model = *built;
    check_classifier_output(model, "model '" + spec + "'");
    model.compile(make_optimizer("adam", 1e-3), LossKind::sparse_categorical_crossentropy,
                  {"accuracy"});
    TestSet data = load_train_set(o.data, o.train_limit);
    // (N, 28, 28) -> (N, 784), moving the storage: the images are never held twice.
    const std::int64_t n = data.x.shape()[0];
    data.x = as_model_input(std::move(data.x), model);
    FitOptions fit;
    fit.batch_size = o.batch;
    fit.epochs = o.epochs;
    fit.validation_split = 0.0;
    fit.shuffle = true;
    const History h = model.fit(data.x, data.y, fit);
    out = {{"epoch_seconds", h.epoch_seconds},
           {"loss", h.history.at("loss").back()},
           {"accuracy", h.history.at("accuracy").back()},
           {"images", n}};
  } catch (const std::exception& e) {
    out = {{"error", e.what()}};
  }
  return out.dump();
}

TrainRun run_bnorm(const TrainOptions& o, const std::string& spec) {
  TrainRun run{"bnorm", "bnorm " BNORM_VERSION_STRING, false, "", {}, 0.0, 0.0, 0.0};
  std::fflush(stdout);
  std::fflush(stderr);
  int fds[2];
  if (pipe(fds) != 0) throw IoError(std::string("cannot create a pipe: ") + strerror(errno));
  const pid_t pid = fork();
  if (pid < 0) throw IoError(std::string("cannot fork: ") + strerror(errno));
  if (pid == 0) {
    close(fds[0]);
    const std::string text = train_in_child(o, spec) + "\n";
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t w = write(fds[1], text.data() + done, text.size() - done);
      if (w <= 0 && errno != EINTR) break;
      if (w > 0) done += static_cast<std::size_t>(w);
    }
    close(fds[1]);
    _exit(0);  // no atexit handlers or static destructors of the parent's image
  }
  close(fds[1]);
  std::string text;
  char chunk[4096];
  while (true) {
    const ssize_t r = read(fds[0], chunk, sizeof chunk);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    text.append(chunk, static_cast<std::size_t>(r));
  }
  close(fds[0]);
  int status = 0;
  rusage ru{};
  while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
    run.error = "the training process ended abnormally";
    return run;
  }
  read_result(text, run);
  run.peak_rss_mib = rss_mib(ru);
  return run;
}

// A peer's command line after the program: the model (the resnet presets by name, every other
// model as a Sequential spec) and the shared settings.
std::vector<std::string> peer_arguments(const TrainOptions& o, const std::string& spec) {
  std::vector<std::string> argv;
  if (is_resnet_preset(spec)) {
    argv = {"--preset", spec == kResNetPreset ? "resnet" : "resnet-nobn"};
  } else {
    argv = {"--spec", spec};
  }
  argv.insert(argv.end(), {"--batch", std::to_string(o.batch), "--threads",
                           std::to_string(o.threads), "--epochs", std::to_string(o.epochs),
                           "--data", o.data, "--train-limit", std::to_string(o.train_limit)});
  return argv;
}

// Runs a peer to its one-line JSON result; `missing` is the error when it cannot start.
TrainRun run_peer_process(const std::string& name, const std::string& label,
                          const std::vector<std::string>& argv,
                          const std::map<std::string, std::string>& env,
                          const std::string& missing) {
  TrainRun run{name, label, false, "", {}, 0.0, 0.0, 0.0};
  ChildProcess proc(argv, env);
  std::string line, last;
  while (proc.read_line(line)) {
    if (!line.empty()) last = line;
  }
  rusage ru{};
  const int status = proc.wait(&ru);
  if (status == 3 || (last.empty() && status != 0)) {
    run.error = missing;
    const nlohmann::json j = nlohmann::json::parse(last, nullptr, false);
    if (j.is_object() && j.contains("error")) {
      run.error += ": " + j["error"].get<std::string>();
    } else if (const std::string tail = proc.stderr_tail(); !tail.empty()) {
      run.error += ": " + tail;
    }
    return run;
  }
  read_result(last, run);
  if (!run.ok && status != 0 && run.error == "no result") run.error = proc.stderr_tail();
  run.peak_rss_mib = rss_mib(ru);
  return run;
}

TrainRun run_peer(const TrainOptions& o, const std::string& spec, const std::string& name,
                  const std::string& label, const std::string& script_name) {
  const std::string script = locate_peer_script(script_name);
  if (script.empty()) {
    return TrainRun{name, label, false, "peer script bench/peers/" + script_name + " not found",
                    {},   0.0,   0.0,   0.0};
  }
  const std::map<std::string, std::string> env = {{"OMP_NUM_THREADS", std::to_string(o.threads)},
                                                  {"MKL_NUM_THREADS", std::to_string(o.threads)},
                                                  {"TF_CPP_MIN_LOG_LEVEL", "2"},
                                                  {"KERAS_BACKEND", "tensorflow"},
                                                  {"CUDA_VISIBLE_DEVICES", ""},
                                                  {"PYTHONUNBUFFERED", "1"}};
  std::vector<std::string> argv = {o.python, script};
  const std::vector<std::string> rest = peer_arguments(o, spec);
  argv.insert(argv.end(), rest.begin(), rest.end());
  return run_peer_process(name, label, argv, env, "not installed (" + o.python + ")");
}

// The dlib peer: bnorm-dlib-train next to this bnorm (built when libdlib-dev is installed).
TrainRun run_dlib_peer(const TrainOptions& o, const std::string& spec) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec).parent_path() / "bnorm-dlib-train";
  if (ec || !fs::is_regular_file(exe, ec)) {
    return TrainRun{
        "dlib", "dlib", false, "not built (apt-get install libdlib-dev, then rebuild bnorm)",
        {},     0.0,    0.0,   0.0};
  }
  // dlib's layers run on the BLAS (OpenBLAS) with these threads; its trainer is one thread.
  const std::string t = std::to_string(o.threads);
  const std::map<std::string, std::string> env = {{"OPENBLAS_NUM_THREADS", t},
                                                  {"OMP_NUM_THREADS", t}};
  std::vector<std::string> argv = {exe.string()};
  const std::vector<std::string> rest = peer_arguments(o, spec);
  argv.insert(argv.end(), rest.begin(), rest.end());
  return run_peer_process("dlib", "dlib", argv, env, "failed to run " + exe.string());
}

}  // namespace

std::string resolve_model_spec(const std::string& model) {
  if (model == "seed") return kSeedSpec;
  if (model == "seed-nobn") return kSeedNoBnSpec;
  if (model == "cnn") return kCnnSpec;
  if (model == "cnn-nobn") return kCnnNoBnSpec;
  if (model == "resnet") return kResNetPreset;
  if (model == "resnet-nobn") return kResNetNoBnPreset;
  return model;
}

void run_bench_train(const TrainOptions& o) {
  const std::string spec = resolve_model_spec(o.model);
  std::vector<TrainRun> runs;
  runs.push_back(run_bnorm(o, spec));
  if (!runs.front().ok) throw Error("bnorm training failed: " + runs.front().error);
  if (o.want_torch) runs.push_back(run_peer(o, spec, "torch", "PyTorch", "torch_train.py"));
  if (o.want_keras) runs.push_back(run_peer(o, spec, "keras", "Keras", "keras_train.py"));
  if (o.want_dlib) runs.push_back(run_dlib_peer(o, spec));
  const TrainRun& base = runs.front();
  if (o.peers_explicit) {
    for (const auto& r : runs) {
      if (!r.ok) throw Error(r.label + ": " + r.error);
    }
  }

  if (o.json) {
    nlohmann::json results = nlohmann::json::object();
    for (const auto& r : runs) {
      nlohmann::json j;
      if (!r.ok) {
        j = {{"error", r.error}};
      } else {
        j = {{"label", r.label},
             {"epoch_seconds", r.epoch_seconds},
             {"first_epoch_s", first_epoch(r)},
             {"steady_epoch_s", steady_epoch(r)},
             {"peak_rss_mib", r.peak_rss_mib},
             {"loss", r.loss},
             {"accuracy", r.accuracy}};
        if (r.name != "bnorm") {
          j["speedup"] = steady_epoch(r) / steady_epoch(base);
          j["memory_ratio"] = r.peak_rss_mib / base.peak_rss_mib;
        }
      }
      results[r.name] = j;
    }
    const nlohmann::json out = {{"model", o.model},   {"spec", spec},
                                {"batch", o.batch},   {"threads", o.threads},
                                {"epochs", o.epochs}, {"train_limit", o.train_limit},
                                {"results", results}};
    std::printf("%s\n", out.dump().c_str());
    return;
  }

  std::printf(
      "bnorm bench train: model %s (%s), batch %lld, %d thread%s, %d epoch%s on %s Fashion-MNIST "
      "training images (no validation), Adam lr 0.001.\n"
      "first_s = the first epoch; steady_s = median of the later epochs; peak_RSS = ru_maxrss of "
      "the process that trained.\n"
      "speedup = peer steady_s / bnorm steady_s (> 1: bnorm is faster); mem_ratio = peer "
      "peak_RSS / bnorm peak_RSS.\n\n",
      o.model.c_str(), spec.c_str(), static_cast<long long>(o.batch), o.threads,
      o.threads == 1 ? "" : "s", o.epochs, o.epochs == 1 ? "" : "s",
      o.train_limit > 0 ? std::to_string(o.train_limit).c_str() : "all 60000");
  // The label column fits the longest label ("PyTorch 2.15.0+cu132 (channels_last)").
  int width = 34;
  for (const auto& r : runs) width = std::max(width, static_cast<int>(r.label.size()));
  std::printf("%-*s %8s %9s %13s %8s %9s %8s %9s\n", width, "implementation", "first_s", "steady_s",
              "peak_RSS_MiB", "loss", "accuracy", "speedup", "mem_ratio");
  for (const auto& r : runs) {
    if (!r.ok) {
      std::printf("%-*s %s\n", width, r.label.c_str(), r.error.c_str());
      continue;
    }
    const bool peer = r.name != "bnorm";
    std::printf("%-*s %8.3f %9.3f %13.1f %8.4f %9.4f %8s %9s\n", width, r.label.c_str(),
                first_epoch(r), steady_epoch(r), r.peak_rss_mib, r.loss, r.accuracy,
                peer ? (fixed(steady_epoch(r) / steady_epoch(base), 2) + "x").c_str() : "-",
                peer ? (fixed(r.peak_rss_mib / base.peak_rss_mib, 2) + "x").c_str() : "-");
  }
}

}  // namespace bnorm::cli::bench
