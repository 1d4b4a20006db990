// Sequential structure: add/build/output_shape, Keras layer names, summary, parameter counts,
// get/set_weights.
#include "bnorm/model/sequential.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/layers/flatten.hpp"
#include "bnorm/model/spec.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

Sequential seed_model(std::uint64_t seed = 1) {
  Sequential m(seed);
  m.add(Input{Shape{784}});
  m.add(Dense(64, "relu"));
  m.add(BatchNormalization());
  m.add(Dense(10, "softmax"));
  return m;
}

TEST(Sequential, AddBuildAndOutputShape) {
  Sequential m(3);
  EXPECT_EQ(m.name(), "sequential");
  EXPECT_EQ(m.seed(), 3u);
  EXPECT_FALSE(m.input_shape().has_value());
  m.add(Input{Shape{28, 28}});
  ASSERT_TRUE(m.input_shape().has_value());
  EXPECT_EQ(*m.input_shape(), (Shape{28, 28}));
  Flatten& f = m.add(Flatten());
  Dense& d = m.add(Dense(32, "relu"));
  m.add(Dropout(0.2f));
  m.add(Dense(10, "softmax"));
  EXPECT_EQ(m.size(), 4u);
  EXPECT_EQ(&m.layer(0), &f);
  EXPECT_EQ(&m.layer(1), &d);
  EXPECT_EQ(m.output_shape(), Shape{10});
  m.build();
  EXPECT_TRUE(m.built());
  for (std::size_t i = 0; i < m.size(); ++i) EXPECT_TRUE(m.layer(i).built()) << i;
  EXPECT_EQ(m.layer(1).input_shape(), Shape{784});
  EXPECT_EQ(m.count_params(), 784 * 32 + 32 + 32 * 10 + 10);
}

TEST(Sequential, BuildWithAnExplicitShape) {
  Sequential m(1);
  m.add(Dense(4));
  m.add(Dense(2));
  EXPECT_THROW(m.build(), Error);  // no Input and no shape
  m.build(Shape{3});
  EXPECT_TRUE(m.built());
  EXPECT_EQ(m.output_shape(), Shape{2});
  EXPECT_EQ(m.count_params(), 3 * 4 + 4 + 4 * 2 + 2);
}

TEST(Sequential, IncompatibleLayersFailAtAddOrBuild) {
  // With an Input the layers may be built eagerly at add() (as Keras does); either way the
  // shape error surfaces before any data is seen.
  Sequential m(1);
  m.add(Input{Shape{2, 3}});
  BatchNormalization::Options o;
  o.axis = 4;  // out of range for (None, 2, 3)
  EXPECT_THROW(
      {
        m.add(BatchNormalization(o));
        m.build();
      },
      ShapeError);
}

TEST(Sequential, KerasStyleAutomaticNames) {
  Sequential m(1);
  m.add(Input{Shape{8}});
  m.add(Dense(8, "relu"));
  m.add(BatchNormalization());
  m.add(Dense(8, "relu"));
  m.add(BatchNormalization());
  m.add(Dropout(0.1f));
  m.add(Dense(2, "softmax"));
  const std::vector<std::string> expected{
      "dense", "batch_normalization", "dense_1", "batch_normalization_1", "dropout", "dense_2"};
  ASSERT_EQ(m.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(m.layer(i).name(), expected[i]);
  EXPECT_EQ(&m.layer("dense_1"), &m.layer(2));
  EXPECT_EQ(&m.layer("batch_normalization_1"), &m.layer(3));
  EXPECT_THROW(m.layer("dense_9"), ValueError);
}

TEST(Sequential, ExplicitNamesAreKept) {
  Sequential m(1);
  Dense d(4);
  d.set_name("encoder");
  m.add(std::move(d));
  m.add(Dense(4));
  EXPECT_EQ(m.layer(0).name(), "encoder");
  EXPECT_EQ(m.layer(1).name(), "dense");
}

TEST(Sequential, SeedModelParameterCounts) {
  Sequential m = seed_model();
  m.build();
  // Dense(64) on 784: 784 * 64 + 64 = 50,240; BN(64): 4 * 64 = 256 (128 non-trainable);
  // Dense(10): 64 * 10 + 10 = 650. Total 51,146; trainable 51,018; non-trainable 128.
  EXPECT_EQ(m.layer(0).count_params(), 50240);
  EXPECT_EQ(m.layer(1).count_params(), 256);
  EXPECT_EQ(m.layer(1).count_trainable_params(), 128);
  EXPECT_EQ(m.layer(2).count_params(), 650);
  EXPECT_EQ(m.count_params(), 51146);
  EXPECT_EQ(m.count_trainable_params(), 51018);
}

TEST(Sequential, SummaryLikeKeras) {
  Sequential m = seed_model();
  m.build();
  const std::string s = m.summary();
  for (const char* needle :
       {"Model: \"sequential\"", "Layer (type)", "Output Shape", "Param #", "dense (Dense)",
        "dense_1 (Dense)", "(None, 64)", "(None, 10)", "50,240", "256", "650",
        "Total params: 51,146 (199.79 KB)", "Trainable params: 51,018 (199.29 KB)",
        "Non-trainable params: 128 (512.00 B)"}) {
    EXPECT_NE(s.find(needle), std::string::npos) << "missing '" << needle << "' in\n" << s;
  }
  // Keras 3 (rich table, 33-character first column) wraps a long "name (Type)" onto a second
  // line rather than truncating it.
  const std::string bn_rows =
      "\u2502 batch_normalization             \u2502 (None, 64)             \u2502           256 "
      "\u2502\n"
      "\u2502 (BatchNormalization)            \u2502                        \u2502               "
      "\u2502\n";
  EXPECT_NE(s.find(bn_rows), std::string::npos) << "expected Keras's wrapped row\n"
                                                << bn_rows << "in\n"
                                                << s;
  EXPECT_NE(s.find("\u2502 dense (Dense)                   \u2502 (None, 64)             \u2502"
                   "        50,240 \u2502"),
            std::string::npos)
      << s;
  // Layers appear in order.
  EXPECT_LT(s.find("dense (Dense)"), s.find("batch_normalization"));
  EXPECT_LT(s.find("batch_normalization"), s.find("dense_1 (Dense)"));
}

TEST(Sequential, SummaryReflectsFrozenLayers) {
  Sequential m = seed_model();
  m.build();
  m.layer(1).set_trainable(false);
  EXPECT_EQ(m.count_trainable_params(), 51018 - 128);
  EXPECT_NE(m.summary().find("Non-trainable params: 256"), std::string::npos) << m.summary();
}

TEST(Sequential, SameSeedSameInitialWeights) {
  Sequential a = seed_model(7), b = seed_model(7), c = seed_model(8);
  a.build();
  b.build();
  c.build();
  const auto wa = a.get_weights(), wb = b.get_weights(), wc = c.get_weights();
  ASSERT_EQ(wa.size(),
            8u);  // kernel, bias, gamma, beta, moving_mean, moving_variance, kernel, bias
  ASSERT_EQ(wa.size(), wb.size());
  bool any_diff = false;
  for (std::size_t i = 0; i < wa.size(); ++i) {
    EXPECT_TRUE(test::bitwise_equal(wa[i], wb[i])) << "weight " << i;
    any_diff |= !test::bitwise_equal(wa[i], wc[i]);
  }
  EXPECT_TRUE(any_diff) << "a different seed should give different kernels";
}

TEST(Sequential, GetSetWeightsRoundTrip) {
  Sequential a = seed_model(1), b = seed_model(2);
  a.build();
  b.build();
  auto w = a.get_weights();
  // Make the BN statistics non-trivial so they are part of the round trip.
  Random r(3);
  test::fill_uniform(w[4], r, -1.0f, 1.0f);
  test::fill_uniform(w[5], r, 0.5f, 2.0f);
  a.set_weights(w);
  b.set_weights(a.get_weights());
  const auto wb = b.get_weights();
  for (std::size_t i = 0; i < w.size(); ++i) EXPECT_TRUE(test::bitwise_equal(wb[i], w[i])) << i;
  Random rng(5);
  const Tensor x = test::random_normal(Shape{16, 784}, rng);
  EXPECT_TRUE(test::bitwise_equal(a.predict(x), b.predict(x)));
  // get_weights copies: changing the copy leaves the model alone.
  auto copy = b.get_weights();
  copy[0].fill(0.0f);
  EXPECT_TRUE(test::bitwise_equal(b.get_weights()[0], w[0]));
}

TEST(Sequential, SetWeightsRejectsWrongCountOrShape) {
  Sequential m = seed_model();
  m.build();
  auto w = m.get_weights();
  const auto before = m.get_weights();
  auto fewer = w;
  fewer.pop_back();
  EXPECT_THROW(m.set_weights(fewer), ShapeError);
  auto more = w;
  more.push_back(Tensor(Shape{1}));
  EXPECT_THROW(m.set_weights(more), ShapeError);
  auto wrong = w;
  wrong[2] = Tensor(Shape{65});
  try {
    m.set_weights(wrong);
    ADD_FAILURE() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("gamma"), std::string::npos) << e.what();
  }
  // Nothing was changed by the failed calls (validation before assignment).
  wrong = w;
  wrong[0].fill(1.0f);
  wrong[7] = Tensor(Shape{11});
  EXPECT_THROW(m.set_weights(wrong), ShapeError);
  const auto after = m.get_weights();
  for (std::size_t i = 0; i < before.size(); ++i)
    EXPECT_TRUE(test::bitwise_equal(after[i], before[i]));
}

TEST(Sequential, MoveKeepsLayersAndWeights) {
  Sequential a = seed_model(4);
  a.build();
  const auto w = a.get_weights();
  Sequential b = std::move(a);
  EXPECT_EQ(b.size(), 3u);
  const auto wb = b.get_weights();
  ASSERT_EQ(wb.size(), w.size());
  for (std::size_t i = 0; i < w.size(); ++i) EXPECT_TRUE(test::bitwise_equal(wb[i], w[i]));
}

}  // namespace
}  // namespace bnorm
