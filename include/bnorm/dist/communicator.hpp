// bnorm/dist/communicator.hpp — the boundary between training and the processes it runs on.
//
// Data-parallel training needs five collectives; this interface names them and fixes what they
// guarantee, whatever carries them (one process, or MPI in bnorm/dist/mpi.hpp):
//  - sums are added in rank order (0, 1, ..., size-1), in float64, and rounded once, so every
//    rank receives the same bits and the same run gives the same bits again, independently of the
//    algorithm an MPI library picks for its own all-reduce (MPI lets implementations reassociate);
//  - every call is collective: every rank must make the same calls in the same order with the
//    same lengths (training guarantees it by protocol: docs/architecture.md, "Distributed").
// A rank that cannot go on calls abort(), which ends every process of the job: the others would
// otherwise wait in their next collective forever.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

namespace bnorm::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;

  // all[r * local.size() + i] = rank r's local[i]; `local` has the same length on every rank.
  void all_gather(std::span<const double> local, std::span<double> all);
  // values[i] = sum over ranks of values[i], added in rank order (see above).
  void all_reduce_sum(std::span<float> values);
  void all_reduce_sum(std::span<double> values);
  // The largest (smallest) of every rank's v.
  std::int64_t all_reduce_max(std::int64_t v);
  std::int64_t all_reduce_min(std::int64_t v) { return -all_reduce_max(-v); }
  // values = root's values on every rank.
  void broadcast(std::span<float> values, int root);

  // Ends the whole job with exit status `code` (MPI_Abort); never returns.
  [[noreturn]] virtual void abort(int code) = 0;
  // "MPI (Open MPI 4.1.4), 2 processes" or "local (1 process)".
  virtual std::string description() const = 0;

  // Wall-clock seconds spent inside collectives since the start (waiting for other ranks
  // included), and how many bytes this rank sent: the communication share of a step's time.
  double seconds() const noexcept { return seconds_; }
  std::int64_t bytes_sent() const noexcept { return bytes_sent_; }

 protected:
  // The transport: the implementations move bytes; the order of the sums is fixed above them.
  // gather: every rank's `bytes` bytes into `all` (size() * bytes), in rank order.
  virtual void do_all_gather(const void* local, void* all, std::int64_t bytes) = 0;
  // A personalized exchange: this rank sends its j-th block (send_bytes[j] bytes at
  // send_offsets[j] of `send`) to rank j, and receives rank j's block for it (recv_bytes[j]
  // bytes) at recv_offsets[j] of `recv`.
  virtual void do_all_to_all(const void* send, std::span<const std::int64_t> send_bytes,
                             std::span<const std::int64_t> send_offsets, void* recv,
                             std::span<const std::int64_t> recv_bytes,
                             std::span<const std::int64_t> recv_offsets) = 0;
  // Every rank's block (rank r's of bytes[r], at offsets[r]) gathered into `all` on every rank;
  // this rank's block is already in place.
  virtual void do_all_gather_blocks(void* all, std::span<const std::int64_t> bytes,
                                    std::span<const std::int64_t> offsets) = 0;
  virtual void do_broadcast(void* data, std::int64_t bytes, int root) = 0;
  // Every rank's `bytes` bytes into `all` (size() * bytes, rank order) on `root` only.
  virtual void do_gather(const void* local, void* all, std::int64_t bytes, int root) = 0;

 private:
  template <class T>
  void ordered_sum(std::span<T> values);
  double seconds_ = 0.0;
  std::int64_t bytes_sent_ = 0;
};

// One process: every collective is the identity (a sum over one rank, a gather of one block).
class LocalCommunicator final : public Communicator {
 public:
  int rank() const noexcept override { return 0; }
  int size() const noexcept override { return 1; }
  [[noreturn]] void abort(int code) override;
  std::string description() const override { return "local (1 process)"; }

 protected:
  void do_all_gather(const void* local, void* all, std::int64_t bytes) override;
  void do_all_to_all(const void* send, std::span<const std::int64_t> send_bytes,
                     std::span<const std::int64_t> send_offsets, void* recv,
                     std::span<const std::int64_t> recv_bytes,
                     std::span<const std::int64_t> recv_offsets) override;
  void do_all_gather_blocks(void*, std::span<const std::int64_t>,
                            std::span<const std::int64_t>) override {}
  void do_broadcast(void*, std::int64_t, int) override {}
  void do_gather(const void* local, void* all, std::int64_t bytes, int root) override;
};

// The [begin, end) of `count` items that rank `rank` of `size` takes: contiguous blocks in rank
// order, the first count % size ranks one item more (so rank 0 is empty only when count is 0).
struct Range {
  std::int64_t begin = 0, end = 0;
};
Range block_of(std::int64_t count, int rank, int size) noexcept;

// Runs `body` on this rank; an exception it throws is printed as one line on stderr
// ("bnorm: rank 1 of 2: <message>") and ends the whole job through comm.abort(exit_code), so
// that no other rank is left waiting in a collective. Returns body's result otherwise.
int run_or_abort(Communicator& comm, const std::function<int()>& body, int exit_code = 1);

}  // namespace bnorm::dist
