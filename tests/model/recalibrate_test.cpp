// PreciseBN: Model::recalibrate_batch_norm replaces the moving statistics by the average of the
// batch statistics and changes nothing else.
#include <gtest/gtest.h>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/model/model.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

// Input -> BN (statistics of x itself) -> Dropout -> Dense -> BN (statistics of h) -> Dense.
Model make_model(BatchNormalization::Options first = {}) {
  Input x(Shape{6});
  SymbolicTensor h = BatchNormalization(first)(x);
  h = Dense(5)(Dropout(0.3f)(h));
  h = BatchNormalization(BatchNormalization::pytorch_defaults())(h);
  return Model(x, Dense(3, "softmax")(h), "m", 7);
}

TEST(RecalibrateBatchNorm, MovingStatisticsBecomeTheAverageOfBatchStatistics) {
  Random rng(3);
  const Tensor x = test::random_normal(Shape{50, 6}, rng, 2.0f, 3.0f);
  Model model = make_model();
  model.compile("adam", "sparse_categorical_crossentropy");
  auto& bn = dynamic_cast<BatchNormalization&>(model.layer(0));
  const auto before = model.get_weights();
  const auto streams = model.random_streams();
  const std::int64_t tracked = bn.num_batches_tracked();
  // 4 batches of 16 asked, the data has 50 samples: batches of 16, 16, 16 (and 2 unused).
  EXPECT_EQ(model.recalibrate_batch_norm(x, 16, 3), 3);
  std::vector<double> mean(6, 0.0), variance(6, 0.0);
  for (int b = 0; b < 3; ++b) {
    Tensor xb(Shape{16, 6});
    std::copy(x.data() + b * 16 * 6, x.data() + (b + 1) * 16 * 6, xb.data());
    const auto m = test::naive_bn_moments(test::bn_view(xb.shape(), -1), test::to_vector(xb));
    for (std::size_t c = 0; c < 6; ++c) {
      mean[c] += m.mean[c] / 3.0;
      variance[c] += m.variance[c] / 3.0;
    }
  }
  test::expect_close(bn.moving_mean()->value.values(), mean, 1e-6, 1e-6);
  test::expect_close(bn.moving_variance()->value.values(), variance, 1e-6, 1e-6);
  // Nothing else moved: trainable weights, the second BN's gamma/beta, random streams, counters.
  const auto after = model.get_weights();
  for (std::size_t i = 0; i < after.size(); ++i) {
    const bool moving = i == 2 || i == 3 || i == after.size() - 4 || i == after.size() - 3;
    if (!moving) {
      EXPECT_TRUE(test::bitwise_equal(after[i], before[i])) << "weight " << i;
    }
  }
  EXPECT_EQ(model.random_streams().model.state(), streams.model.state());
  EXPECT_EQ(model.random_streams().layers[0].second.state(), streams.layers[0].second.state());
  EXPECT_EQ(bn.num_batches_tracked(), tracked);
  EXPECT_FALSE(bn.options().cumulative_moving_average);
  // 0 batches: all of them (4, the last one of 2 samples).
  EXPECT_EQ(model.recalibrate_batch_norm(x, 16), 4);
}

TEST(RecalibrateBatchNorm, RefusesWhatItCannotRecalibrate) {
  Random rng(3);
  const Tensor x = test::random_normal(Shape{20, 6}, rng);
  BatchNormalization::Options renorm;
  renorm.renorm = true;
  Model model = make_model(renorm);
  test::expect_error<ValueError>([&] { model.recalibrate_batch_norm(x, 8); }, "uses renorm");
  Model plain = make_model();
  test::expect_error<ValueError>([&] { plain.recalibrate_batch_norm(x, 0); },
                                 "batch_size must be >= 1");
  test::expect_error<ValueError>([&] { plain.recalibrate_batch_norm(x, 8, -1); },
                                 "batches must be >= 0");
}

}  // namespace
}  // namespace bnorm
