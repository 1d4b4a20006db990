#include <mpi.h>

#include <climits>
#include <cstdio>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/dist/mpi.hpp"

namespace bnorm::dist {

namespace {
// MPI counts and displacements are int: a buffer beyond 2 GiB is refused rather than truncated.
int as_count(std::int64_t bytes, const char* what) {
  if (bytes < 0 || bytes > INT_MAX) {
    throw DistError(std::string("MPI ") + what + ": " + std::to_string(bytes) +
                    " bytes exceed MPI's int count (at most " + std::to_string(INT_MAX) + ")");
  }
  return static_cast<int>(bytes);
}

std::vector<int> as_counts(std::span<const std::int64_t> v, const char* what) {
  std::vector<int> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = as_count(v[i], what);
  return out;
}
}  // namespace

MpiCommunicator::MpiCommunicator(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) throw DistError("MPI is already initialized in this process");
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    throw DistError("MPI_Init_thread failed");
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  MPI_Get_library_version(version, &length);
  library_.assign(version, static_cast<std::size_t>(length));
  if (const auto comma = library_.find(','); comma != std::string::npos) library_.resize(comma);
  while (!library_.empty() && (library_.back() == '\n' || library_.back() == ' '))
    library_.pop_back();
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void MpiCommunicator::abort(int code) {
  std::fflush(nullptr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; should it, this process still ends
}

std::string MpiCommunicator::description() const {
  return "MPI (" + library_ + "), " + std::to_string(size_) + " process" + (size_ == 1 ? "" : "es");
}

void MpiCommunicator::do_all_gather(const void* local, void* all, std::int64_t bytes) {
  const int n = as_count(bytes, "all-gather");
  MPI_Allgather(local, n, MPI_BYTE, all, n, MPI_BYTE, MPI_COMM_WORLD);
}

void MpiCommunicator::do_all_to_all(const void* send, std::span<const std::int64_t> send_bytes,
                                    std::span<const std::int64_t> send_offsets, void* recv,
                                    std::span<const std::int64_t> recv_bytes,
                                    std::span<const std::int64_t> recv_offsets) {
  const auto sc = as_counts(send_bytes, "all-to-all"), sd = as_counts(send_offsets, "all-to-all"),
             rc = as_counts(recv_bytes, "all-to-all"), rd = as_counts(recv_offsets, "all-to-all");
  MPI_Alltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE,
                MPI_COMM_WORLD);
}

void MpiCommunicator::do_all_gather_blocks(void* all, std::span<const std::int64_t> bytes,
                                           std::span<const std::int64_t> offsets) {
  const auto c = as_counts(bytes, "all-gather"), d = as_counts(offsets, "all-gather");
  MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_BYTE, all, c.data(), d.data(), MPI_BYTE, MPI_COMM_WORLD);
}

void MpiCommunicator::do_gather(const void* local, void* all, std::int64_t bytes, int root) {
  const int n = as_count(bytes, "gather");
  MPI_Gather(local, n, MPI_BYTE, all, n, MPI_BYTE, root, MPI_COMM_WORLD);
}

void MpiCommunicator::do_broadcast(void* data, std::int64_t bytes, int root) {
  MPI_Bcast(data, as_count(bytes, "broadcast"), MPI_BYTE, root, MPI_COMM_WORLD);
}

}  // namespace bnorm::dist
