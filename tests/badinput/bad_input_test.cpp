// The bad-input matrix (issue 3, item 4; docs/bad-inputs.md): every input class that broke
// TensorFlow's or PyTorch's batch-norm kernels, at every entry point where it can occur — the
// validated functional API (batch_norm_ops.hpp) and the BatchNormalization layer — must raise
// one exception of the documented type whose one-line message names the argument and the
// received value; no crash, no sanitizer finding, no silent NaN, no touched moving statistics.
//
// Each row takes a valid set of inputs, breaks exactly one thing and calls one entry point.
// The positive control runs the same entry point on the unbroken inputs, so a row cannot pass
// by throwing for some other reason. Further controls check that the functional API and the
// layer compute the same bits.
#include <gtest/gtest.h>

#include <cctype>
#include <climits>
#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/batch_norm_ops.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/model/sequential.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kMax = std::numeric_limits<float>::max();
constexpr std::int64_t kN = 8, kC = 64;

// ---------------------------------------------------------------------------------------------
// Inputs shared by every entry point. The layer uses scale/offset/mean/variance as its gamma,
// beta, moving_mean and moving_variance (through Sequential::set_weights);
// batch_norm_update_moving updates mean/variance (as moving_mean/moving_variance) with
// batch_mean/batch_variance.

struct Inputs {
  Tensor x, dy, mean, variance, scale, offset, batch_mean, batch_variance;
  bool use_scale = true, use_offset = true, batch_statistics = true;
  BatchNormalization::Options options;  // axis, epsilon, momentum for every entry point
  Shape per_sample{kC};                 // the layer's build shape
};

Inputs good_inputs() {
  Random rng(2024);
  Inputs in;
  in.x = test::random_normal(Shape{kN, kC}, rng, 0.5f, 2.0f);
  in.dy = test::random_normal(Shape{kN, kC}, rng);
  in.mean = test::random_uniform(Shape{kC}, rng, -0.5f, 0.5f);
  in.variance = test::random_uniform(Shape{kC}, rng, 0.5f, 1.5f);
  in.scale = test::random_uniform(Shape{kC}, rng, 0.5f, 2.0f);
  in.offset = test::random_uniform(Shape{kC}, rng, -1.0f, 1.0f);
  in.batch_mean = test::random_uniform(Shape{kC}, rng, -1.0f, 1.0f);
  in.batch_variance = test::random_uniform(Shape{kC}, rng, 0.1f, 4.0f);
  return in;
}

enum class Entry {
  moments,
  inference,
  training,
  update_moving,
  backward,
  layer_build,     // BatchNormalization(options) + build(per_sample)
  layer_training,  // Sequential + set_weights + forward(x, training)
  layer_inference,
  layer_backward,  // ... + forward(x, training) + backward(dy)
};

const char* entry_name(Entry e) {
  switch (e) {
    case Entry::moments:
      return "batch_norm_moments";
    case Entry::inference:
      return "batch_norm_inference";
    case Entry::training:
      return "batch_norm_training";
    case Entry::update_moving:
      return "batch_norm_update_moving";
    case Entry::backward:
      return "batch_norm_backward";
    case Entry::layer_build:
      return "Layer_build";
    case Entry::layer_training:
      return "Layer_forward_training";
    case Entry::layer_inference:
      return "Layer_forward_inference";
    case Entry::layer_backward:
      return "Layer_backward";
  }
  return "?";
}

// Runs one entry point. Where the call owns state (moving statistics), an exception must leave
// that state bit-identical: checked here, then the exception is rethrown.
void run(Entry e, Inputs& in) {
  const float eps = in.options.epsilon;
  const int axis = in.options.axis;
  const Tensor* scale = in.use_scale ? &in.scale : nullptr;
  const Tensor* offset = in.use_offset ? &in.offset : nullptr;
  switch (e) {
    case Entry::moments:
      (void)batch_norm_moments(in.x, axis);
      return;
    case Entry::inference:
      (void)batch_norm_inference(in.x, in.mean, in.variance, scale, offset, eps, axis);
      return;
    case Entry::training:
      (void)batch_norm_training(in.x, scale, offset, eps, axis);
      return;
    case Entry::update_moving: {
      const Tensor moving_mean = in.mean, moving_variance = in.variance;
      try {
        batch_norm_update_moving(in.mean, in.variance, in.batch_mean, in.batch_variance,
                                 in.options.momentum);
      } catch (...) {
        EXPECT_TRUE(test::bitwise_equal(in.mean, moving_mean)) << "moving_mean was touched";
        EXPECT_TRUE(test::bitwise_equal(in.variance, moving_variance))
            << "moving_variance was touched";
        throw;
      }
      return;
    }
    case Entry::backward:
      (void)batch_norm_backward(in.x, in.dy, in.mean, in.variance, scale, eps, in.batch_statistics,
                                axis);
      return;
    case Entry::layer_build: {
      BatchNormalization bn(in.options);
      Random rng(1);
      bn.build(in.per_sample, rng);
      return;
    }
    case Entry::layer_training:
    case Entry::layer_inference:
    case Entry::layer_backward: {
      Sequential model(1);
      model.add(Input{in.per_sample});
      auto& bn = model.add(BatchNormalization(in.options));
      model.set_weights({in.scale, in.offset, in.mean, in.variance});
      const auto guarded = [&](const std::function<void()>& call) {
        const auto before = model.get_weights();
        const auto tracked = bn.num_batches_tracked();
        try {
          call();
        } catch (...) {
          const auto after = model.get_weights();
          for (std::size_t i = 0; i < before.size(); ++i)
            EXPECT_TRUE(test::bitwise_equal(after[i], before[i])) << "weight " << i << " touched";
          EXPECT_EQ(bn.num_batches_tracked(), tracked);
          throw;
        }
      };
      const Mode mode = e == Entry::layer_inference ? Mode::inference : Mode::training;
      guarded([&] { bn.forward(in.x, mode); });
      if (e == Entry::layer_backward) guarded([&] { bn.backward(in.dy); });
      return;
    }
  }
}

enum class Kind { shape, value, non_finite, other };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::shape:
      return "ShapeError";
    case Kind::value:
      return "ValueError";
    case Kind::non_finite:
      return "NonFiniteError";
    case Kind::other:
      return "another exception";
  }
  return "?";
}

// The most derived type of the hierarchy (NonFiniteError is a ValueError).
Kind kind_of(const std::exception& e) {
  if (dynamic_cast<const NonFiniteError*>(&e)) return Kind::non_finite;
  if (dynamic_cast<const ValueError*>(&e)) return Kind::value;
  if (dynamic_cast<const ShapeError*>(&e)) return Kind::shape;
  return Kind::other;
}

// One row of the matrix: an input class (with its source), an entry point, one change to the
// valid inputs, the expected exception type and substrings the message must contain (the
// argument's name and the received value).
struct Row {
  std::string klass;
  std::string source;
  Entry entry;
  std::string what;
  std::function<void(Inputs&)> mutate;
  Kind kind;
  std::vector<std::string> needles;
};

std::string param_name(const Row& r) {
  std::string s = std::string(entry_name(r.entry)) + "_" + r.what;
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

void PrintTo(const Row& r, std::ostream* os) { *os << param_name(r); }

// Helpers that build mutations.
std::function<void(Inputs&)> set_tensor(Tensor Inputs::*field, Tensor value) {
  return [field, value](Inputs& in) { in.*field = value; };
}
std::function<void(Inputs&)> poke(Tensor Inputs::*field, std::int64_t i, float value) {
  return [field, i, value](Inputs& in) { (in.*field)[i] = value; };
}

std::vector<Row> matrix() {
  std::vector<Row> rows;
  const auto add = [&](std::string klass, std::string source, Entry e, std::string what,
                       std::function<void(Inputs&)> mutate, Kind kind,
                       std::vector<std::string> needles) {
    rows.push_back({std::move(klass), std::move(source), e, std::move(what), std::move(mutate),
                    kind, std::move(needles)});
  };
  const std::vector<Entry> x_entries{Entry::moments, Entry::inference, Entry::training,
                                     Entry::backward};
  const std::vector<Entry> layer_forward{Entry::layer_training, Entry::layer_inference};

  // --- x: empty, wrong rank -------------------------------------------------------------------
  for (Entry e : x_entries) {
    add("x empty", "REFERENCE: empty tensors", e, "x_no_shape", set_tensor(&Inputs::x, Tensor()),
        Kind::shape, {"x is empty", "()"});
    add("x empty", "REFERENCE: batch 0", e, "x_batch_0",
        set_tensor(&Inputs::x, Tensor(Shape{0, kC})), Kind::shape, {"x is empty", "(0, 64)"});
    add("x empty", "REFERENCE: empty tensors", e, "x_inner_dim_0",
        [](Inputs& in) {
          in.x = Tensor(Shape{kN, kC, 0});
          in.options.axis = 1;
        },
        Kind::shape, {"x is empty", "(8, 64, 0)"});
    add("x rank < 2", "REFERENCE: wrong rank", e, "x_rank_1",
        set_tensor(&Inputs::x, Tensor(Shape{kC})), Kind::shape, {"x must have rank >= 2", "(64,)"});
  }
  for (Entry e : layer_forward) {
    add("x empty", "REFERENCE: batch 0", e, "x_batch_0",
        set_tensor(&Inputs::x, Tensor(Shape{0, kC})), Kind::shape, {"empty batch", "batch size 0"});
    add("x empty", "REFERENCE: empty tensors", e, "x_no_shape", set_tensor(&Inputs::x, Tensor()),
        Kind::shape, {"expected input shape (None, 64)", "received ()"});
    add("x rank/shape differs from build", "REFERENCE: wrong rank", e, "x_rank_1",
        set_tensor(&Inputs::x, Tensor(Shape{kC})), Kind::shape,
        {"expected input shape (None, 64)", "received (64,)"});
    add("x rank/shape differs from build", "REFERENCE: wrong rank", e, "x_rank_3",
        set_tensor(&Inputs::x, Tensor(Shape{kN, kC, 1})), Kind::shape,
        {"expected input shape (None, 64)", "received (8, 64, 1)"});
    add("x rank/shape differs from build", "REFERENCE: wrong rank", e, "x_63_channels",
        set_tensor(&Inputs::x, Tensor(Shape{kN, 63})), Kind::shape,
        {"expected input shape (None, 64)", "received (8, 63)"});
  }
  add("x empty", "REFERENCE: empty tensors", Entry::layer_build, "per_sample_no_shape",
      [](Inputs& in) { in.per_sample = Shape(); }, Kind::shape,
      {"input rank", "received shape ()"});
  add("x empty", "REFERENCE: empty tensors", Entry::layer_build, "per_sample_dim_0",
      [](Inputs& in) {
        in.per_sample = Shape{0, kC};
      },
      Kind::shape, {"input dimension 1 is 0", "(None, 0, 64)"});

  // --- axis ----------------------------------------------------------------------------------
  for (int axis : {0, 2, -3, INT_MIN, INT_MAX}) {
    const std::string a = std::to_string(axis);
    const std::string tag = "axis_" + std::string(axis < 0 ? "minus_" : "") +
                            std::to_string(axis < 0 ? -static_cast<long long>(axis) : axis);
    for (Entry e : x_entries) {
      add("axis out of range / batch axis", "REFERENCE: wrong rank/axis", e, tag,
          [axis](Inputs& in) { in.options.axis = axis; }, Kind::shape,
          {"axis must be in [1, 1] or [-1, -1]", "received axis " + a});
    }
    add("axis out of range / batch axis", "REFERENCE: wrong rank/axis", Entry::layer_build, tag,
        [axis](Inputs& in) { in.options.axis = axis; }, Kind::shape,
        {"axis " + a + " is invalid", "rank 2"});
  }

  // --- zero channels (CVE-2021-29555: division by zero) ------------------------------------------
  for (Entry e : x_entries) {
    add("zero channels", "CVE-2021-29555", e, "channels_0",
        set_tensor(&Inputs::x, Tensor(Shape{kN, 0})), Kind::shape,
        {"x has 0 channels along axis -1", "(8, 0)"});
    add("zero channels", "CVE-2021-29555", e, "channels_0_nchw",
        [](Inputs& in) {
          in.x = Tensor(Shape{kN, 0, 5, 5});
          in.options.axis = 1;
        },
        Kind::shape, {"x has 0 channels along axis 1", "(8, 0, 5, 5)"});
  }
  add("zero channels", "CVE-2021-29555", Entry::layer_build, "channels_0",
      [](Inputs& in) { in.per_sample = Shape{0}; }, Kind::shape, {"has 0 channels", "(None, 0)"});
  add("zero channels", "CVE-2021-29555", Entry::layer_build, "channels_0_nchw",
      [](Inputs& in) {
        in.per_sample = Shape{0, 5, 5};
        in.options.axis = 1;
      },
      Kind::shape, {"axis 1 has 0 channels", "(None, 0, 5, 5)"});

  // --- per-channel tensors of a length other than C, or empty (CVE-2021-29583) ---------------
  struct BadLength {
    const char* tag;
    Tensor t;
    const char* received;
  };
  const std::vector<BadLength> lengths{{"63", Tensor(Shape{63}), "received (63,)"},
                                       {"65", Tensor(Shape{65}), "received (65,)"},
                                       {"0", Tensor(Shape{0}), "received (0,)"},
                                       {"no_shape", Tensor(), "received ()"},
                                       {"1x64", Tensor(Shape{1, kC}), "received (1, 64)"}};
  struct Param {
    const char* name;
    Tensor Inputs::*field;
    std::vector<Entry> entries;
    const char* cve;
  };
  const std::vector<Param> params{
      {"mean", &Inputs::mean, {Entry::inference, Entry::backward}, "CVE-2021-29583"},
      {"variance", &Inputs::variance, {Entry::inference, Entry::backward}, "CVE-2021-29583"},
      {"scale",
       &Inputs::scale,
       {Entry::inference, Entry::training, Entry::backward},
       "CVE-2021-29583"},
      {"offset", &Inputs::offset, {Entry::inference, Entry::training}, "CVE-2021-29583"},
  };
  for (const auto& p : params) {
    for (Entry e : p.entries) {
      const bool grad = e == Entry::backward && std::string(p.name) != "scale";
      for (const auto& l : lengths) {
        add(grad ? "backward mean/variance of the wrong length"
                 : "per-channel tensor of length != C",
            grad ? "CVE-2021-41223" : p.cve, e, std::string(p.name) + "_length_" + l.tag,
            set_tensor(p.field, l.t), Kind::shape,
            {std::string(p.name) + " must have shape (64,) (one value per channel of axis -1)",
             l.received});
      }
    }
  }
  add("per-channel tensor of length != C", "CVE-2021-29583", Entry::inference,
      "scale_length_2_nchw",
      [](Inputs& in) {
        Random rng(5);
        in.x = test::random_normal(Shape{4, 3, 5, 5}, rng);
        in.mean = Tensor::full(Shape{3}, 0.0f);
        in.variance = Tensor::full(Shape{3}, 1.0f);
        in.scale = Tensor::full(Shape{2}, 1.0f);
        in.offset = Tensor::full(Shape{3}, 0.0f);
        in.options.axis = 1;
      },
      Kind::shape,
      {"scale must have shape (3,) (one value per channel of axis 1)", "received (2,)"});
  // update_moving: the four (C,) tensors.
  const std::vector<std::pair<const char*, Tensor Inputs::*>> moving{
      {"moving_variance", &Inputs::variance},
      {"batch_mean", &Inputs::batch_mean},
      {"batch_variance", &Inputs::batch_variance}};
  for (const auto& [name, field] : moving) {
    for (const auto& l : lengths) {
      add("per-channel tensor of length != C", "CVE-2021-29583", Entry::update_moving,
          std::string(name) + "_length_" + l.tag, set_tensor(field, l.t), Kind::shape,
          {std::string(name) + " must have shape (64,) (the shape of moving_mean)", l.received});
    }
  }
  add("per-channel tensor of length != C", "CVE-2021-29583", Entry::update_moving,
      "moving_mean_no_shape", set_tensor(&Inputs::mean, Tensor()), Kind::shape,
      {"moving_mean must have shape (C,) with C >= 1", "received ()"});
  add("per-channel tensor of length != C", "CVE-2021-29583", Entry::update_moving,
      "moving_mean_length_0", set_tensor(&Inputs::mean, Tensor(Shape{0})), Kind::shape,
      {"moving_mean must have shape (C,) with C >= 1", "received (0,)"});
  // The layer: weights through Sequential::set_weights (Keras order gamma, beta, moving_*).
  const std::vector<std::pair<const char*, Tensor Inputs::*>> weights{
      {"gamma", &Inputs::scale},
      {"beta", &Inputs::offset},
      {"moving_mean", &Inputs::mean},
      {"moving_variance", &Inputs::variance}};
  for (const auto& [name, field] : weights) {
    for (const auto& l : lengths) {
      add("per-channel tensor of length != C", "CVE-2021-29583", Entry::layer_inference,
          std::string(name) + "_length_" + l.tag, set_tensor(field, l.t), Kind::shape,
          {"set_weights: weight '" + std::string(name) + "': expected shape (64,)", l.received});
    }
  }

  // --- dy whose shape differs from x (CVE-2021-41223) ------------------------------------------
  const std::vector<std::pair<const char*, Tensor>> dys{{"8x63", Tensor(Shape{kN, 63})},
                                                        {"7x64", Tensor(Shape{7, kC})},
                                                        {"8x64x1", Tensor(Shape{kN, kC, 1})},
                                                        {"64", Tensor(Shape{kC})},
                                                        {"no_shape", Tensor()}};
  for (const auto& [tag, dy] : dys) {
    const std::string received = "received " + dy.shape().str();
    add("dy shape differs from x", "CVE-2021-41223", Entry::backward, std::string("dy_") + tag,
        set_tensor(&Inputs::dy, dy), Kind::shape,
        {"dy must have the shape of x, (8, 64)", received});
    add("dy shape differs from x", "CVE-2021-41223", Entry::layer_backward,
        std::string("dy_") + tag, set_tensor(&Inputs::dy, dy), Kind::shape,
        {"gradient dy: expected shape (8, 64)", received});
  }

  // --- epsilon <= 0, NaN, Inf
  // ---------------------------------------------------------------------
  const std::vector<std::pair<float, const char*>> epsilons{
      {0.0f, "0"}, {-1e-3f, "-0.001"}, {kNaN, "nan"}, {kInf, "inf"}, {-kInf, "-inf"}};
  for (const auto& [value, text] : epsilons) {
    std::string tag = std::string("epsilon_") + text;
    for (Entry e : {Entry::inference, Entry::training, Entry::backward, Entry::layer_build}) {
      add("epsilon <= 0, NaN or Inf", "REFERENCE: negative epsilon", e, tag,
          [v = value](Inputs& in) { in.options.epsilon = v; }, Kind::value,
          {"epsilon must be a finite number > 0", std::string("received ") + text});
    }
  }

  // --- momentum outside [0, 1] or NaN
  // --------------------------------------------------------------
  const std::vector<std::pair<double, const char*>> momenta{
      {-0.1, "-0.1"}, {1.5, "1.5"}, {std::nan(""), "nan"}, {HUGE_VAL, "inf"}};
  for (const auto& [value, text] : momenta) {
    const std::string tag = std::string("momentum_") + text;
    for (Entry e : {Entry::update_moving, Entry::layer_build}) {
      add("momentum outside [0, 1] or NaN", "REFERENCE: momentum outside [0,1]", e, tag,
          [v = value](Inputs& in) { in.options.momentum = v; }, Kind::value,
          {"momentum must be in [0, 1]", std::string("received ") + text});
    }
  }

  // --- negative variance passed in
  // -----------------------------------------------------------------
  for (Entry e : {Entry::inference, Entry::backward}) {
    add("negative variance", "tf.nn.batch_normalization (sqrt of a negative)", e,
        "variance_negative", poke(&Inputs::variance, 3, -1.0f), Kind::value,
        {"variance must be >= 0", "received -1 at channel 3"});
  }
  add("negative variance", "tf.nn.batch_normalization (sqrt of a negative)", Entry::update_moving,
      "moving_variance_negative", poke(&Inputs::variance, 3, -1.0f), Kind::value,
      {"moving_variance must be >= 0", "received -1 at channel 3"});
  add("negative variance", "tf.nn.batch_normalization (sqrt of a negative)", Entry::update_moving,
      "batch_variance_negative", poke(&Inputs::batch_variance, 3, -0.5f), Kind::value,
      {"batch_variance must be >= 0", "received -0.5 at channel 3"});
  for (Entry e : {Entry::layer_inference, Entry::layer_training}) {
    add("negative variance", "set_weights with a negative moving_variance", e,
        "moving_variance_negative", poke(&Inputs::variance, 3, -1.0f), Kind::value,
        {"weight 'moving_variance' must be >= 0", "received -1 at channel 3"});
  }

  // --- NaN/Inf in mean/variance/scale/offset passed in
  // ---------------------------------------------
  for (const auto& [bad, text] : {std::pair{kNaN, "nan"}, std::pair{kInf, "inf"}}) {
    const std::string received = std::string("received ") + text + " at channel 7";
    for (const auto& p : params) {
      for (Entry e : p.entries) {
        add("NaN/Inf in statistics or scale/offset", "REFERENCE: NaN/Inf data", e,
            std::string(p.name) + "_" + text, poke(p.field, 7, bad), Kind::non_finite,
            {std::string(p.name) + " must be finite", received});
      }
    }
    for (const auto& [name, field] : moving) {
      add("NaN/Inf in statistics or scale/offset", "REFERENCE: NaN/Inf data", Entry::update_moving,
          std::string(name) + "_" + text, poke(field, 7, bad), Kind::non_finite,
          {std::string(name) + " must be finite", received});
    }
    add("NaN/Inf in statistics or scale/offset", "REFERENCE: NaN/Inf data", Entry::update_moving,
        std::string("moving_mean_") + text, poke(&Inputs::mean, 7, bad), Kind::non_finite,
        {"moving_mean must be finite", received});
    for (const auto& [name, field] : weights) {
      for (Entry e : {Entry::layer_inference, Entry::layer_training}) {
        add("NaN/Inf in statistics or scale/offset", "set_weights with NaN/Inf", e,
            std::string(name) + "_" + text, poke(field, 7, bad), Kind::non_finite,
            {"weight '" + std::string(name) + "' must be finite", received});
      }
    }
  }

  // --- NaN/Inf in the data ---------------------------------------------------------------------
  for (const auto& [bad, text] :
       {std::pair{kNaN, "nan"}, std::pair{kInf, "inf"}, std::pair{-kInf, "-inf"}}) {
    const std::string t = text;
    for (Entry e : x_entries) {
      add("NaN/Inf in x", "REFERENCE: NaN/Inf data", e, "x_" + t, poke(&Inputs::x, 77, bad),
          Kind::non_finite, {"x must be finite", "received " + t + " at index [1, 13]"});
    }
    const float value = bad;
    add("NaN/Inf in x", "REFERENCE: NaN/Inf data", Entry::backward, "x_" + t + "_moving_statistics",
        [value](Inputs& in) {
          in.x[77] = value;
          in.batch_statistics = false;
        },
        Kind::non_finite, {"x must be finite", "received " + t + " at index [1, 13]"});
    add("NaN/Inf in x", "REFERENCE: NaN/Inf data", Entry::backward, "dy_" + t,
        poke(&Inputs::dy, 77, bad), Kind::non_finite,
        {"dy must be finite", "received " + t + " at index [1, 13]"});
    add("NaN/Inf in x", "REFERENCE: NaN/Inf data", Entry::layer_training, "x_" + t,
        poke(&Inputs::x, 77, bad), Kind::non_finite,
        {"input x, channel 13: the batch contains NaN or Inf", "batch_mean = "});
  }

  // --- finite values too large for float32 statistics or results
  // ----------------------------------
  const auto huge_batch = [](Inputs& in) {
    in.x[0 * kC + 5] = 3e38f;
    in.x[1 * kC + 5] = -3e38f;
  };
  for (Entry e : {Entry::moments, Entry::training}) {
    add("float32 overflow", "REFERENCE: NaN/Inf data (variance of +-3e38)", e, "x_pm_3e38",
        huge_batch, Kind::non_finite,
        {"x is too large for float32 statistics", "channel 5", "|x| = 3e+38"});
  }
  add("float32 overflow", "REFERENCE: NaN/Inf data (variance of +-3e38)", Entry::layer_training,
      "x_pm_3e38", huge_batch, Kind::non_finite,
      {"input x, channel 5: the batch variance overflows float32", "batch_variance = inf"});
  add("float32 overflow", "x - mean overflows", Entry::inference, "x_3e38_mean_minus_3e38",
      [](Inputs& in) {
        in.x[kC + 2] = 3e38f;
        in.mean[2] = -3e38f;
      },
      Kind::non_finite,
      {"the result overflows float32 at index [1, 2]", "x = 3e+38", "mean = -3e+38"});
  // scale / sqrt(0.25 + epsilon) is about 6e38: beyond float32 for any x != mean.
  const auto huge_scale = [](Inputs& in) {
    in.scale[4] = 3e38f;
    in.variance[4] = 0.25f;
  };
  add("float32 overflow", "scale * xhat overflows", Entry::inference, "scale_3e38", huge_scale,
      Kind::non_finite, {"the result overflows float32 at index [0, 4]", "scale = 3e+38"});
  add("float32 overflow", "scale * rstd * dy overflows", Entry::backward, "scale_3e38", huge_scale,
      Kind::non_finite, {"the gradients overflow float32 in channel 4", "scale = 3e+38"});
  // An outlier in channel 4 has |xhat| = sqrt(7) > 1, and 3e38 * 2.6 overflows.
  add("float32 overflow", "scale * xhat overflows", Entry::training, "scale_3e38",
      [](Inputs& in) {
        in.scale[4] = 3e38f;
        in.x[4] = 100.0f;
      },
      Kind::non_finite, {"the result overflows float32 at index [0, 4]", "scale = 3e+38"});
  add("float32 overflow", "variance + epsilon overflows", Entry::inference, "variance_plus_epsilon",
      [](Inputs& in) {
        in.variance[6] = kMax;
        in.options.epsilon = kMax;
      },
      Kind::non_finite,
      {"variance + epsilon overflows float32 at channel 6", "epsilon = 3.4028235e+38"});
  add("float32 overflow", "variance + epsilon overflows", Entry::layer_inference,
      "moving_variance_plus_epsilon",
      [](Inputs& in) {
        in.variance[6] = kMax;
        in.options.epsilon = kMax;
      },
      Kind::non_finite, {"moving_variance + epsilon overflows float32 at channel 6", "3.40282"});
  // Batch variance 3.24e38 is finite; plus epsilon = float32 max it is not.
  const auto huge_variance_and_epsilon = [](Inputs& in) {
    in.x[0] = 1.8e19f;
    in.x[kC] = -1.8e19f;
    for (std::int64_t r = 2; r < kN; ++r) in.x[r * kC] = 0.0f;
    in.options.epsilon = kMax;
  };
  add("float32 overflow", "variance + epsilon overflows", Entry::training,
      "batch_variance_plus_epsilon", huge_variance_and_epsilon, Kind::non_finite,
      {"batch_variance + epsilon overflows float32 at channel 0", "epsilon = 3.4028235e+38"});
  add("float32 overflow", "variance + epsilon overflows", Entry::layer_training,
      "batch_variance_plus_epsilon", huge_variance_and_epsilon, Kind::non_finite,
      {"input x, channel 0: batch_variance + epsilon overflows float32", "epsilon = 3.40282e+38"});
  add("float32 overflow", "moving average overflows", Entry::update_moving, "moving_mean_max",
      [](Inputs& in) {
        in.mean[2] = kMax;
        in.batch_mean[2] = kMax;
      },
      Kind::non_finite,
      {"the update overflows float32 at channel 2", "moving_mean = 3.4028235e+38"});
  add("float32 overflow", "PyTorch n/(n-1) variance overflows the moving average",
      Entry::layer_training, "pytorch_bessel_variance_overflow",
      [](Inputs& in) {
        in.options = BatchNormalization::pytorch_defaults();
        in.x = Tensor(Shape{2, kC});
        in.x[0] = 1.8e19f;  // biased variance 3.24e38 is finite, n / (n - 1) = 2 doubles it
        in.x[kC] = -1.8e19f;
      },
      Kind::non_finite,
      {"input x, channel 0: the moving-statistics update overflows float32",
       "batch_variance = 3.24"});

  // --- one value per channel in training with the PyTorch preset
  // ------------------------------------
  add("batch 1 in training", "REFERENCE: batch 1 in training (PyTorch raises)",
      Entry::layer_training, "pytorch_batch_1",
      [](Inputs& in) {
        in.options = BatchNormalization::pytorch_defaults();
        in.x = Tensor::full(Shape{1, kC}, 0.5f);
      },
      Kind::value, {"expected more than 1 value per channel", "received input shape (1, 64)"});
  return rows;
}

const std::vector<Row>& all_rows() {
  static const std::vector<Row> rows = matrix();
  return rows;
}

class BadInput : public ::testing::TestWithParam<Row> {};

TEST_P(BadInput, RaisesTheDocumentedErrorNamingArgumentAndValue) {
  const Row& row = GetParam();
  Inputs in = good_inputs();
  row.mutate(in);
  try {
    run(row.entry, in);
    ADD_FAILURE() << "no exception; expected " << kind_name(row.kind);
  } catch (const std::exception& e) {
    const std::string message = e.what();
    EXPECT_EQ(kind_of(e), row.kind) << "expected " << kind_name(row.kind) << ", got "
                                    << kind_name(kind_of(e)) << ": " << message;
    for (const auto& needle : row.needles)
      EXPECT_NE(message.find(needle), std::string::npos)
          << "message lacks \"" << needle << "\": " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << "not one line: " << message;
    // Functional messages start with the function's name, the layer's with its label.
    const std::string entry = entry_name(row.entry);
    if (entry.rfind("batch_norm_", 0) == 0) {
      EXPECT_EQ(message.rfind(entry + ": ", 0), 0u) << message;
    }
  }
}

// Positive control: the same entry point on the unbroken inputs succeeds, so every row above
// fails for the reason it names.
TEST_P(BadInput, SameCallWithValidInputsSucceeds) {
  Inputs in = good_inputs();
  EXPECT_NO_THROW(run(GetParam().entry, in));
}

INSTANTIATE_TEST_SUITE_P(Matrix, BadInput, ::testing::ValuesIn(all_rows()),
                         [](const ::testing::TestParamInfo<Row>& info) {
                           return param_name(info.param);
                         });

TEST(BadInputMatrix, Coverage) {
  std::set<std::string> classes, names;
  std::set<Entry> entries;
  for (const auto& r : all_rows()) {
    classes.insert(r.klass);
    entries.insert(r.entry);
    EXPECT_TRUE(names.insert(param_name(r)).second) << "duplicate row " << param_name(r);
  }
  EXPECT_EQ(entries.size(), 9u);
  EXPECT_GE(classes.size(), 15u);
  std::cout << "bad-input matrix: " << classes.size() << " classes, " << all_rows().size()
            << " rows\n";
}

// ---------------------------------------------------------------------------------------------
// Positive controls: the functional API computes exactly what the layer computes.

struct LayerRun {
  Tensor y, dx, dgamma, dbeta, moving_mean, moving_variance;
};

LayerRun layer_run(const Inputs& in, Mode mode) {
  BatchNormalization bn(in.options);
  Random rng(1);
  bn.build(in.per_sample, rng);
  if (bn.gamma()) bn.gamma()->value = in.scale;
  if (bn.beta()) bn.beta()->value = in.offset;
  bn.moving_mean()->value = in.mean;
  bn.moving_variance()->value = in.variance;
  LayerRun r;
  r.y = bn.forward(in.x, mode);
  r.dx = bn.backward(in.dy);
  if (bn.gamma()) r.dgamma = bn.gamma()->gradient;
  if (bn.beta()) r.dbeta = bn.beta()->gradient;
  r.moving_mean = bn.moving_mean()->value;
  r.moving_variance = bn.moving_variance()->value;
  return r;
}

void expect_functional_matches_layer(Inputs in) {
  const Tensor* scale = in.options.scale ? &in.scale : nullptr;
  const Tensor* offset = in.options.center ? &in.offset : nullptr;
  const float eps = in.options.epsilon;
  const int axis = in.options.axis;

  // Inference: moving statistics as constants.
  const LayerRun li = layer_run(in, Mode::inference);
  const Tensor y = batch_norm_inference(in.x, in.mean, in.variance, scale, offset, eps, axis);
  EXPECT_TRUE(test::bitwise_equal(y, li.y));
  const auto gi = batch_norm_backward(in.x, in.dy, in.mean, in.variance, scale, eps, false, axis);
  EXPECT_TRUE(test::bitwise_equal(gi.dx, li.dx));
  if (scale) {
    EXPECT_TRUE(test::bitwise_equal(gi.dscale, li.dgamma));
  }
  if (offset) {
    EXPECT_TRUE(test::bitwise_equal(gi.doffset, li.dbeta));
  }

  // Training: batch statistics, the moving update, and the gradients through the statistics.
  const LayerRun lt = layer_run(in, Mode::training);
  const auto t = batch_norm_training(in.x, scale, offset, eps, axis);
  EXPECT_TRUE(test::bitwise_equal(t.y, lt.y));
  const auto m = batch_norm_moments(in.x, axis);
  EXPECT_TRUE(test::bitwise_equal(m.batch_mean, t.batch_mean));
  EXPECT_TRUE(test::bitwise_equal(m.batch_variance, t.batch_variance));
  Tensor moving_mean = in.mean, moving_variance = in.variance;
  batch_norm_update_moving(moving_mean, moving_variance, t.batch_mean, t.batch_variance,
                           in.options.momentum);
  EXPECT_TRUE(test::bitwise_equal(moving_mean, lt.moving_mean));
  EXPECT_TRUE(test::bitwise_equal(moving_variance, lt.moving_variance));
  EXPECT_FALSE(test::bitwise_equal(moving_mean, in.mean));  // the update did something
  const auto gt =
      batch_norm_backward(in.x, in.dy, t.batch_mean, t.batch_variance, scale, eps, true, axis);
  EXPECT_TRUE(test::bitwise_equal(gt.dx, lt.dx));
  if (scale) {
    EXPECT_TRUE(test::bitwise_equal(gt.dscale, lt.dgamma));
  }
  if (offset) {
    EXPECT_TRUE(test::bitwise_equal(gt.doffset, lt.dbeta));
  }

  // And against the float64 textbook reference.
  const auto v = test::bn_view(in.x.shape(), axis);
  const auto ref = test::naive_bn_moments(v, in.x.values());
  test::expect_close(t.batch_mean.values(), std::span<const double>(ref.mean), 1e-6, 1e-6);
  test::expect_close(t.batch_variance.values(), std::span<const double>(ref.variance), 1e-5, 1e-6);
}

TEST(BadInputControls, FunctionalMatchesLayerChannelsLast) {
  expect_functional_matches_layer(good_inputs());
}

TEST(BadInputControls, FunctionalMatchesLayerChannelsFirst) {
  Inputs in = good_inputs();
  Random rng(9);
  in.x = test::random_normal(Shape{4, 3, 5, 5}, rng, -1.0f, 3.0f);
  in.dy = test::random_normal(Shape{4, 3, 5, 5}, rng);
  for (Tensor* t : {&in.mean, &in.variance, &in.scale, &in.offset}) {
    Tensor c(Shape{3});
    for (int i = 0; i < 3; ++i) c[i] = (*t)[i];
    *t = c;
  }
  in.options.axis = 1;
  in.per_sample = Shape{3, 5, 5};
  expect_functional_matches_layer(in);
}

TEST(BadInputControls, FunctionalMatchesLayerWithoutScaleAndOffset) {
  Inputs in = good_inputs();
  in.options.scale = false;
  in.options.center = false;
  expect_functional_matches_layer(in);
}

// ---------------------------------------------------------------------------------------------
// The NaN/Inf policy, spelled out.

BatchNormalization built_layer(BatchNormalization::Options o = {}) {
  BatchNormalization bn(o);
  Random rng(3);
  bn.build(Shape{kC}, rng);
  Random r(4);
  test::fill_uniform(bn.moving_mean()->value, r, -0.5f, 0.5f);
  test::fill_uniform(bn.moving_variance()->value, r, 0.5f, 1.5f);
  return bn;
}

TEST(BadInputPolicy, NonFiniteOrOverflowingBatchLeavesMovingStatisticsBitIdentical) {
  const auto nan_batch = [](Tensor& x) { x[77] = kNaN; };
  const auto inf_batch = [](Tensor& x) { x[77] = kInf; };
  const auto huge_batch = [](Tensor& x) {
    x[5] = 3e38f;
    x[kC + 5] = -3e38f;
  };
  for (const auto& spoil :
       {std::function<void(Tensor&)>(nan_batch), std::function<void(Tensor&)>(inf_batch),
        std::function<void(Tensor&)>(huge_batch)}) {
    BatchNormalization bn = built_layer();
    const Tensor mm = bn.moving_mean()->value, mv = bn.moving_variance()->value;
    Inputs in = good_inputs();
    spoil(in.x);
    EXPECT_THROW(bn.forward(in.x, Mode::training), NonFiniteError);
    EXPECT_TRUE(test::bitwise_equal(bn.moving_mean()->value, mm));
    EXPECT_TRUE(test::bitwise_equal(bn.moving_variance()->value, mv));
    EXPECT_EQ(bn.num_batches_tracked(), 0);
    // The functional API rejects the same batch, so its caller never gets statistics to apply.
    EXPECT_THROW(batch_norm_training(in.x, nullptr, nullptr, 1e-3f), NonFiniteError);
    // A good batch afterwards trains normally and gives finite output.
    const Inputs good = good_inputs();
    const Tensor& y = bn.forward(good.x, Mode::training);
    EXPECT_TRUE(y.all_finite());
    EXPECT_EQ(bn.num_batches_tracked(), 1);
    EXPECT_FALSE(test::bitwise_equal(bn.moving_mean()->value, mm));
  }
}

TEST(BadInputPolicy, HugeFiniteValuesNeverGiveNaNOutput) {
  // +-3e38 are finite float32 values; their variance (9e76) is not. Naive float32 code returns
  // NaN or Inf here; bnorm raises.
  Inputs in = good_inputs();
  in.x[5] = 3e38f;
  in.x[kC + 5] = -3e38f;
  try {
    (void)batch_norm_training(in.x, &in.scale, &in.offset, 1e-3f);
    ADD_FAILURE() << "no exception";
  } catch (const NonFiniteError& e) {
    EXPECT_NE(std::string(e.what()).find("3e+38"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)batch_norm_moments(in.x, -1), NonFiniteError);
  // Large but representable batches are fine: variance 1e36 is finite.
  in.x[5] = 1e18f;
  in.x[kC + 5] = -1e18f;
  const auto t = batch_norm_training(in.x, &in.scale, &in.offset, 1e-3f);
  EXPECT_TRUE(t.y.all_finite());
  EXPECT_TRUE(t.batch_variance.all_finite());
}

TEST(BadInputPolicy, BackwardAfterAFailedForwardRaisesInsteadOfReadingADeadInput) {
  BatchNormalization bn = built_layer();
  const Tensor dy(Shape{kN, kC});
  {
    Inputs in = good_inputs();
    in.x[3] = kNaN;
    EXPECT_THROW(bn.forward(in.x, Mode::training), NonFiniteError);
  }  // x is gone; before the fix backward read it (heap-use-after-free under ASan)
  try {
    bn.backward(dy);
    ADD_FAILURE() << "no exception";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("backward called before forward"), std::string::npos);
  }
}

TEST(BadInputPolicy, LayerInferencePropagatesNaNElementwiseLikeKeras) {
  // Documented policy: in inference the layer touches no state, so (as Keras) a NaN input gives
  // NaN in that element only; the functional batch_norm_inference rejects it instead.
  BatchNormalization bn = built_layer();
  const Tensor mm = bn.moving_mean()->value;
  Inputs in = good_inputs();
  in.x[77] = kNaN;
  const Tensor& y = bn.forward(in.x, Mode::inference);
  for (std::int64_t i = 0; i < y.size(); ++i) EXPECT_EQ(std::isnan(y[i]), i == 77) << i;
  EXPECT_TRUE(test::bitwise_equal(bn.moving_mean()->value, mm));
  EXPECT_THROW((void)batch_norm_inference(in.x, bn.moving_mean()->value,
                                          bn.moving_variance()->value, nullptr, nullptr, 1e-3f),
               NonFiniteError);
}

TEST(BadInputPolicy, KerasDegenerateCasesStayValid) {
  // Not bad inputs: one value per channel in training gives variance 0 and y = beta (Keras);
  // a constant channel likewise; momentum 0 and 1 are both allowed.
  Inputs in = good_inputs();
  in.x = Tensor::full(Shape{1, kC}, 2.5f);
  const auto t = batch_norm_training(in.x, &in.scale, &in.offset, 1e-3f);
  EXPECT_TRUE(test::bitwise_equal(t.y, in.offset.reshaped(Shape{1, kC})));
  Tensor mm = in.mean, mv = in.variance;
  batch_norm_update_moving(mm, mv, in.batch_mean, in.batch_variance, 1.0);
  EXPECT_TRUE(test::bitwise_equal(mm, in.mean));
  batch_norm_update_moving(mm, mv, in.batch_mean, in.batch_variance, 0.0);
  EXPECT_TRUE(test::bitwise_equal(mm, in.batch_mean));
  EXPECT_TRUE(test::bitwise_equal(mv, in.batch_variance));
}

}  // namespace
}  // namespace bnorm
