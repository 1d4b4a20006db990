// Functional models: graph construction and its errors, one engine for Sequential and
// functional graphs, shared layers and nested models (gradients by central differences), the
// fused BN + Add + ReLU tail (bit-identical to the three layers at any thread count), several
// inputs and outputs, and the Functional summary.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/flatten.hpp"
#include "bnorm/layers/merge.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/model/model.hpp"
#include "bnorm/model/sequential.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

struct Data {
  Tensor x, y;
};

Data blobs(std::int64_t n, std::int64_t features, std::int64_t classes, std::uint64_t seed) {
  Random rng(seed);
  Data d{Tensor(Shape{n, features}), Tensor(Shape{n})};
  for (std::int64_t i = 0; i < n; ++i) {
    const auto c = i % classes;
    d.y[i] = static_cast<float>(c);
    for (std::int64_t f = 0; f < features; ++f)
      d.x[i * features + f] = (f % classes == c ? 1.5f : 0.0f) + rng.normal() * 0.5f;
  }
  return d;
}

Data images(std::int64_t n, std::int64_t side, std::int64_t channels, std::uint64_t seed) {
  Random rng(seed);
  Data d{Tensor(Shape{n, side, side, channels}), Tensor(Shape{n})};
  test::fill_normal(d.x, rng);
  for (std::int64_t i = 0; i < n; ++i) {
    d.y[i] = static_cast<float>(i % 3);
    d.x[i * side * side * channels] += 2.0f * static_cast<float>(i % 3);  // learnable signal
  }
  return d;
}

template <class F>
void expect_throws_with(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line: " << e.what();
  }
}

bool same_weights(const Model& a, const Model& b) {
  const auto wa = a.get_weights(), wb = b.get_weights();
  if (wa.size() != wb.size()) return false;
  for (std::size_t i = 0; i < wa.size(); ++i)
    if (!test::bitwise_equal(wa[i], wb[i])) return false;
  return true;
}

// A small residual network on (8, 8, 2) images: conv -> BN -> ReLU, then a block whose tail is
// relu(bn(conv(h)) + h); `split_tail` puts a linear Activation between the Add and the ReLU,
// which changes no value but prevents the fused tail.
Model residual_net(std::uint64_t seed, bool split_tail, const std::string& optimizer = "sgd") {
  Input x(Shape{8, 8, 2});
  SymbolicTensor h = Conv2D(4, 3, "same")(x);
  h = BatchNormalization()(h);
  h = Activation("relu")(h);
  SymbolicTensor b = Conv2D(4, 3, "same")(h);
  b = BatchNormalization()(b);
  SymbolicTensor s = Add()({b, h});
  if (split_tail) s = Activation("linear")(s);
  s = Activation("relu")(s);
  s = GlobalAveragePooling2D()(s);
  SymbolicTensor out = Dense(3, "softmax")(s);
  Model m(x, out, "resnet", seed);
  m.compile(make_optimizer(optimizer, 0.05), LossKind::sparse_categorical_crossentropy);
  return m;
}

// dL/dw of a model with a mean-squared-error loss by central differences, for the first
// `count` entries of weight `index`; compared with the gradient one SGD step (lr 1) applies.
void check_gradient(Model& m, const Tensor& x, const Tensor& y, std::size_t index,
                    std::int64_t count) {
  const std::vector<Tensor> w0 = m.get_weights();
  m.compile(make_optimizer("sgd", 1.0), LossKind::mean_squared_error, {});
  const std::int64_t n = x.shape()[0];
  auto loss = [&](const std::vector<Tensor>& w) {
    m.set_weights(w);
    return m.evaluate(x, y, n, Mode::inference).loss;
  };
  m.set_weights(w0);
  m.set_inference_folding(false);
  m.train_on_batch(x, y);
  const std::vector<Tensor> w1 = m.get_weights();
  for (std::int64_t i = 0; i < std::min(count, w0[index].size()); ++i) {
    const double analytic = static_cast<double>(w0[index][i]) - w1[index][i];
    const float h = 1e-2f;
    std::vector<Tensor> plus = w0, minus = w0;
    plus[index][i] += h;
    minus[index][i] -= h;
    const double numeric = (loss(plus) - loss(minus)) / (2.0 * h);
    EXPECT_NEAR(analytic, numeric, 2e-3 + 2e-2 * std::abs(numeric))
        << "weight " << index << "[" << i << "]";
  }
  m.set_weights(w0);
}

TEST(Functional, BuildsAGraphWithAResidualConnection) {
  Model m = residual_net(1, false);
  EXPECT_EQ(m.class_name(), "Functional");
  EXPECT_EQ(m.size(), 9u);  // conv, bn, relu, conv, bn, add, relu, gap, dense
  EXPECT_EQ(m.output_shape(), (Shape{3}));
  EXPECT_EQ(m.layer(0).name(), "conv2d");
  EXPECT_EQ(m.layer(3).name(), "conv2d_1");
  EXPECT_EQ(m.layer("batch_normalization_1").class_name(), "BatchNormalization");
  // conv 2*9*4+4, bn 16, conv 4*9*4+4, bn 16, dense 4*3+3.
  EXPECT_EQ(m.count_params(), 76 + 16 + 148 + 16 + 15);
  EXPECT_EQ(m.count_trainable_params(), 76 + 8 + 148 + 8 + 15);
}

TEST(Functional, SummaryHasTheConnectedToColumn) {
  Model m = residual_net(1, false);
  const std::string s = m.summary();
  EXPECT_NE(s.find("Model: \"resnet\""), std::string::npos) << s;
  EXPECT_NE(s.find("Connected to"), std::string::npos) << s;
  EXPECT_NE(s.find("input_layer (InputLayer)"), std::string::npos) << s;
  EXPECT_NE(s.find("(None, 8, 8, 2)"), std::string::npos) << s;
  EXPECT_NE(s.find("batch_normalization_1[0][0]"), std::string::npos) << s;
  EXPECT_NE(s.find("activation[0][0]"), std::string::npos) << s;
  EXPECT_NE(s.find("Total params: 271"), std::string::npos) << s;
}

TEST(Functional, GraphErrorsNameTheLayers) {
  expect_throws_with(
      [] {
        Input x(Shape{4});
        SymbolicTensor a = Dense(8)(x);
        SymbolicTensor b = Dense(16)(x);
        Add()({a, b});
      },
      "Add 'add': inputs must have the same shape");
  expect_throws_with(
      [] {
        Input x(Shape{4});
        SymbolicTensor a = Dense(8)(x);
        SymbolicTensor b = Dense(16)(x);
        Add()({a, b});
      },
      "dense (None, 8)");
  expect_throws_with(
      [] {
        Input x(Shape{4}, "features"), other(Shape{4}, "other");
        SymbolicTensor y = Add()({Dense(4)(x), Dense(4)(other)});
        Model m(x, y);
      },
      "depends on input 'other', which is not among the model's inputs");
  expect_throws_with(
      [] {
        Input x(Shape{4}), unused(Shape{2}, "unused");
        Model m({x, unused}, {Dense(4)(x)});
      },
      "input 'unused' is not connected to any output");
  expect_throws_with(
      [] {
        Input x(Shape{4});
        Conv2D(2, 3)(x);
      },
      "Conv2D");
  expect_throws_with(
      [] {
        Input x(Shape{4});
        Dense named(3);
        named(x);
      },
      "std::shared_ptr");
  expect_throws_with(
      [] {
        Input x(Shape{4});
        Model m(x, Dense(3)(Dense(3)(x)));
        Dense d(2);
        d.set_name("twice");
        Dense e(2);
        e.set_name("twice");
        Model n(x, Add()({std::move(d)(x), std::move(e)(x)}));
      },
      "two layers are named 'twice'");
}

TEST(Functional, ASequentialIsAChainOnTheSameEngine) {
  // The same layers as a Sequential and as a functional chain: same weights, same training.
  const Data d = blobs(96, 6, 3, 3);
  Sequential s(5);
  s.add(Input{Shape{6}});
  s.add(Dense(8, "relu"));
  s.add(BatchNormalization());
  s.add(Dense(3, "softmax"));
  s.compile(make_optimizer("adam", 0.01), LossKind::sparse_categorical_crossentropy);
  Input x(Shape{6});
  Model f(x, Dense(3, "softmax")(BatchNormalization()(Dense(8, "relu")(x))), "f", 5);
  f.compile(make_optimizer("adam", 0.01), LossKind::sparse_categorical_crossentropy);
  ASSERT_TRUE(same_weights(s, f));
  FitOptions o;
  o.batch_size = 16;
  o.epochs = 2;
  const History hs = s.fit(d.x, d.y, o), hf = f.fit(d.x, d.y, o);
  EXPECT_EQ(hs.history.at("loss"), hf.history.at("loss"));
  EXPECT_TRUE(same_weights(s, f));
  EXPECT_TRUE(test::bitwise_equal(s.predict(d.x), f.predict(d.x)));
  EXPECT_EQ(s.class_name(), "Sequential");
}

TEST(Functional, SharedLayerSumsTheGradientsOfItsCalls) {
  Random rng(2);
  Input a(Shape{3}), b(Shape{3});
  auto shared = std::make_shared<Dense>(4, "tanh");
  SymbolicTensor ya = (*shared)(a), yb = (*shared)(b);
  Model m({a, b}, {Dense(2)(Multiply()({ya, yb}))}, "siamese", 7);
  EXPECT_EQ(m.size(), 3u);  // the shared Dense once, Multiply, Dense
  EXPECT_EQ(m.count_params(), 16 + 10);
  const Tensor xa = test::random_uniform(Shape{5, 3}, rng),
               xb = test::random_uniform(Shape{5, 3}, rng);
  const Tensor y = test::random_uniform(Shape{5, 2}, rng);
  // Gradient of the shared kernel by central differences (the two-input loss).
  const std::vector<Tensor> w0 = m.get_weights();
  m.compile(make_optimizer("sgd", 1.0), LossKind::mean_squared_error, {});
  m.train_on_batch({&xa, &xb}, {&y});
  const std::vector<Tensor> w1 = m.get_weights();
  auto loss = [&](const std::vector<Tensor>& w) {
    m.set_weights(w);
    return m.evaluate({&xa, &xb}, {&y}, 5).loss;
  };
  for (std::size_t index : {std::size_t{0}, std::size_t{1}}) {
    for (std::int64_t i = 0; i < w0[index].size(); ++i) {
      std::vector<Tensor> plus = w0, minus = w0;
      plus[index][i] += 1e-2f;
      minus[index][i] -= 1e-2f;
      const double numeric = (loss(plus) - loss(minus)) / 2e-2;
      const double analytic = static_cast<double>(w0[index][i]) - w1[index][i];
      EXPECT_NEAR(analytic, numeric, 2e-3 + 2e-2 * std::abs(numeric)) << index << "[" << i << "]";
    }
  }
}

TEST(Functional, BranchesAccumulateTheirGradients) {
  // x feeds two branches and a skip connection: dL/dx-dependent weights see all three paths.
  Random rng(4);
  Input x(Shape{5});
  SymbolicTensor h = Dense(6, "tanh")(x);
  SymbolicTensor p = Dense(6, "sigmoid")(h);
  SymbolicTensor q = Dense(6)(h);
  SymbolicTensor out = Dense(2)(Concatenate()({Add()({p, q, h}), Subtract()({q, p})}));
  Model m(x, out, "branches", 3);
  const Tensor xs = test::random_uniform(Shape{7, 5}, rng),
               ys = test::random_uniform(Shape{7, 2}, rng);
  check_gradient(m, xs, ys, 0, 30);  // the first Dense: all paths
  check_gradient(m, xs, ys, 2, 12);
}

TEST(Functional, NestedModelIsALayerThatSharesItsWeights) {
  Random rng(5);
  Input ix(Shape{4});
  Model inner(ix, Dense(4, "tanh")(Dense(6, "relu")(ix)), "block", 9);
  Input x(Shape{4});
  SymbolicTensor h = inner(x);
  h = inner(Add()({h, x}));  // called twice: shared weights
  Model outer(x, Dense(2)(h), "outer", 10);
  EXPECT_EQ(outer.size(), 4u);  // inner's two Dense, Add, Dense
  EXPECT_EQ(&outer.layer(0), &inner.layer(0));
  const std::string s = outer.summary();
  EXPECT_NE(s.find("block (Functional)"), std::string::npos) << s;
  EXPECT_NE(s.find("block[0][0]"), std::string::npos) << s;
  const Tensor xs = test::random_uniform(Shape{6, 4}, rng),
               ys = test::random_uniform(Shape{6, 2}, rng);
  check_gradient(outer, xs, ys, 0, 24);
  check_gradient(outer, xs, ys, 2, 24);
  // Training the outer model trains the inner model's layers.
  const std::vector<Tensor> before = inner.get_weights();
  outer.compile(make_optimizer("sgd", 0.1), LossKind::mean_squared_error, {});
  outer.train_on_batch(xs, ys);
  EXPECT_FALSE(test::bitwise_equal(before[0], inner.get_weights()[0]));
}

TEST(Functional, FusedBatchNormAddReluTrainsBitForBitLikeTheThreeLayers) {
  const Data d = images(48, 8, 2, 11);
  for (const char* optimizer : {"sgd", "adam"}) {
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE(std::string(optimizer) + ", threads " + std::to_string(threads));
      set_num_threads(threads);
      Model fused = residual_net(3, false, optimizer), plain = residual_net(3, true, optimizer);
      auto& bn = dynamic_cast<BatchNormalization&>(fused.layer("batch_normalization_1"));
      EXPECT_TRUE(bn.fused_add_relu());
      EXPECT_FALSE(
          dynamic_cast<BatchNormalization&>(plain.layer("batch_normalization_1")).fused_add_relu());
      EXPECT_TRUE(
          dynamic_cast<BatchNormalization&>(fused.layer("batch_normalization")).fused_relu());
      ASSERT_TRUE(same_weights(fused, plain));
      FitOptions o;
      o.batch_size = 16;
      o.epochs = 2;
      const History hf = fused.fit(d.x, d.y, o), hp = plain.fit(d.x, d.y, o);
      EXPECT_EQ(hf.history.at("loss"), hp.history.at("loss"));
      EXPECT_TRUE(same_weights(fused, plain));
      fused.set_inference_folding(false);
      plain.set_inference_folding(false);
      EXPECT_TRUE(test::bitwise_equal(fused.predict(d.x), plain.predict(d.x)));
      EXPECT_EQ(fused.evaluate(d.x, d.y, 16, Mode::training).loss,
                plain.evaluate(d.x, d.y, 16, Mode::training).loss);
    }
  }
  set_num_threads(1);
}

TEST(Functional, AResidualNetTrainsToTheSameBitsAtOneAndTwoThreads) {
  const Data d = images(64, 8, 2, 12);
  std::vector<std::vector<Tensor>> weights;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Model m = residual_net(4, false, "adam");
    FitOptions o;
    o.batch_size = 16;
    o.epochs = 3;
    const History h = m.fit(d.x, d.y, o);
    EXPECT_LT(h.history.at("loss").back(), h.history.at("loss").front());
    weights.push_back(m.get_weights());
  }
  set_num_threads(1);
  for (std::size_t i = 0; i < weights[0].size(); ++i)
    EXPECT_TRUE(test::bitwise_equal(weights[0][i], weights[1][i])) << "weight " << i;
}

TEST(Functional, FoldingRewritesTheGraphAndKeepsBranchingProducers) {
  const Data d = images(32, 8, 2, 13);
  Model m = residual_net(6, false, "adam");
  FitOptions o;
  o.batch_size = 16;
  m.fit(d.x, d.y, o);
  EXPECT_EQ(m.foldable_pairs(), 2u);
  std::unique_ptr<Model> f = m.folded_model();
  EXPECT_EQ(f->class_name(), "Functional");
  EXPECT_EQ(f->size(), m.size() - 2 - 1);  // two BNs gone, the first ReLU merged into its conv
  m.set_inference_folding(false);
  test::expect_close(f->predict(d.x), m.predict(d.x), 1e-5, 1e-6);
  // A conv whose output also feeds another layer is not folded.
  Input x(Shape{6, 6, 2});
  SymbolicTensor c = Conv2D(2, 3, "same")(x);
  Model g(x, Add()({BatchNormalization()(c), c}), "branchy", 1);
  EXPECT_EQ(g.foldable_pairs(), 0u);
}

TEST(Functional, ModelsThatShareLayersKeepTheirOwnFusion) {
  // A classifier whose BN -> ReLU fuses, and a feature extractor that ends at the BN (so the
  // BN there must not apply the ReLU): building and running one must not change the other.
  const Data d = blobs(40, 5, 3, 30);
  Input x(Shape{5});
  SymbolicTensor features = BatchNormalization()(Dense(6)(x));
  Model classifier(x, Dense(3, "softmax")(Activation("relu")(features)), "classifier", 2);
  classifier.compile(make_optimizer("sgd", 0.1), LossKind::sparse_categorical_crossentropy);
  classifier.set_inference_folding(false);
  const Tensor before = classifier.predict(d.x);
  Model extractor(x, features, "extractor", 2);
  extractor.set_inference_folding(false);
  const Tensor f = extractor.predict(d.x);
  float smallest = 0.0f;
  for (float v : f.values()) smallest = std::min(smallest, v);
  EXPECT_LT(smallest, 0.0f) << "the extractor's BN output is not ReLU'd";
  EXPECT_TRUE(test::bitwise_equal(classifier.predict(d.x), before));
  classifier.train_on_batch(d.x, d.y);  // and training the classifier still fuses correctly
  EXPECT_TRUE(dynamic_cast<BatchNormalization&>(classifier.layer(1)).fused_relu());
}

TEST(Functional, SeveralInputsAndOutputs) {
  const Data a = blobs(60, 4, 3, 20), b = blobs(60, 3, 3, 21);
  Input xa(Shape{4}, "a"), xb(Shape{3}, "b");
  SymbolicTensor h = Concatenate()({Dense(8, "relu")(xa), Dense(8, "relu")(xb)});
  SymbolicTensor y1 = Dense(3, "softmax")(h), y2 = Dense(3, "softmax")(Dense(4)(h));
  Model m({xa, xb}, {y1, y2}, "two", 2);
  m.compile(make_optimizer("adam", 0.02), LossKind::sparse_categorical_crossentropy);
  FitOptions o;
  o.batch_size = 12;
  o.epochs = 5;
  o.validation_split = 0.2;
  const History h1 = m.fit({&a.x, &b.x}, {&a.y, &a.y}, o);
  EXPECT_LT(h1.history.at("loss").back(), h1.history.at("loss").front());
  EXPECT_EQ(h1.history.at("val_loss").size(), 5u);
  const std::vector<Tensor> p = m.predict_all({&a.x, &b.x});
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].shape(), (Shape{60, 3}));
  EXPECT_EQ(p[1].shape(), (Shape{60, 3}));
  expect_throws_with([&] { m.fit({&a.x}, {&a.y, &a.y}, o); }, "takes 2 inputs");
  expect_throws_with([&] { m.fit({&a.x, &a.x}, {&a.y, &a.y}, o); }, "input 'b'");
}

}  // namespace
}  // namespace bnorm
