// Distributed training over MPI processes (run by ctest under mpirun; tests/dist/CMakeLists.txt):
//   mpirun -np N bnorm_mpi_tests <scenario>
// equivalence  each step of N ranks = one step of one process on the global batch (<= 1e-6),
//              whole runs on its trajectory, replicas bit-identical (fit's hash at every step)
// syncbn       synchronized statistics at |mean| / std = 1e6 against the float64 reference
// uneven       each rank's own data, of different sizes: no hang, identical replicas
// throw        rank 1 throws at its 3rd step: the job ends (run_or_abort), never hangs
// kill         rank 1 dies (SIGKILL) at its 3rd step: mpirun ends the job
// Every rank checks what it can itself; a failed check throws, which ends the job non-zero.
#include "bnorm/dist/mpi.hpp"

#include <csignal>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"
#include "dist/dist_models.hpp"

namespace bnorm {
namespace {

using namespace bnorm::test;

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("check failed: " + what);
}

int equivalence(dist::Communicator& comm) {
  const int ranks = comm.size();
  for (int kind : {0, 1, 2, 3}) {
    for (const std::int64_t batch : {std::int64_t{8} * ranks, std::int64_t{8} * ranks + 1}) {
      const std::int64_t n = 19 * batch + std::max(1, ranks - 1);
      const Data data = make_data(kind, n, 11);
      auto reference = compiled(kind, 0.0f), model = compiled(kind, 0.0f);
      double worst = 0.0;
      for (std::int64_t b0 = 0; b0 < n; b0 += batch) {
        const Data step = slice(data, b0, std::min(n, b0 + batch));
        model->set_weights(reference->get_weights());
        FitOptions fo;
        fo.batch_size = batch;
        fo.shuffle = false;
        reference->fit(step.x, step.y, fo);
        fo.communicator = &comm;
        fo.check_replicas_every = 1;
        model->fit(step.x, step.y, fo);
        const auto got = model->get_weights(), expected = reference->get_weights();
        if (ranks == 1) check(bitwise_equal(got, expected), "one rank is one process");
        worst = std::max(worst, max_relative_difference(got, expected));
      }
      check(worst <= 1e-6, "step difference " + std::to_string(worst) + " <= 1e-6");
      // A whole run: shuffled, momentum, 2 epochs.
      FitOptions fo;
      fo.batch_size = batch;
      fo.epochs = 2;
      auto run_reference = compiled(kind, 0.9f), run_model = compiled(kind, 0.9f);
      const History expected = run_reference->fit(data.x, data.y, fo);
      fo.communicator = &comm;
      fo.check_replicas_every = 1;
      const History got = run_model->fit(data.x, data.y, fo);
      double loss_err = 0.0;
      for (std::size_t e = 0; e < 2; ++e) {
        const double want = expected.history.at("loss")[e];
        loss_err = std::max(loss_err, std::fabs(got.history.at("loss")[e] - want) / want);
        check(got.history.at("accuracy")[e] == expected.history.at("accuracy")[e], "accuracy");
      }
      const double run_err =
          max_relative_difference(run_model->get_weights(), run_reference->get_weights());
      check(loss_err <= 1e-5, "loss difference " + std::to_string(loss_err));
      check(run_err <= 2e-2, "run weight difference " + std::to_string(run_err));
      if (comm.rank() == 0) {
        std::printf(
            "%s, %d ranks, global batch %lld: worst step %.2e; 40-step run: loss %.2e, "
            "weights %.2e\n",
            model_name(kind), ranks, static_cast<long long>(batch), worst, loss_err, run_err);
      }
    }
  }
  return 0;
}

int syncbn(dist::Communicator& comm) {
  // 4099 rows of 3 channels, x = 1e6 + N(0, 1): every rank generates the whole batch (same
  // seed) and normalizes its share.
  Random rng(17);
  const Shape shape{4099, 3};
  Tensor x = random_normal(shape, rng, 0.0f, 1.0f);
  for (std::int64_t i = 0; i < x.size(); ++i) x[i] += 1e6f;
  const auto ref = naive_bn_moments(bn_view(shape, -1), to_vector(x));
  const auto share = dist::block_of(4099, comm.rank(), comm.size());
  const Tensor mine = rows(x, share.begin, share.end);
  BatchNormalization::Options o;
  o.momentum = 0.0;
  o.synchronized = true;
  BatchNormalization bn(o);
  Random init(1);
  bn.build(Shape{3}, init);
  bn.set_communicator(&comm);
  bn.forward(mine, Mode::training);
  double mean_err = 0.0, var_err = 0.0, naive_err = 0.0;
  for (std::int64_t c = 0; c < 3; ++c) {
    const auto u = static_cast<std::size_t>(c);
    mean_err =
        std::max(mean_err, std::fabs(bn.moving_mean()->value[c] - ref.mean[u]) / ref.mean[u]);
    var_err = std::max(
        var_err, std::fabs(bn.moving_variance()->value[c] - ref.variance[u]) / ref.variance[u]);
    // What Keras's synchronized path computes (per-replica float32 sums of x and x^2, then
    // E[x^2] - E[x]^2), here over the same data, for comparison.
    float s = 0.0f, q = 0.0f;
    for (std::int64_t i = 0; i < shape[0]; ++i) {
      s += x[i * 3 + c];
      q += x[i * 3 + c] * x[i * 3 + c];
    }
    const float m = s / 4099.0f;
    const float naive = std::max(q / 4099.0f - m * m, 0.0f);
    naive_err = std::max(naive_err, std::fabs(naive - ref.variance[u]) / ref.variance[u]);
  }
  check(mean_err <= 1e-7, "mean relative error " + std::to_string(mean_err));
  check(var_err <= 1e-6, "variance relative error " + std::to_string(var_err));
  if (comm.rank() == 0) {
    std::printf(
        "|mean|/std = 1e6, %d ranks: mean %.2e, variance %.2e relative to float64; "
        "E[x^2]-E[x]^2 in float32: variance %.2e\n",
        comm.size(), mean_err, var_err, naive_err);
  }
  return 0;
}

int uneven(dist::Communicator& comm) {
  for (bool synchronized : {true, false}) {
    Model model = make_model(0, 9, synchronized);
    model.compile("adam", "sparse_categorical_crossentropy");
    const Data data = make_data(0, 20 + 23 * comm.rank(), 100 + comm.rank());
    FitOptions fo;
    fo.batch_size = 8;
    fo.epochs = 2;
    fo.shard_batches = false;
    fo.check_replicas_every = 1;
    fo.communicator = &comm;
    model.fit(data.x, data.y, fo);
  }
  if (comm.rank() == 0) std::printf("uneven local data over %d ranks: done\n", comm.size());
  return 0;
}

// Fails on rank 1 at its third step, by exception or by death.
class Failure final : public Callback {
 public:
  Failure(int rank, bool kill) : rank_(rank), kill_(kill) {}
  void on_train_batch_end(Model&, std::int64_t step, const Logs&) override {
    if (rank_ != 1 || step != 2) return;
    if (kill_) std::raise(SIGKILL);
    throw ValueError("injected failure at step 3");
  }

 private:
  int rank_;
  bool kill_;
};

int failing(dist::Communicator& comm, bool kill) {
  Model model = make_model(0, 9, true);
  model.compile("adam", "sparse_categorical_crossentropy");
  const Data data = make_data(0, 400, 1);
  Failure failure(comm.rank(), kill);
  FitOptions fo;
  fo.batch_size = 8;
  fo.epochs = 100;
  fo.communicator = &comm;
  fo.callbacks.push_back(&failure);
  model.fit(data.x, data.y, fo);
  throw std::runtime_error("the job should have ended before the training did");
}

}  // namespace
}  // namespace bnorm

int main(int argc, char** argv) {
  bnorm::dist::MpiCommunicator comm(&argc, &argv);
  bnorm::set_num_threads(1);
  const std::string scenario = argc > 1 ? argv[1] : "";
  return bnorm::dist::run_or_abort(comm, [&]() -> int {
    if (scenario == "equivalence") return bnorm::equivalence(comm);
    if (scenario == "syncbn") return bnorm::syncbn(comm);
    if (scenario == "uneven") return bnorm::uneven(comm);
    if (scenario == "throw" || scenario == "kill") return bnorm::failing(comm, scenario == "kill");
    throw std::runtime_error("unknown scenario '" + scenario + "'");
  });
}
