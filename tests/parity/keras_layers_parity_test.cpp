// Keras 3 layers (TensorFlow backend) vs bnorm's, one layer per case, from the committed
// keras_layers fixtures: ZeroPadding2D, DepthwiseConv2D, SeparableConv2D, GlobalMaxPooling2D,
// GlobalAveragePooling2D(keepdims), ReLU, Activation (silu/swish, gelu, hard_sigmoid,
// hard_silu/hard_swish, elu, leaky_relu, relu6), Reshape, Rescaling, Normalization (fixed and
// adapted statistics), Identity, Dropout (inference), BatchNormalization over axis 3 and the merge
// layers (Add, Subtract, Multiply with broadcasting, Average, Concatenate). Each case checks the
// forward output y and the gradients of sum(y * r) with respect to every input and every
// trainable weight, through the graph interface of Layer (build_inputs / forward_inputs /
// backward_inputs), which single-input layers implement through build / forward / backward.
#include <gtest/gtest.h>

#include <cctype>
#include <map>
#include <memory>
#include <optional>

#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/depthwise_conv2d.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/layers/elementwise.hpp"
#include "bnorm/layers/merge.hpp"
#include "bnorm/layers/normalization.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/layers/reshape.hpp"
#include "bnorm/layers/separable_conv2d.hpp"
#include "bnorm/layers/zero_padding2d.hpp"
#include "fixture.hpp"
#include "tolerances.hpp"

namespace bnorm::parity {
namespace {

std::string test_name(const std::string& c) {
  std::string n = c;
  for (auto& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

Shape per_sample(const nlohmann::json& full_shape) {
  const auto dims = full_shape.get<std::vector<std::int64_t>>();
  return Shape(std::vector<std::int64_t>(dims.begin() + 1, dims.end()));
}

// A Keras scalar-or-list argument as a list of floats.
std::vector<float> floats(const nlohmann::json& j) {
  if (j.is_array()) return j.get<std::vector<float>>();
  return {j.get<float>()};
}

// The bnorm layer for a case: `k` is Keras's get_config() (normalized arguments), `args` the
// arguments as the generator passed them.
std::shared_ptr<Layer> make_layer(const std::string& cls, const nlohmann::json& k,
                                  const nlohmann::json& args) {
  if (cls == "ZeroPadding2D") {
    ZeroPadding2D::Options o;
    const auto p = k.at("padding").get<std::vector<std::vector<std::int64_t>>>();
    o.padding = {{{p.at(0).at(0), p.at(0).at(1)}, {p.at(1).at(0), p.at(1).at(1)}}};
    o.data_format = k.at("data_format").get<std::string>();
    return std::make_shared<ZeroPadding2D>(o);
  }
  if (cls == "DepthwiseConv2D") {
    DepthwiseConv2D::Options o;
    o.kernel_size = keras_pair(k.at("kernel_size"));
    o.strides = keras_pair(k.at("strides"));
    o.padding = k.at("padding").get<std::string>();
    o.depth_multiplier = k.at("depth_multiplier").get<std::int64_t>();
    o.data_format = k.at("data_format").get<std::string>();
    o.dilation_rate = keras_pair(k.at("dilation_rate"));
    o.activation = k.at("activation").get<std::string>();
    o.use_bias = k.at("use_bias").get<bool>();
    return std::make_shared<DepthwiseConv2D>(o);
  }
  if (cls == "SeparableConv2D") {
    SeparableConv2D::Options o;
    o.filters = k.at("filters").get<std::int64_t>();
    o.kernel_size = keras_pair(k.at("kernel_size"));
    o.strides = keras_pair(k.at("strides"));
    o.padding = k.at("padding").get<std::string>();
    o.depth_multiplier = k.at("depth_multiplier").get<std::int64_t>();
    o.data_format = k.at("data_format").get<std::string>();
    o.dilation_rate = keras_pair(k.at("dilation_rate"));
    o.activation = k.at("activation").get<std::string>();
    o.use_bias = k.at("use_bias").get<bool>();
    return std::make_shared<SeparableConv2D>(o);
  }
  if (cls == "GlobalMaxPooling2D") {
    GlobalMaxPooling2D::Options o;
    o.data_format = k.at("data_format").get<std::string>();
    o.keepdims = k.at("keepdims").get<bool>();
    return std::make_shared<GlobalMaxPooling2D>(o);
  }
  if (cls == "GlobalAveragePooling2D") {
    GlobalAveragePooling2D::Options o;
    o.data_format = k.at("data_format").get<std::string>();
    o.keepdims = k.at("keepdims").get<bool>();
    return std::make_shared<GlobalAveragePooling2D>(o);
  }
  if (cls == "ReLU") {
    ReLU::Options o;
    if (!k.at("max_value").is_null()) o.max_value = k.at("max_value").get<float>();
    o.negative_slope = k.at("negative_slope").get<float>();
    o.threshold = k.at("threshold").get<float>();
    return std::make_shared<ReLU>(o);
  }
  // As passed ("swish", "hard_swish"): Keras's config already shows the canonical name.
  if (cls == "Activation") return std::make_shared<Activation>(args.at("activation"));
  if (cls == "Reshape")
    return std::make_shared<Reshape>(k.at("target_shape").get<std::vector<std::int64_t>>());
  if (cls == "Rescaling") {
    Rescaling::Options o;
    o.scale = floats(k.at("scale"));
    o.offset = floats(k.at("offset"));
    return std::make_shared<Rescaling>(o);
  }
  if (cls == "Normalization") {
    Normalization::Options o;
    o.axis = k.at("axis").get<std::vector<int>>();  // [] is Keras's axis=None
    if (!k.at("mean").is_null()) {
      o.mean = floats(k.at("mean"));
      o.variance = floats(k.at("variance"));
    }
    o.invert = k.at("invert").get<bool>();
    return std::make_shared<Normalization>(o);
  }
  if (cls == "Identity") return std::make_shared<Identity>();
  if (cls == "Dropout") {
    Dropout::Options o;
    o.rate = k.at("rate").get<float>();
    if (!k.at("noise_shape").is_null())
      for (const auto& d : k.at("noise_shape"))
        o.noise_shape.push_back(d.is_null() ? std::nullopt
                                            : std::optional<std::int64_t>(d.get<std::int64_t>()));
    return std::make_shared<Dropout>(o);
  }
  if (cls == "BatchNormalization") {
    // Keras 3 takes axis=3; bnorm's list form (Keras 2's axis=[3]) is what is under test.
    BatchNormalization::Options o;
    o.momentum = k.at("momentum").get<double>();
    o.epsilon = k.at("epsilon").get<float>();
    o.center = k.at("center").get<bool>();
    o.scale = k.at("scale").get<bool>();
    return std::make_shared<BatchNormalization>(
        BatchNormalization::with_axis({k.at("axis").get<int>()}, o));
  }
  if (cls == "Add") return std::make_shared<Add>();
  if (cls == "Subtract") return std::make_shared<Subtract>();
  if (cls == "Multiply") return std::make_shared<Multiply>();
  if (cls == "Average") return std::make_shared<Average>();
  if (cls == "Concatenate") return std::make_shared<Concatenate>(k.at("axis").get<int>());
  throw std::runtime_error("no bnorm layer for Keras class " + cls);
}

// Differences between bnorm and Keras found by these fixtures: case -> reason. Such a case still
// runs (its errors are printed) but is skipped rather than failed.
const std::map<std::string, std::string>& known_differences() {
  static const std::map<std::string, std::string> m = {
  };
  return m;
}

// Per quantity: long sums (a convolution over its window and the batch, a global average, a
// batch-norm reduction, a broadcast input's summed gradient) get kGradientTol; everything else
// is one or two float32 operations per value and gets kForwardTol.
bool sums_over_values(const std::string& cls) {
  return cls == "DepthwiseConv2D" || cls == "SeparableConv2D" || cls == "BatchNormalization" ||
         cls == "GlobalAveragePooling2D" || cls == "Multiply" || cls == "Average";
}

class KerasLayers : public ::testing::TestWithParam<std::string> {};

TEST_P(KerasLayers, ForwardAndGradientsMatchKeras) {
  const Fixture fx(fixtures_root() / "keras_layers" / GetParam());
  const auto& c = fx.config();
  const std::string cls = c.at("class_name").get<std::string>();
  const auto& kc = c.at("keras_config");
  std::shared_ptr<Layer> layer = make_layer(cls, kc, c.at("args"));

  std::vector<Shape> shapes;
  for (const auto& s : c.at("input_shapes")) shapes.push_back(per_sample(s));
  const bool multi = shapes.size() > 1;
  std::vector<Tensor> xs;
  for (std::size_t i = 0; i < shapes.size(); ++i)
    xs.push_back(fx.tensor(multi ? "x" + std::to_string(i) : "x"));

  Random rng(0);
  if (fx.has("adapt_data")) {
    auto& norm = dynamic_cast<Normalization&>(*layer);
    norm.adapt(fx.tensor("adapt_data"));
  } else {
    layer->build_inputs(shapes, rng);
  }
  EXPECT_EQ(layer->output_shape_for(shapes), per_sample(c.at("output_shape"))) << fx.name();

  // Weights: same names in the same (Keras) order; values from the fixture, except what adapt
  // computed, which is compared instead.
  const auto weights = layer->weights();
  std::vector<std::string> names;
  for (const Variable* v : weights) names.push_back(v->name);
  EXPECT_EQ(names, c.at("weight_names").get<std::vector<std::string>>()) << fx.name();
  for (Variable* v : weights) {
    if (!fx.has(v->name)) continue;
    if (fx.has("adapt_data")) {
      const auto e = compare(v->value, fx.array(v->name), kRelFloor);
      report(fx.name(), "adapted_" + v->name, e);
      EXPECT_LE(e.max_rel, kForwardTol) << fx.name() << " adapted " << v->name;
      continue;
    }
    ASSERT_EQ(v->value.shape().dims(), fx.array(v->name).shape) << fx.name() << " " << v->name;
    v->value = fx.tensor(v->name);
  }

  const Mode mode = c.at("training").get<bool>() ? Mode::training : Mode::inference;
  std::vector<const Tensor*> x_ptrs;
  for (const Tensor& x : xs) x_ptrs.push_back(&x);
  const Tensor& y = layer->forward_inputs(x_ptrs, mode);
  ASSERT_EQ(y.shape().dims(), fx.array("y").shape) << fx.name();

  const double grad_tol = sums_over_values(cls) ? kGradientTol : kForwardTol;
  double worst = 0.0;  // largest error relative to its tolerance
  auto check = [&](const std::string& quantity, const Tensor& actual, double tol) {
    const auto e = compare(actual, fx.array(quantity), kRelFloor);
    report(fx.name(), quantity, e);
    worst = std::max(worst, e.max_rel / tol);
    return e.max_rel <= tol;
  };
  std::vector<std::string> failed;
  if (!check("y", y, kForwardTol)) failed.push_back("y");

  const Tensor r = fx.tensor("r");
  std::unique_ptr<bool[]> need_arr(new bool[xs.size()]);
  for (std::size_t i = 0; i < xs.size(); ++i) need_arr[i] = true;
  std::vector<const Tensor*> dxs(xs.size(), nullptr);
  layer->backward_inputs(r, std::span<const bool>(need_arr.get(), xs.size()), dxs);
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const std::string q = multi ? "dx" + std::to_string(i) : "dx";
    ASSERT_NE(dxs[i], nullptr) << fx.name() << " " << q;
    if (!check(q, *dxs[i], grad_tol)) failed.push_back(q);
  }
  for (const auto& n : c.at("trainable_weight_names")) {
    const std::string wn = n.get<std::string>();
    const auto it = std::find_if(weights.begin(), weights.end(),
                                 [&](const Variable* v) { return v->name == wn; });
    ASSERT_NE(it, weights.end()) << fx.name() << " " << wn;
    if (!check("d_" + wn, (*it)->gradient, kGradientTol)) failed.push_back("d_" + wn);
  }
  if (fx.has("moving_mean_after")) {
    // One training call moved the statistics: a single float32 update.
    for (const std::string s : {"moving_mean", "moving_variance"}) {
      const auto it = std::find_if(weights.begin(), weights.end(),
                                   [&](const Variable* v) { return v->name == s; });
      ASSERT_NE(it, weights.end());
      if (!check(s + "_after", (*it)->value, kForwardTol)) failed.push_back(s + "_after");
    }
  }

  const auto known = known_differences().find(GetParam());
  if (known != known_differences().end()) {
    EXPECT_FALSE(failed.empty()) << fx.name() << " now matches Keras: drop it from "
                                 << "known_differences";
    GTEST_SKIP() << known->second;
  }
  for (const auto& q : failed) ADD_FAILURE() << fx.name() << " " << q << " differs from Keras";
  RecordProperty("worst_error_over_tolerance", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KerasLayers, ::testing::ValuesIn(list_cases("keras_layers")),
                         [](const auto& info) { return test_name(info.param); });

// Dropout's training masks are random draws that bnorm does not reproduce bit for bit; the
// fixture records how Keras shapes them. bnorm must share a noise_shape=(None, 1, 1, C) mask
// over H and W, zero or keep each (sample, channel) whole and scale kept values by 1/(1-rate).
TEST(KerasLayersDropout, TrainingMaskHasKerasStructure) {
  const Fixture fx(fixtures_root() / "keras_layers" / "dropout_noise_shape");
  const auto& c = fx.config();
  auto layer = make_layer("Dropout", c.at("keras_config"), c.at("args"));
  Random rng(7);
  const Shape s = per_sample(c.at("input_shapes").at(0));
  layer->build(s, rng);
  const Tensor x = fx.tensor("x");
  const Tensor& y = layer->forward(x, Mode::training);
  const double scale = fx.meta().at("observations").at("training_kept_values_scaled_by");
  ASSERT_TRUE(fx.meta().at("observations").at("training_mask_shared_over_h_w").get<bool>());
  const std::int64_t n = x.shape()[0], h = s[0], w = s[1], ch = s[2];
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t k = 0; k < ch; ++k) {
      const std::int64_t first = ((b * h) * w) * ch + k;
      const bool kept = y[first] != 0.0f || x[first] == 0.0f;
      for (std::int64_t i = 0; i < h * w; ++i) {
        const std::int64_t at = (b * h * w + i) * ch + k;
        EXPECT_NEAR(y[at], kept ? x[at] * scale : 0.0, 1e-6) << b << " " << k << " " << i;
      }
    }
}

TEST(KerasLayersFixtures, AllLayersPresent) {
  // Guards against an empty fixture directory turning the suite into a no-op.
  std::map<std::string, int> per_class;
  for (const auto& c : list_cases("keras_layers"))
    ++per_class[Fixture(fixtures_root() / "keras_layers" / c).config().at("class_name")];
  for (const char* cls :
       {"ZeroPadding2D", "DepthwiseConv2D", "SeparableConv2D", "GlobalMaxPooling2D",
        "GlobalAveragePooling2D", "ReLU", "Activation", "Reshape", "Rescaling", "Normalization",
        "Identity", "Dropout", "BatchNormalization", "Add", "Subtract", "Multiply", "Average",
        "Concatenate"})
    EXPECT_GE(per_class[cls], 1) << cls;
  EXPECT_GE(list_cases("keras_layers").size(), 50u);
}

}  // namespace
}  // namespace bnorm::parity
