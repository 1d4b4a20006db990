// tools/cli/bench.hpp — pieces of `bnorm bench` shared by its files: options, the timing method,
// the STREAM triad probe, the oneDNN peer and the Python peer processes.
#pragma once

#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "bn_workload.hpp"
#include "bnorm/core/error.hpp"
#include "kernels/conv2d.hpp"

namespace bnorm::cli::bench {

using bnorm::bench::BnCase;
using bnorm::bench::BnMode;
using bnorm::bench::Layout;

// ---- options --------------------------------------------------------------------------------

struct BnOptions {
  std::vector<BnCase> cases;
  std::vector<BnMode> modes;
  std::vector<int> threads;
  bool json = false;
  double min_time = 0.5;  // seconds of timed calls per implementation and case
  bool want_torch = false, want_onednn = false;
  bool peers_explicit = false;  // named with --peers (a missing one is an error, not a note)
  std::string python;
  std::int64_t triad_mib = 128;  // size of each of the three triad arrays
};

struct TrainOptions {
  std::string model = "seed";  // seed | seed-nobn | cnn | cnn-nobn | resnet | resnet-nobn | SPEC
  std::int64_t batch = 32;
  int threads = 1;
  int epochs = 2;
  std::string python;
  bool json = false;
  bool want_torch = false, want_keras = false, want_dlib = false;
  bool peers_explicit = false;
  std::string data;
  std::int64_t train_limit = 0;  // 0 = all 60000 images
  std::uint64_t seed = 42;
};

struct InferOptions {
  std::string model = "cnn";  // seed | seed-nobn | cnn | cnn-nobn | SPEC
  std::int64_t batch = 32;
  int threads = 1;
  int repeats = 7;  // timed predicts per variant
  int warmup = 1;   // untimed rounds before them
  bool json = false;
  bool want_torch = false;
  bool peers_explicit = false;
  std::string python;
  std::string data;
  std::int64_t test_limit = 0;  // 0 = all 10000 test images
  std::uint64_t seed = 42;
};

// One convolution of `bench conv`: NHWC input h x w x c, "same" padding, square kernel and
// stride; depthwise (filters == c, depth multiplier 1) or a full convolution to `filters`.
struct ConvCase {
  std::string group;  // cnn | resnet | mobilenetv2 | custom
  std::int64_t h = 0, w = 0, c = 0, filters = 0, kernel = 3, stride = 1;
  bool depthwise = false;
};

// The three timed passes of a convolution: y; dx; dkernel and dbias.
enum class ConvPass { forward, backward_data, backward_weights };
const char* conv_pass_name(ConvPass pass);  // "forward", "backward-data", "backward-weights"

// The cnn and resnet presets' convolutions (deduplicated) and four MobileNetV2 ones.
std::vector<ConvCase> default_conv_cases();
// "HxWxC:F[:K[:S]]" (a convolution to F filters, kernel K (3), stride S (1)) or
// "HxWxC:dw[:K[:S]]" (depthwise); UsageError naming --shape otherwise.
ConvCase parse_conv_case(const std::string& text);

struct ConvOptions {
  std::vector<ConvCase> cases;
  std::int64_t batch = 64;
  std::vector<int> threads;
  bool json = false;
  double min_time = 0.5;  // seconds of timed calls per implementation, case and pass
  bool want_torch = false, want_onednn = false;
  bool peers_explicit = false;
  std::string python;
};

// The spec of a named model (seed, seed-nobn, cnn, cnn-nobn; resnet and resnet-nobn give
// kResNetPreset / kResNetNoBnPreset, which only bench train builds); anything else is a spec.
std::string resolve_model_spec(const std::string& model);
// `spec` without its BatchNormalization tokens (bn, batchnorm, batch_normalization, with or
// without options); every other token, e.g. a Dense or Conv2D before a bn, is kept as it is.
std::string spec_without_batch_norm(const std::string& spec);

// Parsers behind the options; each throws UsageError naming the option and the bad value.
std::vector<std::int64_t> parse_shape(const std::string& text);
Layout parse_layout(const std::string& text);
std::vector<BnMode> parse_modes(const std::vector<std::string>& values);
std::vector<int> parse_threads(const std::vector<std::string>& values);

void run_bench_bn(const BnOptions& options);
void run_bench_train(const TrainOptions& options);
void run_bench_infer(const InferOptions& options);
void run_bench_conv(const ConvOptions& options);

// ---- timing ---------------------------------------------------------------------------------

// Median seconds per call: warm-up, then samples of k back-to-back calls (k chosen so that one
// sample lasts long enough for the clock to resolve it) until `min_time` seconds have been spent
// timing; the median sample divided by k. The same method is used for bnorm and every peer
// (bench/peers/torch_bn.py implements it in Python).
template <class Call>
double median_seconds_per_call(Call&& call, double min_time);

double median(std::vector<double> values);

// STREAM triad a[i] = b[i] + s * c[i] over three float32 arrays far larger than the caches,
// threaded with bnorm::parallel_for; counted as 12 bytes per element (STREAM's convention).
class Triad {
 public:
  explicit Triad(std::int64_t mib_per_array);
  ~Triad();
  Triad(const Triad&) = delete;
  Triad& operator=(const Triad&) = delete;
  // Median GB/s of `reps` timed triads (after one untimed) at bnorm's current thread count.
  double measure_gbps(int reps = 7);

 private:
  struct Arrays;
  std::unique_ptr<Arrays> arrays_;
};

// The machine's FP32 peak as register-only FMA loops (independent accumulators, no memory
// traffic), one loop per thread at bnorm's current thread count, with the widest of AVX-512,
// AVX2+FMA or scalar code the CPU runs; the best of `reps` timed runs (after one untimed).
struct Fp32Peak {
  double gflops = 0.0;           // all threads together
  double gflops_per_core = 0.0;  // gflops / threads
  std::string isa;               // "AVX-512", "AVX2+FMA" or "scalar"
};
Fp32Peak measure_fp32_peak(int reps = 9);

// ---- peers ----------------------------------------------------------------------------------

// One peer's time for one case, or why it has none.
struct PeerResult {
  bool ok = false;
  double seconds = 0.0;
  std::string error;
};

// oneDNN's batch_normalization primitive, when bnorm was built with it (BNORM_HAVE_ONEDNN).
bool onednn_built_in();
std::string onednn_version();  // "2.6.3", or "" when not built in

// oneDNN's buffers for one case (its own, filled like bnorm's workload), timed per mode.
class OneDnnPeer {
 public:
  OneDnnPeer(Layout layout, const std::vector<std::int64_t>& shape);
  ~OneDnnPeer();
  OneDnnPeer(const OneDnnPeer&) = delete;
  OneDnnPeer& operator=(const OneDnnPeer&) = delete;
  // `nhwc_view` describes an (N, C) tensor as N x C x 1 x 1 NHWC, oneDNN's fast path.
  PeerResult time(BnMode mode, bool nhwc_view, int threads, double min_time);

 private:
  struct Buffers;
  std::unique_ptr<Buffers> buffers_;
};

// The buffers of one convolution case, shared by bnorm and the oneDNN peer (NHWC x, y, dy, dx;
// bias and dbias of `filters` floats).
struct ConvData {
  float *x, *y, *dy, *dx, *bias, *dbias;
};

// oneDNN's convolution primitives on the whole batch with oneDNN's own (OpenMP) threading: NHWC
// src/dst, weights in the format oneDNN picks (format any, filled once, never reordered in the
// timed calls), with bias; a depthwise case is a grouped convolution (groups = channels).
class OneDnnConvPeer {
 public:
  OneDnnConvPeer(const kernels::Conv2dDims& d, bool depthwise, const ConvData& data);
  ~OneDnnConvPeer();
  OneDnnConvPeer(const OneDnnConvPeer&) = delete;
  OneDnnConvPeer& operator=(const OneDnnConvPeer&) = delete;
  PeerResult time(ConvPass pass, int threads, double min_time);
  // oneDNN's implementation name for each pass timed so far, "fwd / bwd-data / bwd-weights".
  std::string implementation() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The Python interpreter: --python, else $BNORM_PYTHON, else python3.
std::string choose_python(const std::string& option);
// Path of a peer script (bench/peers/<name>): next to the installed binary
// (<prefix>/share/bnorm/peers) or in the source tree bnorm was built from.
std::string locate_peer_script(const std::string& name);

// A child process whose stdin and stdout are pipes to us (stderr goes to a temporary file, whose
// last line explains a failure). Used for line-by-line JSON requests to a Python peer.
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool write_line(const std::string& line);
  // One line from the child's stdout without the newline; false at end of file.
  bool read_line(std::string& line);
  // Closes both pipes (read everything needed first), waits for the child; its exit status
  // (or 128 + signal) and resource usage, e.g. ru_maxrss, its peak resident memory.
  int wait(rusage* usage = nullptr);
  std::string stderr_tail() const;

 private:
  int pid_ = -1;
  int in_fd_ = -1;   // our end of the child's stdin
  int out_fd_ = -1;  // our end of the child's stdout
  std::string buffer_;
  std::string stderr_path_;
  bool waited_ = false;
  int status_ = 0;
  rusage usage_{};
};

// The environment a Python peer runs with at `threads` threads: OMP_NUM_THREADS and the glibc
// malloc tunables that stop PyTorch's per-call output allocations from getting fresh pages.
std::map<std::string, std::string> python_peer_env(int threads);

// A PyTorch peer script in serve mode (bench/peers/<script> --serve --threads T): one process per
// thread count, started up front and kept for the whole run, so that every case is timed right
// after bnorm's. The script's first line is {"ready": true, "torch": "<version>"} (or
// {"error": ...} when torch cannot be imported); then one JSON reply line per JSON request line.
class TorchServePeer {
 public:
  TorchServePeer(const std::string& python, const std::string& script,
                 const std::vector<int>& threads);
  ~TorchServePeer();
  TorchServePeer(const TorchServePeer&) = delete;
  TorchServePeer& operator=(const TorchServePeer&) = delete;

  bool available() const { return unavailable_.empty(); }
  const std::string& unavailable_reason() const { return unavailable_; }
  const std::string& version() const { return version_; }
  // The reply of the process for `threads` to `request`; false with `error` set ("PyTorch: ...")
  // when the process has ended or replied {"error": ...} or something unreadable.
  bool ask(int threads, const nlohmann::json& request, nlohmann::json& reply, std::string& error);
  // ask() for a timing: the reply's "us" (microseconds per call) in seconds.
  PeerResult time_request(int threads, const nlohmann::json& request);

 private:
  std::map<int, std::unique_ptr<ChildProcess>> processes_;
  std::string version_;
  std::string unavailable_;
};

// Whether to run the oneDNN peer: asked for and built in. Asked for but not built in: an Error when
// named with --peers (`peers_explicit`), else a line in `notes`.
bool use_onednn_peer(bool wanted, bool peers_explicit, std::vector<std::string>& notes);

// The started PyTorch peer (a TorchServePeer built from (python, threads)), or null when it is not
// asked for or cannot run: then an Error when named with --peers, else a line in `notes`.
template <class Peer>
std::unique_ptr<Peer> start_torch_peer(bool wanted, bool peers_explicit, const std::string& python,
                                       const std::vector<int>& threads,
                                       std::vector<std::string>& notes);

// ---- template definitions -------------------------------------------------------------------

template <class Call>
double median_seconds_per_call(Call&& call, double min_time) {
  using clock = std::chrono::steady_clock;
  auto seconds_since = [](clock::time_point t) {
    return std::chrono::duration<double>(clock::now() - t).count();
  };
  // Warm-up: caches, page tables, thread pools; a fifth of the budget, at most 0.1 s.
  const double warm_up = std::min(0.1, min_time / 5.0);
  const auto warm_start = clock::now();
  std::int64_t warm_calls = 0;
  do {
    call();
    ++warm_calls;
  } while (warm_calls < 2 || seconds_since(warm_start) < warm_up);
  // Calls per sample: a sample lasts >= max(10 us, min_time / 200).
  const double per_call = seconds_since(warm_start) / static_cast<double>(warm_calls);
  const double target = std::max(1e-5, min_time / 200.0);
  const std::int64_t k = std::max<std::int64_t>(1, static_cast<std::int64_t>(target / per_call));
  std::vector<double> samples;
  const auto start = clock::now();
  while (samples.size() < 5 || seconds_since(start) < min_time) {
    const auto t0 = clock::now();
    for (std::int64_t i = 0; i < k; ++i) call();
    samples.push_back(seconds_since(t0) / static_cast<double>(k));
  }
  return median(std::move(samples));
}

template <class Peer>
std::unique_ptr<Peer> start_torch_peer(bool wanted, bool peers_explicit, const std::string& python,
                                       const std::vector<int>& threads,
                                       std::vector<std::string>& notes) {
  if (!wanted) return nullptr;
  auto peer = std::make_unique<Peer>(python, threads);
  if (peer->available()) return peer;
  if (peers_explicit) throw Error(peer->unavailable_reason());
  notes.push_back(peer->unavailable_reason());
  return nullptr;
}

}  // namespace bnorm::cli::bench
