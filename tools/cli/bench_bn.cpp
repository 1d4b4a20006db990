// bnorm bench bn — median time per call of bnorm's BN kernels per case, mode and thread count,
// as effective GB/s, as % of the STREAM triad probed just before, and against oneDNN and PyTorch
// measured in the same run on the same shapes.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>

#include "bench.hpp"
#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"

namespace bnorm::cli::bench {

namespace {

using bnorm::bench::BnWorkload;
using bnorm::bench::byte_passes;
using bnorm::bench::layout_name;
using bnorm::bench::mode_name;
using bnorm::bench::shape_string;

// The PyTorch peer: torch_bn.py in serve mode, one process per thread count.
class TorchPeer : public TorchServePeer {
 public:
  TorchPeer(const std::string& python, const std::vector<int>& threads)
      : TorchServePeer(python, "torch_bn.py", threads) {}

  PeerResult time(const BnCase& c, BnMode mode, int threads, double min_time) {
    return time_request(threads, {{"shape", c.shape},
                                  {"layout", layout_name(c.layout)},
                                  {"mode", mode_name(mode)},
                                  {"min_time", min_time}});
  }
};

struct PeerColumn {
  std::string name;
  PeerResult result;
};

struct Row {
  BnCase c;
  BnMode mode;
  int threads;
  double bnorm_seconds, bnorm_gbps, triad_gbps;
  std::vector<PeerColumn> peers;
  double load_average;  // 1-minute load average before the row: other work competing for cores
};

double load_average() {
  double load[1] = {0.0};
  return getloadavg(load, 1) == 1 ? load[0] : -1.0;
}

double gbps(double bytes, double seconds) { return seconds > 0.0 ? bytes / seconds / 1e9 : 0.0; }

// Microseconds with 3-4 significant digits.
std::string format_us(double seconds) {
  const double us = seconds * 1e6;
  char buf[32];
  std::snprintf(buf, sizeof buf,
                us < 10.0     ? "%.3f"
                : us < 100.0  ? "%.2f"
                : us < 1000.0 ? "%.1f"
                              : "%.0f",
                us);
  return buf;
}

std::string format(const char* fmt, double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

void print_json_row(const Row& row, double bytes) {
  nlohmann::json peers = nlohmann::json::object();
  for (const auto& p : row.peers) {
    if (p.result.ok) {
      peers[p.name] = {{"us", p.result.seconds * 1e6},
                       {"gbps", gbps(bytes, p.result.seconds)},
                       {"speedup", p.result.seconds / row.bnorm_seconds}};
    } else {
      peers[p.name] = {{"error", p.result.error}};
    }
  }
  const nlohmann::json j = {{"shape", shape_string(row.c.shape)},
                            {"layout", layout_name(row.c.layout)},
                            {"mode", mode_name(row.mode)},
                            {"threads", row.threads},
                            {"bnorm_us", row.bnorm_seconds * 1e6},
                            {"bnorm_gbps", row.bnorm_gbps},
                            {"triad_gbps", row.triad_gbps},
                            {"pct_triad", 100.0 * row.bnorm_gbps / row.triad_gbps},
                            {"bytes", bytes},
                            {"load_average", row.load_average},
                            {"peers", peers}};
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// Peer column names in table order.
std::vector<std::string> peer_names(bool onednn, bool onednn_view, bool torch) {
  std::vector<std::string> names;
  if (onednn) names.push_back("onednn");
  if (onednn_view) names.push_back("onednn-nhwc-view");
  if (torch) names.push_back("torch");
  return names;
}

void print_table_header(const std::vector<std::string>& names) {
  std::printf("%-14s %-6s %-8s %3s %10s %6s %6s %6s", "shape", "layout", "mode", "thr", "bnorm_us",
              "GB/s", "triad", "%triad");
  for (const auto& n : names) std::printf(" | %*s %7s", 10, (n + "_us").c_str(), "speedup");
  std::printf("\n");
  std::fflush(stdout);
}

void print_table_row(const Row& row, const std::vector<std::string>& names) {
  std::printf("%-14s %-6s %-8s %3d %10s %6.1f %6.1f %5.0f%%", shape_string(row.c.shape).c_str(),
              layout_name(row.c.layout), mode_name(row.mode), row.threads,
              format_us(row.bnorm_seconds).c_str(), row.bnorm_gbps, row.triad_gbps,
              100.0 * row.bnorm_gbps / row.triad_gbps);
  for (const auto& n : names) {
    const PeerColumn* col = nullptr;
    for (const auto& p : row.peers) {
      if (p.name == n) col = &p;
    }
    if (col == nullptr) {
      std::printf(" | %10s %7s", "-", "-");
    } else if (!col->result.ok) {
      std::printf(" | %10s %7s", "error", "-");
    } else {
      std::printf(" | %10s %7s", format_us(col->result.seconds).c_str(),
                  format("%.2fx", col->result.seconds / row.bnorm_seconds).c_str());
    }
  }
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

void run_bench_bn(const BnOptions& o) {
  std::vector<std::string> notes;  // peers that are not measured, and why
  const bool onednn = use_onednn_peer(o.want_onednn, o.peers_explicit, notes);
  const std::unique_ptr<TorchPeer> torch =
      start_torch_peer<TorchPeer>(o.want_torch, o.peers_explicit, o.python, o.threads, notes);
  bool any_nc = false;
  for (const auto& c : o.cases) any_nc = any_nc || c.layout == Layout::nc;
  const std::vector<std::string> names = peer_names(onednn, onednn && any_nc, torch != nullptr);

  Triad triad(o.triad_mib);

  if (!o.json) {
    std::printf(
        "bnorm bench bn: median time per call (min time %.3g s per implementation and case).\n"
        "GB/s = tensor bytes x passes / time, passes: train 3, infer 2, backward 5.\n"
        "triad = STREAM triad GB/s (bnorm's own, 3 x %lld MiB, 12 bytes/element) probed just "
        "before each row at its thread count; %%triad = GB/s / triad.\n"
        "<peer>_us = the peer's median time per call; speedup = peer time / bnorm time "
        "(> 1: bnorm is faster).\n",
        o.min_time, static_cast<long long>(o.triad_mib));
    if (onednn) {
      std::printf("oneDNN %s: batch_normalization primitive%s.\n", onednn_version().c_str(),
                  any_nc ? "; onednn-nhwc-view: (N, C) described as N x C x 1 x 1 NHWC" : "");
    }
    if (torch) {
      std::printf("PyTorch %s (%s): F.batch_norm and aten.native_batch_norm_backward.\n",
                  torch->version().c_str(), o.python.c_str());
    }
    const unsigned cores = std::thread::hardware_concurrency();
    std::printf(
        "Load average at the start: %.2f on %u cores (other running work slows the rows with "
        "more threads most: an OpenMP team waits for its slowest thread).\n",
        load_average(), cores);
    for (const auto& n : notes) std::printf("%s\n", n.c_str());
    std::printf("\n");
    print_table_header(names);
  } else {
    for (const auto& n : notes) std::fprintf(stderr, "bnorm bench: %s\n", n.c_str());
  }

  for (const auto& c : o.cases) {
    BnWorkload workload(c.layout, c.shape);
    std::unique_ptr<OneDnnPeer> dnnl;
    if (onednn) dnnl = std::make_unique<OneDnnPeer>(c.layout, c.shape);
    for (const BnMode mode : o.modes) {
      const double bytes = static_cast<double>(workload.tensor_bytes()) * byte_passes(mode);
      for (const int t : o.threads) {
        Row row{c, mode, t, 0.0, 0.0, 0.0, {}, load_average()};
        set_num_threads(t);
        row.triad_gbps = triad.measure_gbps();
        row.bnorm_seconds = median_seconds_per_call([&] { workload.run(mode); }, o.min_time);
        row.bnorm_gbps = gbps(bytes, row.bnorm_seconds);
        if (dnnl) {
          row.peers.push_back({"onednn", dnnl->time(mode, false, t, o.min_time)});
          if (c.layout == Layout::nc) {
            row.peers.push_back({"onednn-nhwc-view", dnnl->time(mode, true, t, o.min_time)});
          }
          set_num_threads(t);  // oneDNN set OpenMP's count; keep bnorm's in step
        }
        if (torch) row.peers.push_back({"torch", torch->time(c, mode, t, o.min_time)});
        if (o.json) {
          print_json_row(row, bytes);
        } else {
          print_table_row(row, names);
          for (const auto& p : row.peers) {
            if (!p.result.ok) std::printf("  %s: %s\n", p.name.c_str(), p.result.error.c_str());
          }
        }
      }
    }
  }
}

}  // namespace bnorm::cli::bench
