// tests/support/thread_communicator.hpp — N ranks as N threads of one process: a Communicator
// whose transport is memcpy between the threads' buffers at barriers. The rank-ordered sums and
// every synchronization above the transport are the library's own code, so distributed training
// can be tested in-process (and under the sanitizers); tests/dist/ runs the same over MPI.
#pragma once

#include <barrier>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "bnorm/dist/communicator.hpp"

namespace bnorm::test {

// memcpy of n bytes; n == 0 copies nothing (buffers of empty blocks may be null, which memcpy's
// contract does not allow even for 0 bytes).
inline void copy_bytes(void* to, const void* from, std::int64_t n) {
  if (n > 0) std::memcpy(to, from, static_cast<std::size_t>(n));
}

class ThreadGroup;

class ThreadCommunicator final : public dist::Communicator {
 public:
  ThreadCommunicator(ThreadGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override;
  [[noreturn]] void abort(int) override { std::abort(); }
  std::string description() const override { return "threads"; }

 protected:
  void do_all_gather(const void* local, void* all, std::int64_t bytes) override;
  void do_all_to_all(const void* send, std::span<const std::int64_t> send_bytes,
                     std::span<const std::int64_t> send_offsets, void* recv,
                     std::span<const std::int64_t> recv_bytes,
                     std::span<const std::int64_t> recv_offsets) override;
  void do_all_gather_blocks(void* all, std::span<const std::int64_t> bytes,
                            std::span<const std::int64_t> offsets) override;
  void do_broadcast(void* data, std::int64_t bytes, int root) override;
  void do_gather(const void* local, void* all, std::int64_t bytes, int root) override;

 private:
  ThreadGroup& group_;
  int rank_;
};

// What each rank posts for the others to read between two barriers.
struct Posted {
  const void* data = nullptr;
  std::span<const std::int64_t> offsets;
};

class ThreadGroup {
 public:
  explicit ThreadGroup(int size) : size_(size), barrier_(size), posted_(size) {
    for (int r = 0; r < size; ++r) comms_.push_back(std::make_unique<ThreadCommunicator>(*this, r));
  }
  int size() const noexcept { return size_; }
  ThreadCommunicator& comm(int rank) { return *comms_[static_cast<std::size_t>(rank)]; }
  // Runs body(rank) on `size` threads at once and waits for all of them.
  void run(const std::function<void(int)>& body) {
    std::vector<std::thread> threads;
    for (int r = 0; r < size_; ++r) threads.emplace_back(body, r);
    for (auto& t : threads) t.join();
  }

 private:
  friend class ThreadCommunicator;
  int size_;
  std::barrier<> barrier_;
  std::vector<Posted> posted_;
  std::vector<std::unique_ptr<ThreadCommunicator>> comms_;
};

inline int ThreadCommunicator::size() const noexcept { return group_.size(); }

inline void ThreadCommunicator::do_all_gather(const void* local, void* all, std::int64_t bytes) {
  group_.posted_[static_cast<std::size_t>(rank_)] = {local, {}};
  group_.barrier_.arrive_and_wait();
  for (int r = 0; r < size(); ++r)
    copy_bytes(static_cast<char*>(all) + r * bytes,
               group_.posted_[static_cast<std::size_t>(r)].data, bytes);
  group_.barrier_.arrive_and_wait();
}

inline void ThreadCommunicator::do_all_to_all(const void* send,
                                              std::span<const std::int64_t> /*send_bytes*/,
                                              std::span<const std::int64_t> send_offsets,
                                              void* recv, std::span<const std::int64_t> recv_bytes,
                                              std::span<const std::int64_t> recv_offsets) {
  group_.posted_[static_cast<std::size_t>(rank_)] = {send, send_offsets};
  group_.barrier_.arrive_and_wait();
  for (int j = 0; j < size(); ++j) {
    const Posted& p = group_.posted_[static_cast<std::size_t>(j)];
    const auto u = static_cast<std::size_t>(j);
    copy_bytes(static_cast<char*>(recv) + recv_offsets[u],
               static_cast<const char*>(p.data) + p.offsets[static_cast<std::size_t>(rank_)],
               recv_bytes[u]);
  }
  group_.barrier_.arrive_and_wait();
}

inline void ThreadCommunicator::do_all_gather_blocks(void* all, std::span<const std::int64_t> bytes,
                                                     std::span<const std::int64_t> offsets) {
  group_.posted_[static_cast<std::size_t>(rank_)] = {all, {}};
  group_.barrier_.arrive_and_wait();
  for (int j = 0; j < size(); ++j) {
    if (j == rank_) continue;
    const auto u = static_cast<std::size_t>(j);
    copy_bytes(static_cast<char*>(all) + offsets[u],
               static_cast<const char*>(group_.posted_[u].data) + offsets[u], bytes[u]);
  }
  group_.barrier_.arrive_and_wait();
}

inline void ThreadCommunicator::do_gather(const void* local, void* all, std::int64_t bytes,
                                          int root) {
  group_.posted_[static_cast<std::size_t>(rank_)] = {local, {}};
  group_.barrier_.arrive_and_wait();
  if (rank_ == root) {
    for (int r = 0; r < size(); ++r)
      copy_bytes(static_cast<char*>(all) + r * bytes,
                 group_.posted_[static_cast<std::size_t>(r)].data, bytes);
  }
  group_.barrier_.arrive_and_wait();
}

inline void ThreadCommunicator::do_broadcast(void* data, std::int64_t bytes, int root) {
  group_.posted_[static_cast<std::size_t>(rank_)] = {data, {}};
  group_.barrier_.arrive_and_wait();
  if (rank_ != root) copy_bytes(data, group_.posted_[static_cast<std::size_t>(root)].data, bytes);
  group_.barrier_.arrive_and_wait();
}

}  // namespace bnorm::test
