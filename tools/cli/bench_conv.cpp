// bnorm bench conv — per-layer convolution timings (forward, input gradient, kernel + bias
// gradient) on the shapes of bnorm's cnn and resnet presets and a few MobileNetV2 layers: bnorm's
// Conv2dFast (what Conv2D runs), its im2col + GEMM fallback, oneDNN's own primitives on the whole
// batch and PyTorch (bench/peers/torch_conv.py), as ms, GFLOP/s and % of the FP32 peak measured
// by an FMA loop at the same thread count.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench.hpp"
#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"
#include "bnorm/core/random.hpp"
#include "bnorm/core/tensor.hpp"
#include "kernels/conv2d_fast.hpp"
#include "kernels/depthwise_conv2d.hpp"

namespace bnorm::cli::bench {

const char* conv_pass_name(ConvPass pass) {
  static const char* const names[] = {"forward", "backward-data", "backward-weights"};
  return names[static_cast<int>(pass)];
}

std::vector<ConvCase> default_conv_cases() {
  // (group, h, w, c, filters, kernel, stride, depthwise)
  return {
      // cnn: conv32-3x3-same on the image, conv64-3x3-same after a 2x2 max pool.
      {"cnn", 28, 28, 1, 32, 3, 1, false},
      {"cnn", 14, 14, 32, 64, 3, 1, false},
      // resnet (ResNet-8, filters 16/32/64): stem, then per stage the block's first conv (stride
      // 2 after stage 1), its second conv and the 1x1 stride-2 projection shortcut.
      {"resnet", 28, 28, 1, 16, 3, 1, false},
      {"resnet", 28, 28, 16, 16, 3, 1, false},
      {"resnet", 28, 28, 16, 32, 3, 2, false},
      {"resnet", 28, 28, 16, 32, 1, 2, false},
      {"resnet", 14, 14, 32, 32, 3, 1, false},
      {"resnet", 14, 14, 32, 64, 3, 2, false},
      {"resnet", 14, 14, 32, 64, 1, 2, false},
      {"resnet", 7, 7, 64, 64, 3, 1, false},
      // MobileNetV2 (224x224 input): depthwise 3x3 of two expanded blocks, two pointwise 1x1s.
      {"mnv2", 56, 56, 144, 144, 3, 1, true},
      {"mnv2", 28, 28, 192, 192, 3, 1, true},
      {"mnv2", 56, 56, 24, 144, 1, 1, false},
      {"mnv2", 28, 28, 192, 32, 1, 1, false},
  };
}

namespace {

using kernels::Conv2dDims;
using kernels::DepthwiseConv2dDims;

constexpr ConvPass kPasses[] = {ConvPass::forward, ConvPass::backward_data,
                                ConvPass::backward_weights};

// The table's names of the passes.
const char* pass_short(ConvPass pass) {
  static const char* const names[] = {"fwd", "bwd-d", "bwd-w"};
  return names[static_cast<int>(pass)];
}

// "28x28x16>32 3x3/2" or "56x56x144 dw3x3/1".
std::string case_label(const ConvCase& c) {
  const std::string hwc =
      std::to_string(c.h) + "x" + std::to_string(c.w) + "x" + std::to_string(c.c);
  const std::string k =
      std::to_string(c.kernel) + "x" + std::to_string(c.kernel) + "/" + std::to_string(c.stride);
  return c.depthwise ? hwc + " dw" + k : hwc + ">" + std::to_string(c.filters) + " " + k;
}

// The geometry Conv2dDims and DepthwiseConv2dDims share: "same" padding, no dilation.
template <class Dims>
Dims conv_geometry(const ConvCase& c, std::int64_t batch) {
  const auto gh = kernels::conv_axis_geometry(c.h, c.kernel, c.stride, 1, true);
  const auto gw = kernels::conv_axis_geometry(c.w, c.kernel, c.stride, 1, true);
  Dims d;
  d.batch = batch;
  d.in_h = c.h;
  d.in_w = c.w;
  d.in_c = c.c;
  d.kernel_h = d.kernel_w = c.kernel;
  d.stride_h = d.stride_w = c.stride;
  d.pad_top = gh.pad_before;
  d.pad_left = gw.pad_before;
  d.out_h = gh.out;
  d.out_w = gw.out;
  return d;
}

// A depthwise case has filters = channels (depth multiplier 1).
Conv2dDims conv_dims(const ConvCase& c, std::int64_t batch) {
  Conv2dDims d = conv_geometry<Conv2dDims>(c, batch);
  d.filters = c.depthwise ? c.c : c.filters;
  return d;
}

// Multiply-adds x 2 of one pass (all three passes do the same number).
double conv_flops(const Conv2dDims& d, bool depthwise) {
  const double per_output = 2.0 * static_cast<double>(d.kernel_h * d.kernel_w) *
                            static_cast<double>(depthwise ? 1 : d.in_c);
  return per_output * static_cast<double>(d.y_size());
}

// bnorm's buffers for one case, filled like a layer's (He-uniform-sized kernel, normal x and dy).
struct Workload {
  Conv2dDims d;
  DepthwiseConv2dDims dw;
  bool depthwise;
  Tensor x, y, dy, dx, kernel, bias, dkernel, dbias, cols, dcols;
  kernels::Conv2dFast fast;
  bool fast_ok = false;  // Conv2dFast::prepare succeeded (else bnorm runs im2col)
  bool cols_ready = false;

  Workload(const ConvCase& c, std::int64_t batch)
      : d(conv_dims(c, batch)),
        dw(conv_geometry<DepthwiseConv2dDims>(c, batch)),
        depthwise(c.depthwise),
        x(Shape{d.x_size()}),
        y(Shape{d.y_size()}),
        dy(Shape{d.y_size()}),
        dx(Shape{d.x_size()}),
        kernel(Shape{depthwise ? d.kernel_h * d.kernel_w * d.in_c : d.kernel_size()}),
        bias(Shape{d.filters}),
        dkernel(Shape{kernel.size()}),
        dbias(Shape{d.filters}),
        cols(Shape{depthwise ? 1 : kernels::conv2d_cols_size(d)}),
        dcols(Shape{cols.size()}) {
    Random rng(42);
    for (std::int64_t i = 0; i < x.size(); ++i) x[i] = rng.normal();
    for (std::int64_t i = 0; i < dy.size(); ++i) dy[i] = rng.normal();
    const float limit = 1.0f / static_cast<float>(d.kernel_h * d.kernel_w * d.in_c);
    for (std::int64_t i = 0; i < kernel.size(); ++i) kernel[i] = rng.uniform(-limit, limit);
    for (std::int64_t i = 0; i < bias.size(); ++i) bias[i] = rng.uniform(-0.1f, 0.1f);
    if (!depthwise) fast_ok = fast.prepare(d, true, true);
  }

  ConvData data() { return {x.data(), y.data(), dy.data(), dx.data(), bias.data(), dbias.data()}; }

  // Conv2dFast (or im2col when it cannot run the shape), or the depthwise kernels.
  void run_bnorm(ConvPass pass) {
    if (depthwise) {
      if (pass == ConvPass::forward) {
        kernels::depthwise_conv2d_forward(dw, x.data(), kernel.data(), bias.data(), y.data());
      } else if (pass == ConvPass::backward_data) {
        kernels::depthwise_conv2d_backward(dw, x.data(), dy.data(), kernel.data(), dx.data(),
                                           nullptr, nullptr);
      } else {
        kernels::depthwise_conv2d_backward(dw, x.data(), dy.data(), kernel.data(), nullptr,
                                           dkernel.data(), dbias.data());
      }
    } else if (!fast_ok) {
      run_im2col(pass);
    } else if (pass == ConvPass::forward) {
      fast.forward(x.data(), kernel.data(), bias.data(), y.data());
    } else if (pass == ConvPass::backward_data) {
      fast.backward(x.data(), dy.data(), kernel.data(), dx.data(), nullptr, nullptr);
    } else {
      fast.backward(x.data(), dy.data(), kernel.data(), nullptr, dkernel.data(), dbias.data());
    }
  }

  // im2col + GEMM (conv2d.hpp). The forward includes the im2col; the backward passes read the
  // cols of an earlier forward, as the layer does.
  void run_im2col(ConvPass pass) {
    if (pass == ConvPass::forward || !cols_ready) {
      kernels::conv2d_forward(d, x.data(), kernel.data(), bias.data(), cols.data(), y.data());
      cols_ready = true;
    }
    if (pass == ConvPass::backward_data) {
      kernels::conv2d_backward(d, dy.data(), kernel.data(), cols.data(), dcols.data(), dx.data(),
                               nullptr, nullptr);
    } else if (pass == ConvPass::backward_weights) {
      kernels::conv2d_backward(d, dy.data(), kernel.data(), cols.data(), nullptr, nullptr,
                               dkernel.data(), dbias.data());
    }
  }
};

// The fields that say which convolution and pass: the PyTorch peer's request, part of a JSON row.
nlohmann::json case_json(const ConvCase& c, std::int64_t batch, ConvPass pass) {
  return {{"batch", batch},
          {"h", c.h},
          {"w", c.w},
          {"c", c.c},
          {"filters", c.filters},
          {"kernel", c.kernel},
          {"stride", c.stride},
          {"depthwise", c.depthwise},
          {"pass", conv_pass_name(pass)}};
}

// The PyTorch peer: torch_conv.py in serve mode, one process per thread count.
class TorchConvPeer : public TorchServePeer {
 public:
  TorchConvPeer(const std::string& python, const std::vector<int>& threads)
      : TorchServePeer(python, "torch_conv.py", threads) {}

  PeerResult time(const ConvCase& c, std::int64_t batch, ConvPass pass, int threads,
                  double min_time) {
    nlohmann::json request = case_json(c, batch, pass);
    request["min_time"] = min_time;
    return time_request(threads, request);
  }
};

struct Column {
  std::string name;
  PeerResult result;
};

struct Row {
  const ConvCase* c;
  ConvPass pass;
  int threads;
  double flops, peak_gflops;
  std::vector<Column> columns;  // bnorm first
};

double gflops(double flops, double seconds) { return seconds > 0.0 ? flops / seconds / 1e9 : 0.0; }

std::string format(const char* fmt, double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

// Milliseconds with 3-4 significant digits.
std::string format_ms(double seconds) {
  const double ms = seconds * 1e3;
  return format(ms < 1.0 ? "%.4f" : ms < 10.0 ? "%.3f" : ms < 100.0 ? "%.2f" : "%.1f", ms);
}

const PeerResult* find(const Row& row, const std::string& name) {
  for (const auto& col : row.columns) {
    if (col.name == name) return &col.result;
  }
  return nullptr;
}

// Short column names for the ratios: "im2col", "onednn", "torch".
std::string ratio_name(const std::string& name) {
  const auto dash = name.rfind('-');
  return dash == std::string::npos ? name : name.substr(dash + 1);
}

void print_header(const std::vector<std::string>& names) {
  std::printf("%-6s %-18s %-5s %3s", "group", "convolution", "pass", "thr");
  for (const auto& n : names) std::printf(" | %-19s", n.c_str());
  std::printf(" | bnorm speedup vs\n");
  std::printf("%-6s %-18s %-5s %3s", "", "", "", "");
  for (std::size_t i = 0; i < names.size(); ++i) std::printf(" | %7s %6s %4s", "ms", "GF/s", "%pk");
  std::printf(" |");
  for (std::size_t i = 1; i < names.size(); ++i) std::printf(" %6s", ratio_name(names[i]).c_str());
  std::printf("\n");
  std::fflush(stdout);
}

void print_row(const Row& row, const std::vector<std::string>& names) {
  std::printf("%-6s %-18s %-5s %3d", row.c->group.c_str(), case_label(*row.c).c_str(),
              pass_short(row.pass), row.threads);
  for (const auto& n : names) {
    const PeerResult* r = find(row, n);
    if (r == nullptr) {
      std::printf(" | %7s %6s %4s", "-", "-", "-");
    } else if (!r->ok) {
      std::printf(" | %7s %6s %4s", "error", "-", "-");
    } else {
      const double g = gflops(row.flops, r->seconds);
      std::printf(" | %7s %6.1f %3.0f%%", format_ms(r->seconds).c_str(), g,
                  100.0 * g / row.peak_gflops);
    }
  }
  std::printf(" |");
  const PeerResult* bnorm = find(row, names[0]);
  for (std::size_t i = 1; i < names.size(); ++i) {
    const PeerResult* r = find(row, names[i]);
    if (bnorm != nullptr && bnorm->ok && r != nullptr && r->ok) {
      std::printf(" %6s", format("%.2fx", r->seconds / bnorm->seconds).c_str());
    } else {
      std::printf(" %6s", "-");
    }
  }
  std::printf("\n");
  for (const auto& col : row.columns) {
    if (!col.result.ok) std::printf("  %s: %s\n", col.name.c_str(), col.result.error.c_str());
  }
  std::fflush(stdout);
}

void print_json_row(const Row& row, std::int64_t batch, const std::string& bnorm_impl,
                    const std::string& onednn_impl, const std::string& isa) {
  nlohmann::json results = nlohmann::json::object();
  const PeerResult* bnorm = find(row, "bnorm");
  for (const auto& col : row.columns) {
    if (!col.result.ok) {
      results[col.name] = {{"error", col.result.error}};
      continue;
    }
    const double g = gflops(row.flops, col.result.seconds);
    results[col.name] = {
        {"ms", col.result.seconds * 1e3}, {"gflops", g}, {"pct_peak", 100.0 * g / row.peak_gflops}};
    if (col.name != "bnorm" && bnorm != nullptr && bnorm->ok) {
      results[col.name]["speedup"] = col.result.seconds / bnorm->seconds;
    }
  }
  const ConvCase& c = *row.c;
  nlohmann::json j = case_json(c, batch, row.pass);
  j.update({{"group", c.group},
            {"convolution", case_label(c)},
            {"threads", row.threads},
            {"gflop", row.flops / 1e9},
            {"peak_gflops", row.peak_gflops},
            {"peak_isa", isa},
            {"bnorm_impl", bnorm_impl},
            {"onednn_impl", onednn_impl},
            {"results", results}});
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

}  // namespace

void run_bench_conv(const ConvOptions& o) {
  std::vector<std::string> notes;
  const bool onednn = use_onednn_peer(o.want_onednn, o.peers_explicit, notes);
  const std::unique_ptr<TorchConvPeer> torch =
      start_torch_peer<TorchConvPeer>(o.want_torch, o.peers_explicit, o.python, o.threads, notes);
  std::vector<std::string> names{"bnorm", "bnorm-im2col"};
  if (onednn) names.push_back("onednn");
  if (torch) names.push_back("torch");

  // The FP32 peak at each thread count, measured before any convolution.
  std::map<int, Fp32Peak> peaks;
  for (const int t : o.threads) {
    set_num_threads(t);
    peaks[t] = measure_fp32_peak();
  }
  const std::string isa = peaks.begin()->second.isa;

  if (!o.json) {
    std::printf(
        "bnorm bench conv: batch %lld, NHWC float32, \"same\" padding, bias; median time per "
        "call (min time %.3g s per implementation, case and pass).\n"
        "Passes: fwd = y; bwd-d = dx; bwd-w = dkernel + dbias. GF/s = 2*N*OH*OW*F*C*KH*KW / time\n"
        "(depthwise 2*N*OH*OW*C*KH*KW; taps on the zero padding count too, so small maps can pass "
        "100%%); %%pk = GF/s / FP32 peak at the row's threads.\n",
        static_cast<long long>(o.batch), o.min_time);
    const Fp32Peak& one = peaks.begin()->second;
    std::printf("FP32 peak measured: %.1f GFLOP/s per core, %s (register-only FMA loop, best of 9;",
                one.gflops_per_core, isa.c_str());
    for (const auto& [t, p] : peaks) {
      std::printf(" %d thread%s %.1f", t, t == 1 ? "" : "s", p.gflops);
    }
    std::printf(" GFLOP/s).\n");
    std::printf(
        "bnorm = Conv2dFast (%s, fixed batch chunks, one per thread), depthwise: bnorm's "
        "depthwise kernels.\n"
        "bnorm-im2col = im2col + GEMM (fwd includes the im2col; bwd reuses the forward's "
        "columns).\n",
        kernels::conv2d_fast_built_in() ? ("oneDNN " + onednn_version() + " primitives").c_str()
                                        : "not built in: im2col");
    if (onednn) {
      std::printf(
          "onednn = oneDNN %s primitives on the whole batch, its own threading, weights in its "
          "chosen format (depthwise: groups = C).\n",
          onednn_version().c_str());
    }
    if (torch) {
      std::printf(
          "torch = PyTorch %s (%s): F.conv2d channels_last, aten.convolution_backward "
          "(padding k/2 each side).\n",
          torch->version().c_str(), o.python.c_str());
    }
    std::printf("speedup = implementation time / bnorm time (> 1: bnorm is faster).\n");
    for (const auto& n : notes) std::printf("%s\n", n.c_str());
    std::printf("\n");
    print_header(names);
  } else {
    for (const auto& n : notes) std::fprintf(stderr, "bnorm bench: %s\n", n.c_str());
  }

  for (const auto& c : o.cases) {
    Workload work(c, o.batch);
    const ConvData data = work.data();
    std::unique_ptr<OneDnnConvPeer> dnnl;
    if (onednn) dnnl = std::make_unique<OneDnnConvPeer>(work.d, c.depthwise, data);
    const std::string bnorm_impl = c.depthwise    ? "bnorm depthwise kernels"
                                   : work.fast_ok ? work.fast.implementation()
                                                  : "im2col (Conv2dFast cannot run this shape)";
    const double flops = conv_flops(work.d, c.depthwise);
    std::vector<Row> rows;
    for (const ConvPass pass : kPasses) {
      for (const int t : o.threads) {
        Row row{&c, pass, t, flops, peaks[t].gflops, {}};
        set_num_threads(t);
        row.columns.push_back(
            {"bnorm",
             {true, median_seconds_per_call([&] { work.run_bnorm(pass); }, o.min_time), ""}});
        if (!c.depthwise) {
          row.columns.push_back(
              {"bnorm-im2col",
               {true, median_seconds_per_call([&] { work.run_im2col(pass); }, o.min_time), ""}});
        }
        if (dnnl) {
          row.columns.push_back({"onednn", dnnl->time(pass, t, o.min_time)});
          set_num_threads(t);  // oneDNN set OpenMP's count; keep bnorm's in step
        }
        if (torch) row.columns.push_back({"torch", torch->time(c, o.batch, pass, t, o.min_time)});
        if (!o.json) print_row(row, names);
        rows.push_back(std::move(row));
      }
    }
    const std::string onednn_impl = dnnl ? dnnl->implementation() : "";
    if (o.json) {
      for (const auto& row : rows) print_json_row(row, o.batch, bnorm_impl, onednn_impl, isa);
    } else {
      // oneDNN's kernels per pass (fwd / bwd-d / bwd-w); usually the same for both.
      if (!onednn || onednn_impl == bnorm_impl) {
        std::printf("  bnorm%s: %s\n", onednn ? " and onednn" : "", bnorm_impl.c_str());
      } else {
        std::printf("  bnorm: %s\n  onednn: %s\n", bnorm_impl.c_str(), onednn_impl.c_str());
      }
    }
  }
}

}  // namespace bnorm::cli::bench
