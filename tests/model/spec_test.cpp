// Compact model specs: "dense64-relu,bn,dense10-softmax".
#include "bnorm/model/spec.hpp"

#include <gtest/gtest.h>

#include <string>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/layers/flatten.hpp"

namespace bnorm {
namespace {

template <class E = ValueError>
void expect_spec_error(const std::string& spec, const std::string& needle) {
  Sequential m(1);
  try {
    add_layers_from_spec(m, spec);
    ADD_FAILURE() << "spec '" << spec << "' was accepted";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "spec '" << spec << "': message does not name '" << needle << "': " << e.what();
  }
  EXPECT_EQ(m.size(), 0u) << "nothing is added on error: " << spec;
}

TEST(Spec, SeedModel) {
  EXPECT_STREQ(kSeedSpec, "dense64-relu,bn,dense10-softmax");
  Sequential m(1);
  m.add(Input{Shape{784}});
  add_layers_from_spec(m, kSeedSpec);
  ASSERT_EQ(m.size(), 3u);
  auto* d0 = dynamic_cast<Dense*>(&m.layer(0));
  auto* bn = dynamic_cast<BatchNormalization*>(&m.layer(1));
  auto* d1 = dynamic_cast<Dense*>(&m.layer(2));
  ASSERT_NE(d0, nullptr);
  ASSERT_NE(bn, nullptr);
  ASSERT_NE(d1, nullptr);
  EXPECT_EQ(d0->options().units, 64);
  EXPECT_EQ(d0->activation(), ActivationKind::relu);
  EXPECT_TRUE(d0->options().use_bias);
  EXPECT_EQ(d1->options().units, 10);
  EXPECT_EQ(d1->activation(), ActivationKind::softmax);
  // BN with Keras defaults.
  EXPECT_EQ(bn->options().axis, -1);
  EXPECT_EQ(bn->options().momentum, 0.99);
  EXPECT_EQ(bn->options().epsilon, 1e-3f);
  EXPECT_TRUE(bn->options().center);
  EXPECT_TRUE(bn->options().scale);
  EXPECT_EQ(m.layer(0).name(), "dense");
  EXPECT_EQ(m.layer(1).name(), "batch_normalization");
  EXPECT_EQ(m.layer(2).name(), "dense_1");
  m.build();
  EXPECT_EQ(m.count_params(), 51146);
}

TEST(Spec, SeedWithoutBatchNorm) {
  Sequential m(1);
  add_layers_from_spec(m, kSeedNoBnSpec);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m.layer(0).class_name(), "Dense");
  EXPECT_EQ(m.layer(1).class_name(), "Dense");
}

TEST(Spec, BatchNormOptions) {
  Sequential m(1);
  add_layers_from_spec(m, "dense8,bn:momentum=0.9:epsilon=1e-5,batchnorm:center=0:scale=0:axis=-1");
  ASSERT_EQ(m.size(), 3u);
  auto& a = dynamic_cast<BatchNormalization&>(m.layer(1));
  EXPECT_DOUBLE_EQ(a.options().momentum, 0.9);
  EXPECT_FLOAT_EQ(a.options().epsilon, 1e-5f);
  EXPECT_TRUE(a.options().center);
  auto& b = dynamic_cast<BatchNormalization&>(m.layer(2));
  EXPECT_FALSE(b.options().center);
  EXPECT_FALSE(b.options().scale);
  EXPECT_EQ(b.options().axis, -1);
  EXPECT_EQ(b.options().momentum, 0.99);
  auto& d = dynamic_cast<Dense&>(m.layer(0));
  EXPECT_EQ(d.activation(), ActivationKind::linear);
}

TEST(Spec, EveryLayerKind) {
  Sequential m(1);
  m.add(Input{Shape{4, 7}});
  add_layers_from_spec(
      m,
      "flatten,dense128-relu,bn:momentum=0.9,dropout0.2,dense10:use_bias=0,tanh,sigmoid,linear,"
      "relu,softmax");
  ASSERT_EQ(m.size(), 10u);
  EXPECT_NE(dynamic_cast<Flatten*>(&m.layer(0)), nullptr);
  EXPECT_EQ(dynamic_cast<Dense&>(m.layer(1)).options().units, 128);
  EXPECT_DOUBLE_EQ(dynamic_cast<BatchNormalization&>(m.layer(2)).options().momentum, 0.9);
  EXPECT_FLOAT_EQ(dynamic_cast<Dropout&>(m.layer(3)).rate(), 0.2f);
  EXPECT_FALSE(dynamic_cast<Dense&>(m.layer(4)).options().use_bias);
  EXPECT_EQ(dynamic_cast<Activation&>(m.layer(5)).activation(), ActivationKind::tanh);
  EXPECT_EQ(dynamic_cast<Activation&>(m.layer(6)).activation(), ActivationKind::sigmoid);
  EXPECT_EQ(dynamic_cast<Activation&>(m.layer(7)).activation(), ActivationKind::linear);
  EXPECT_EQ(dynamic_cast<Activation&>(m.layer(8)).activation(), ActivationKind::relu);
  EXPECT_EQ(dynamic_cast<Activation&>(m.layer(9)).activation(), ActivationKind::softmax);
  m.build();
  EXPECT_EQ(m.output_shape(), Shape{10});
}

TEST(Spec, AppendsToAnExistingModel) {
  Sequential m(1);
  m.add(Input{Shape{5}});
  add_layers_from_spec(m, "dense3");
  add_layers_from_spec(m, "bn");
  ASSERT_EQ(m.size(), 2u);
  m.build();
  EXPECT_EQ(m.output_shape(), Shape{3});
}

TEST(Spec, UnknownTokenNamesTheToken) {
  expect_spec_error("dense64-relu,conv3x3,dense10", "conv3x3");
  expect_spec_error("dense64-relu,bn,dense10-softmax,frobnicate", "frobnicate");
  expect_spec_error("dense64-swish", "swish");
  expect_spec_error("denseX", "denseX");
  expect_spec_error("dense0", "dense0");
  expect_spec_error("dense-5", "dense-5");
  expect_spec_error("", "");
  expect_spec_error("dense4,,dense2", "");
}

TEST(Spec, InvalidBatchNormOptions) {
  expect_spec_error("bn:momentum=2", "momentum");
  expect_spec_error("bn:momentum=-0.1", "momentum");
  expect_spec_error("bn:epsilon=-1", "epsilon");
  expect_spec_error("bn:epsilon=0", "epsilon");
  expect_spec_error("bn:momentum=abc", "momentum");
  expect_spec_error("bn:gamma=3", "gamma");
  expect_spec_error("bn:momentum", "momentum");
  expect_spec_error("dense4,bn:center=2", "center");
}

TEST(Spec, InvalidDropout) {
  expect_spec_error("dropout1.5", "dropout1.5");
  expect_spec_error("dropout-0.1", "dropout");
  expect_spec_error("dropoutX", "dropoutX");
}

}  // namespace
}  // namespace bnorm
