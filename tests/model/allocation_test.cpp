// A training step allocates nothing once the model has seen its first batch: layers keep their
// outputs and gradients, the optimizer its slots, the loss its label buffer, fit its batch
// buffers. This binary replaces the global operator new/delete to count allocations (operator
// new only: BLAS and OpenMP allocate through malloc, once, in their own pools). Allocations made
// inside a oneDNN call (ScopedLibraryCall: the execution context oneDNN builds per primitive
// call, freed before it returns) are counted apart: bnorm's own count must be 0 per step, the
// library's the same at every step (no growth).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include "bnorm/core/parallel.hpp"
#include "bnorm/core/random.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/merge.hpp"
#include "bnorm/model/callbacks.hpp"
#include "bnorm/model/presets.hpp"
#include "bnorm/model/sequential.hpp"
#include "bnorm/model/spec.hpp"
#include "core/library_call.hpp"
#include "support/replaced_operator_new.hpp"  // this binary's operator new/delete

namespace {
std::atomic<std::int64_t> g_allocations{0};
std::atomic<std::int64_t> g_library_allocations{0};
}  // namespace

namespace bnorm::testing {
bool allow_allocation(std::size_t) {
  (bnorm::ScopedLibraryCall::active() ? g_library_allocations : g_allocations)
      .fetch_add(1, std::memory_order_relaxed);
  return true;
}
}  // namespace bnorm::testing

namespace bnorm {
namespace {

std::int64_t allocations() { return g_allocations.load(std::memory_order_relaxed); }
std::int64_t library_allocations() { return g_library_allocations.load(std::memory_order_relaxed); }

// n samples of `features` values with labels in [0, 10).
struct Data {
  Tensor x, y;
};
Data make_data(std::int64_t n, std::int64_t features, std::uint64_t seed) {
  Random rng(seed);
  Data d{Tensor(Shape{n, features}), Tensor(Shape{n})};
  for (auto& v : d.x.values()) v = rng.uniform(0.0f, 1.0f);
  for (std::int64_t i = 0; i < n; ++i) d.y[i] = static_cast<float>(i % 10);
  return d;
}

// The seed model (Dense(64, relu) -> BatchNormalization -> Dense(10, softmax); Adam 1e-3).
Sequential seed_model(std::int64_t features = 784) {
  Sequential m(42);
  m.add(Input{Shape{features}});
  add_layers_from_spec(m, kSeedSpec);
  m.compile(make_optimizer("adam", 1e-3), LossKind::sparse_categorical_crossentropy);
  return m;
}

// Allocations of f() beyond the first `warm_up` calls, over `calls` further calls.
template <class F>
std::int64_t allocations_after_warm_up(int warm_up, int calls, F&& f) {
  for (int i = 0; i < warm_up; ++i) f();
  const std::int64_t before = allocations();
  for (int i = 0; i < calls; ++i) f();
  return allocations() - before;
}

TEST(Allocation, TheCounterSeesAllocations) {
  const std::int64_t before = allocations();
  auto* v = new std::vector<int>(100);
  delete v;
  EXPECT_GE(allocations() - before, 2);
}

TEST(Allocation, TrainOnBatchAllocatesNothingAfterTheFirstSteps) {
  for (int threads : {1, 2}) {
    SCOPED_TRACE(::testing::Message() << threads << " threads");
    set_num_threads(threads);
    Sequential model = seed_model();
    const Data a = make_data(32, 784, 1), b = make_data(32, 784, 2), last = make_data(16, 784, 3);
    int i = 0;
    // Full batches alternating with a smaller last batch: buffers keep the larger capacity.
    EXPECT_EQ(allocations_after_warm_up(3, 12,
                                        [&] {
                                          const Data& d = (i++ % 3 == 0) ? last : (i % 2 ? a : b);
                                          model.train_on_batch(d.x, d.y);
                                        }),
              0);
  }
  set_num_threads(1);
}

TEST(Allocation, OtherOptimizersAndLayersAllocateNothingPerStep) {
  for (const char* optimizer : {"sgd", "rmsprop"}) {
    SCOPED_TRACE(optimizer);
    Sequential model(7);
    model.add(Input{Shape{20}});
    add_layers_from_spec(model, "dense16-tanh,bn,dropout0.2,dense8-sigmoid,dense10-softmax");
    model.compile(optimizer, "sparse_categorical_crossentropy");
    const Data d = make_data(32, 20, 4);
    EXPECT_EQ(allocations_after_warm_up(2, 5, [&] { model.train_on_batch(d.x, d.y); }), 0);
  }
}

// Records the allocation counter at the end of every training step of fit.
class AllocationProbe final : public Callback {
 public:
  explicit AllocationProbe(std::vector<std::int64_t>& at_step) : at_step_(at_step) {}
  void on_epoch_begin(Model&, int) override { at_step_.clear(); }
  void on_train_batch_end(Model&, std::int64_t, const Logs&) override {
    at_step_.push_back(allocations());  // reserved capacity: the probe allocates nothing
  }
  void on_epoch_end(Model&, int epoch, const Logs&) override {
    // Steps 2.. of each epoch (step 1 follows the epoch start): each must allocate nothing.
    for (std::size_t s = 1; s < at_step_.size(); ++s) {
      EXPECT_EQ(at_step_[s] - at_step_[s - 1], 0)
          << "epoch " << epoch + 1 << ", step " << s + 1 << " allocated";
    }
    ++epochs_checked;
  }
  int epochs_checked = 0;

 private:
  std::vector<std::int64_t>& at_step_;
};

TEST(Allocation, FitStepsAllocateNothingWithShufflingAndAPartialLastBatch) {
  for (int threads : {1, 2}) {
    SCOPED_TRACE(::testing::Message() << threads << " threads");
    set_num_threads(threads);
    Sequential model = seed_model();
    const Data d = make_data(32 * 6 + 16, 784, 5);
    std::vector<std::int64_t> at_step;
    at_step.reserve(64);
    AllocationProbe probe(at_step);
    FitOptions o;
    o.epochs = 3;
    o.callbacks = {&probe};
    model.fit(d.x, d.y, o);
    EXPECT_EQ(probe.epochs_checked, 3);
  }
  set_num_threads(1);
}

// parallel_for references its body (no std::function): calling it allocates nothing.
TEST(Allocation, ParallelForAllocatesNothing) {
  double a = 0, b = 1, c = 2, d = 3;
  const auto body = [&a, &b, &c, &d](std::int64_t, std::int64_t) { a += b + c + d; };
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    parallel_for(4, 1, body);  // warm-up: the OpenMP team is created once
    const std::int64_t before = allocations();
    parallel_for(4, 1, body);
    EXPECT_EQ(allocations() - before, 0) << threads << " threads";
  }
  set_num_threads(1);
}

// Batches large enough for BatchNormalization's kernels to run on threads (batch_norm.cpp:
// >= 2^16 values), so parallel_for runs inside the step.
TEST(Allocation, ThreadedBatchNormStepsAllocateNothing) {
  for (int threads : {1, 2}) {
    SCOPED_TRACE(::testing::Message() << threads << " threads");
    set_num_threads(threads);
    Sequential model(3);
    model.add(Input{Shape{64}});
    add_layers_from_spec(model, "dense512-relu,bn,dense10-softmax");
    model.compile("adam", "sparse_categorical_crossentropy");
    const Data d = make_data(512, 64, 9);
    constexpr int kSteps = 3;
    EXPECT_EQ(allocations_after_warm_up(2, kSteps, [&] { model.train_on_batch(d.x, d.y); }), 0);
  }
  set_num_threads(1);
}

// A functional graph: residual blocks (fused BN + Add + ReLU, projection shortcuts), a shared
// layer called twice (replica sync and gradient sums) and a tensor used by three layers
// (gradient accumulators).
TEST(Allocation, FunctionalStepsAllocateNothing) {
  ResNetOptions r;
  r.input_shape = Shape{8, 8, 1};
  r.filters = {4, 8};
  Model resnet_model = resnet(r, 5);
  resnet_model.compile("adam", "sparse_categorical_crossentropy");
  Data images = make_data(16, 64, 10);
  images.x = images.x.reshaped(Shape{16, 8, 8, 1});
  EXPECT_EQ(
      allocations_after_warm_up(2, 3, [&] { resnet_model.train_on_batch(images.x, images.y); }), 0);
  // oneDNN's per-call execution contexts (when its convolutions run): the same count every step.
  std::vector<std::int64_t> per_step;
  for (int step = 0; step < 3; ++step) {
    const std::int64_t before = library_allocations();
    resnet_model.train_on_batch(images.x, images.y);
    per_step.push_back(library_allocations() - before);
  }
  EXPECT_EQ(per_step[0], per_step[1]);
  EXPECT_EQ(per_step[1], per_step[2]);

  Input x(Shape{12});
  auto shared = std::make_shared<Dense>(12, "tanh");
  SymbolicTensor h = Dense(12)(x);
  SymbolicTensor y = Add()({(*shared)(h), (*shared)(Dense(12)(h)), h});
  Model m(x, Dense(10, "softmax")(y), "shared", 3);
  m.compile("sgd", "sparse_categorical_crossentropy");
  const Data d = make_data(32, 12, 11);
  EXPECT_EQ(allocations_after_warm_up(2, 3, [&] { m.train_on_batch(d.x, d.y); }), 0);
}

}  // namespace
}  // namespace bnorm
