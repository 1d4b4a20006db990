// End to end: the seed model (dense64-relu, bn, dense10-softmax; Adam 1e-3; batch 32) trained
// two epochs on the first 6,000 Fashion-MNIST training images reaches >= 0.80 test accuracy.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "bnorm/io/idx.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/model/sequential.hpp"
#include "bnorm/model/spec.hpp"

namespace bnorm {
namespace {

TEST(EndToEnd, SeedModelOnFashionMnist) {
  if (!std::filesystem::exists(io::kDefaultFashionMnistDir)) {
    GTEST_SKIP() << io::kDefaultFashionMnistDir
                 << " is absent (Debian package dataset-fashion-mnist)";
  }
  const io::Dataset data = io::load_fashion_mnist();
  ASSERT_EQ(data.train_x.shape(), (Shape{60000, 28, 28}));
  ASSERT_EQ(data.test_x.shape(), (Shape{10000, 28, 28}));
  const std::int64_t n = 6000;
  const Tensor x = data.train_x.slice_rows(0, n).reshaped(Shape{n, 784});
  const Tensor y = data.train_y.slice_rows(0, n);
  const Tensor test_x = data.test_x.reshaped(Shape{10000, 784});

  // The CLI's default seed. The result depends on the seed (see the bar below), so the test pins
  // the one users get by default rather than an arbitrary one.
  Sequential model(42);
  model.add(Input{Shape{784}});
  add_layers_from_spec(model, kSeedSpec);
  model.compile(make_optimizer("adam", 1e-3), LossKind::sparse_categorical_crossentropy);
  EXPECT_EQ(model.count_params(), 51146);

  FitOptions o;
  o.batch_size = 32;
  o.epochs = 2;
  const History h = model.fit(x, y, o);
  const auto& loss = h.history.at("loss");
  ASSERT_EQ(loss.size(), 2u);
  EXPECT_LT(loss[1], loss[0]);

  const EvaluateResult r = model.evaluate(test_x, data.test_y);
  RecordProperty("test_accuracy", std::to_string(r.accuracy));
  std::printf("seed model: train loss %.4f -> %.4f, test loss %.4f, test accuracy %.4f\n", loss[0],
              loss[1], r.loss, r.accuracy);
  // The required bar. For reference, Keras 3.15.1 (TF backend) on exactly this configuration
  // reaches 0.782, 0.816, 0.787, 0.777, 0.818 for seeds 0..4 (mean 0.796), and bnorm 0.759-0.818
  // over 14 seeds (median 0.80): 0.80 sits at Keras's median, because after only 376 steps the
  // moving averages (momentum 0.99) still lag the weights. Seed 42 gives 0.8066. (bnorm with the
  // moving statistics reset to their initial values: ~0.62, so a BN bug lands far below.)
  EXPECT_GE(r.accuracy, 0.80) << "Keras itself reaches 0.777-0.818 here depending on the seed";
  // Batch statistics do not lag: in training mode every seed tried gives 0.798-0.817.
  const EvaluateResult rt = model.evaluate(test_x, data.test_y, 32, Mode::training);
  std::printf("seed model, evaluated in training mode: test accuracy %.4f\n", rt.accuracy);
  EXPECT_GE(rt.accuracy, 0.79);
  // 6,000 samples at batch 32 = 188 steps per epoch entered the BN moving averages.
  auto& bn = dynamic_cast<BatchNormalization&>(model.layer(1));
  EXPECT_EQ(bn.num_batches_tracked(), 2 * 188);
}

}  // namespace
}  // namespace bnorm
