// tools/cli/distributed.hpp — how the CLI starts a distributed run (`mpirun -np N bnorm train
// --distributed`): the communicator, and what mpirun's environment says about the job.
#pragma once

#include <memory>

#include "bnorm/dist/communicator.hpp"

namespace bnorm::cli {

// The MPI communicator of this job (MPI_Init); UsageError when bnorm was built without MPI.
std::unique_ptr<dist::Communicator> make_communicator();
// Processes of the job this process was started in by mpirun (Open MPI's or MPICH's
// environment), 1 when it was not started by a launcher.
int launcher_processes();
// Processes of that job on this machine (1 without a launcher).
int launcher_local_processes();

}  // namespace bnorm::cli
