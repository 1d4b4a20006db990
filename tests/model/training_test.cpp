// fit / train_on_batch / evaluate / predict: determinism, learning, modes, validation, History,
// non-finite detection.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/model/sequential.hpp"
#include "bnorm/model/spec.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

// Three Gaussian blobs in 8 dimensions, linearly separable with margin.
struct Blobs {
  Tensor x, y;
};

Blobs make_blobs(std::int64_t n, std::uint64_t seed, float spread = 0.5f) {
  Random rng(seed);
  Blobs b{Tensor(Shape{n, 8}), Tensor(Shape{n})};
  for (std::int64_t i = 0; i < n; ++i) {
    const int label = static_cast<int>(rng.below(3));
    b.y[i] = static_cast<float>(label);
    for (int f = 0; f < 8; ++f) {
      const float center = (f % 3 == label) ? 2.0f : 0.0f;
      b.x[i * 8 + f] = center + 5.0f + spread * rng.normal();  // offset: BN has work to do
    }
  }
  return b;
}

Sequential blob_model(std::uint64_t seed, const std::string& optimizer = "adam", double lr = 0.01,
                      const std::string& spec = "dense16-relu,bn,dense3-softmax") {
  Sequential m(seed);
  m.add(Input{Shape{8}});
  add_layers_from_spec(m, spec);
  m.compile(make_optimizer(optimizer, lr), LossKind::sparse_categorical_crossentropy);
  return m;
}

FitOptions fit_options(std::int64_t batch_size, int epochs, bool shuffle = true) {
  FitOptions o;
  o.batch_size = batch_size;
  o.epochs = epochs;
  o.shuffle = shuffle;
  return o;
}

FitOptions split_options(double validation_split) {
  FitOptions o;
  o.validation_split = validation_split;
  return o;
}

bool same_weights(const Sequential& a, const Sequential& b) {
  const auto wa = a.get_weights(), wb = b.get_weights();
  if (wa.size() != wb.size()) return false;
  for (std::size_t i = 0; i < wa.size(); ++i)
    if (!test::bitwise_equal(wa[i], wb[i])) return false;
  return true;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

TEST(Fit, SameSeedGivesIdenticalWeightsBitForBit) {
  const Blobs data = make_blobs(200, 1);
  FitOptions o;
  o.batch_size = 16;
  o.epochs = 2;
  Sequential a = blob_model(42, "adam", 0.01, "dense16-relu,bn,dropout0.2,dense3-softmax");
  Sequential b = blob_model(42, "adam", 0.01, "dense16-relu,bn,dropout0.2,dense3-softmax");
  const History ha = a.fit(data.x, data.y, o);
  const History hb = b.fit(data.x, data.y, o);
  EXPECT_TRUE(same_weights(a, b));
  EXPECT_EQ(ha.history.at("loss"), hb.history.at("loss"));
  EXPECT_EQ(ha.history.at("accuracy"), hb.history.at("accuracy"));

  Sequential c = blob_model(43, "adam", 0.01, "dense16-relu,bn,dropout0.2,dense3-softmax");
  c.fit(data.x, data.y, o);
  EXPECT_FALSE(same_weights(a, c));
}

// Issue 16 item 3: a batch size larger than the data set is one batch of everything (Keras),
// even at INT64_MAX, where counting the steps as (n + batch - 1) / batch overflowed.
TEST(Fit, HugeBatchSizeIsOneBatchOfEverything) {
  const Blobs data = make_blobs(50, 3);
  for (const std::int64_t batch : {std::int64_t{51}, std::numeric_limits<std::int64_t>::max()}) {
    Sequential huge = blob_model(5);
    Sequential exact = blob_model(5);
    huge.fit(data.x, data.y, fit_options(batch, 2));
    exact.fit(data.x, data.y, fit_options(50, 2));
    EXPECT_EQ(huge.optimizer().iterations(), 2) << batch;
    EXPECT_TRUE(same_weights(huge, exact)) << batch;
    EXPECT_NO_THROW(huge.evaluate(data.x, data.y, batch));
    EXPECT_EQ(huge.predict(data.x, batch).shape()[0], 50);
  }
}

TEST(Fit, SameBitsAtOneAndTwoThreads) {
  // The seed model's shapes (784 -> 64 -> 10, batch 32): large enough that a multi-threaded BLAS
  // would split the work and change the summation order.
  Random rng(5);
  Tensor x(Shape{256, 784}), y(Shape{256});
  for (auto& v : x.values()) v = rng.uniform();
  for (auto& v : y.values()) v = static_cast<float>(rng.below(10));
  std::vector<std::vector<Tensor>> weights;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Sequential m(42);
    m.add(Input{Shape{784}});
    add_layers_from_spec(m, kSeedSpec);
    m.compile("adam", "sparse_categorical_crossentropy");
    FitOptions o;
    o.epochs = 2;
    m.fit(x, y, o);
    weights.push_back(m.get_weights());
  }
  set_num_threads(1);
  ASSERT_EQ(weights[0].size(), weights[1].size());
  for (std::size_t i = 0; i < weights[0].size(); ++i)
    EXPECT_TRUE(test::bitwise_equal(weights[0][i], weights[1][i])) << "weight " << i;
}

// A small version of the cnn preset (conv, fused BN+ReLU, max and average pooling, dropout):
// same bits at 1 and 2 threads, and it learns.
TEST(Fit, ConvolutionalModelSameBitsAtAnyThreadCountAndLearns) {
  Random rng(6);
  Tensor x(Shape{96, 12, 12, 1}), y(Shape{96});
  for (std::int64_t n = 0; n < 96; ++n) {
    const int label = static_cast<int>(rng.below(4));
    y[n] = static_cast<float>(label);
    // Class = which quadrant is bright, plus noise.
    for (std::int64_t h = 0; h < 12; ++h)
      for (std::int64_t w = 0; w < 12; ++w) {
        const int quadrant = (h >= 6 ? 2 : 0) + (w >= 6 ? 1 : 0);
        x[(n * 12 + h) * 12 + w] = (quadrant == label ? 1.0f : 0.0f) + 0.3f * rng.normal();
      }
  }
  const char* spec =
      "conv8-3x3-same,bn,relu,maxpool2,conv8-3-same,bn,relu,avgpool2-same,flatten,dense16,bn,"
      "relu,dropout0.3,dense4-softmax";
  std::vector<std::vector<Tensor>> weights;
  std::vector<History> histories;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Sequential m(42);
    m.add(Input{Shape{12, 12, 1}});
    add_layers_from_spec(m, spec);
    m.compile("adam", "sparse_categorical_crossentropy");
    FitOptions o;
    o.epochs = 4;
    o.batch_size = 16;
    histories.push_back(m.fit(x, y, o));
    weights.push_back(m.get_weights());
  }
  set_num_threads(1);
  for (std::size_t t = 1; t < weights.size(); ++t) {
    ASSERT_EQ(weights[t].size(), weights[0].size());
    for (std::size_t i = 0; i < weights[0].size(); ++i)
      EXPECT_TRUE(test::bitwise_equal(weights[t][i], weights[0][i])) << "weight " << i;
  }
  const auto& loss = histories[0].history.at("loss");
  EXPECT_LT(loss.back(), 0.5 * loss.front());
}

// BatchNormalization followed by Activation('relu') runs as one fused layer; a Flatten between
// them (an identity on (N, 16)) prevents the fusion. Training must give the same bits.
TEST(Fit, FusedBatchNormReluTrainsBitForBitLikeTheUnfusedPair) {
  const Blobs data = make_blobs(300, 3);
  const std::string fused_spec = "dense16,bn,relu,dense3-softmax";
  const std::string plain_spec = "dense16,bn,flatten,relu,dense3-softmax";
  for (const std::string optimizer : {"adam", "sgd"}) {
    SCOPED_TRACE(optimizer);
    Sequential fused = blob_model(7, optimizer, 0.05, fused_spec);
    Sequential plain = blob_model(7, optimizer, 0.05, plain_spec);
    auto& bn = dynamic_cast<BatchNormalization&>(fused.layer(1));
    EXPECT_TRUE(bn.fused_relu());
    EXPECT_TRUE(fused.layer(2).absorbed());
    EXPECT_FALSE(dynamic_cast<BatchNormalization&>(plain.layer(1)).fused_relu());
    EXPECT_FALSE(plain.layer(3).absorbed());
    ASSERT_TRUE(same_weights(fused, plain));
    const History hf = fused.fit(data.x, data.y, fit_options(16, 3));
    const History hp = plain.fit(data.x, data.y, fit_options(16, 3));
    EXPECT_EQ(hf.history.at("loss"), hp.history.at("loss"));
    EXPECT_TRUE(same_weights(fused, plain));
    EXPECT_TRUE(test::bitwise_equal(fused.predict(data.x), plain.predict(data.x)));
    // Frozen BN (inference statistics inside fit) fuses too.
    fused.layer(1).set_trainable(false);
    plain.layer(1).set_trainable(false);
    fused.fit(data.x, data.y, fit_options(16, 1));
    plain.fit(data.x, data.y, fit_options(16, 1));
    EXPECT_TRUE(same_weights(fused, plain));
  }
}

TEST(Fit, ShuffleDependsOnTheSeedNotOnInitialWeights) {
  // Same initial weights, different seeds: the shuffled order (and so the result) differs.
  const Blobs data = make_blobs(128, 2);
  Sequential a = blob_model(1, "sgd", 0.05), b = blob_model(2, "sgd", 0.05);
  a.build();
  b.build();
  b.set_weights(a.get_weights());
  FitOptions o;
  o.batch_size = 8;
  a.fit(data.x, data.y, o);
  b.fit(data.x, data.y, o);
  EXPECT_FALSE(same_weights(a, b));
  // Without shuffling the order is fixed and the runs agree.
  Sequential c = blob_model(1, "sgd", 0.05), d = blob_model(2, "sgd", 0.05);
  c.build();
  d.build();
  d.set_weights(c.get_weights());
  o.shuffle = false;
  c.fit(data.x, data.y, o);
  d.fit(data.x, data.y, o);
  EXPECT_TRUE(same_weights(c, d));
}

TEST(Fit, LearnsASeparableProblem) {
  const Blobs train = make_blobs(300, 3), test_data = make_blobs(150, 4);
  Sequential m = blob_model(5);
  const EvaluateResult before = [&] {
    m.build();
    return m.evaluate(test_data.x, test_data.y);
  }();
  FitOptions o;
  o.batch_size = 16;
  o.epochs = 8;
  const History h = m.fit(train.x, train.y, o);
  const auto& loss = h.history.at("loss");
  ASSERT_EQ(loss.size(), 8u);
  EXPECT_LT(loss.back(), 0.5 * loss.front());
  EXPECT_GT(h.history.at("accuracy").back(), 0.95);
  const EvaluateResult after = m.evaluate(test_data.x, test_data.y);
  EXPECT_LT(after.loss, 0.5 * before.loss);
  EXPECT_GT(after.accuracy, 0.95);
  EXPECT_EQ(h.epoch_seconds.size(), 8u);
  // The BN layer has tracked the batches.
  auto& bn = dynamic_cast<BatchNormalization&>(m.layer(1));
  EXPECT_GT(bn.num_batches_tracked(), 0);
  EXPECT_EQ(m.optimizer().iterations(), 8 * ((300 + 15) / 16));
}

TEST(Fit, LastPartialBatchIsUsed) {
  // 37 samples at batch 16: steps of 16, 16 and 5 (Keras keeps the remainder).
  const Blobs data = make_blobs(37, 6);
  Sequential m = blob_model(7);
  FitOptions o;
  o.batch_size = 16;
  o.epochs = 2;
  m.fit(data.x, data.y, o);
  EXPECT_EQ(m.optimizer().iterations(), 6);
}

TEST(TrainOnBatch, ReturnsTheLossBeforeTheUpdate) {
  const Blobs data = make_blobs(32, 8);
  Sequential m = blob_model(9);
  m.build();
  // evaluate in training mode on the whole batch sees the same batch statistics as the step.
  const EvaluateResult pre = m.evaluate(data.x, data.y, 32, Mode::training);
  const auto w0 = m.get_weights();
  const double loss = m.train_on_batch(data.x, data.y);
  EXPECT_NEAR(loss, pre.loss, 1e-6 * pre.loss);
  const auto w1 = m.get_weights();
  bool changed = false;
  for (std::size_t i = 0; i < w0.size(); ++i) changed |= !test::bitwise_equal(w1[i], w0[i]);
  EXPECT_TRUE(changed);
  const EvaluateResult post = m.evaluate(data.x, data.y, 32, Mode::training);
  EXPECT_LT(post.loss, pre.loss);
  EXPECT_EQ(m.optimizer().iterations(), 1);
}

TEST(TrainOnBatch, GradientsMatchCentralDifferencesOfTheLoss) {
  // Backpropagation through Dense-tanh, BN (batch statistics) and the fused softmax/cross-entropy:
  // the gradients train_on_batch leaves in each Variable equal central differences of the batch
  // loss, which evaluate(..., Mode::training) computes without touching the model state.
  const Blobs data = make_blobs(16, 30);
  Sequential m = blob_model(31, "sgd", 1e-3, "dense6-tanh,bn,dense3-softmax");
  m.build();
  const auto w0 = m.get_weights();
  m.train_on_batch(data.x, data.y);
  std::vector<Tensor> analytic;
  std::vector<std::size_t> index;  // position of each trainable weight in get_weights()
  std::size_t pos = 0;
  for (std::size_t l = 0; l < m.size(); ++l) {
    for (Variable* v : m.layer(l).weights()) {
      if (v->trainable) {
        analytic.push_back(v->gradient);
        index.push_back(pos);
      }
      ++pos;
    }
  }
  ASSERT_EQ(analytic.size(), 6u);  // kernel, bias, gamma, beta, kernel, bias
  m.set_weights(w0);
  auto loss_with = [&](std::size_t w, std::int64_t i, float value) {
    auto weights = w0;
    weights[index[w]][i] = value;
    m.set_weights(weights);
    return m.evaluate(data.x, data.y, 16, Mode::training).loss;
  };
  for (std::size_t w = 0; w < analytic.size(); ++w) {
    const Tensor& value = w0[index[w]];
    std::vector<double> numeric(static_cast<std::size_t>(value.size()));
    for (std::int64_t i = 0; i < value.size(); ++i) {
      const float plus = value[i] + 1e-2f, minus = value[i] - 1e-2f;
      numeric[static_cast<std::size_t>(i)] =
          (loss_with(w, i, plus) - loss_with(w, i, minus)) / (double(plus) - double(minus));
    }
    SCOPED_TRACE("trainable weight " + std::to_string(w));
    test::expect_close(analytic[w].values(), numeric, 1e-2, 2e-4);
  }
}

TEST(TrainOnBatch, UpdatesMovingStatistics) {
  const Blobs data = make_blobs(32, 8);
  Sequential m = blob_model(9);
  m.build();
  auto& bn = dynamic_cast<BatchNormalization&>(m.layer(1));
  const Tensor mm = bn.moving_mean()->value;
  m.train_on_batch(data.x, data.y);
  EXPECT_FALSE(test::bitwise_equal(bn.moving_mean()->value, mm));
  EXPECT_EQ(bn.num_batches_tracked(), 1);
}

TEST(Evaluate, TrainingModeLeavesWeightsAndMovingStatisticsUntouched) {
  const Blobs data = make_blobs(64, 10);
  Sequential m = blob_model(11);
  FitOptions o;
  o.epochs = 1;
  m.fit(data.x, data.y, o);
  auto& bn = dynamic_cast<BatchNormalization&>(m.layer(1));
  const auto w = m.get_weights();
  const auto tracked = bn.num_batches_tracked();
  const auto iterations = m.optimizer().iterations();
  const EvaluateResult train_mode = m.evaluate(data.x, data.y, 16, Mode::training);
  const auto after = m.get_weights();
  ASSERT_EQ(after.size(), w.size());
  for (std::size_t i = 0; i < w.size(); ++i) EXPECT_TRUE(test::bitwise_equal(after[i], w[i])) << i;
  EXPECT_EQ(bn.num_batches_tracked(), tracked);
  EXPECT_EQ(m.optimizer().iterations(), iterations);
  // Batch statistics give a different loss than the moving statistics.
  const EvaluateResult inference = m.evaluate(data.x, data.y, 16, Mode::inference);
  EXPECT_NE(train_mode.loss, inference.loss);
  EXPECT_TRUE(std::isfinite(train_mode.loss));
  // Inference evaluation is independent of the batch size (up to summation order).
  EXPECT_NEAR(m.evaluate(data.x, data.y, 64).loss, inference.loss, 1e-5 * inference.loss);
  EXPECT_NEAR(m.evaluate(data.x, data.y, 7).accuracy, inference.accuracy, 1e-12);
}

TEST(Predict, UsesInferenceModeWithMovingStatistics) {
  const Blobs data = make_blobs(64, 12);
  Sequential m = blob_model(13);
  FitOptions o;
  o.epochs = 1;
  o.batch_size = 8;
  m.fit(data.x, data.y, o);
  const Tensor p = m.predict(data.x, 10);
  ASSERT_EQ(p.shape(), (Shape{64, 3}));
  // Layer by layer in inference mode.
  Tensor h = data.x;
  for (std::size_t i = 0; i < m.size(); ++i) h = m.layer(i).forward(h, Mode::inference);
  test::expect_close(p, h, 1e-5, 1e-6);
  // Not the training-mode (batch statistics) output.
  Tensor t = data.x;
  auto& bn = dynamic_cast<BatchNormalization&>(m.layer(1));
  const Tensor mm = bn.moving_mean()->value, mv = bn.moving_variance()->value;
  for (std::size_t i = 0; i < m.size(); ++i) t = m.layer(i).forward(t, Mode::training);
  EXPECT_FALSE(test::all_close(p, t, 1e-3, 1e-4));
  bn.moving_mean()->value = mm;
  bn.moving_variance()->value = mv;
  // Predict does not depend on the batch size and leaves the moving statistics alone.
  EXPECT_TRUE(test::all_close(m.predict(data.x, 64), p, 1e-6, 1e-7));
  EXPECT_TRUE(test::bitwise_equal(bn.moving_mean()->value, mm));
  // Rows are probability distributions.
  for (int r = 0; r < 64; ++r) EXPECT_NEAR(p[r * 3] + p[r * 3 + 1] + p[r * 3 + 2], 1.0, 1e-5);
}

TEST(Fit, ValidationSplitHoldsOutTheLastFraction) {
  // Keras: the last 25% of x/y (before shuffling) is validation data and never trained on.
  const Blobs data = make_blobs(64, 14);
  FitOptions o;
  o.batch_size = 8;
  o.epochs = 2;
  o.validation_split = 0.25;
  Sequential a = blob_model(15);
  const History h = a.fit(data.x, data.y, o);
  ASSERT_EQ(h.history.at("val_loss").size(), 2u);
  const Tensor head_x = data.x.slice_rows(0, 48), head_y = data.y.slice_rows(0, 48);
  const Tensor tail_x = data.x.slice_rows(48, 64), tail_y = data.y.slice_rows(48, 64);
  // The reported val_loss of the last epoch is the final model evaluated on the tail.
  const EvaluateResult tail = a.evaluate(tail_x, tail_y);
  EXPECT_NEAR(h.history.at("val_loss").back(), tail.loss, 1e-5 * tail.loss);
  EXPECT_NEAR(h.history.at("val_accuracy").back(), tail.accuracy, 1e-9);
  // Training on the head only with the tail as explicit validation data is the same run.
  Sequential b = blob_model(15);
  FitOptions ob = o;
  ob.validation_split = 0.0;
  ob.validation_x = &tail_x;
  ob.validation_y = &tail_y;
  const History hb = b.fit(head_x, head_y, ob);
  EXPECT_TRUE(same_weights(a, b));
  EXPECT_EQ(hb.history.at("val_loss"), h.history.at("val_loss"));
  EXPECT_EQ(hb.history.at("loss"), h.history.at("loss"));
}

TEST(Fit, ValidationSplitIndexIsKerasFloor) {
  // Keras: split_at = floor(n * (1.0 - validation_split)) in Python (double) arithmetic.
  EXPECT_EQ(validation_split_index(64, 0.25), 48);
  EXPECT_EQ(validation_split_index(100, 0.0), 100);
  EXPECT_EQ(validation_split_index(10, 0.1), 9);
  EXPECT_EQ(validation_split_index(100, 0.3), 70);
  EXPECT_EQ(validation_split_index(1000, 0.7), 300);
  // With float32 arithmetic 1 - 0.2f = 0.79999999 and 5 * that floors to 3; Keras gets 4.
  EXPECT_EQ(validation_split_index(5, 0.2), 4);
  EXPECT_EQ(validation_split_index(7, 0.5), 3);
}

TEST(Fit, HistoryHasEveryMetricPerEpoch) {
  const Blobs data = make_blobs(60, 16), val = make_blobs(20, 17);
  Sequential m = blob_model(18);
  FitOptions o;
  o.epochs = 3;
  o.batch_size = 10;
  o.validation_x = &val.x;
  o.validation_y = &val.y;
  const History h = m.fit(data.x, data.y, o);
  for (const char* key : {"loss", "accuracy", "val_loss", "val_accuracy"}) {
    ASSERT_TRUE(h.history.count(key)) << key;
    EXPECT_EQ(h.history.at(key).size(), 3u) << key;
    for (double v : h.history.at(key)) EXPECT_TRUE(std::isfinite(v)) << key;
  }
  for (double a : h.history.at("accuracy")) {
    EXPECT_GE(a, 0.0);
    EXPECT_LE(a, 1.0);
  }
  // Without validation data there are no val_ keys.
  Sequential n = blob_model(18);
  const History hn = n.fit(data.x, data.y, fit_options(10, 1));
  EXPECT_EQ(hn.history.count("val_loss"), 0u);
  EXPECT_EQ(hn.history.at("loss").size(), 1u);
  // No metrics: no accuracy key.
  Sequential q(1);
  q.add(Input{Shape{8}});
  add_layers_from_spec(q, "dense3-softmax");
  q.compile("sgd", "sparse_categorical_crossentropy", {});
  const History hq = q.fit(data.x, data.y, fit_options(10, 1));
  EXPECT_EQ(hq.history.count("accuracy"), 0u);
  EXPECT_EQ(hq.history.count("loss"), 1u);
}

TEST(Fit, InputValidation) {
  const Blobs data = make_blobs(20, 19);
  Sequential m = blob_model(20);
  EXPECT_THROW(m.fit(data.x, data.y.slice_rows(0, 19)), ShapeError);  // count mismatch
  EXPECT_THROW(m.fit(Tensor(Shape{20, 7}), data.y), ShapeError);      // feature mismatch
  EXPECT_THROW(m.fit(data.x, data.y, fit_options(0, 1)), ValueError);
  EXPECT_THROW(m.fit(data.x, data.y, split_options(1.0)), ValueError);
  EXPECT_THROW(m.fit(data.x, data.y, split_options(-0.1)), ValueError);
  Sequential uncompiled(1);
  uncompiled.add(Input{Shape{8}});
  add_layers_from_spec(uncompiled, "dense3-softmax");
  EXPECT_THROW(uncompiled.fit(data.x, data.y), Error);
  EXPECT_THROW(uncompiled.train_on_batch(data.x, data.y), Error);
}

// Issue 16 item 8: NaN/Inf in the data is refused where data enters the engine, naming the
// sample, before any step: fit (x, y and validation data), evaluate, predict, train_on_batch.
// (evaluate returned loss = nan with an accuracy; validation with a NaN sample reported
// val_loss = nan every epoch while training went on.)
TEST(Fit, NonFiniteDataIsRefusedNamingTheSample) {
  Blobs data = make_blobs(64, 21);
  Blobs bad = data;
  bad.x[40 * 8 + 3] = std::numeric_limits<float>::infinity();
  Sequential m = blob_model(22);
  const auto before = m.get_weights();
  auto expect_refused = [&](auto&& call, const std::string& needle) {
    try {
      call();
      ADD_FAILURE() << "expected NonFiniteError mentioning " << needle;
    } catch (const NonFiniteError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  FitOptions o = fit_options(8, 2, false);
  expect_refused([&] { m.fit(bad.x, bad.y, o); }, "fit: x holds inf at sample 40");
  expect_refused([&] { m.evaluate(bad.x, bad.y); }, "evaluate: x holds inf at sample 40");
  expect_refused([&] { (void)m.predict(bad.x); }, "predict: x holds inf at sample 40");
  expect_refused([&] { m.train_on_batch(bad.x, bad.y); }, "x holds inf at sample 40");
  Blobs bad_y = data;
  bad_y.y[5] = std::numeric_limits<float>::quiet_NaN();
  expect_refused([&] { m.fit(bad_y.x, bad_y.y, o); }, "fit: y holds NaN at sample 5");
  FitOptions with_validation = o;
  with_validation.validation_x = &bad.x;
  with_validation.validation_y = &bad.y;
  expect_refused([&] { m.fit(data.x, data.y, with_validation); },
                 "fit validation data: x holds inf at sample 40");
  EXPECT_EQ(m.optimizer().iterations(), 0) << "refused before any step";
  const auto after = m.get_weights();
  for (std::size_t i = 0; i < before.size(); ++i)
    EXPECT_TRUE(test::bitwise_equal(before[i], after[i]));
}

TEST(Fit, DivergingTrainingRaisesNonFiniteError) {
  // Gradient descent on a quadratic with a step far beyond 2 / curvature grows geometrically
  // until the loss overflows.
  Random rng(23);
  const Tensor x = test::random_normal(Shape{64, 8}, rng);
  const Tensor y = test::random_normal(Shape{64, 1}, rng);
  Sequential m(24);
  m.add(Input{Shape{8}});
  m.add(Dense(1));
  m.compile(make_optimizer("sgd", 50.0), LossKind::mean_squared_error);
  try {
    m.fit(x, y, fit_options(8, 50));
    FAIL() << "expected NonFiniteError";
  } catch (const NonFiniteError& e) {
    const std::string msg = lower(e.what());
    EXPECT_NE(msg.find("epoch"), std::string::npos) << e.what();
    EXPECT_NE(msg.find("step"), std::string::npos) << e.what();
  }
}

TEST(Fit, FrozenBatchNormIsNotUpdatedDuringFit) {
  // Keras: a BN with trainable=False runs in inference mode inside fit.
  const Blobs data = make_blobs(64, 25);
  Sequential m = blob_model(26);
  m.build();
  auto& bn = dynamic_cast<BatchNormalization&>(m.layer(1));
  bn.set_trainable(false);
  const Tensor mm = bn.moving_mean()->value, mv = bn.moving_variance()->value;
  const Tensor gamma = bn.gamma()->value, beta = bn.beta()->value;
  const Tensor k0 = m.layer(0).weights()[0]->value;
  m.fit(data.x, data.y, fit_options(8, 1));
  EXPECT_TRUE(test::bitwise_equal(bn.moving_mean()->value, mm));
  EXPECT_TRUE(test::bitwise_equal(bn.moving_variance()->value, mv));
  EXPECT_TRUE(test::bitwise_equal(bn.gamma()->value, gamma));
  EXPECT_TRUE(test::bitwise_equal(bn.beta()->value, beta));
  EXPECT_EQ(bn.num_batches_tracked(), 0);
  EXPECT_FALSE(test::bitwise_equal(m.layer(0).weights()[0]->value, k0));  // others still train
}

TEST(Fit, L2RegularizationShrinksWeights) {
  const Blobs data = make_blobs(64, 27);
  auto train = [&](float l2) {
    Sequential m(28);
    m.add(Input{Shape{8}});
    m.add(Dense(Dense::Options{.units = 3, .activation = "softmax", .kernel_l2 = l2}));
    m.compile(make_optimizer("sgd", 0.05), LossKind::sparse_categorical_crossentropy);
    m.fit(data.x, data.y, fit_options(8, 3, false));
    double norm = 0.0;
    for (float v : m.layer(0).weights()[0]->value.values()) norm += double(v) * v;
    return norm;
  };
  EXPECT_LT(train(0.5f), 0.9 * train(0.0f));
}

}  // namespace
}  // namespace bnorm
