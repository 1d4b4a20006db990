// Google Benchmark: bnorm's BN kernels on the cases, every mode x layout x shape, at each
// thread count. Bytes per iteration follow `bnorm bench bn`'s byte model (train 3 passes over the
// tensor, infer 2, backward 5), so bytes_per_second is its effective GB/s. bn_add_relu/... times
// the fused BN -> Add -> ReLU kernels against the unfused layers' calls (bytes on the fused
// model: train 4 passes, backward 7).
//
//   bn_kernels_bench [--threads=1,2] [Google Benchmark flags, e.g. --benchmark_filter=nhwc]
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bn_workload.hpp"
#include "bnorm/core/parallel.hpp"

namespace {

using bnorm::bench::BnCase;
using bnorm::bench::BnMode;
using bnorm::bench::BnWorkload;

void bn_kernel(benchmark::State& state, BnCase c, BnMode mode) {
  bnorm::set_num_threads(static_cast<int>(state.range(0)));
  BnWorkload workload(c.layout, c.shape);
  for (auto _ : state) {
    workload.run(mode);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * workload.tensor_bytes() *
                          bnorm::bench::byte_passes(mode));
}

// BN -> Add -> ReLU: the fused kernels or the unfused layers' calls; bytes on the fused model.
void bn_add_relu(benchmark::State& state, BnCase c, BnMode mode, bnorm::bench::AddReluImpl impl) {
  bnorm::set_num_threads(static_cast<int>(state.range(0)));
  bnorm::bench::BnAddReluWorkload workload(c.layout, c.shape);
  for (auto _ : state) {
    workload.run(mode, impl);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * workload.tensor_bytes() *
                          bnorm::bench::add_relu_byte_passes(mode));
}

// Thread counts from --threads=1,2 (removed from argv); default 1 and all cores.
std::vector<int> take_threads(int& argc, char** argv) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::vector<int> threads{1};
  if (cores > 1) threads.push_back(static_cast<int>(cores));
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads.clear();
      std::string list = argv[i] + 10;
      std::size_t pos = 0;
      while (pos <= list.size()) {
        const std::size_t comma = std::min(list.find(',', pos), list.size());
        const int n = std::atoi(list.substr(pos, comma - pos).c_str());
        if (n >= 1) threads.push_back(n);
        pos = comma + 1;
      }
      if (threads.empty()) threads.push_back(1);
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  return threads;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<int> threads = take_threads(argc, argv);
  for (const BnMode mode : {BnMode::train, BnMode::infer, BnMode::backward}) {
    for (const BnCase& c : bnorm::bench::default_bn_cases()) {
      const std::string name = std::string("bn/") + bnorm::bench::mode_name(mode) + "/" +
                               bnorm::bench::layout_name(c.layout) + "/" +
                               bnorm::bench::shape_string(c.shape);
      auto* b = benchmark::RegisterBenchmark(name.c_str(), bn_kernel, c, mode);
      b->ArgName("threads")->UseRealTime()->Unit(benchmark::kMicrosecond);
      for (int t : threads) b->Arg(t);
    }
  }
  for (const BnMode mode : {BnMode::train, BnMode::backward}) {
    for (const BnCase& c : bnorm::bench::add_relu_cases()) {
      for (const auto impl :
           {bnorm::bench::AddReluImpl::fused, bnorm::bench::AddReluImpl::unfused}) {
        const std::string name = std::string("bn_add_relu/") + bnorm::bench::mode_name(mode) + "/" +
                                 bnorm::bench::add_relu_impl_name(impl) + "/" +
                                 bnorm::bench::layout_name(c.layout) + "/" +
                                 bnorm::bench::shape_string(c.shape);
        auto* b = benchmark::RegisterBenchmark(name.c_str(), bn_add_relu, c, mode, impl);
        b->ArgName("threads")->UseRealTime()->Unit(benchmark::kMicrosecond);
        for (int t : threads) b->Arg(t);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
