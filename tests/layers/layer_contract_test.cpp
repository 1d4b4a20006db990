// The layer contract, run over every layer type and configuration: build, output_shape,
// forward shape in both modes, parameter counts, gradient check by central differences,
// determinism with the same seed, input validation.
#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/depthwise_conv2d.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/layers/elementwise.hpp"
#include "bnorm/layers/flatten.hpp"
#include "bnorm/layers/normalization.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/layers/reshape.hpp"
#include "bnorm/layers/separable_conv2d.hpp"
#include "bnorm/layers/zero_padding2d.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

struct LayerCase {
  std::string name;
  std::function<std::unique_ptr<Layer>()> make;
  Shape input;            // per-sample
  Shape expected_output;  // per-sample
  std::int64_t expected_params = 0;
  std::int64_t expected_trainable = 0;
  std::int64_t batch = 6;
  bool random_in_training = false;  // Dropout: a new mask per training forward
  bool allow_kinks = false;         // piecewise-linear (relu)
};

std::ostream& operator<<(std::ostream& os, const LayerCase& c) { return os << c.name; }

std::unique_ptr<Layer> bn(BatchNormalization::Options o, bool trainable = true) {
  // Non-trivial gamma/beta so the checks see them.
  o.gamma_initializer = Initializer::random_uniform(0.5f, 1.5f);
  o.beta_initializer = Initializer::random_uniform(-0.5f, 0.5f);
  auto l = std::make_unique<BatchNormalization>(o);
  l->set_trainable(trainable);
  return l;
}

std::unique_ptr<Layer> bn_axis(int axis) {
  BatchNormalization::Options o;
  o.axis = axis;
  return bn(o);
}

std::unique_ptr<Layer> dense(std::int64_t units, std::string activation, bool use_bias = true) {
  Dense::Options o;
  o.units = units;
  o.activation = std::move(activation);
  o.use_bias = use_bias;
  o.bias_initializer = Initializer::random_uniform(-0.1f, 0.1f);
  return std::make_unique<Dense>(o);
}

std::unique_ptr<Layer> conv(std::int64_t filters, std::array<std::int64_t, 2> kernel,
                            std::int64_t stride, std::string padding, std::int64_t dilation = 1,
                            bool use_bias = true, std::string data_format = "channels_last",
                            std::string activation = "linear") {
  Conv2D::Options o;
  o.filters = filters;
  o.kernel_size = kernel;
  o.strides = {stride, stride};
  o.padding = std::move(padding);
  o.dilation_rate = {dilation, dilation};
  o.use_bias = use_bias;
  o.data_format = std::move(data_format);
  o.activation = std::move(activation);
  o.bias_initializer = Initializer::random_uniform(-0.1f, 0.1f);
  return std::make_unique<Conv2D>(o);
}

template <class Pool>
std::unique_ptr<Layer> pool(std::int64_t size, std::int64_t stride, std::string padding,
                            std::string data_format = "channels_last") {
  Pooling2D::Options o;
  o.pool_size = {size, size};
  o.strides = std::array<std::int64_t, 2>{stride, stride};
  o.padding = std::move(padding);
  o.data_format = std::move(data_format);
  return std::make_unique<Pool>(o);
}

std::unique_ptr<Layer> gap(std::string data_format, bool keepdims) {
  GlobalAveragePooling2D::Options o;
  o.data_format = std::move(data_format);
  o.keepdims = keepdims;
  return std::make_unique<GlobalAveragePooling2D>(o);
}

std::unique_ptr<Layer> gmp(std::string data_format, bool keepdims) {
  GlobalMaxPooling2D::Options o;
  o.data_format = std::move(data_format);
  o.keepdims = keepdims;
  return std::make_unique<GlobalMaxPooling2D>(o);
}

std::unique_ptr<Layer> zero_pad(ZeroPadding2D::Padding padding,
                                std::string data_format = "channels_last") {
  ZeroPadding2D::Options o;
  o.padding = padding;
  o.data_format = std::move(data_format);
  return std::make_unique<ZeroPadding2D>(o);
}

std::unique_ptr<Layer> dwconv(std::array<std::int64_t, 2> kernel, std::int64_t stride,
                              std::string padding, std::int64_t multiplier = 1,
                              std::int64_t dilation = 1, bool use_bias = true,
                              std::string data_format = "channels_last",
                              std::string activation = "linear") {
  DepthwiseConv2D::Options o;
  o.kernel_size = kernel;
  o.strides = {stride, stride};
  o.padding = std::move(padding);
  o.depth_multiplier = multiplier;
  o.dilation_rate = {dilation, dilation};
  o.use_bias = use_bias;
  o.data_format = std::move(data_format);
  o.activation = std::move(activation);
  o.bias_initializer = Initializer::random_uniform(-0.1f, 0.1f);
  return std::make_unique<DepthwiseConv2D>(o);
}

std::unique_ptr<Layer> sepconv(std::int64_t filters, std::array<std::int64_t, 2> kernel,
                               std::int64_t stride, std::string padding,
                               std::int64_t multiplier = 1, std::int64_t dilation = 1,
                               bool use_bias = true, std::string data_format = "channels_last",
                               std::string activation = "linear") {
  SeparableConv2D::Options o;
  o.filters = filters;
  o.kernel_size = kernel;
  o.strides = {stride, stride};
  o.padding = std::move(padding);
  o.depth_multiplier = multiplier;
  o.dilation_rate = {dilation, dilation};
  o.use_bias = use_bias;
  o.data_format = std::move(data_format);
  o.activation = std::move(activation);
  o.bias_initializer = Initializer::random_uniform(-0.1f, 0.1f);
  return std::make_unique<SeparableConv2D>(o);
}

// ZeroPadding2D, DepthwiseConv2D, SeparableConv2D, GlobalMaxPooling2D: the same variety as
// Conv2D (strides, odd sizes with 'same', even kernels, dilation, depth multipliers, no bias,
// activations, both data formats).
void add_mobile_cases(std::vector<LayerCase>& c) {
  const std::string cf = "channels_first";
  c.push_back({"ZeroPadding2D_default", [] { return std::make_unique<ZeroPadding2D>(); },
               Shape{3, 4, 2}, Shape{5, 6, 2}, 0, 0, 3});
  c.push_back({"ZeroPadding2D_asymmetric",
               [] {
                 return zero_pad({{{0, 1}, {2, 0}}});
               },
               Shape{3, 4, 2}, Shape{4, 6, 2}, 0, 0, 3});
  c.push_back({"ZeroPadding2D_channels_first",
               [cf] {
                 return zero_pad({{{1, 2}, {0, 1}}}, cf);
               },
               Shape{2, 3, 4}, Shape{2, 6, 5}, 0, 0, 3});
  c.push_back({"DepthwiseConv2D_k3_valid",
               [] {
                 return dwconv({3, 3}, 1, "valid");
               },
               Shape{5, 6, 2}, Shape{3, 4, 2}, 20, 20, 3});
  c.push_back({"DepthwiseConv2D_same_stride2_odd_multiplier2",
               [] {
                 return dwconv({3, 3}, 2, "same", 2);
               },
               Shape{5, 7, 2}, Shape{3, 4, 4}, 40, 40, 3});
  c.push_back({"DepthwiseConv2D_k2x3_same_even_kernel",
               [] {
                 return dwconv({2, 3}, 1, "same");
               },
               Shape{4, 5, 2}, Shape{4, 5, 2}, 14, 14, 3});
  c.push_back({"DepthwiseConv2D_dilation2_same_no_bias",
               [] {
                 return dwconv({3, 3}, 1, "same", 1, 2, false);
               },
               Shape{6, 5, 3}, Shape{6, 5, 3}, 27, 27, 2});
  c.push_back({"DepthwiseConv2D_channels_first_multiplier2_sigmoid",
               [cf] {
                 return dwconv({3, 3}, 1, "same", 2, 1, true, cf, "sigmoid");
               },
               Shape{2, 5, 4}, Shape{4, 5, 4}, 40, 40, 3});
  c.push_back({"DepthwiseConv2D_multiplier2_relu",
               [] {
                 return dwconv({2, 2}, 1, "valid", 2, 1, true, "channels_last", "relu");
               },
               Shape{3, 3, 2}, Shape{2, 2, 4}, 20, 20, 2, false, true});
  c.push_back({"DepthwiseConv2D_channels_first_stride2_valid_tanh",
               [cf] {
                 return dwconv({3, 3}, 2, "valid", 1, 1, true, cf, "tanh");
               },
               Shape{3, 7, 6}, Shape{3, 3, 2}, 30, 30, 3});
  c.push_back({"SeparableConv2D_k3_valid",
               [] {
                 return sepconv(3, {3, 3}, 1, "valid");
               },
               Shape{5, 6, 2}, Shape{3, 4, 3}, 27, 27, 3});
  c.push_back({"SeparableConv2D_same_stride2_multiplier2_tanh",
               [] {
                 return sepconv(4, {3, 3}, 2, "same", 2, 1, true, "channels_last", "tanh");
               },
               Shape{5, 7, 2}, Shape{3, 4, 4}, 56, 56, 3});
  c.push_back({"SeparableConv2D_relu",
               [] {
                 return sepconv(3, {2, 2}, 1, "same", 1, 1, true, "channels_last", "relu");
               },
               Shape{4, 4, 2}, Shape{4, 4, 3}, 17, 17, 3, false, true});
  c.push_back({"SeparableConv2D_channels_first_dilation2_no_bias",
               [cf] {
                 return sepconv(3, {3, 3}, 1, "same", 1, 2, false, cf);
               },
               Shape{2, 6, 5}, Shape{3, 6, 5}, 24, 24, 2});
  c.push_back({"GlobalMaxPooling2D", [] { return gmp("channels_last", false); }, Shape{3, 4, 5},
               Shape{5}, 0, 0, 3, false, true});
  c.push_back({"GlobalMaxPooling2D_keepdims", [] { return gmp("channels_last", true); },
               Shape{3, 4, 5}, Shape{1, 1, 5}, 0, 0, 3, false, true});
  c.push_back({"GlobalMaxPooling2D_channels_first_keepdims", [cf] { return gmp(cf, true); },
               Shape{3, 4, 5}, Shape{3, 1, 1}, 0, 0, 3, false, true});
  c.push_back({"GlobalMaxPooling2D_channels_first", [cf] { return gmp(cf, false); }, Shape{3, 4, 5},
               Shape{3}, 0, 0, 3, false, true});
  c.push_back({"GlobalAveragePooling2D_channels_first_keepdims", [cf] { return gap(cf, true); },
               Shape{3, 4, 5}, Shape{3, 1, 1}, 0, 0, 3});
}

// Convolution and pooling: strides 1/2, valid/same (odd sizes, even kernels), dilation 2,
// use_bias off, both data formats; per-sample shapes are (H, W, C) or (C, H, W).
void add_image_cases(std::vector<LayerCase>& c) {
  const std::string cf = "channels_first";
  c.push_back({"Conv2D_k3_valid",
               [] {
                 return conv(3, {3, 3}, 1, "valid");
               },
               Shape{5, 6, 2}, Shape{3, 4, 3}, 57, 57, 3});
  c.push_back({"Conv2D_k3_same_stride2_odd",
               [] {
                 return conv(3, {3, 3}, 2, "same");
               },
               Shape{5, 7, 2}, Shape{3, 4, 3}, 57, 57, 3});
  c.push_back({"Conv2D_k3_valid_stride2",
               [] {
                 return conv(3, {3, 3}, 2, "valid");
               },
               Shape{7, 6, 2}, Shape{3, 2, 3}, 57, 57, 3});
  c.push_back({"Conv2D_k2x3_same_even_kernel",
               [] {
                 return conv(3, {2, 3}, 1, "same");
               },
               Shape{4, 5, 2}, Shape{4, 5, 3}, 39, 39, 3});
  c.push_back({"Conv2D_dilation2_same",
               [] {
                 return conv(3, {3, 3}, 1, "same", 2);
               },
               Shape{6, 5, 2}, Shape{6, 5, 3}, 57, 57, 2});
  c.push_back({"Conv2D_dilation2_valid",
               [] {
                 return conv(3, {3, 3}, 1, "valid", 2);
               },
               Shape{6, 7, 2}, Shape{2, 3, 3}, 57, 57, 3});
  c.push_back({"Conv2D_no_bias",
               [] {
                 return conv(3, {3, 3}, 1, "same", 1, false);
               },
               Shape{4, 4, 2}, Shape{4, 4, 3}, 54, 54, 3});
  c.push_back({"Conv2D_relu",
               [] {
                 return conv(3, {3, 3}, 1, "same", 1, true, "channels_last", "relu");
               },
               Shape{4, 4, 2}, Shape{4, 4, 3}, 57, 57, 3, false, true});
  c.push_back({"Conv2D_channels_first_same_stride2",
               [cf] {
                 return conv(4, {3, 3}, 2, "same", 1, true, cf);
               },
               Shape{2, 5, 6}, Shape{4, 3, 3}, 76, 76, 3});
  c.push_back({"Conv2D_channels_first_dilation2_valid_tanh",
               [cf] {
                 return conv(2, {3, 3}, 1, "valid", 2, true, cf, "tanh");
               },
               Shape{3, 6, 5}, Shape{2, 2, 1}, 56, 56, 3});
  c.push_back({"MaxPooling2D_2_valid", [] { return pool<MaxPooling2D>(2, 2, "valid"); },
               Shape{4, 6, 3}, Shape{2, 3, 3}, 0, 0, 3, false, true});
  c.push_back({"MaxPooling2D_2_same_odd", [] { return pool<MaxPooling2D>(2, 2, "same"); },
               Shape{5, 7, 2}, Shape{3, 4, 2}, 0, 0, 3, false, true});
  c.push_back({"MaxPooling2D_3_stride1_same_overlap",
               [] { return pool<MaxPooling2D>(3, 1, "same"); }, Shape{5, 4, 2}, Shape{5, 4, 2}, 0,
               0, 2, false, true});
  c.push_back({"MaxPooling2D_channels_first_same",
               [cf] { return pool<MaxPooling2D>(2, 2, "same", cf); }, Shape{2, 5, 5},
               Shape{2, 3, 3}, 0, 0, 3, false, true});
  c.push_back({"AveragePooling2D_2_valid", [] { return pool<AveragePooling2D>(2, 2, "valid"); },
               Shape{4, 6, 3}, Shape{2, 3, 3}, 0, 0, 3});
  c.push_back({"AveragePooling2D_3_stride2_same_odd",
               [] { return pool<AveragePooling2D>(3, 2, "same"); }, Shape{5, 7, 2}, Shape{3, 4, 2},
               0, 0, 3});
  c.push_back({"AveragePooling2D_channels_first_same",
               [cf] { return pool<AveragePooling2D>(2, 1, "same", cf); }, Shape{2, 3, 5},
               Shape{2, 3, 5}, 0, 0, 3});
  c.push_back({"GlobalAveragePooling2D", [] { return gap("channels_last", false); }, Shape{3, 4, 5},
               Shape{5}, 0, 0, 3});
  c.push_back({"GlobalAveragePooling2D_channels_first", [cf] { return gap(cf, false); },
               Shape{3, 4, 5}, Shape{3}, 0, 0, 3});
  c.push_back({"GlobalAveragePooling2D_keepdims", [] { return gap("channels_last", true); },
               Shape{3, 4, 5}, Shape{1, 1, 5}, 0, 0, 3});
}

// The Keras 3 activations added for real architectures, the elementwise and shape layers, and
// Dropout's noise_shape.
void add_elementwise_cases(std::vector<LayerCase>& c) {
  for (const char* act :
       {"silu", "gelu", "hard_sigmoid", "hard_silu", "elu", "leaky_relu", "relu6", "swish"}) {
    const std::string a = act;
    const bool kinks =
        a == "hard_sigmoid" || a == "hard_silu" || a == "leaky_relu" || a == "relu6" || a == "elu";
    c.push_back(
        {"Dense_" + a, [a] { return dense(4, a); }, Shape{5}, Shape{4}, 24, 24, 6, false, kinks});
    c.push_back({"Activation_" + a, [a] { return std::make_unique<Activation>(a); }, Shape{7},
                 Shape{7}, 0, 0, 6, false, kinks});
  }
  c.push_back({"Conv2D_gelu",
               [] {
                 return conv(3, {3, 3}, 1, "same", 1, true, "channels_last", "gelu");
               },
               Shape{4, 4, 2}, Shape{4, 4, 3}, 57, 57, 3});
  c.push_back({"Conv2D_channels_first_silu",
               [] {
                 return conv(2, {3, 3}, 1, "valid", 1, true, "channels_first", "silu");
               },
               Shape{3, 5, 4}, Shape{2, 3, 2}, 56, 56, 3});
  auto relu = [](std::optional<float> max_value, float slope, float threshold) {
    return [=] { return std::make_unique<ReLU>(ReLU::Options{max_value, slope, threshold}); };
  };
  c.push_back(
      {"ReLU_default", relu(std::nullopt, 0.0f, 0.0f), Shape{9}, Shape{9}, 0, 0, 6, false, true});
  c.push_back(
      {"ReLU_leaky", relu(std::nullopt, 0.3f, 0.0f), Shape{9}, Shape{9}, 0, 0, 6, false, true});
  c.push_back(
      {"ReLU_max6", relu(6.0f, 0.0f, 0.0f), Shape{2, 3}, Shape{2, 3}, 0, 0, 6, false, true});
  c.push_back(
      {"ReLU_all_options", relu(1.0f, 0.2f, 0.4f), Shape{9}, Shape{9}, 0, 0, 6, false, true});
  c.push_back({"Reshape_infer",
               [] {
                 return std::make_unique<Reshape>(std::vector<std::int64_t>{4, -1});
               },
               Shape{2, 3, 4}, Shape{4, 6}, 0, 0, 3});
  c.push_back({"Reshape_to_image",
               [] {
                 return std::make_unique<Reshape>(std::vector<std::int64_t>{2, 3, 2});
               },
               Shape{12}, Shape{2, 3, 2}, 0, 0, 4});
  c.push_back({"Rescaling_scalar", [] { return std::make_unique<Rescaling>(1.0f / 255.0f, -0.5f); },
               Shape{3, 4}, Shape{3, 4}, 0, 0, 4});
  c.push_back({"Rescaling_per_channel",
               [] {
                 return std::make_unique<Rescaling>(Rescaling::Options{
                     .scale = {0.5f, -2.0f, 3.0f}, .offset = {1.0f, 0.0f, -1.0f}});
               },
               Shape{2, 2, 3}, Shape{2, 2, 3}, 0, 0, 4});
  c.push_back({"Normalization_adapt_mode", [] { return std::make_unique<Normalization>(); },
               Shape{2, 5}, Shape{2, 5}, 11, 0, 4});
  c.push_back({"Normalization_axes_1_2",
               [] {
                 Normalization::Options o;
                 o.axis = {1, 2};
                 return std::make_unique<Normalization>(o);
               },
               Shape{2, 3, 4}, Shape{2, 3, 4}, 13, 0, 3});
  c.push_back({"Normalization_fixed",
               [] {
                 Normalization::Options o;
                 o.mean = {0.5f, -1.0f, 2.0f};
                 o.variance = {4.0f, 0.25f, 1e-16f};
                 return std::make_unique<Normalization>(o);
               },
               Shape{3}, Shape{3}, 0, 0, 6});
  c.push_back({"Normalization_fixed_invert",
               [] {
                 Normalization::Options o;
                 o.mean = {0.5f};
                 o.variance = {4.0f};
                 o.invert = true;
                 return std::make_unique<Normalization>(o);
               },
               Shape{2, 3}, Shape{2, 3}, 0, 0, 6});
  c.push_back(
      {"Identity", [] { return std::make_unique<Identity>(); }, Shape{2, 3}, Shape{2, 3}, 0, 0, 4});
  c.push_back({"Dropout_noise_shape_spatial",
               [] {
                 Dropout::Options o;
                 o.rate = 0.4f;
                 o.noise_shape = {std::nullopt, 1, 1, std::nullopt};
                 return std::make_unique<Dropout>(o);
               },
               Shape{3, 2, 4}, Shape{3, 2, 4}, 0, 0, 5, true});
  c.push_back({"Dropout_seeded",
               [] {
                 Dropout::Options o;
                 o.rate = 0.3f;
                 o.seed = 17;
                 return std::make_unique<Dropout>(o);
               },
               Shape{8}, Shape{8}, 0, 0, 6, true});
}

std::vector<LayerCase> cases() {
  std::vector<LayerCase> c;
  for (const char* act : {"linear", "relu", "sigmoid", "tanh", "softmax"}) {
    for (bool bias : {true, false}) {
      const std::string a = act;
      c.push_back({"Dense_" + a + (bias ? "_bias" : "_nobias"),
                   [a, bias] { return dense(4, a, bias); }, Shape{5}, Shape{4}, bias ? 24 : 20,
                   bias ? 24 : 20, 6, false, a == "relu"});
    }
  }
  c.push_back(
      {"Dense_rank3_input", [] { return dense(4, "tanh"); }, Shape{3, 5}, Shape{3, 4}, 24, 24, 4});
  for (const char* act : {"linear", "relu", "sigmoid", "tanh", "softmax"}) {
    const std::string a = act;
    c.push_back({"Activation_" + a, [a] { return std::make_unique<Activation>(a); }, Shape{7},
                 Shape{7}, 0, 0, 6, false, a == "relu"});
  }
  c.push_back({"Activation_softmax_rank3", [] { return std::make_unique<Activation>("softmax"); },
               Shape{2, 3, 4}, Shape{2, 3, 4}, 0, 0, 3});
  c.push_back({"Dropout_0_3", [] { return std::make_unique<Dropout>(0.3f); }, Shape{8}, Shape{8}, 0,
               0, 6, true});
  c.push_back(
      {"Dropout_0", [] { return std::make_unique<Dropout>(0.0f); }, Shape{8}, Shape{8}, 0, 0, 6});
  c.push_back(
      {"Flatten", [] { return std::make_unique<Flatten>(); }, Shape{2, 3, 4}, Shape{24}, 0, 0, 3});
  c.push_back(
      {"Flatten_rank1", [] { return std::make_unique<Flatten>(); }, Shape{5}, Shape{5}, 0, 0, 3});
  c.push_back({"BN_axis_last_2d", [] { return bn_axis(-1); }, Shape{6}, Shape{6}, 24, 12, 8});
  c.push_back({"BN_axis1_2d", [] { return bn_axis(1); }, Shape{6}, Shape{6}, 24, 12, 8});
  c.push_back({"BN_axis1_4d", [] { return bn_axis(1); }, Shape{3, 4, 2}, Shape{3, 4, 2}, 12, 6, 3});
  c.push_back(
      {"BN_axis_last_4d", [] { return bn_axis(-1); }, Shape{2, 3, 4}, Shape{2, 3, 4}, 16, 8, 3});
  c.push_back({"BN_axis2_4d", [] { return bn_axis(2); }, Shape{2, 3, 4}, Shape{2, 3, 4}, 12, 6, 3});
  c.push_back(
      {"BN_axis_minus2_3d", [] { return bn_axis(-2); }, Shape{5, 3}, Shape{5, 3}, 20, 10, 4});
  c.push_back({"BN_center_off",
               [] {
                 BatchNormalization::Options o;
                 o.center = false;
                 return bn(o);
               },
               Shape{5}, Shape{5}, 15, 5, 8});
  c.push_back({"BN_scale_off",
               [] {
                 BatchNormalization::Options o;
                 o.scale = false;
                 return bn(o);
               },
               Shape{5}, Shape{5}, 15, 5, 8});
  c.push_back({"BN_center_scale_off",
               [] {
                 BatchNormalization::Options o;
                 o.center = false;
                 o.scale = false;
                 return bn(o);
               },
               Shape{5}, Shape{5}, 10, 0, 8});
  c.push_back(
      {"BN_frozen", [] { return bn({}, /*trainable=*/false); }, Shape{5}, Shape{5}, 20, 0, 8});
  c.push_back({"BN_pytorch_axis1_4d",
               [] {
                 BatchNormalization::Options o = BatchNormalization::pytorch_defaults();
                 o.axis = 1;
                 return bn(o);
               },
               Shape{3, 2, 2}, Shape{3, 2, 2}, 12, 6, 4});
  add_image_cases(c);
  add_elementwise_cases(c);
  add_mobile_cases(c);
  return c;
}

class LayerContractTest : public ::testing::TestWithParam<LayerCase> {
 protected:
  std::unique_ptr<Layer> built(std::uint64_t seed = 42) {
    auto layer = GetParam().make();
    Random rng(seed);
    layer->build(GetParam().input, rng);
    return layer;
  }
  Tensor input(std::uint64_t seed = 7) {
    Random rng(seed);
    return test::random_normal(test::with_batch(GetParam().batch, GetParam().input), rng, 0.3f,
                               1.0f);
  }
};

TEST_P(LayerContractTest, BuildAndOutputShape) {
  const LayerCase& c = GetParam();
  auto layer = c.make();
  EXPECT_FALSE(layer->built());
  EXPECT_FALSE(layer->class_name().empty());
  EXPECT_FALSE(layer->name().empty());
  Random rng(1);
  layer->build(c.input, rng);
  EXPECT_TRUE(layer->built());
  EXPECT_EQ(layer->input_shape(), c.input);
  EXPECT_EQ(layer->output_shape(c.input), c.expected_output);
  EXPECT_EQ(layer->count_params(), c.expected_params);
  EXPECT_EQ(layer->count_trainable_params(), c.expected_trainable);
  std::int64_t total = 0, trainable = 0;
  std::set<std::string> names;
  for (const Variable* v : std::as_const(*layer).weights()) {
    total += v->value.size();
    EXPECT_FALSE(v->name.empty());
    EXPECT_TRUE(names.insert(v->name).second) << "duplicate weight name " << v->name;
  }
  for (Variable* v : layer->trainable_weights()) {
    trainable += v->value.size();
    EXPECT_TRUE(v->trainable);
    EXPECT_EQ(v->gradient.shape(), v->value.shape()) << v->name;
  }
  EXPECT_EQ(total, layer->count_params());
  EXPECT_EQ(trainable, layer->count_trainable_params());
}

TEST_P(LayerContractTest, BuildAgainWithSameShapeIsANoOp) {
  auto layer = built(3);
  std::vector<Tensor> before;
  for (Variable* v : layer->weights()) before.push_back(v->value);
  Random other(999);
  layer->build(GetParam().input, other);
  const auto after = layer->weights();
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < before.size(); ++i)
    EXPECT_TRUE(test::bitwise_equal(after[i]->value, before[i]));
}

TEST_P(LayerContractTest, ForwardShapeInBothModes) {
  const LayerCase& c = GetParam();
  auto layer = built();
  const Tensor x = input();
  for (Mode mode : {Mode::training, Mode::inference}) {
    const Tensor& y = layer->forward(x, mode);
    EXPECT_EQ(y.shape(), test::with_batch(c.batch, c.expected_output));
    EXPECT_TRUE(y.all_finite());
  }
  // Other batch sizes work with the same built layer.
  Random rng(5);
  const Tensor x2 = test::random_normal(test::with_batch(c.batch + 3, c.input), rng);
  EXPECT_EQ(layer->forward(x2, Mode::training).shape(),
            test::with_batch(c.batch + 3, c.expected_output));
  EXPECT_EQ(layer->forward(x2, Mode::inference).shape(),
            test::with_batch(c.batch + 3, c.expected_output));
}

TEST_P(LayerContractTest, ForwardDoesNotModifyInput) {
  auto layer = built();
  const Tensor x = input();
  const Tensor copy = x;
  layer->forward(x, Mode::training);
  const Tensor y = layer->forward(x, Mode::training);
  layer->backward(y);
  EXPECT_TRUE(test::bitwise_equal(x, copy));
}

TEST_P(LayerContractTest, BackwardShapes) {
  const LayerCase& c = GetParam();
  auto layer = built();
  const Tensor x = input();
  for (Mode mode : {Mode::training, Mode::inference}) {
    const Tensor y = layer->forward(x, mode);
    const Tensor dy = Tensor::full(y.shape(), 0.5f);
    const Tensor& dx = layer->backward(dy);
    EXPECT_EQ(dx.shape(), x.shape());
    EXPECT_TRUE(dx.all_finite());
    for (Variable* v : layer->trainable_weights()) {
      EXPECT_EQ(v->gradient.shape(), v->value.shape());
      EXPECT_TRUE(v->gradient.all_finite());
    }
  }
  (void)c;
}

TEST_P(LayerContractTest, BackwardRejectsAGradientOfTheWrongShape) {
  auto layer = built();
  const Tensor x = input();
  const Tensor y = layer->forward(x, Mode::training);
  std::vector<std::int64_t> dims = y.shape().dims();
  dims.back() += 1;
  EXPECT_THROW(layer->backward(Tensor(Shape(dims))), ShapeError);
}

TEST_P(LayerContractTest, GradientCheckInference) {
  const LayerCase& c = GetParam();
  auto layer = built();
  test::GradCheckOptions o;
  o.mode = Mode::inference;
  o.allow_kinks = c.allow_kinks;
  EXPECT_TRUE(test::check_layer_gradients(*layer, input(), o));
}

TEST_P(LayerContractTest, GradientCheckTraining) {
  const LayerCase& c = GetParam();
  auto layer = built();
  if (c.random_in_training) {
    // A new random mask per forward rules out finite differences; the layer is linear in x for
    // a fixed mask, so dx must be dy * (y / x) elementwise.
    const Tensor x = input();
    const Tensor y = layer->forward(x, Mode::training);
    Random rng(3);
    const Tensor dy = test::random_normal(y.shape(), rng);
    const Tensor dx = layer->backward(dy);
    std::vector<double> expected(static_cast<std::size_t>(x.size()));
    for (std::int64_t i = 0; i < x.size(); ++i)
      expected[static_cast<std::size_t>(i)] = double(dy[i]) * y[i] / x[i];
    test::expect_close(dx.values(), expected, 1e-5, 1e-6);
    return;
  }
  test::GradCheckOptions o;
  o.mode = Mode::training;
  o.allow_kinks = c.allow_kinks;
  EXPECT_TRUE(test::check_layer_gradients(*layer, input(), o));
}

TEST_P(LayerContractTest, DeterministicWithTheSameSeed) {
  auto a = built(11);
  auto b = built(11);
  const auto wa = a->weights();
  const auto wb = b->weights();
  ASSERT_EQ(wa.size(), wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i)
    EXPECT_TRUE(test::bitwise_equal(wa[i]->value, wb[i]->value));
  const Tensor x = input();
  for (int step = 0; step < 3; ++step) {
    for (Mode mode : {Mode::training, Mode::inference}) {
      const Tensor ya = a->forward(x, mode);
      const Tensor yb = b->forward(x, mode);
      EXPECT_TRUE(test::bitwise_equal(ya, yb)) << "step " << step;
      const Tensor dy = Tensor::full(ya.shape(), 0.25f);
      EXPECT_TRUE(test::bitwise_equal(a->backward(dy), b->backward(dy)));
    }
  }
}

TEST_P(LayerContractTest, InferenceIsDeterministic) {
  auto layer = built();
  const Tensor x = input();
  const Tensor y1 = layer->forward(x, Mode::inference);
  const Tensor y2 = layer->forward(x, Mode::inference);
  EXPECT_TRUE(test::bitwise_equal(y1, y2));
}

TEST_P(LayerContractTest, RejectsInputOfAnotherShape) {
  const LayerCase& c = GetParam();
  auto layer = built();
  std::vector<std::int64_t> dims = test::with_batch(c.batch, c.input).dims();
  dims.back() += 1;
  const Tensor wrong{Shape(dims)};
  EXPECT_THROW(layer->forward(wrong, Mode::training), ShapeError);
  EXPECT_THROW(layer->forward(wrong, Mode::inference), ShapeError);
  // Missing batch dimension (per-sample tensor given as a batch).
  const Tensor unbatched{c.input};
  EXPECT_THROW(layer->forward(unbatched, Mode::inference), ShapeError);
}

TEST_P(LayerContractTest, RejectsAnEmptyBatch) {
  auto layer = built();
  const Tensor empty{test::with_batch(0, GetParam().input)};
  EXPECT_THROW(layer->forward(empty, Mode::training), ShapeError);
  EXPECT_THROW(layer->forward(empty, Mode::inference), ShapeError);
}

TEST_P(LayerContractTest, ForwardBeforeBuildThrows) {
  auto layer = GetParam().make();
  const Tensor x = input();
  EXPECT_THROW(layer->forward(x, Mode::inference), Error);
}

TEST_P(LayerContractTest, CloneIsAnIndependentDeepCopy) {
  auto layer = built();
  layer->set_name("original");
  const Tensor x = input();
  const Tensor y = test::forward_copy(*layer, x, Mode::inference);
  std::unique_ptr<Layer> copy = layer->clone();
  ASSERT_NE(copy, nullptr) << "the model engine clones layers: do_clone is required";
  EXPECT_EQ(copy->class_name(), layer->class_name());
  EXPECT_EQ(copy->name(), "original");
  EXPECT_TRUE(copy->built());
  const auto wa = std::as_const(*layer).weights();
  const auto wb = std::as_const(*copy).weights();
  ASSERT_EQ(wa.size(), wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i) {
    EXPECT_EQ(wa[i]->name, wb[i]->name);
    EXPECT_TRUE(test::bitwise_equal(wa[i]->value, wb[i]->value)) << wa[i]->name;
  }
  EXPECT_TRUE(test::bitwise_equal(test::forward_copy(*copy, x, Mode::inference), y));
  // No aliasing: changing the copy's weights leaves the original as it was.
  for (Variable* v : copy->weights()) v->value.fill(0.5f);
  EXPECT_TRUE(test::bitwise_equal(test::forward_copy(*layer, x, Mode::inference), y));
}

TEST_P(LayerContractTest, RebuildWithAnotherShapeThrows) {
  auto layer = built();
  std::vector<std::int64_t> dims = GetParam().input.dims();
  dims.back() += 2;
  Random rng(1);
  EXPECT_THROW(layer->build(Shape(dims), rng), ShapeError);
}

INSTANTIATE_TEST_SUITE_P(AllLayers, LayerContractTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace bnorm
