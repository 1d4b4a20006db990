#include "distributed.hpp"

#include <charconv>
#include <cstdlib>
#include <string_view>

#include "common.hpp"
#ifdef BNORM_HAVE_MPI
#include "bnorm/dist/mpi.hpp"
#endif

namespace bnorm::cli {

namespace {
// The first of `names` set to an integer >= 1, else 1.
int env_count(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    const char* v = std::getenv(name);
    if (!v || !*v) continue;
    const std::string_view text(v);
    int n = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec == std::errc() && end == text.data() + text.size() && n >= 1) return n;
  }
  return 1;
}
}  // namespace

std::unique_ptr<dist::Communicator> make_communicator() {
#ifdef BNORM_HAVE_MPI
  return std::make_unique<dist::MpiCommunicator>(nullptr, nullptr);
#else
  throw UsageError(
      "--distributed needs MPI, and this bnorm was built without it (install libopenmpi-dev and "
      "openmpi-bin, as scripts/setup.sh does, and rebuild)");
#endif
}

int launcher_processes() { return env_count({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}); }

int launcher_local_processes() {
  return env_count({"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"});
}

}  // namespace bnorm::cli
