// Compact model specs: "dense64-relu,bn,dense10-softmax".
#include "bnorm/model/spec.hpp"

#include <gtest/gtest.h>

#include <array>
#include <string>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/layers/elementwise.hpp"
#include "bnorm/layers/flatten.hpp"
#include "bnorm/layers/normalization.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/layers/reshape.hpp"

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
  EXPECT_EQ(dynamic_cast<Flatten&>(m.layer(0)).options().data_format, "channels_last");
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
  expect_spec_error("dense64-mish", "mish");  // swish became a known activation (silu)
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

// Issue 16 item 6: an axis is an integer in the rank range (1.5 was read as axis 1, and 1e10's
// conversion to int was undefined behaviour); float32 arguments stay within float's range.
TEST(Spec, AxesAreIntegersAndFloatsFitFloat32) {
  expect_spec_error("bn:axis=1.5", "axis '1.5' must be an integer from -5 to 4");
  expect_spec_error("bn:axis=1e10", "axis '1e10'");
  expect_spec_error("bn:axis=-6", "axis '-6'");
  expect_spec_error("bn:axis=inf", "axis 'inf'");
  expect_spec_error("bn:epsilon=1e300", "outside float32's range");
  expect_spec_error("dropout1e300", "outside float32's range");
  expect_spec_error("rescaling:scale=-1e39", "outside float32's range");
  expect_spec_error("relu:max_value=inf", "outside float32's range");
}

// Issue 16 item 7: naming and adding are no longer cubic/quadratic in the number of layers (a
// 10,000-layer spec took minutes); names stay Keras's dense, dense_1, ... in order.
TEST(Spec, TenThousandLayersBuildWithKerasNames) {
  std::string spec = "dense4";
  for (int i = 1; i < 10000; ++i) spec += ",dense4";
  Sequential m(1);
  m.add(Input{Shape{4}});
  add_layers_from_spec(m, spec);
  ASSERT_EQ(m.size(), 10000u);
  EXPECT_EQ(m.layer(0).name(), "dense");
  EXPECT_EQ(m.layer(1).name(), "dense_1");
  EXPECT_EQ(m.layer(9999).name(), "dense_9999");
  Sequential lazy(1);  // no Input yet: named as added
  add_layers_from_spec(lazy, spec);
  EXPECT_EQ(lazy.layer(9999).name(), "dense_9999");
  add_layers_from_spec(lazy, "dense4,bn");
  EXPECT_EQ(lazy.layer(10000).name(), "dense_10000");
  EXPECT_EQ(lazy.layer(10001).name(), "batch_normalization");
}

// Issue 16 item 5: a spec cannot ask for more weight memory than the machine has; the request is
// refused before anything is allocated, naming the layer, the weight and its size, and the
// memory in use is given back when a model goes away.
TEST(Spec, WeightsBeyondTheMemoryLimitAreRefusedBeforeAllocating) {
  const std::int64_t in_use = weight_memory_in_use();
  for (const char* spec : {"dense1000000000", "conv1000000000-3", "dense4,dense999999999"}) {
    SCOPED_TRACE(spec);
    Sequential m(1);
    m.add(Input{Shape{784}});
    if (std::string(spec).rfind("conv", 0) == 0) {
      m = Sequential(1);
      m.add(Input{Shape{28, 28, 1}});
    }
    try {
      add_layers_from_spec(m, spec);
      ADD_FAILURE() << "accepted";
    } catch (const ValueError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("weight 'kernel' of shape"), std::string::npos) << msg;
      EXPECT_NE(msg.find("weight memory limit"), std::string::npos) << msg;
    }
    EXPECT_EQ(m.size(), 0u) << "nothing added";
  }
  EXPECT_EQ(weight_memory_in_use(), in_use) << "a refused layer holds nothing";
  {
    Sequential m(1);
    m.add(Input{Shape{4}});
    add_layers_from_spec(m, "dense8,bn");
    // Dense: (4x8 + 8) x 2 (values and gradients); BN: gamma, beta x 2 + moving mean/variance.
    EXPECT_EQ(weight_memory_in_use() - in_use,
              static_cast<std::int64_t>(sizeof(float)) * ((32 + 8) * 2 + 8 * 2 * 2 + 8 * 2));
  }
  EXPECT_EQ(weight_memory_in_use(), in_use) << "given back with the model";
}

TEST(Spec, InvalidDropout) {
  expect_spec_error("dropout1.5", "dropout1.5");
  expect_spec_error("dropout-0.1", "dropout");
  expect_spec_error("dropoutX", "dropoutX");
}

TEST(Spec, ConvolutionAndPoolingTokens) {
  Sequential m(1);
  m.add(Input{Shape{28, 28, 1}});
  add_layers_from_spec(m,
                       "conv32-3x3-same-relu,conv16-5:strides=2,maxpool2,avgpool3x2-same:strides=1,"
                       "conv8-3:dilation_rate=2:use_bias=0:padding=same,gap");
  ASSERT_EQ(m.size(), 6u);
  const auto& c0 = dynamic_cast<Conv2D&>(m.layer(0)).options();
  EXPECT_EQ(c0.filters, 32);
  EXPECT_EQ(c0.kernel_size, (std::array<std::int64_t, 2>{3, 3}));
  EXPECT_EQ(c0.padding, "same");
  EXPECT_EQ(c0.activation, "relu");
  const auto& c1 = dynamic_cast<Conv2D&>(m.layer(1)).options();
  EXPECT_EQ(c1.kernel_size, (std::array<std::int64_t, 2>{5, 5}));
  EXPECT_EQ(c1.strides, (std::array<std::int64_t, 2>{2, 2}));
  EXPECT_EQ(c1.padding, "valid");
  EXPECT_EQ(c1.activation, "linear");
  const auto& p0 = dynamic_cast<MaxPooling2D&>(m.layer(2));
  EXPECT_EQ(p0.strides(), (std::array<std::int64_t, 2>{2, 2}));
  const auto& p1 = dynamic_cast<AveragePooling2D&>(m.layer(3));
  EXPECT_EQ(p1.options().pool_size, (std::array<std::int64_t, 2>{3, 2}));
  EXPECT_EQ(p1.strides(), (std::array<std::int64_t, 2>{1, 1}));
  EXPECT_EQ(p1.options().padding, "same");
  const auto& c2 = dynamic_cast<Conv2D&>(m.layer(4)).options();
  EXPECT_EQ(c2.dilation_rate, (std::array<std::int64_t, 2>{2, 2}));
  EXPECT_FALSE(c2.use_bias);
  EXPECT_NE(dynamic_cast<GlobalAveragePooling2D*>(&m.layer(5)), nullptr);
  m.build();
  // 28 -same-> 28 -valid k5 s2-> 12 -pool2-> 6 -same s1-> 6 -same-> 6 -gap-> (8,)
  EXPECT_EQ(m.output_shape(), Shape{8});
}

TEST(Spec, ChannelsFirstOptions) {
  Sequential m(1);
  m.add(Input{Shape{1, 28, 28}});
  add_layers_from_spec(m,
                       "conv4-3-same:data_format=channels_first,bn:axis=1,relu,"
                       "maxpool2:data_format=channels_first,gap:data_format=channels_first:"
                       "keepdims=1");
  m.build();
  EXPECT_EQ(dynamic_cast<Conv2D&>(m.layer(0)).options().data_format, "channels_first");
  EXPECT_EQ(m.output_shape(), (Shape{4, 1, 1}));
}

TEST(Spec, FlattenDataFormat) {
  Sequential m(1);
  m.add(Input{Shape{2, 5, 5}});
  add_layers_from_spec(m, "conv3-3:data_format=channels_first,flatten:data_format=channels_first");
  EXPECT_EQ(dynamic_cast<Flatten&>(m.layer(1)).options().data_format, "channels_first");
  EXPECT_THROW(add_layers_from_spec(m, "flatten:data_format=nchw"), ValueError);
  EXPECT_THROW(add_layers_from_spec(m, "flatten:order=c"), ValueError);
}

TEST(Spec, CnnPresets) {
  for (const char* spec : {kCnnSpec, kCnnNoBnSpec}) {
    Sequential m(1);
    m.add(Input{Shape{28, 28, 1}});
    add_layers_from_spec(m, spec);
    m.build();
    EXPECT_EQ(m.output_shape(), Shape{10}) << spec;
  }
  Sequential bn(1);
  bn.add(Input{Shape{28, 28, 1}});
  add_layers_from_spec(bn, kCnnSpec);
  bn.build();
  // Keras: Conv2D 320 + BN 128 + Conv2D 18,496 + BN 256 + Dense 401,536 + BN 512 + Dense 1,290.
  EXPECT_EQ(bn.count_params(), 422538);
  EXPECT_EQ(bn.count_trainable_params(), 422090);
  EXPECT_EQ(bn.layer(0).name(), "conv2d");
  EXPECT_EQ(bn.layer(3).name(), "max_pooling2d");
  EXPECT_EQ(bn.layer(4).name(), "dropout");
  EXPECT_EQ(bn.layer(5).name(), "conv2d_1");
  // conv, bn, relu: the BN layer computes the ReLU (fused), the Activation passes through.
  EXPECT_TRUE(bn.layer(2).absorbed());
  Sequential nobn(1);
  nobn.add(Input{Shape{28, 28, 1}});
  add_layers_from_spec(nobn, kCnnNoBnSpec);
  nobn.build();
  EXPECT_EQ(nobn.count_params(), 422538 - 128 - 256 - 512);
}

TEST(Spec, InvalidConvolutionAndPooling) {
  expect_spec_error("conv32", "conv32");
  expect_spec_error("conv0-3", "filters");
  expect_spec_error("conv8-0", "kernel_size");
  expect_spec_error("conv8-3-full-relu", "full");
  expect_spec_error("conv8-3:strides=0", "strides");
  expect_spec_error("conv8-3:strides=2:dilation_rate=2", "dilation_rate");
  expect_spec_error("conv8-3:data_format=nchw", "nchw");
  expect_spec_error("conv8-3:groups=2", "groups");
  expect_spec_error("maxpool0", "pool_size");
  expect_spec_error("maxpool2-wide", "maxpool2-wide");
  expect_spec_error("avgpool2:strides=0x1", "strides");
  expect_spec_error("gap:keepdims=maybe", "keepdims");
}

TEST(Spec, ElementwiseAndShapeTokens) {
  Sequential m(1);
  m.add(Input{Shape{784}});
  add_layers_from_spec(
      m,
      "rescaling:scale=0.5:offset=-1,normalization:mean=0.5:variance=0.25,reshape28x-1,identity,"
      "flatten,dense32-gelu,relu:max_value=6:negative_slope=0.1,relu,silu,swish,hard_swish,elu,"
      "leaky_relu,relu6,hard_sigmoid,dropout0.2:seed=7,dense10-softmax");
  ASSERT_EQ(m.size(), 17u);
  const auto& r = dynamic_cast<Rescaling&>(m.layer(0)).options();
  EXPECT_EQ(r.scale, std::vector<float>{0.5f});
  EXPECT_EQ(r.offset, std::vector<float>{-1.0f});
  EXPECT_EQ(dynamic_cast<Normalization&>(m.layer(1)).options().variance, std::vector<float>{0.25f});
  EXPECT_EQ(dynamic_cast<Reshape&>(m.layer(2)).target_shape(), (std::vector<std::int64_t>{28, -1}));
  EXPECT_EQ(m.layer(3).class_name(), "Identity");
  EXPECT_EQ(dynamic_cast<Dense&>(m.layer(5)).activation(), ActivationKind::gelu);
  const auto& relu = dynamic_cast<ReLU&>(m.layer(6)).options();
  EXPECT_EQ(relu.max_value, 6.0f);
  EXPECT_EQ(relu.negative_slope, 0.1f);
  EXPECT_EQ(dynamic_cast<Activation&>(m.layer(7)).activation(), ActivationKind::relu);
  EXPECT_EQ(dynamic_cast<Activation&>(m.layer(9)).activation(), ActivationKind::silu);
  EXPECT_EQ(dynamic_cast<Activation&>(m.layer(10)).activation(), ActivationKind::hard_silu);
  EXPECT_EQ(dynamic_cast<Dropout&>(m.layer(15)).options().seed, 7u);
  m.build();
  EXPECT_EQ(m.layer(2).output_shape(Shape{784}), (Shape{28, 28}));
}

TEST(Spec, InvalidElementwiseTokens) {
  expect_spec_error("rescaling", "scale");
  expect_spec_error("reshape2x-1x-1", "at most one unknown");
  expect_spec_error("reshapeax2", "not a number");
  expect_spec_error("relu:max_value=-1", "max_value");
  expect_spec_error("normalization:mean=1", "both mean and variance");
  expect_spec_error("dropout0.2:seed=-1", "seed");
  expect_spec_error("identity:x=1", "unknown option");
}

}  // namespace
}  // namespace bnorm
