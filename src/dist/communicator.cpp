#include "bnorm/dist/communicator.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

namespace bnorm::dist {

namespace {
// Adds the wall time of one collective to the communicator's total.
class Stopwatch {
 public:
  explicit Stopwatch(double& total) : total_(total), start_(std::chrono::steady_clock::now()) {}
  ~Stopwatch() {
    total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  Stopwatch(const Stopwatch&) = delete;
  Stopwatch& operator=(const Stopwatch&) = delete;

 private:
  double& total_;
  std::chrono::steady_clock::time_point start_;
};
}  // namespace

Range block_of(std::int64_t count, int rank, int size) noexcept {
  const std::int64_t p = size, r = rank, q = count / p, extra = count % p;
  const std::int64_t begin = r * q + std::min(r, extra);
  return {begin, begin + q + (r < extra ? 1 : 0)};
}

void Communicator::all_gather(std::span<const double> local, std::span<double> all) {
  const Stopwatch watch(seconds_);
  const auto bytes = static_cast<std::int64_t>(local.size_bytes());
  bytes_sent_ += bytes * (size() - 1);
  do_all_gather(local.data(), all.data(), bytes);
}

// Small messages (what all ranks send together fits kTreeBytes: SyncBN's sums, the metrics) go
// to rank 0, which adds them, and come back by broadcast: MPI's gather and broadcast are trees,
// so the latency grows with log2(P) instead of P. Large ones (the gradients): a reduce-scatter
// then an all-gather, by blocks (the bandwidth-optimal pattern of a ring all-reduce: each rank
// sends 2 (P - 1) / P of the buffer): rank r receives block r of every rank, adds it and the
// reduced blocks are gathered everywhere. Either way each element's P values are added in rank
// order in float64 and rounded once: the same operations, so the same bits, on both paths and on
// every rank; the order is fixed by this code, not by the transport.
constexpr std::int64_t kTreeBytes = 64 * 1024;

template <class T>
void Communicator::ordered_sum(std::span<T> values) {
  const int p = size();
  if (p == 1 || values.empty()) return;
  const Stopwatch watch(seconds_);
  const int me = rank();
  const auto n = static_cast<std::int64_t>(values.size());
  const auto bytes = n * static_cast<std::int64_t>(sizeof(T));
  if (bytes * p <= kTreeBytes) {
    std::vector<T> all(me == 0 ? static_cast<std::size_t>(n * p) : 0);
    do_gather(values.data(), all.data(), bytes, 0);
    if (me == 0) {
      for (std::int64_t i = 0; i < n; ++i) {
        double sum = static_cast<double>(all[static_cast<std::size_t>(i)]);
        for (int j = 1; j < p; ++j)
          sum += static_cast<double>(all[static_cast<std::size_t>(j * n + i)]);
        values[static_cast<std::size_t>(i)] = static_cast<T>(sum);
      }
    }
    do_broadcast(values.data(), bytes, 0);
    bytes_sent_ += me == 0 ? bytes * (p - 1) : bytes;
    return;
  }
  std::vector<std::int64_t> send_bytes(static_cast<std::size_t>(p)),
      send_offsets(static_cast<std::size_t>(p)), recv_bytes(static_cast<std::size_t>(p)),
      recv_offsets(static_cast<std::size_t>(p));
  const Range mine = block_of(n, me, p);
  const std::int64_t my_len = mine.end - mine.begin;
  for (int j = 0; j < p; ++j) {
    const Range b = block_of(n, j, p);
    const auto u = static_cast<std::size_t>(j);
    send_bytes[u] = (b.end - b.begin) * static_cast<std::int64_t>(sizeof(T));
    send_offsets[u] = b.begin * static_cast<std::int64_t>(sizeof(T));
    recv_bytes[u] = my_len * static_cast<std::int64_t>(sizeof(T));
    recv_offsets[u] = j * my_len * static_cast<std::int64_t>(sizeof(T));
  }
  std::vector<T> received(static_cast<std::size_t>(my_len * p));
  do_all_to_all(values.data(), send_bytes, send_offsets, received.data(), recv_bytes, recv_offsets);
  for (std::int64_t i = 0; i < my_len; ++i) {
    double sum = static_cast<double>(received[static_cast<std::size_t>(i)]);
    for (int j = 1; j < p; ++j)
      sum += static_cast<double>(received[static_cast<std::size_t>(j * my_len + i)]);
    values[static_cast<std::size_t>(mine.begin + i)] = static_cast<T>(sum);
  }
  do_all_gather_blocks(values.data(), send_bytes, send_offsets);
  bytes_sent_ += 2 * (n - my_len) * static_cast<std::int64_t>(sizeof(T));
}

void Communicator::all_reduce_sum(std::span<float> values) { ordered_sum(values); }
void Communicator::all_reduce_sum(std::span<double> values) { ordered_sum(values); }

std::int64_t Communicator::all_reduce_max(std::int64_t v) {
  if (size() == 1) return v;
  std::vector<std::int64_t> all(static_cast<std::size_t>(size()));
  {
    const Stopwatch watch(seconds_);
    do_all_gather(&v, all.data(), sizeof v);
    bytes_sent_ += static_cast<std::int64_t>(sizeof v) * (size() - 1);
  }
  return *std::max_element(all.begin(), all.end());
}

void Communicator::broadcast(std::span<float> values, int root) {
  if (size() == 1 || values.empty()) return;
  const Stopwatch watch(seconds_);
  if (rank() == root) bytes_sent_ += static_cast<std::int64_t>(values.size_bytes());
  do_broadcast(values.data(), static_cast<std::int64_t>(values.size_bytes()), root);
}

void LocalCommunicator::abort(int code) {
  std::fflush(nullptr);
  std::_Exit(code);
}

void LocalCommunicator::do_all_gather(const void* local, void* all, std::int64_t bytes) {
  if (bytes > 0 && local != all) std::memmove(all, local, static_cast<std::size_t>(bytes));
}

void LocalCommunicator::do_gather(const void* local, void* all, std::int64_t bytes, int) {
  if (bytes > 0 && local != all) std::memmove(all, local, static_cast<std::size_t>(bytes));
}

void LocalCommunicator::do_all_to_all(const void* send, std::span<const std::int64_t> send_bytes,
                                      std::span<const std::int64_t> send_offsets, void* recv,
                                      std::span<const std::int64_t> /*recv_bytes*/,
                                      std::span<const std::int64_t> recv_offsets) {
  if (send_bytes[0] > 0) {
    std::memmove(static_cast<char*>(recv) + recv_offsets[0],
                 static_cast<const char*>(send) + send_offsets[0],
                 static_cast<std::size_t>(send_bytes[0]));
  }
}

int run_or_abort(Communicator& comm, const std::function<int()>& body, int exit_code) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "bnorm: rank %d of %d: %s\n", comm.rank(), comm.size(), e.what());
    std::fflush(stderr);
    comm.abort(exit_code);
  }
  return exit_code;  // not reached: abort() ends the process
}

}  // namespace bnorm::dist
