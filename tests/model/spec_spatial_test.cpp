// Spec tokens of the spatial layers real architectures use: zeropad, dwconv, sepconv, gmp.
#include <gtest/gtest.h>

#include <array>
#include <string>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/depthwise_conv2d.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/layers/separable_conv2d.hpp"
#include "bnorm/layers/zero_padding2d.hpp"
#include "bnorm/model/spec.hpp"

namespace bnorm {
namespace {

void expect_spec_error(const std::string& spec, const std::string& needle) {
  Sequential m(1);
  try {
    add_layers_from_spec(m, spec);
    ADD_FAILURE() << "spec '" << spec << "' was accepted";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "spec '" << spec << "': message does not name '" << needle << "': " << e.what();
  }
  EXPECT_EQ(m.size(), 0u) << "nothing is added on error: " << spec;
}

TEST(SpecSpatial, Tokens) {
  Sequential m(1);
  m.add(Input{Shape{32, 32, 3}});
  add_layers_from_spec(m,
                       "zeropad0-1x0-1,dwconv3-valid-relu:strides=2:depth_multiplier=2,"
                       "sepconv16-3x1-same:use_bias=0:dilation_rate=2,zeropad2,zeropad1x3,"
                       "dwconv5:padding=same:data_format=channels_last,gmp:keepdims=1");
  ASSERT_EQ(m.size(), 7u);
  EXPECT_EQ(dynamic_cast<ZeroPadding2D&>(m.layer(0)).options().padding,
            (ZeroPadding2D::Padding{{{0, 1}, {0, 1}}}));
  const auto& dw = dynamic_cast<DepthwiseConv2D&>(m.layer(1)).options();
  EXPECT_EQ(dw.kernel_size, (std::array<std::int64_t, 2>{3, 3}));
  EXPECT_EQ(dw.strides, (std::array<std::int64_t, 2>{2, 2}));
  EXPECT_EQ(dw.padding, "valid");
  EXPECT_EQ(dw.depth_multiplier, 2);
  EXPECT_EQ(dw.activation, "relu");
  const auto& sep = dynamic_cast<SeparableConv2D&>(m.layer(2)).options();
  EXPECT_EQ(sep.filters, 16);
  EXPECT_EQ(sep.kernel_size, (std::array<std::int64_t, 2>{3, 1}));
  EXPECT_EQ(sep.padding, "same");
  EXPECT_EQ(sep.dilation_rate, (std::array<std::int64_t, 2>{2, 2}));
  EXPECT_FALSE(sep.use_bias);
  EXPECT_EQ(sep.activation, "linear");
  EXPECT_EQ(dynamic_cast<ZeroPadding2D&>(m.layer(3)).options().padding,
            (ZeroPadding2D::Padding{{{2, 2}, {2, 2}}}));
  EXPECT_EQ(dynamic_cast<ZeroPadding2D&>(m.layer(4)).options().padding,
            (ZeroPadding2D::Padding{{{1, 1}, {3, 3}}}));
  EXPECT_EQ(dynamic_cast<DepthwiseConv2D&>(m.layer(5)).options().padding, "same");
  EXPECT_TRUE(dynamic_cast<GlobalMaxPooling2D&>(m.layer(6)).options().keepdims);
  m.build();
  // 32 -pad-> 33 -k3 s2 valid-> 16 (x2 channels: 6) -same-> 16 (16 filters) -pad 2-> 20x20
  // -pad 1x3-> 22x26 -same-> 22x26 -gmp keepdims-> (1, 1, 16)
  EXPECT_EQ(m.output_shape(), (Shape{1, 1, 16}));
  Sequential cf(1);
  add_layers_from_spec(cf, "global_max_pooling2d:data_format=channels_first");
  EXPECT_EQ(dynamic_cast<GlobalMaxPooling2D&>(cf.layer(0)).options().data_format, "channels_first");
}

TEST(SpecSpatial, InvalidTokens) {
  expect_spec_error("zeropad", "missing number");
  expect_spec_error("zeropad-1", "missing number");
  expect_spec_error("zeropad1.5", "padding must be a non-negative integer");
  expect_spec_error("zeropad1x", "missing number");
  expect_spec_error("zeropad1:strides=2", "strides");
  expect_spec_error("dwconv0", "kernel_size");
  expect_spec_error("dwconv3-full-relu", "full");
  expect_spec_error("dwconv3:depth_multiplier=0", "depth_multiplier");
  expect_spec_error("dwconv3:strides=2:dilation_rate=2", "dilation_rate");
  expect_spec_error("sepconv8", "expected sepconv<filters>-<kernel size>");
  expect_spec_error("sepconv0-3", "filters");
  expect_spec_error("sepconv8-3:filters=2", "filters");
  expect_spec_error("gmp:keepdims=maybe", "keepdims");
  expect_spec_error("gmp:data_format=nchw", "nchw");
}

}  // namespace
}  // namespace bnorm
