// Batch-norm folding for inference: Sequential::folded() and the automatic use in predict and
// evaluate. Folded outputs equal unfolded ones within 1e-5 relative; what must not fold does not.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/model/sequential.hpp"
#include "bnorm/model/spec.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

constexpr double kFoldTolerance = 1e-5;

// max |a - b| / max(max |b|, 1).
double relative_difference(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double diff = 0.0, scale = 1.0;
  for (std::int64_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a.data()[i]) - b.data()[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b.data()[i])));
  }
  return diff / scale;
}

// Non-trivial weights everywhere: producer biases, gamma (either sign), beta and moving
// statistics far from their initial 0 / 1.
void randomize(Sequential& m, std::uint64_t seed) {
  Random rng(seed);
  for (std::size_t i = 0; i < m.size(); ++i) {
    for (Variable* v : m.layer(i).weights()) {
      if (v->name == "bias" || v->name == "beta") test::fill_uniform(v->value, rng, -1.0f, 1.0f);
      if (v->name == "gamma") test::fill_uniform(v->value, rng, -2.0f, 2.0f);
      if (v->name == "moving_mean") test::fill_normal(v->value, rng, 0.5f, 2.0f);
      if (v->name == "moving_variance") test::fill_uniform(v->value, rng, 0.01f, 4.0f);
    }
  }
}

Sequential model(const Shape& input, const std::string& spec, std::uint64_t seed = 3) {
  Sequential m(seed);
  m.add(Input{input});
  add_layers_from_spec(m, spec);
  m.build();
  randomize(m, seed + 100);
  return m;
}

Tensor unfolded_predict(Sequential& m, const Tensor& x) {
  const bool was = m.inference_folding();
  m.set_inference_folding(false);
  Tensor y = m.predict(x, 16);
  m.set_inference_folding(was);
  return y;
}

// Folds every pair in `spec` (`pairs` of them, `merged` of which are followed by an Activation
// that the folded layer takes over) and checks the folded copy, predict (which folds
// automatically) and the layer count against the unfolded model.
void expect_folds(const Shape& input, const std::string& spec, std::size_t pairs,
                  std::size_t merged) {
  SCOPED_TRACE(spec);
  Sequential m = model(input, spec);
  ASSERT_EQ(m.foldable_pairs(), pairs);
  Random rng(11);
  const Tensor x = test::random_normal(test::with_batch(37, input), rng, 0.3f, 2.0f);
  const Tensor expected = unfolded_predict(m, x);
  Sequential f = m.folded();
  EXPECT_EQ(f.size(), m.size() - pairs - merged);
  EXPECT_EQ(f.foldable_pairs(), 0u);
  for (std::size_t i = 0; i < f.size(); ++i)
    EXPECT_NE(f.layer(i).class_name(), "BatchNormalization");
  const Tensor folded = f.predict(x, 16);
  const Tensor automatic = m.predict(x, 16);
  const double d = relative_difference(folded, expected);
  std::printf("fold %s: max relative difference %.3g\n", spec.c_str(), d);
  EXPECT_LE(d, kFoldTolerance);
  EXPECT_GT(d, 0.0) << "float32 rounding should make folding differ a little: is it folding?";
  EXPECT_TRUE(test::bitwise_equal(automatic, folded));
}

const std::vector<std::string> kProducerOptions = {"", ":use_bias=0"};
const std::vector<std::string> kBnOptions = {"", ":center=0", ":scale=0", ":center=0:scale=0"};

TEST(Fold, DenseThenBatchNormalization) {
  for (const auto& p : kProducerOptions)
    for (const auto& b : kBnOptions)
      expect_folds(Shape{12}, "dense16" + p + ",bn" + b + ",relu,dense5", 1, 1);
  // Two pairs, an epsilon other than the default, and Dense on a rank-3 batch (last axis).
  expect_folds(Shape{12}, "dense16,bn:epsilon=0.1,dense8:use_bias=0,bn,dense5", 2, 0);
  expect_folds(Shape{4, 12}, "dense16,bn,relu,flatten,dense5", 1, 1);
}

TEST(Fold, Conv2DThenBatchNormalizationChannelsLast) {
  for (const auto& p : kProducerOptions)
    for (const auto& b : kBnOptions)
      expect_folds(Shape{7, 6, 3}, "conv8-3x3-same" + p + ",bn" + b + ",relu,flatten,dense5", 1, 1);
  expect_folds(Shape{9, 9, 2}, "conv6-3x3:strides=2,bn:axis=3,relu,gap,dense4", 1, 1);
  // The issue-5 CNN shape: pooling layers are copied, three pairs fold.
  expect_folds(Shape{12, 12, 1},
               "conv8-3x3-same,bn,relu,maxpool2,conv6-3x3-same:use_bias=0,bn,relu,avgpool2,"
               "flatten,dense16,bn,relu,dropout0.3,dense5",
               3, 3);
}

TEST(Fold, MergesTheElementwiseActivationAfterThePair) {
  // tanh is merged into the first Dense; a softmax Activation stays a layer of its own (its
  // logits feed the loss).
  expect_folds(Shape{12}, "dense16,bn,tanh,dense5,bn,softmax", 2, 1);
  // The CNN preset folds into exactly the network of cnn-nobn: same layers, same activations.
  Sequential cnn = model(Shape{28, 28, 1}, kCnnSpec);
  Sequential nobn = model(Shape{28, 28, 1}, kCnnNoBnSpec);
  Sequential f = cnn.folded();
  ASSERT_EQ(f.size(), nobn.size());
  for (std::size_t i = 0; i < f.size(); ++i) {
    EXPECT_EQ(f.layer(i).class_name(), nobn.layer(i).class_name()) << i;
    if (const auto* c = dynamic_cast<const Conv2D*>(&f.layer(i))) {
      EXPECT_EQ(c->activation(), dynamic_cast<const Conv2D&>(nobn.layer(i)).activation()) << i;
    }
    if (const auto* d = dynamic_cast<const Dense*>(&f.layer(i))) {
      EXPECT_EQ(d->activation(), dynamic_cast<const Dense&>(nobn.layer(i)).activation()) << i;
    }
  }
  EXPECT_EQ(f.count_params(), nobn.count_params());
}

TEST(Fold, Conv2DThenBatchNormalizationChannelsFirst) {
  const std::string conv = "conv8-3x3-same:data_format=channels_first";
  for (const auto& p : kProducerOptions)
    for (const auto& b : kBnOptions)
      expect_folds(Shape{3, 7, 6}, conv + p + ",bn:axis=1" + b + ",relu,flatten,dense5", 1, 1);
}

// Same outputs with and without folding, bit for bit, and no layer removed.
void expect_not_folded(Sequential& m, const Shape& input) {
  EXPECT_EQ(m.foldable_pairs(), 0u);
  EXPECT_EQ(m.folded().size(), m.size());
  Random rng(5);
  const Tensor x = test::random_normal(test::with_batch(9, input), rng);
  EXPECT_TRUE(test::bitwise_equal(m.predict(x), unfolded_predict(m, x)));
}

TEST(Fold, LeavesPairsThatAreNotAffineAlone) {
  // BN after a non-linear activation: the seed model does not fold.
  for (const char* spec : {kSeedSpec, "dense8-tanh,bn,dense3"}) {
    SCOPED_TRACE(spec);
    Sequential m = model(Shape{6}, spec);
    expect_not_folded(m, Shape{6});
  }
  {
    // BN over a spatial axis instead of the channels (channels_first conv, default axis -1).
    Sequential m =
        model(Shape{3, 5, 5}, "conv4-3x3-same:data_format=channels_first,bn,flatten,dense3");
    expect_not_folded(m, Shape{3, 5, 5});
  }
  {
    // BN over the height axis of a channels_last conv.
    Sequential m = model(Shape{5, 5, 2}, "conv4-3x3-same,bn:axis=1,flatten,dense3");
    expect_not_folded(m, Shape{5, 5, 2});
  }
  {
    // A BN that normalizes with batch statistics at inference too.
    Sequential m(1);
    m.add(Input{Shape{6}});
    m.add(Dense(8));
    BatchNormalization::Options o;
    o.track_moving_statistics = false;
    m.add(BatchNormalization(o));
    m.add(Dense(3));
    m.build();
    randomize(m, 2);
    expect_not_folded(m, Shape{6});
  }
  {
    // BN not directly after the producer.
    Sequential m = model(Shape{6}, "dense8,relu,bn,dense3");
    expect_not_folded(m, Shape{6});
  }
}

TEST(Fold, CopyDoesNotAliasTheOriginal) {
  Sequential m = model(Shape{12}, "dense16,bn,dropout0.5,dense5");
  Sequential f = m.folded();
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f.layer(0).name(), m.layer(0).name());
  EXPECT_EQ(f.layer(2).name(), m.layer(3).name());
  Random rng(3);
  const Tensor x = test::random_normal(Shape{10, 12}, rng);
  const Tensor before = f.predict(x);
  const std::vector<Tensor> original = m.get_weights();
  // Changing the original (folded and copied layers) leaves the copy as it was ...
  for (std::size_t i = 0; i < m.size(); ++i)
    for (Variable* v : m.layer(i).weights()) v->value.fill(0.25f);
  EXPECT_TRUE(test::bitwise_equal(f.predict(x), before));
  // ... and changing the copy leaves the original.
  m.set_weights(original);
  const std::vector<Tensor> copy_weights = f.get_weights();
  for (std::size_t i = 0; i < f.size(); ++i)
    for (Variable* v : f.layer(i).weights()) v->value.fill(-1.0f);
  const std::vector<Tensor> now = m.get_weights();
  ASSERT_EQ(now.size(), original.size());
  for (std::size_t i = 0; i < now.size(); ++i)
    EXPECT_TRUE(test::bitwise_equal(now[i], original[i]));
  // The copied (unfolded) last Dense holds the original's values.
  EXPECT_TRUE(test::bitwise_equal(copy_weights[2], original[6]));  // dense_1 kernel
  EXPECT_EQ(f.layer(0).weights().size(), 2u);                      // kernel and folded bias
}

TEST(Fold, PredictSeesWeightChanges) {
  Sequential m = model(Shape{12}, "dense16,bn,relu,dense5");
  Random rng(8);
  const Tensor x = test::random_normal(Shape{20, 12}, rng);
  const Tensor first = m.predict(x);
  randomize(m, 77);  // new moving statistics, gamma, beta and biases
  const Tensor second = m.predict(x);
  EXPECT_FALSE(test::bitwise_equal(first, second));
  EXPECT_LE(relative_difference(second, unfolded_predict(m, x)), kFoldTolerance);
}

TEST(Fold, FoldingNeedsABuiltModel) {
  Sequential m(1);
  add_layers_from_spec(m, "dense4,bn");
  EXPECT_THROW(m.folded(), ValueError);
}

// A layer class without do_clone: it cannot be copied.
class Negate final : public Layer {
 public:
  Negate() : Layer("negate") {}
  std::string class_name() const override { return "Negate"; }
  Shape output_shape(const Shape& s) const override { return s; }

 protected:
  void do_build(const Shape&, Random&) override {}
  void do_forward(const Tensor& x, Mode, Tensor& y) override {
    y.resize(x.shape());
    for (std::int64_t i = 0; i < x.size(); ++i) y.data()[i] = -x.data()[i];
  }
  void do_backward(const Tensor& dy, bool, Tensor& dx) override {
    dx.resize(dy.shape());
    for (std::int64_t i = 0; i < dy.size(); ++i) dx.data()[i] = -dy.data()[i];
  }
};

TEST(Fold, ALayerThatCannotBeCopiedLeavesPredictUnfolded) {
  Sequential m = model(Shape{6}, "dense8,bn");
  m.add(std::make_unique<Negate>());
  ASSERT_EQ(m.foldable_pairs(), 1u);
  EXPECT_THROW(m.folded(), ValueError);
  Random rng(2);
  const Tensor x = test::random_normal(Shape{5, 6}, rng);
  EXPECT_TRUE(test::bitwise_equal(m.predict(x), unfolded_predict(m, x)));
}

// Three Gaussian blobs in 8 dimensions, offset so that BN has work to do.
void make_blobs(std::int64_t n, Tensor& x, Tensor& y) {
  Random rng(4);
  x = Tensor(Shape{n, 8});
  y = Tensor(Shape{n});
  for (std::int64_t i = 0; i < n; ++i) {
    const int label = static_cast<int>(rng.below(3));
    y[i] = static_cast<float>(label);
    for (int f = 0; f < 8; ++f)
      x[i * 8 + f] = (f % 3 == label ? 2.0f : 0.0f) + 5.0f + 0.5f * rng.normal();
  }
}

TEST(Fold, TrainingIsUnaffectedAndInferenceFolds) {
  Tensor x, y;
  make_blobs(240, x, y);
  const std::string spec = "dense16,bn,relu,dense8:use_bias=0,bn:center=0,dense3-softmax";
  auto make = [&](bool folding) {
    Sequential m(9);
    m.add(Input{Shape{8}});
    add_layers_from_spec(m, spec);
    m.compile(make_optimizer("adam", 0.01), LossKind::sparse_categorical_crossentropy);
    m.set_inference_folding(folding);
    return m;
  };
  Sequential folding = make(true), plain = make(false);
  ASSERT_EQ(folding.foldable_pairs(), 2u);
  FitOptions o;
  o.batch_size = 16;
  o.epochs = 3;
  o.validation_split = 0.25;  // validation runs evaluate(inference) every epoch: folded
  const History hf = folding.fit(x, y, o);
  const History hp = plain.fit(x, y, o);
  EXPECT_EQ(hf.history.at("loss"), hp.history.at("loss"));
  const std::vector<Tensor> wf = folding.get_weights(), wp = plain.get_weights();
  ASSERT_EQ(wf.size(), wp.size());
  for (std::size_t i = 0; i < wf.size(); ++i) EXPECT_TRUE(test::bitwise_equal(wf[i], wp[i]));
  const auto& vf = hf.history.at("val_loss");
  const auto& vp = hp.history.at("val_loss");
  for (std::size_t e = 0; e < vf.size(); ++e) EXPECT_NEAR(vf[e], vp[e], kFoldTolerance * vp[e]);

  // Trained moving statistics: predict and evaluate fold, within the tolerance.
  const Tensor pf = folding.predict(x), pp = plain.predict(x);
  const double d = relative_difference(pf, pp);
  std::printf("fold after training: max relative difference %.3g\n", d);
  EXPECT_LE(d, kFoldTolerance);
  EXPECT_TRUE(test::bitwise_equal(pf, folding.folded().predict(x)));
  const EvaluateResult ef = folding.evaluate(x, y), ep = plain.evaluate(x, y);
  EXPECT_NEAR(ef.loss, ep.loss, kFoldTolerance * ep.loss);
  EXPECT_NEAR(ef.accuracy, ep.accuracy, 1.0 / 240 + 1e-12);
  // Training-mode evaluate never folds: identical.
  EXPECT_EQ(folding.evaluate(x, y, 32, Mode::training).loss,
            plain.evaluate(x, y, 32, Mode::training).loss);
  // The folded copy keeps the loss; it has no optimizer.
  Sequential f = folding.folded();
  EXPECT_EQ(f.loss(), folding.loss());
  EXPECT_FALSE(f.compiled());
  EXPECT_DOUBLE_EQ(f.evaluate(x, y).loss, ef.loss);
}

}  // namespace
}  // namespace bnorm
