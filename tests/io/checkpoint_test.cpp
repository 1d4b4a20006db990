// Model files: a save/load round trip is bit-exact (weights, moving statistics, flags, options,
// compile settings); every damaged or foreign file is an IoError naming the file and the
// problem; saves are atomic, so a failed save leaves the previous file as it was.
#include "bnorm/io/checkpoint.hpp"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
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
#include "bnorm/model/optimizers.hpp"
#include "bnorm/model/sequential.hpp"
#include "bnorm/model/spec.hpp"
#include "io/test_files.hpp"

namespace bnorm::io {
namespace {

namespace fs = std::filesystem;
using bnorm::testing::io_error;
using bnorm::testing::read_bytes;
using bnorm::testing::TempDir;
using bnorm::testing::write_bytes;
using json = nlohmann::ordered_json;

Tensor random_tensor(Shape shape, Random& rng, float scale = 1.0f, float shift = 0.0f) {
  Tensor t(std::move(shape));
  for (float& v : t.values()) v = rng.normal() * scale + shift;
  return t;
}

Tensor random_labels(std::int64_t n, int classes, Random& rng) {
  Tensor t(Shape{n});
  for (float& v : t.values())
    v = static_cast<float>(rng.below(static_cast<std::uint64_t>(classes)));
  return t;
}

// Dense -> BN -> Dropout -> Dense(softmax), trained a few steps so that every weight, including
// the moving statistics, is far from its initial value.
Sequential make_trained_model(std::uint64_t seed = 7) {
  Sequential model(seed, "roundtrip");
  model.add(Input{Shape{6}});
  model.add(Dense(12, "relu"));
  BatchNormalization::Options bn;
  bn.momentum = 0.8;
  bn.epsilon = 1e-2f;
  model.add(BatchNormalization(bn));
  model.add(Dropout(0.25f));
  model.add(Dense(4, "softmax"));
  model.compile(make_optimizer("adam", 0.01), LossKind::sparse_categorical_crossentropy);
  Random rng(seed + 1);
  const Tensor x = random_tensor(Shape{16, 6}, rng, 2.0f, 1.0f);
  const Tensor y = random_labels(16, 4, rng);
  for (int i = 0; i < 5; ++i) model.train_on_batch(x, y);
  return model;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) == 0;
}

void expect_same_weights(const Sequential& a, const Sequential& b) {
  const auto wa = a.get_weights();
  const auto wb = b.get_weights();
  ASSERT_EQ(wa.size(), wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i) {
    EXPECT_TRUE(bit_equal(wa[i], wb[i])) << "weight " << i << " differs";
  }
}

// Rewrites the JSON description of a model file (fixing the header lengths and the checksum),
// to make files that are well-formed containers with a doctored content.
void rewrite_description(const std::string& path, const std::function<void(json&)>& edit) {
  const std::string bytes = read_bytes(path);
  auto u64 = [&](std::size_t at) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
    return v;
  };
  const std::uint64_t json_len = u64(16);
  const std::uint64_t data_len = u64(24);
  json doc = json::parse(bytes.substr(32, json_len));
  edit(doc);
  const std::string text = doc.dump();
  std::string out = bytes.substr(0, 16);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((text.size() >> (8 * i)) & 0xFF));
  out += bytes.substr(24, 8);
  out += text;
  out += bytes.substr(32 + json_len, data_len);
  const auto crc = static_cast<std::uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(out.data()), static_cast<uInt>(out.size())));
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((crc >> (8 * i)) & 0xFF));
  write_bytes(path, out);
}

// --- round trips ------------------------------------------------------------------------------

TEST(Checkpoint, RoundTripIsBitExact) {
  TempDir dir;
  Sequential model = make_trained_model();
  const std::string path = dir.file("model.bnorm");
  save_model(model, path);
  Sequential loaded = load_model(path);

  EXPECT_EQ(loaded.name(), model.name());
  EXPECT_EQ(loaded.seed(), model.seed());
  ASSERT_TRUE(loaded.input_shape().has_value());
  EXPECT_EQ(*loaded.input_shape(), (Shape{6}));
  ASSERT_EQ(loaded.size(), model.size());
  for (std::size_t i = 0; i < model.size(); ++i) {
    EXPECT_EQ(loaded.layer(i).class_name(), model.layer(i).class_name());
    EXPECT_EQ(loaded.layer(i).name(), model.layer(i).name());
    EXPECT_EQ(loaded.layer(i).trainable(), model.layer(i).trainable());
  }
  expect_same_weights(model, loaded);
  const auto& bn = dynamic_cast<const BatchNormalization&>(model.layer(1));
  const auto& bn2 = dynamic_cast<const BatchNormalization&>(loaded.layer(1));
  EXPECT_EQ(bn2.num_batches_tracked(), bn.num_batches_tracked());
  EXPECT_EQ(bn2.options().momentum, 0.8);
  EXPECT_EQ(bn2.options().epsilon, 1e-2f);
  EXPECT_EQ(dynamic_cast<const Dropout&>(loaded.layer(2)).rate(), 0.25f);

  // Moving statistics moved away from their initial values, and came back identical.
  const auto moving_mean = model.get_weights()[4];
  bool moved = false;
  for (float v : moving_mean.values()) moved = moved || v != 0.0f;
  EXPECT_TRUE(moved);

  Random rng(99);
  const Tensor x = random_tensor(Shape{9, 6}, rng, 2.0f, 1.0f);
  EXPECT_TRUE(bit_equal(model.predict(x), loaded.predict(x)));

  ASSERT_TRUE(loaded.compiled());
  EXPECT_EQ(loaded.optimizer().name(), "Adam");
  EXPECT_EQ(loaded.optimizer().config(), model.optimizer().config());
  EXPECT_EQ(loaded.loss(), LossKind::sparse_categorical_crossentropy);
  EXPECT_EQ(loaded.metrics(), model.metrics());
}

// Every image layer with non-default options in both data formats, trained a few steps.
Sequential make_trained_cnn(std::uint64_t seed = 3) {
  Sequential model(seed, "cnn_roundtrip");
  model.add(Input{Shape{2, 9, 8}});
  add_layers_from_spec(
      model,
      "conv4-3x2-same:data_format=channels_first:strides=2:activation=tanh,"
      "bn:axis=1,relu,"
      "maxpool2-same:data_format=channels_first:strides=1,"
      "avgpool3x2:data_format=channels_first,"
      "conv3-1:data_format=channels_first:use_bias=0,"
      "gap:data_format=channels_first:keepdims=1,flatten:data_format=channels_first,"
      "dense3-softmax");
  model.compile(make_optimizer("adam", 0.01), LossKind::sparse_categorical_crossentropy);
  Random rng(seed + 1);
  const Tensor x = random_tensor(Shape{6, 2, 9, 8}, rng);
  const Tensor y = random_labels(6, 3, rng);
  for (int i = 0; i < 3; ++i) model.train_on_batch(x, y);
  return model;
}

TEST(Checkpoint, ConvolutionalModelRoundTripIsBitExact) {
  TempDir dir;
  Sequential model = make_trained_cnn();
  const std::string path = dir.file("cnn.bnorm");
  save_model(model, path);
  Sequential loaded = load_model(path);
  ASSERT_EQ(loaded.size(), model.size());
  for (std::size_t i = 0; i < model.size(); ++i) {
    EXPECT_EQ(loaded.layer(i).class_name(), model.layer(i).class_name());
    EXPECT_EQ(loaded.layer(i).name(), model.layer(i).name());
  }
  expect_same_weights(model, loaded);
  const auto& c = dynamic_cast<const Conv2D&>(loaded.layer(0)).options();
  EXPECT_EQ(c.data_format, "channels_first");
  EXPECT_EQ(c.kernel_size, (std::array<std::int64_t, 2>{3, 2}));
  EXPECT_EQ(c.strides, (std::array<std::int64_t, 2>{2, 2}));
  EXPECT_EQ(c.padding, "same");
  EXPECT_EQ(c.activation, "tanh");
  EXPECT_FALSE(dynamic_cast<const Conv2D&>(loaded.layer(5)).options().use_bias);
  EXPECT_EQ(dynamic_cast<const MaxPooling2D&>(loaded.layer(3)).strides(),
            (std::array<std::int64_t, 2>{1, 1}));
  EXPECT_TRUE(dynamic_cast<const GlobalAveragePooling2D&>(loaded.layer(6)).options().keepdims);
  EXPECT_EQ(dynamic_cast<const Flatten&>(loaded.layer(7)).options().data_format, "channels_first");
  Random rng(5);
  const Tensor x = random_tensor(Shape{4, 2, 9, 8}, rng);
  EXPECT_TRUE(bit_equal(model.predict(x), loaded.predict(x)));
  // The description uses Keras's names and layouts.
  const std::string bytes = read_bytes(path);
  json description;
  rewrite_description(path, [&](json& d) { description = d; });
  EXPECT_EQ(description["layers"][0]["config"]["kernel_size"], json::array({3, 2}));
  EXPECT_EQ(description["layers"][0]["weights"][0]["shape"], json::array({3, 2, 2, 4}));
  EXPECT_EQ(description["layers"][6]["class_name"], "GlobalAveragePooling2D");
  EXPECT_EQ(description["layers"][3]["config"]["strides"], json::array({1, 1}));
  save_model(loaded, dir.file("again.bnorm"));
  EXPECT_EQ(read_bytes(dir.file("again.bnorm")), bytes);
}

TEST(Checkpoint, ConvolutionalOptionsAreValidatedOnLoad) {
  TempDir dir;
  const std::string path = dir.file("cnn.bnorm");
  save_model(make_trained_cnn(), path);
  rewrite_description(path, [](json& d) { d["layers"][0]["config"]["strides"] = {0, 1}; });
  EXPECT_CONTAINS(io_error([&] { load_model(path); }), "strides must be >= 1; received 0x1");
  save_model(make_trained_cnn(), path);
  rewrite_description(path, [](json& d) { d["layers"][0]["config"]["kernel_size"] = "3"; });
  EXPECT_CONTAINS(io_error([&] { load_model(path); }),
                  "key 'kernel_size' must be a list of two non-negative integers");
  save_model(make_trained_cnn(), path);
  rewrite_description(path, [](json& d) { d["layers"][0]["config"].erase("kernel_size"); });
  EXPECT_CONTAINS(io_error([&] { load_model(path); }), "missing key 'kernel_size'");
  save_model(make_trained_cnn(), path);
  rewrite_description(path, [](json& d) { d["layers"][3]["config"]["padding"] = "full"; });
  EXPECT_CONTAINS(io_error([&] { load_model(path); }),
                  "padding must be 'valid' or 'same'; received 'full'");
}

// ZeroPadding2D, DepthwiseConv2D, SeparableConv2D and GlobalMaxPooling2D with non-default options
// in both data formats (a MobileNet-like stem), trained a few steps.
Sequential make_trained_mobile(std::uint64_t seed = 5) {
  Sequential model(seed, "mobile_roundtrip");
  model.add(Input{Shape{9, 8, 2}});
  add_layers_from_spec(model,
                       "zeropad0-1x2-0,"
                       "dwconv3-same:strides=2:depth_multiplier=2:activation=relu,"
                       "sepconv4-3-same-tanh:depth_multiplier=2:dilation_rate=1,"
                       "bn,relu,"
                       "sepconv3-2x2:use_bias=0:strides=1,"
                       "gmp:keepdims=1,flatten,dense3-softmax");
  model.compile(make_optimizer("adam", 0.01), LossKind::sparse_categorical_crossentropy);
  Random rng(seed + 1);
  const Tensor x = random_tensor(Shape{6, 9, 8, 2}, rng);
  const Tensor y = random_labels(6, 3, rng);
  for (int i = 0; i < 3; ++i) model.train_on_batch(x, y);
  return model;
}

TEST(Checkpoint, MobileLayersRoundTripIsBitExact) {
  TempDir dir;
  Sequential model = make_trained_mobile();
  const std::string path = dir.file("mobile.bnorm");
  save_model(model, path);
  Sequential loaded = load_model(path);
  ASSERT_EQ(loaded.size(), model.size());
  for (std::size_t i = 0; i < model.size(); ++i) {
    EXPECT_EQ(loaded.layer(i).class_name(), model.layer(i).class_name());
    EXPECT_EQ(loaded.layer(i).name(), model.layer(i).name());
  }
  expect_same_weights(model, loaded);
  EXPECT_EQ(dynamic_cast<const ZeroPadding2D&>(loaded.layer(0)).options().padding,
            (ZeroPadding2D::Padding{{{0, 1}, {2, 0}}}));
  const auto& dw = dynamic_cast<const DepthwiseConv2D&>(loaded.layer(1)).options();
  EXPECT_EQ(dw.kernel_size, (std::array<std::int64_t, 2>{3, 3}));
  EXPECT_EQ(dw.strides, (std::array<std::int64_t, 2>{2, 2}));
  EXPECT_EQ(dw.padding, "same");
  EXPECT_EQ(dw.depth_multiplier, 2);
  EXPECT_EQ(dw.activation, "relu");
  const auto& sep = dynamic_cast<const SeparableConv2D&>(loaded.layer(2)).options();
  EXPECT_EQ(sep.filters, 4);
  EXPECT_EQ(sep.depth_multiplier, 2);
  EXPECT_EQ(sep.activation, "tanh");
  EXPECT_FALSE(dynamic_cast<const SeparableConv2D&>(loaded.layer(5)).options().use_bias);
  EXPECT_TRUE(dynamic_cast<const GlobalMaxPooling2D&>(loaded.layer(6)).options().keepdims);
  Random rng(5);
  const Tensor x = random_tensor(Shape{4, 9, 8, 2}, rng);
  EXPECT_TRUE(bit_equal(model.predict(x), loaded.predict(x)));
  // Keras's class names, weight names and layouts.
  const std::string bytes = read_bytes(path);
  json d;
  rewrite_description(path, [&](json& doc) { d = doc; });
  EXPECT_EQ(d["layers"][0]["config"]["padding"], json::parse("[[0, 1], [2, 0]]"));
  EXPECT_EQ(d["layers"][1]["class_name"], "DepthwiseConv2D");
  EXPECT_EQ(d["layers"][1]["weights"][0]["name"], "kernel");
  EXPECT_EQ(d["layers"][1]["weights"][0]["shape"], json::array({3, 3, 2, 2}));
  EXPECT_EQ(d["layers"][1]["weights"][1]["shape"], json::array({4}));
  EXPECT_EQ(d["layers"][2]["class_name"], "SeparableConv2D");
  EXPECT_EQ(d["layers"][2]["weights"][0]["name"], "depthwise_kernel");
  EXPECT_EQ(d["layers"][2]["weights"][0]["shape"], json::array({3, 3, 4, 2}));
  EXPECT_EQ(d["layers"][2]["weights"][1]["name"], "pointwise_kernel");
  EXPECT_EQ(d["layers"][2]["weights"][1]["shape"], json::array({1, 1, 8, 4}));
  EXPECT_EQ(d["layers"][2]["weights"][2]["name"], "bias");
  EXPECT_EQ(d["layers"][6]["class_name"], "GlobalMaxPooling2D");
  save_model(loaded, dir.file("again.bnorm"));
  EXPECT_EQ(read_bytes(dir.file("again.bnorm")), bytes);
}

TEST(Checkpoint, MobileLayersChannelsFirstRoundTrip) {
  TempDir dir;
  Sequential model(9, "mobile_cf");
  model.add(Input{Shape{2, 7, 6}});
  add_layers_from_spec(model,
                       "zeropad1x2:data_format=channels_first,"
                       "dwconv3:data_format=channels_first:use_bias=0,"
                       "sepconv3-3-same:data_format=channels_first:strides=2,"
                       "gmp:data_format=channels_first,dense2-softmax");
  model.compile(make_optimizer("adam", 0.01), LossKind::sparse_categorical_crossentropy);
  Random rng(10);
  const Tensor x = random_tensor(Shape{5, 2, 7, 6}, rng);
  model.train_on_batch(x, random_labels(5, 2, rng));
  const std::string path = dir.file("cf.bnorm");
  save_model(model, path);
  Sequential loaded = load_model(path);
  expect_same_weights(model, loaded);
  EXPECT_EQ(dynamic_cast<const ZeroPadding2D&>(loaded.layer(0)).options().data_format,
            "channels_first");
  EXPECT_EQ(dynamic_cast<const GlobalMaxPooling2D&>(loaded.layer(3)).options().data_format,
            "channels_first");
  EXPECT_TRUE(bit_equal(model.predict(x), loaded.predict(x)));
}

TEST(Checkpoint, ZeroPaddingReadsEveryKerasForm) {
  TempDir dir;
  const std::string path = dir.file("pad.bnorm");
  auto padding_after_load = [&](const json& padding) {
    Sequential model(1, "pad");
    model.add(Input{Shape{3, 3, 1}});
    model.add(ZeroPadding2D());
    save_model(model, path);
    rewrite_description(path, [&](json& d) { d["layers"][0]["config"]["padding"] = padding; });
    return dynamic_cast<const ZeroPadding2D&>(load_model(path).layer(0)).options().padding;
  };
  EXPECT_EQ(padding_after_load(json(2)), (ZeroPadding2D::Padding{{{2, 2}, {2, 2}}}));
  EXPECT_EQ(padding_after_load(json::parse("[1, 3]")), (ZeroPadding2D::Padding{{{1, 1}, {3, 3}}}));
  EXPECT_EQ(padding_after_load(json::parse("[[0, 1], [2, 3]]")),
            (ZeroPadding2D::Padding{{{0, 1}, {2, 3}}}));
  for (const char* bad : {"-1", "[1]", "[[1, 2, 3], [0, 0]]", "\"same\"", "[[0, -1], [0, 0]]"}) {
    const json padding = json::parse(bad);
    EXPECT_CONTAINS(io_error([&] { padding_after_load(padding); }),
                    "key 'padding' must be a non-negative integer");
  }
}

TEST(Checkpoint, MobileLayerOptionsAreValidatedOnLoad) {
  TempDir dir;
  const std::string path = dir.file("mobile.bnorm");
  save_model(make_trained_mobile(), path);
  rewrite_description(path, [](json& d) { d["layers"][1]["config"]["depth_multiplier"] = 0; });
  EXPECT_CONTAINS(io_error([&] { load_model(path); }), "key 'depth_multiplier' = 0 is outside");
  save_model(make_trained_mobile(), path);
  rewrite_description(path, [](json& d) { d["layers"][2]["config"].erase("kernel_size"); });
  EXPECT_CONTAINS(io_error([&] { load_model(path); }), "missing key 'kernel_size'");
  save_model(make_trained_mobile(), path);
  rewrite_description(path, [](json& d) { d["layers"][2]["config"]["kernel_l2"] = 0.0; });
  EXPECT_CONTAINS(io_error([&] { load_model(path); }), "unknown key 'kernel_l2'");
  save_model(make_trained_mobile(), path);
  rewrite_description(path,
                      [](json& d) { d["layers"][1]["weights"][0]["name"] = "depthwise_kernel"; });
  EXPECT_CONTAINS(io_error([&] { load_model(path); }), "in the place of");
}

TEST(Checkpoint, SavingTwiceGivesTheSameBytes) {
  TempDir dir;
  const Sequential model = make_trained_model();
  save_model(model, dir.file("a.bnorm"));
  save_model(model, dir.file("b.bnorm"));
  EXPECT_EQ(read_bytes(dir.file("a.bnorm")), read_bytes(dir.file("b.bnorm")));
  save_model(load_model(dir.file("a.bnorm")), dir.file("c.bnorm"));
  EXPECT_EQ(read_bytes(dir.file("a.bnorm")), read_bytes(dir.file("c.bnorm")));
}

TEST(Checkpoint, RoundTripKeepsOptionsAndFrozenLayers) {
  TempDir dir;
  Sequential model(123, "options");
  model.add(Input{Shape{3, 4}});
  model.add(Flatten());
  Dense::Options dense;
  dense.units = 8;
  dense.activation = "tanh";
  dense.use_bias = false;
  dense.kernel_initializer = Initializer::random_normal(0.0f, 0.1f);
  dense.kernel_l2 = 1e-3f;
  model.add(Dense(dense));
  BatchNormalization::Options bn = BatchNormalization::pytorch_defaults();
  bn.center = false;
  bn.gamma_initializer = Initializer::constant(0.5f);
  bn.moving_variance_initializer = Initializer::random_uniform(0.5f, 1.5f);
  bn.gamma_l2 = 2e-4f;
  model.add(BatchNormalization(bn));
  model.add(Activation("sigmoid"));
  model.add(Dense(3, "softmax"));
  model.layer(2).set_trainable(false);
  model.compile(std::make_unique<SGD>(
                    SGD::Options{.learning_rate = 0.05f, .momentum = 0.9f, .nesterov = true}),
                LossKind::sparse_categorical_crossentropy);

  const std::string path = dir.file("options.bnorm");
  save_model(model, path);
  Sequential loaded = load_model(path);
  ASSERT_EQ(loaded.size(), 5u);
  EXPECT_EQ(loaded.layer(0).class_name(), "Flatten");
  const auto& d = dynamic_cast<const Dense&>(loaded.layer(1)).options();
  EXPECT_EQ(d.units, 8);
  EXPECT_EQ(d.activation, "tanh");
  EXPECT_FALSE(d.use_bias);
  EXPECT_EQ(d.kernel_initializer.kind, Initializer::Kind::random_normal);
  EXPECT_EQ(d.kernel_initializer.b, 0.1f);
  EXPECT_EQ(d.kernel_l2, 1e-3f);
  const auto& b = dynamic_cast<const BatchNormalization&>(loaded.layer(2));
  EXPECT_FALSE(b.trainable());
  EXPECT_TRUE(loaded.layer(1).trainable());
  EXPECT_FALSE(b.options().center);
  EXPECT_TRUE(b.options().scale);
  EXPECT_EQ(b.options().momentum, bn.momentum);
  EXPECT_EQ(b.options().epsilon, bn.epsilon);
  EXPECT_EQ(b.options().unbiased_moving_variance, bn.unbiased_moving_variance);
  EXPECT_EQ(b.options().error_on_single_value, bn.error_on_single_value);
  EXPECT_EQ(b.options().cumulative_moving_average, bn.cumulative_moving_average);
  EXPECT_EQ(b.options().track_moving_statistics, bn.track_moving_statistics);
  EXPECT_EQ(b.options().gamma_initializer.kind, Initializer::Kind::constant);
  EXPECT_EQ(b.options().gamma_initializer.a, 0.5f);
  EXPECT_EQ(b.options().moving_variance_initializer.kind, Initializer::Kind::random_uniform);
  EXPECT_EQ(b.options().moving_variance_initializer.b, 1.5f);
  EXPECT_EQ(b.options().gamma_l2, 2e-4f);
  EXPECT_EQ(dynamic_cast<const Activation&>(loaded.layer(3)).activation(), ActivationKind::sigmoid);
  expect_same_weights(model, loaded);
  EXPECT_EQ(loaded.count_trainable_params(), model.count_trainable_params());
  ASSERT_TRUE(loaded.compiled());
  EXPECT_EQ(loaded.optimizer().name(), "SGD");
  EXPECT_EQ(loaded.optimizer().config(), model.optimizer().config());
}

TEST(Checkpoint, UncompiledModelStaysUncompiled) {
  TempDir dir;
  Sequential model(5);
  model.add(Input{Shape{4}});
  model.add(Dense(3, "softmax"));
  model.build();
  save_model(model, dir.file("m.bnorm"));
  Sequential loaded = load_model(dir.file("m.bnorm"));
  EXPECT_FALSE(loaded.compiled());
  expect_same_weights(model, loaded);
}

TEST(Checkpoint, LoadedModelKeepsTraining) {
  TempDir dir;
  save_model(make_trained_model(), dir.file("m.bnorm"));
  Sequential loaded = load_model(dir.file("m.bnorm"));
  Random rng(3);
  const Tensor x = random_tensor(Shape{16, 6}, rng);
  const Tensor y = random_labels(16, 4, rng);
  EXPECT_TRUE(std::isfinite(loaded.train_on_batch(x, y)));
}

// --- damaged and foreign files ----------------------------------------------------------------

class DamagedFile : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("model.bnorm");
    save_model(make_trained_model(), path_);
    bytes_ = read_bytes(path_);
  }
  std::string load_error(const std::string& bytes) {
    write_bytes(path_, bytes);
    return io_error([&] { load_model(path_); });
  }
  std::string load_native_error(const std::string& bytes) {
    write_bytes(path_, bytes);
    return io_error([&] { load_native_model(path_); });
  }
  TempDir dir_;
  std::string path_;
  std::string bytes_;
};

TEST_F(DamagedFile, MissingFileIsNamed) {
  const std::string missing = dir_.file("nope.bnorm");
  const std::string message = io_error([&] { load_model(missing); });
  EXPECT_CONTAINS(message, "model file '" + missing + "'");
  EXPECT_CONTAINS(message, "cannot open");
}

TEST_F(DamagedFile, DirectoryIsNotAModel) {
  EXPECT_CONTAINS(io_error([&] { load_model(dir_.path().string()); }), "not a regular file");
}

TEST_F(DamagedFile, WrongMagic) {
  std::string bytes = bytes_;
  bytes[0] = 'X';
  // load_model reads bnorm, Keras and HDF5 files: anything else is "not a model file", a file
  // too short to tell gets the native reader's verdict, and a zip goes to the Keras reader.
  EXPECT_CONTAINS(load_error(bytes), "not a model file");
  EXPECT_CONTAINS(load_error(""), "not a bnorm model (bad magic)");
  EXPECT_CONTAINS(load_native_error(bytes), "not a bnorm model (bad magic)");
  EXPECT_CONTAINS(load_error("PK\x03\x04 a zip archive, perhaps a .keras file"), "Keras file");
}

TEST_F(DamagedFile, TruncatedAnywhere) {
  for (std::size_t size : {std::size_t{12}, std::size_t{31}, std::size_t{40}, bytes_.size() / 2,
                           bytes_.size() - 100, bytes_.size() - 1}) {
    const std::string message = load_error(bytes_.substr(0, size));
    EXPECT_CONTAINS(message, "truncated");
    EXPECT_CONTAINS(message, path_);
  }
}

TEST_F(DamagedFile, TruncatedWeightsSayHowManyBytesAreMissing) {
  // The last 4 bytes are the checksum; cut 100 bytes of weights.
  const std::string message = load_error(bytes_.substr(0, bytes_.size() - 104));
  EXPECT_CONTAINS(message, "bytes of weights");
  EXPECT_CONTAINS(message, "expected");
  EXPECT_CONTAINS(message, "found");
}

TEST_F(DamagedFile, FlippedBytesFailTheChecksum) {
  for (std::size_t at :
       {std::size_t{40}, bytes_.size() / 2, bytes_.size() - 10, bytes_.size() - 2}) {
    std::string bytes = bytes_;
    bytes[at] = static_cast<char>(bytes[at] ^ 0x10);
    EXPECT_CONTAINS(load_error(bytes), "checksum mismatch");
  }
}

TEST_F(DamagedFile, TrailingBytes) {
  EXPECT_CONTAINS(load_error(bytes_ + "junk"), "4 unexpected bytes after the checksum");
}

TEST_F(DamagedFile, NewerFormatVersion) {
  std::string bytes = bytes_;
  bytes[8] = 2;
  EXPECT_CONTAINS(load_error(bytes), "format version 2 is not supported");
}

TEST_F(DamagedFile, UnknownLayerClassIsNeverInstantiated) {
  for (const char* cls : {"Conv9", "Lambda"}) {
    rewrite_description(path_, [&](json& doc) { doc["layers"][1]["class_name"] = cls; });
    const std::string message = io_error([&] { load_model(path_); });
    EXPECT_CONTAINS(message, std::string("unknown layer class '") + cls + "'");
    EXPECT_CONTAINS(message, "BatchNormalization");  // the list of known classes
    write_bytes(path_, bytes_);
  }
}

TEST_F(DamagedFile, NonFiniteOrNegativeVarianceWeightsAreRefused) {
  // A well-formed file (valid checksum) whose weights would poison every output.
  for (const float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), -1.0f}) {
    Sequential model = make_trained_model();
    auto weights = model.get_weights();
    std::size_t target = 0;  // the first moving_variance
    std::size_t k = 0;
    for (std::size_t i = 0; i < model.size(); ++i)
      for (const Variable* v : model.layer(i).weights()) {
        if (v->name == "moving_variance" && target == 0) target = k;
        ++k;
      }
    ASSERT_GT(target, 0u);
    weights[target][0] = bad;
    model.set_weights(weights);
    save_model(model, path_);
    const std::string message = io_error([&] { load_model(path_); });
    EXPECT_CONTAINS(message, "moving_variance");
    EXPECT_CONTAINS(message, bad < 0 ? "negative" : "NaN or Inf");
  }
}

TEST_F(DamagedFile, WeightShapeMismatchNamesTheWeight) {
  std::string layer;
  rewrite_description(path_, [&](json& doc) {
    layer = doc["layers"][0]["name"].get<std::string>();
    doc["layers"][0]["config"]["units"] = 13;  // the file's kernel is (6, 12)
  });
  const std::string message = io_error([&] { load_model(path_); });
  EXPECT_CONTAINS(message, "weight '" + layer +
                               "/kernel' has shape (6, 12) in the file; the "
                               "architecture needs (6, 13)");
}

TEST_F(DamagedFile, WeightManifestMustMatchTheArchitecture) {
  rewrite_description(path_, [](json& doc) { doc["layers"][1]["weights"][0]["name"] = "beta"; });
  EXPECT_CONTAINS(io_error([&] { load_model(path_); }), "in the place of");
  write_bytes(path_, bytes_);
  rewrite_description(path_, [](json& doc) { doc["layers"][1]["weights"][1]["offset"] = 0; });
  EXPECT_CONTAINS(io_error([&] { load_model(path_); }), "starts at byte 0");
  write_bytes(path_, bytes_);
  rewrite_description(path_, [](json& doc) { doc["layers"][1]["weights"].erase(3); });
  EXPECT_CONTAINS(io_error([&] { load_model(path_); }), "has 3 weights in the file");
}

TEST_F(DamagedFile, InvalidLayerOptionsAreReported) {
  rewrite_description(path_, [](json& doc) { doc["layers"][1]["config"]["momentum"] = 2.0; });
  EXPECT_CONTAINS(io_error([&] { load_model(path_); }), "momentum");
  write_bytes(path_, bytes_);
  rewrite_description(path_, [](json& doc) { doc["layers"][1]["config"]["epsilon"] = -1.0; });
  EXPECT_CONTAINS(io_error([&] { load_model(path_); }), "epsilon");
  write_bytes(path_, bytes_);
  rewrite_description(path_, [](json& doc) { doc["layers"][1]["config"]["momentum"] = "high"; });
  EXPECT_CONTAINS(io_error([&] { load_model(path_); }), "key 'momentum' must be a number");
  write_bytes(path_, bytes_);
  rewrite_description(path_, [](json& doc) { doc["layers"][0]["config"]["code"] = "import os"; });
  EXPECT_CONTAINS(io_error([&] { load_model(path_); }), "unknown key 'code'");
}

TEST_F(DamagedFile, MalformedDescription) {
  rewrite_description(path_, [](json& doc) { doc.erase("layers"); });
  EXPECT_CONTAINS(io_error([&] { load_model(path_); }), "missing key 'layers'");
  write_bytes(path_, bytes_);
  rewrite_description(path_, [](json& doc) { doc["model"]["seed"] = -4; });
  EXPECT_CONTAINS(io_error([&] { load_model(path_); }), "seed");
  write_bytes(path_, bytes_);
  rewrite_description(path_, [](json& doc) { doc["compile"]["optimizer"]["name"] = "Adamax9"; });
  EXPECT_CONTAINS(io_error([&] { load_model(path_); }), "compile settings");
}

// --- atomic saves -----------------------------------------------------------------------------

std::vector<std::string> directory_listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(AtomicSave, ReplacesTheFileAndLeavesNoTemporaries) {
  TempDir dir;
  const std::string path = dir.file("m.bnorm");
  save_model(make_trained_model(1), path);
  save_model(make_trained_model(2), path);
  EXPECT_EQ(directory_listing(dir.path()), std::vector<std::string>{"m.bnorm"});
  EXPECT_EQ(load_model(path).seed(), 2u);
}

TEST(AtomicSave, FailedSaveLeavesThePreviousFileIntact) {
  TempDir dir;
  const std::string path = dir.file("m.bnorm");
  save_model(make_trained_model(1), path);
  const std::string before = read_bytes(path);
  // Occupy the temporary file's name with a directory: the save cannot even start writing.
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  fs::create_directory(tmp);
  const std::string message = io_error([&] { save_model(make_trained_model(2), path); });
  EXPECT_CONTAINS(message, path);
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(load_model(path).seed(), 1u);
  fs::remove(tmp);
}

TEST(AtomicSave, PathIsADirectory) {
  TempDir dir;
  const fs::path target = dir.path() / "taken";
  fs::create_directory(target);
  write_bytes((target / "keep.txt").string(), "keep");
  EXPECT_CONTAINS(io_error([&] { save_model(make_trained_model(), target.string()); }),
                  "is a directory");
  EXPECT_EQ(read_bytes((target / "keep.txt").string()), "keep");
  EXPECT_EQ(directory_listing(dir.path()), std::vector<std::string>{"taken"});
}

TEST(AtomicSave, MissingDirectory) {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/m.bnorm");
  const std::string message = io_error([&] { save_model(make_trained_model(), path); });
  EXPECT_CONTAINS(message, path);
  EXPECT_CONTAINS(message, "No such file or directory");
}

TEST(AtomicSave, ReadOnlyDirectoryLeavesThePreviousFileIntact) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  TempDir dir;
  const std::string path = dir.file("m.bnorm");
  save_model(make_trained_model(1), path);
  const std::string before = read_bytes(path);
  fs::permissions(dir.path(), fs::perms::owner_read | fs::perms::owner_exec);
  EXPECT_CONTAINS(io_error([&] { save_model(make_trained_model(2), path); }), "Permission denied");
  fs::permissions(dir.path(), fs::perms::owner_all);
  EXPECT_EQ(read_bytes(path), before);
}

// --- ModelCheckpoint --------------------------------------------------------------------------

// Poisons the last layer's kernel at the start of `epoch`, so the next step's loss is NaN.
class PoisonAtEpoch final : public Callback {
 public:
  explicit PoisonAtEpoch(int epoch) : epoch_(epoch) {}
  void on_epoch_begin(Model& model, int epoch) override {
    if (epoch == epoch_) {
      model.layer(model.size() - 1).weights()[0]->value[0] =
          std::numeric_limits<float>::quiet_NaN();
    }
  }
  void on_epoch_end(Model& model, int, const Logs&) override { last_good = model.get_weights(); }
  std::vector<Tensor> last_good;

 private:
  int epoch_;
};

TEST(ModelCheckpointTest, NonFiniteLossKeepsTheLastGoodCheckpoint) {
  TempDir dir;
  const std::string path = dir.file("ckpt.bnorm");
  Sequential model = make_trained_model();
  Random rng(11);
  const Tensor x = random_tensor(Shape{64, 6}, rng);
  const Tensor y = random_labels(64, 4, rng);
  ModelCheckpoint checkpoint(path);
  PoisonAtEpoch poison(1);
  FitOptions options;
  options.batch_size = 16;
  options.epochs = 3;
  options.callbacks = {&checkpoint, &poison};
  try {
    model.fit(x, y, options);
    FAIL() << "fit did not stop on a NaN loss";
  } catch (const NonFiniteError& e) {
    EXPECT_CONTAINS(e.what(), "epoch");
    EXPECT_CONTAINS(e.what(), "step");
  }
  ASSERT_EQ(poison.last_good.size(), model.get_weights().size());
  const Sequential saved = load_model(path);
  const auto weights = saved.get_weights();
  ASSERT_EQ(weights.size(), poison.last_good.size());
  for (std::size_t i = 0; i < weights.size(); ++i) {
    EXPECT_TRUE(bit_equal(weights[i], poison.last_good[i])) << "weight " << i;
    EXPECT_TRUE(weights[i].all_finite());
  }
}

TEST(ModelCheckpointTest, WritesAfterEveryEpoch) {
  TempDir dir;
  const std::string path = dir.file("ckpt.bnorm");
  Sequential model = make_trained_model();
  Random rng(12);
  const Tensor x = random_tensor(Shape{32, 6}, rng);
  const Tensor y = random_labels(32, 4, rng);
  ModelCheckpoint checkpoint(path);
  FitOptions options;
  options.batch_size = 8;
  options.epochs = 2;
  options.callbacks = {&checkpoint};
  model.fit(x, y, options);
  expect_same_weights(model, load_model(path));
}

}  // namespace
}  // namespace bnorm::io

namespace bnorm::io {
namespace {

// Every elementwise and shape layer, Dropout's noise_shape/seed, the new activations and a
// one-element BN axis list: saved and loaded with the same options, weights and predictions.
TEST(Checkpoint, ElementwiseLayersRoundTrip) {
  TempDir dir;
  Sequential model(5, "elementwise");
  model.add(Input{Shape{12}});
  model.add(Rescaling(Rescaling::Options{.scale = {0.5f}, .offset = {-1.0f}}));
  Normalization& norm = model.add(Normalization());
  model.add(Reshape({2, -1}));
  model.add(Rescaling(Rescaling::Options{.scale = std::vector<float>(6, 2.0f), .offset = {0.0f}}));
  model.add(Dense(6, "gelu"));
  model.add(ReLU(ReLU::Options{4.0f, 0.1f, 0.2f}));
  Dropout::Options d;
  d.rate = 0.2f;
  d.noise_shape = {std::nullopt, 1, std::nullopt};
  d.seed = 99;
  model.add(Dropout(d));
  model.add(BatchNormalization(BatchNormalization::with_axis({2})));
  model.add(Activation("hard_swish"));
  model.add(Identity());
  model.add(Normalization(
      Normalization::Options{.axis = {-1}, .mean = {0.5f}, .variance = {2.0f}, .invert = true}));
  model.add(Flatten());
  model.add(Dense(3, "softmax"));
  Random rng(6);
  const Tensor x = random_tensor(Shape{20, 12}, rng, 3.0f, 1.0f);
  norm.adapt(x);  // weights mean/variance/count set before the model is built
  model.build(Shape{12});
  model.compile(make_optimizer("adam", 0.01), LossKind::sparse_categorical_crossentropy);
  const Tensor y = random_labels(20, 3, rng);
  for (int i = 0; i < 3; ++i) model.train_on_batch(x, y);

  const std::string path = dir.file("elementwise.bnorm");
  save_model(model, path);
  Sequential loaded = load_model(path);
  ASSERT_EQ(loaded.size(), model.size());
  for (std::size_t i = 0; i < model.size(); ++i)
    EXPECT_EQ(loaded.layer(i).class_name(), model.layer(i).class_name()) << i;
  expect_same_weights(model, loaded);
  EXPECT_TRUE(bit_equal(loaded.predict(x), model.predict(x)));
  const auto& r = dynamic_cast<const ReLU&>(loaded.layer(5)).options();
  EXPECT_EQ(r.max_value, 4.0f);
  EXPECT_EQ(r.negative_slope, 0.1f);
  EXPECT_EQ(r.threshold, 0.2f);
  const auto& lo = dynamic_cast<const Dropout&>(loaded.layer(6)).options();
  EXPECT_EQ(lo.noise_shape, d.noise_shape);
  EXPECT_EQ(lo.seed, d.seed);
  EXPECT_EQ(dynamic_cast<const Reshape&>(loaded.layer(2)).target_shape(),
            (std::vector<std::int64_t>{2, -1}));
  EXPECT_EQ(dynamic_cast<const Rescaling&>(loaded.layer(3)).options().scale.size(), 6u);
  EXPECT_EQ(dynamic_cast<const BatchNormalization&>(loaded.layer(7)).options().axis, 2);
  EXPECT_EQ(dynamic_cast<const Activation&>(loaded.layer(8)).activation(),
            ActivationKind::hard_silu);
  const auto& no = dynamic_cast<const Normalization&>(loaded.layer(10)).options();
  EXPECT_TRUE(no.invert);
  EXPECT_EQ(no.mean, std::vector<float>{0.5f});
  EXPECT_EQ(loaded.layer(1).weights().size(), 3u);
  // Saving the loaded model gives the same bytes.
  save_model(loaded, dir.file("again.bnorm"));
  EXPECT_EQ(read_bytes(path), read_bytes(dir.file("again.bnorm")));
}

// Keras configs carry lists where bnorm has one value: BN axis [3] is read, [1, 2] refused;
// a negative Normalization variance weight is refused like a negative moving_variance.
TEST(Checkpoint, KerasListFormsAndBadNormalizationWeights) {
  TempDir dir;
  const std::string path = dir.file("m.bnorm");
  auto make = [] {
    Sequential m(1, "lists");
    m.add(Input{Shape{2, 3}});
    m.add(BatchNormalization());
    m.add(Normalization());
    m.build(Shape{2, 3});
    return m;
  };
  save_model(make(), path);
  rewrite_description(path, [](json& doc) { doc["layers"][0]["config"]["axis"] = {2}; });
  EXPECT_EQ(dynamic_cast<const BatchNormalization&>(load_model(path).layer(0)).options().axis, 2);
  save_model(make(), path);
  rewrite_description(path, [](json& doc) { doc["layers"][0]["config"]["axis"] = {1, 2}; });
  EXPECT_CONTAINS(io_error([&] { load_model(path); }), "list of one");
  save_model(make(), path);
  rewrite_description(path, [](json& doc) { doc["layers"][1]["config"]["axis"] = -1; });
  EXPECT_EQ(dynamic_cast<const Normalization&>(load_model(path).layer(1)).options().axis,
            std::vector<int>{-1});
  Sequential bad = make();
  bad.layer(1).weights()[1]->value[0] = -1.0f;
  save_model(bad, path);
  EXPECT_CONTAINS(io_error([&] { load_model(path); }), "negative value");
}

}  // namespace
}  // namespace bnorm::io
