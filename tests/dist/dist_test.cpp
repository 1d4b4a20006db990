// Distributed training in one process: N ranks as N threads (tests/support/thread_communicator.hpp)
// over the library's own collectives, synchronized BatchNormalization and data-parallel fit.
// tests/dist/mpi_test.cpp runs the same claims over MPI processes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"
#include "bnorm/dist/communicator.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/flatten.hpp"
#include "bnorm/layers/merge.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/model/model.hpp"
#include "dist/dist_models.hpp"
#include "support/test_support.hpp"
#include "support/thread_communicator.hpp"

namespace bnorm {
namespace {

using test::bitwise_equal;
using test::compiled;
using test::Data;
using test::make_data;
using test::make_model;
using test::max_relative_difference;
using test::model_name;
using test::rows;
using test::slice;
using test::ThreadGroup;

TEST(BlockOf, ContiguousSharesInRankOrderWithTheRemainderFirst) {
  // 10 over 4: 3, 3, 2, 2.
  const std::int64_t expected[][2] = {{0, 3}, {3, 6}, {6, 8}, {8, 10}};
  for (int r = 0; r < 4; ++r) {
    const auto b = dist::block_of(10, r, 4);
    EXPECT_EQ(b.begin, expected[r][0]);
    EXPECT_EQ(b.end, expected[r][1]);
  }
  // Fewer items than ranks: the last ranks are empty, rank 0 never is.
  EXPECT_EQ(dist::block_of(1, 0, 3).end, 1);
  EXPECT_EQ(dist::block_of(1, 2, 3).begin, dist::block_of(1, 2, 3).end);
}

TEST(Communicator, SumsInRankOrderGiveEveryRankTheSameBits) {
  for (int ranks : {2, 3, 4}) {
    // Up to 1001 floats the sum goes through rank 0 (gather, broadcast), 20000 by blocks.
    for (std::size_t n :
         {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{1001}, std::size_t{20000}}) {
      ThreadGroup group(ranks);
      std::vector<std::vector<float>> values(static_cast<std::size_t>(ranks));
      // Values whose float sum depends on the order: 1e8 and small ones.
      for (int r = 0; r < ranks; ++r)
        for (std::size_t i = 0; i < n; ++i)
          values[static_cast<std::size_t>(r)].push_back((i + static_cast<std::size_t>(r)) % 3 == 0
                                                            ? 1e8f
                                                            : 0.37f * static_cast<float>(r + 1));
      std::vector<std::vector<float>> before = values;
      group.run([&](int r) { group.comm(r).all_reduce_sum(values[static_cast<std::size_t>(r)]); });
      for (std::size_t i = 0; i < n; ++i) {
        double sum = 0.0;
        for (int r = 0; r < ranks; ++r) sum += before[static_cast<std::size_t>(r)][i];
        for (int r = 0; r < ranks; ++r) {
          const float got = values[static_cast<std::size_t>(r)][i];
          EXPECT_EQ(std::memcmp(&got, &values[0][i], sizeof got), 0) << "rank " << r;
          EXPECT_EQ(got, static_cast<float>(sum)) << "rank-ordered float64 sum, rounded once";
        }
      }
    }
  }
}

TEST(Communicator, GatherMaxAndBroadcast) {
  ThreadGroup group(3);
  std::vector<std::vector<double>> gathered(3, std::vector<double>(6));
  std::vector<std::int64_t> maxima(3);
  std::vector<std::vector<float>> data = {{1, 2}, {3, 4}, {5, 6}};
  group.run([&](int r) {
    auto& comm = group.comm(r);
    const double mine[] = {static_cast<double>(r), 10.0 * r};
    comm.all_gather(mine, gathered[static_cast<std::size_t>(r)]);
    maxima[static_cast<std::size_t>(r)] = comm.all_reduce_max(7 - r);
    comm.broadcast(data[static_cast<std::size_t>(r)], 2);
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(gathered[static_cast<std::size_t>(r)], (std::vector<double>{0, 0, 1, 10, 2, 20}));
    EXPECT_EQ(maxima[static_cast<std::size_t>(r)], 7);
    EXPECT_EQ(data[static_cast<std::size_t>(r)], (std::vector<float>{5, 6}));
  }
  EXPECT_GT(group.comm(0).seconds(), 0.0);
  EXPECT_GT(group.comm(0).bytes_sent(), 0);
}

// Synchronized BN over ranks = plain BN over the concatenated batch, against the float64
// reference, on data whose |mean| / std is 1e6 (where E[x^2] - E[x]^2 loses the variance).
TEST(SynchronizedBatchNormalization, RanksNormalizeWithTheWholeBatchsStatistics) {
  for (int ranks : {2, 3, 4}) {
    for (const int axis : {-1, 1}) {
      for (const float offset : {3.0f, 1e6f}) {
        Random rng(7);
        const Shape shape{13, 3, 5};  // 13 rows: uneven shares
        Tensor x = test::random_normal(shape, rng, 0.0f, 1.0f);
        for (std::int64_t i = 0; i < x.size(); ++i) x[i] += offset;
        Tensor dy = test::random_normal(shape, rng);
        BatchNormalization::Options o;
        o.axis = axis;
        o.momentum = 0.0;  // the moving statistics become the batch's
        o.synchronized = true;
        const auto v = test::bn_view(shape, axis);
        const auto ref = test::naive_bn_moments(v, test::to_vector(x));
        const auto ref_grad = test::naive_bn_backward(v, test::to_vector(x), test::to_vector(dy),
                                                      ref.mean, ref.variance, {}, o.epsilon, true);
        ThreadGroup group(ranks);
        std::vector<std::unique_ptr<BatchNormalization>> layers;
        std::vector<Tensor> xs, dys, outs, dxs;
        Random init(1);
        for (int r = 0; r < ranks; ++r) {
          const auto b = dist::block_of(13, r, ranks);
          xs.push_back(rows(x, b.begin, b.end));
          dys.push_back(rows(dy, b.begin, b.end));
          layers.push_back(std::make_unique<BatchNormalization>(o));
          layers.back()->build(Shape{3, 5}, init);
          layers.back()->set_communicator(&group.comm(r));
        }
        outs.resize(static_cast<std::size_t>(ranks));
        dxs.resize(static_cast<std::size_t>(ranks));
        group.run([&](int r) {
          const auto u = static_cast<std::size_t>(r);
          outs[u] = layers[u]->forward(xs[u], Mode::training);
          dxs[u] = layers[u]->backward(dys[u]);
        });
        std::vector<float> y_all, dx_all;
        for (int r = 0; r < ranks; ++r) {
          const auto u = static_cast<std::size_t>(r);
          test::expect_close(layers[u]->moving_mean()->value.values(), ref.mean, 1e-7, 0.0);
          test::expect_close(layers[u]->moving_variance()->value.values(), ref.variance, 1e-6, 0.0);
          EXPECT_EQ(layers[u]->num_batches_tracked(), 1);
          for (float f : outs[u].values()) y_all.push_back(f);
          for (float f : dxs[u].values()) dx_all.push_back(f);
        }
        // y and dx only where float32 statistics can represent the data: at |mean| / std = 1e6
        // the float32 mean itself is off by up to 0.03 std (in one process and Keras as well).
        if (offset > 10.0f) continue;
        const auto y_ref = test::naive_bn_forward(v, test::to_vector(x), ref.mean, ref.variance, {},
                                                  {}, o.epsilon);
        test::expect_close(y_all, y_ref, 1e-5, 1e-5);
        test::expect_close(dx_all, ref_grad.dx, 1e-5, 1e-5);
      }
    }
  }
}

// A rank with no rows still takes part: its forward_empty/backward_empty make the same exchanges,
// and its moving statistics are the whole batch's like every rank's.
TEST(SynchronizedBatchNormalization, AnEmptyRankTakesPartAndStaysInStep) {
  Random rng(3);
  const Shape shape{2, 4};
  Tensor x = test::random_normal(shape, rng, 5.0f, 2.0f), dy = test::random_normal(shape, rng);
  BatchNormalization::Options o;
  o.synchronized = true;
  ThreadGroup group(3);  // shares of 2 rows: 1, 1, 0
  std::vector<std::unique_ptr<BatchNormalization>> layers;
  Random init(1);
  for (int r = 0; r < 3; ++r) {
    layers.push_back(std::make_unique<BatchNormalization>(o));
    layers.back()->build(Shape{4}, init);
    layers.back()->set_communicator(&group.comm(r));
  }
  std::vector<Tensor> xs = {rows(x, 0, 1), rows(x, 1, 2)}, dys = {rows(dy, 0, 1), rows(dy, 1, 2)};
  group.run([&](int r) {
    const auto u = static_cast<std::size_t>(r);
    if (r == 2) {
      layers[u]->forward_empty(Mode::training);
      layers[u]->backward_empty();
    } else {
      layers[u]->forward(xs[u], Mode::training);
      layers[u]->backward(dys[u]);
    }
  });
  const auto ref = test::naive_bn_moments(test::bn_view(shape, -1), test::to_vector(x));
  for (int r = 0; r < 3; ++r) {
    std::vector<double> expected_mean, expected_variance;
    for (std::size_t c = 0; c < 4; ++c) {
      expected_mean.push_back(0.99 * 0.0 + 0.01 * ref.mean[c]);
      expected_variance.push_back(0.99 * 1.0 + 0.01 * ref.variance[c]);
    }
    test::expect_close(layers[static_cast<std::size_t>(r)]->moving_mean()->value.values(),
                       expected_mean, 1e-6, 1e-7);
    test::expect_close(layers[static_cast<std::size_t>(r)]->moving_variance()->value.values(),
                       expected_variance, 1e-6, 1e-7);
  }
}

// --- Data-parallel fit -----------------------------------------------------------------------

// The models of the equivalence tests: the seed model (Dense -> BN -> ReLU folded into one
// kernel -> Dense softmax), and a small residual CNN whose BNs run fused with ReLU and with
// Add + ReLU (both fusions' synchronized paths).
// One step of N ranks, each with its share of a global batch, is one step of one process on the
// whole batch: 20 consecutive steps, each started from the one-process weights (so that what is
// compared is the step, not rounding amplified by earlier steps), synchronized BN (fused with
// ReLU, and with Add + ReLU), even and uneven shares, and a last batch with fewer samples than
// ranks (an empty rank). Every rank ends every step with the same bits.
TEST(DistributedFit, EachStepOfNRanksIsOneStepOfOneProcessWithTheGlobalBatch) {
  set_num_threads(1);
  for (int kind : {0, 1, 2, 3}) {
    for (int ranks : {1, 2, 3, 4}) {
      for (const std::int64_t batch : {std::int64_t{8} * ranks, std::int64_t{8} * ranks + 1}) {
        const std::int64_t n = 19 * batch + std::max(1, ranks - 1);
        const Data data = make_data(kind, n, 11);
        auto reference = compiled(kind, 0.0f);
        std::vector<std::unique_ptr<Model>> models;
        for (int r = 0; r < ranks; ++r) models.push_back(compiled(kind, 0.0f));
        ThreadGroup group(ranks);
        double worst = 0.0;
        for (std::int64_t b0 = 0; b0 < n; b0 += batch) {
          const Data step = slice(data, b0, std::min(n, b0 + batch));
          const auto start = reference->get_weights();
          for (auto& m : models) m->set_weights(start);
          FitOptions fo;
          fo.batch_size = batch;
          fo.shuffle = false;
          reference->fit(step.x, step.y, fo);
          group.run([&](int r) {
            FitOptions mine = fo;
            mine.communicator = &group.comm(r);
            models[static_cast<std::size_t>(r)]->fit(step.x, step.y, mine);
          });
          const auto got = models[0]->get_weights();
          for (int r = 1; r < ranks; ++r) {
            ASSERT_TRUE(bitwise_equal(models[static_cast<std::size_t>(r)]->get_weights(), got))
                << "rank " << r << " of " << ranks;
          }
          const auto expected = reference->get_weights();
          if (ranks == 1) {
            ASSERT_TRUE(bitwise_equal(got, expected)) << "one rank is one process, bit for bit";
          }
          worst = std::max(worst, max_relative_difference(got, expected));
        }
        EXPECT_LE(worst, 1e-6) << model_name(kind) << ", " << ranks << " ranks, batch " << batch;
        std::printf("[ distributed ] %s, %d ranks, global batch %lld: worst step %.2e\n",
                    model_name(kind), ranks, static_cast<long long>(batch), worst);
      }
    }
  }
}

// A whole run (shuffled, SGD with momentum, 2 epochs of 20 steps): the replicas stay bit-identical
// (checked by fit's own hash at every step), the per-epoch loss and accuracy are the one-process
// run's, and the weights stay on its trajectory. They cannot stay within 1e-6: the ranks' sums
// round differently from one process's (partial GEMM sums over shares, float64 BN sums; each
// step within 3.5e-7, the test above), and a ReLU input that lands within that rounding of 0
// flips its mask: measured here, the other models' runs stay within 1.2e-6, the residual CNN's
// (4 channels, many inputs near 0) drifts up to 6.7e-3 after 40 steps while every epoch's loss
// and accuracy still agree within 1e-6. The bound below is 3x that drift; a wrong gradient scale
// or a missed all-reduce is off by O(1).
TEST(DistributedFit, RunsStayOnTheOneProcessTrajectory) {
  set_num_threads(1);
  for (int kind : {0, 1, 2, 3}) {
    for (int ranks : {2, 3}) {
      const std::int64_t batch = 8 * ranks + 1, n = 19 * batch + ranks - 1;
      const Data data = make_data(kind, n, 11);
      FitOptions fo;
      fo.batch_size = batch;
      fo.epochs = 2;
      fo.check_replicas_every = 1;
      auto reference = compiled(kind, 0.9f);
      const History expected = reference->fit(data.x, data.y, fo);
      std::vector<std::unique_ptr<Model>> models;
      for (int r = 0; r < ranks; ++r) models.push_back(compiled(kind, 0.9f));
      ThreadGroup group(ranks);
      std::vector<History> histories(static_cast<std::size_t>(ranks));
      group.run([&](int r) {
        FitOptions mine = fo;
        mine.communicator = &group.comm(r);
        histories[static_cast<std::size_t>(r)] =
            models[static_cast<std::size_t>(r)]->fit(data.x, data.y, mine);
      });
      for (const char* key : {"loss", "accuracy"}) {
        const auto& got = histories[0].history.at(key);
        const auto& want = expected.history.at(key);
        ASSERT_EQ(got.size(), want.size());
        for (std::size_t e = 0; e < got.size(); ++e)
          EXPECT_NEAR(got[e], want[e], 1e-5 * std::fabs(want[e])) << key << ", epoch " << e;
      }
      const double err =
          max_relative_difference(models[0]->get_weights(), reference->get_weights());
      EXPECT_LE(err, 2e-2);
      std::printf("[ distributed ] %s, %d ranks, global batch %lld, 40 steps: weights %.2e\n",
                  model_name(kind), ranks, static_cast<long long>(batch), err);
    }
  }
}

// Without sharding, each rank brings its own data, of different sizes: the ranks agree on the
// number of steps, the one that runs out steps with empty batches, nobody hangs, and the replicas
// stay identical; non-synchronized BN layers keep rank 0's moving statistics.
TEST(DistributedFit, UnevenLocalDataNeverHangs) {
  set_num_threads(1);
  for (bool synchronized : {true, false}) {
    ThreadGroup group(3);
    std::vector<std::unique_ptr<Model>> models;
    std::vector<Data> data;
    for (int r = 0; r < 3; ++r) {
      models.push_back(std::make_unique<Model>(make_model(0, 9, synchronized)));
      models.back()->compile("adam", "sparse_categorical_crossentropy");
      data.push_back(make_data(0, 20 + 23 * r, 100 + static_cast<std::uint64_t>(r)));
    }
    std::vector<History> histories(3);
    group.run([&](int r) {
      FitOptions fo;
      fo.batch_size = 8;
      fo.epochs = 2;
      fo.shard_batches = false;
      fo.check_replicas_every = 1;
      fo.communicator = &group.comm(r);
      const auto u = static_cast<std::size_t>(r);
      histories[u] = models[u]->fit(data[u].x, data[u].y, fo);
    });
    for (int r = 1; r < 3; ++r) {
      EXPECT_TRUE(bitwise_equal(models[static_cast<std::size_t>(r)]->get_weights(),
                                models[0]->get_weights()));
      EXPECT_EQ(histories[static_cast<std::size_t>(r)].history.at("loss"),
                histories[0].history.at("loss"));
    }
  }
}

// Ranks that call fit differently would issue different collectives: each of them throws the
// same DistError at the start instead.
TEST(DistributedFit, RanksThatDisagreeAllThrowAtTheStart) {
  set_num_threads(1);
  ThreadGroup group(2);
  std::vector<std::unique_ptr<Model>> models;
  for (int r = 0; r < 2; ++r) {
    models.push_back(std::make_unique<Model>(make_model(0, 9, true)));
    models.back()->compile("sgd", "sparse_categorical_crossentropy");
  }
  const Data data = make_data(0, 40, 1);
  std::vector<std::string> errors(2);
  group.run([&](int r) {
    FitOptions fo;
    fo.batch_size = r == 0 ? 8 : 16;
    fo.communicator = &group.comm(r);
    try {
      models[static_cast<std::size_t>(r)]->fit(data.x, data.y, fo);
    } catch (const DistError& e) {
      errors[static_cast<std::size_t>(r)] = e.what();
    }
  });
  for (const auto& e : errors) {
    EXPECT_NE(e.find("disagree on batch_size: rank 0 has 8, rank 1 has 16"), std::string::npos)
        << e;
  }
}

}  // namespace
}  // namespace bnorm
