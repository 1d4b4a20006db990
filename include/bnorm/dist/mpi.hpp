// bnorm/dist/mpi.hpp — the Communicator over MPI (Open MPI from Debian), in its own target
// (bnorm::dist_mpi) so that nothing else links MPI. No MPI type appears here.
//
//   mpirun -np 2 my_program            // each process:
//   bnorm::dist::MpiCommunicator comm(&argc, &argv);
//   model.fit(x, y, {.batch_size = 64, .communicator = &comm});
//
// Failures end the job, never hang it: MPI's default error handler (MPI_ERRORS_ARE_FATAL) aborts
// every process on a transport error, mpirun kills the whole job when one process dies, and
// abort() (MPI_Abort) is how a rank that throws ends it (dist::run_or_abort).
#pragma once

#include <string>

#include "bnorm/dist/communicator.hpp"

namespace bnorm::dist {

class MpiCommunicator final : public Communicator {
 public:
  // MPI_Init_thread (MPI_THREAD_FUNNELED: bnorm's OpenMP threads never call MPI) on
  // MPI_COMM_WORLD; DistError when MPI was already initialized by someone else or fails.
  MpiCommunicator(int* argc, char*** argv);
  // MPI_Finalize (collective: every rank must get here, or abort).
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  [[noreturn]] void abort(int code) override;
  std::string description() const override;

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
  int rank_ = 0;
  int size_ = 1;
  std::string library_;
};

}  // namespace bnorm::dist
