// The gradient checker itself: it passes correct layers and catches wrong gradients, including
// a batch-normalization backward that forgets the batch statistics depend on x.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/elementwise.hpp"
#include "bnorm/layers/normalization.hpp"
#include "kernels/activation.hpp"
#include "kernels/batch_norm.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

// y = w * x elementwise (w per feature); backward scaled by `error` to simulate a bug.
class ScaleLayer final : public Layer {
 public:
  explicit ScaleLayer(float error = 1.0f) : Layer("scale"), error_(error) {}
  std::string class_name() const override { return "Scale"; }
  Shape output_shape(const Shape& s) const override { return s; }

 protected:
  void do_build(const Shape& s, Random& rng) override {
    w_ = &add_weight("w", s, true);
    test::fill_uniform(w_->value, rng, 0.5f, 1.5f);
  }
  void do_forward(const Tensor& x, Mode, Tensor& y) override {
    y.resize(x.shape());
    const std::int64_t f = w_->value.size();
    for (std::int64_t i = 0; i < x.size(); ++i) y[i] = x[i] * w_->value[i % f];
  }
  void do_backward(const Tensor& dy, bool compute_dx, Tensor& dx) override {
    const Tensor& x = *last_input_;
    const std::int64_t f = w_->value.size();
    w_->gradient.fill(0.0f);
    for (std::int64_t i = 0; i < x.size(); ++i) w_->gradient[i % f] += dy[i] * x[i];
    if (compute_dx) {
      dx.resize(x.shape());
      for (std::int64_t i = 0; i < x.size(); ++i) dx[i] = error_ * dy[i] * w_->value[i % f];
    }
  }

 private:
  float error_;
  Variable* w_ = nullptr;
};

// Batch normalization over (N, C) without scale/offset whose backward can drop the terms that
// come from the batch statistics depending on x (a classic bug).
class NaiveBn final : public Layer {
 public:
  explicit NaiveBn(bool forget_batch_terms) : Layer("naive_bn"), forget_(forget_batch_terms) {}
  std::string class_name() const override { return "NaiveBn"; }
  Shape output_shape(const Shape& s) const override { return s; }

 protected:
  void do_build(const Shape&, Random&) override {}
  void do_forward(const Tensor& x, Mode, Tensor& y) override {
    dims_ = {x.shape()[0], x.shape()[1], 1};
    mean_.resize(Shape{dims_.channels});
    var_.resize(Shape{dims_.channels});
    y.resize(x.shape());
    kernels::reference::batch_norm_moments(dims_, x.data(), mean_.data(), var_.data());
    kernels::reference::batch_norm_forward(dims_, x.data(), mean_.data(), var_.data(), nullptr,
                                           nullptr, 1e-3f, y.data());
  }
  void do_backward(const Tensor& dy, bool, Tensor& dx) override {
    dx.resize(dy.shape());
    kernels::reference::batch_norm_backward(dims_, last_input_->data(), dy.data(), mean_.data(),
                                            var_.data(), nullptr, 1e-3f, !forget_, dx.data(),
                                            nullptr, nullptr);
  }

 private:
  bool forget_;
  kernels::BatchNormDims dims_;
  Tensor mean_, var_;
};

TEST(GradientCheck, PassesACorrectLayer) {
  ScaleLayer layer;
  Random rng(1);
  layer.build(Shape{3}, rng);
  const Tensor x = test::random_normal(Shape{4, 3}, rng);
  EXPECT_TRUE(test::check_layer_gradients(layer, x));
}

TEST(GradientCheck, CatchesAFivePercentErrorInDx) {
  ScaleLayer layer(1.05f);
  Random rng(1);
  layer.build(Shape{3}, rng);
  const Tensor x = test::random_normal(Shape{4, 3}, rng);
  const auto r = test::check_layer_gradients(layer, x);
  EXPECT_FALSE(r);
  EXPECT_NE(std::string(r.message()).find("dx["), std::string::npos) << r.message();
}

TEST(GradientCheck, CatchesMissingBatchStatisticTerms) {
  Random rng(2);
  const Tensor x = test::random_normal(Shape{8, 3}, rng, 1.0f, 2.0f);
  NaiveBn good(false), bad(true);
  good.build(Shape{3}, rng);
  bad.build(Shape{3}, rng);
  EXPECT_TRUE(test::check_layer_gradients(good, x));
  EXPECT_FALSE(test::check_layer_gradients(bad, x));
}

// The Keras 3 activations and elementwise layers by central differences, with non-trivial state:
// Dense/Conv2D with activations that differentiate through the kept pre-activation, an adapted
// Normalization, per-channel Rescaling and a ReLU with every option.
TEST(GradientCheck, NewActivationsAndElementwiseLayers) {
  Random rng(31);
  const Tensor x = test::random_normal(Shape{5, 6}, rng, 0.2f, 1.5f);
  for (const char* act :
       {"silu", "gelu", "hard_silu", "hard_sigmoid", "elu", "leaky_relu", "relu6"}) {
    SCOPED_TRACE(act);
    Dense dense(3, act);
    dense.build(Shape{6}, rng);
    test::GradCheckOptions o;
    o.allow_kinks = true;
    EXPECT_TRUE(test::check_layer_gradients(dense, x, o));
    Activation a(act);
    a.build(Shape{6}, rng);
    EXPECT_TRUE(test::check_layer_gradients(a, x, o));
  }
  Conv2D::Options c;
  c.filters = 2;
  c.kernel_size = {2, 2};
  c.activation = "gelu";
  Conv2D conv(c);
  conv.build(Shape{3, 3, 2}, rng);
  EXPECT_TRUE(test::check_layer_gradients(conv, test::random_normal(Shape{2, 3, 3, 2}, rng)));

  Normalization n;
  n.adapt(test::random_normal(Shape{50, 6}, rng, 3.0f, 0.5f));
  EXPECT_TRUE(test::check_layer_gradients(n, x));
  Normalization inv(
      Normalization::Options{.axis = {-1}, .mean = {1.0f}, .variance = {9.0f}, .invert = true});
  inv.build(Shape{6}, rng);
  EXPECT_TRUE(test::check_layer_gradients(inv, x));
  Rescaling s(Rescaling::Options{.scale = {1, -2, 3, 0.5f, 4, -1}, .offset = {0.5f}});
  s.build(Shape{6}, rng);
  EXPECT_TRUE(test::check_layer_gradients(s, x));
  ReLU r(ReLU::Options{1.5f, 0.2f, 0.3f});
  r.build(Shape{6}, rng);
  test::GradCheckOptions kinks;
  kinks.allow_kinks = true;
  EXPECT_TRUE(test::check_layer_gradients(r, x, kinks));
}

// A gelu Dense differentiated as if through y (the y-only kernel form) is caught: NaN gradients.
TEST(GradientCheck, CatchesAPreActivationKindWithoutItsInput) {
  class YOnlyGelu final : public Layer {
   public:
    YOnlyGelu() : Layer("y_only_gelu") {}
    std::string class_name() const override { return "YOnlyGelu"; }
    Shape output_shape(const Shape& s) const override { return s; }

   protected:
    void do_build(const Shape&, Random&) override {}
    void do_forward(const Tensor& x, Mode, Tensor& y) override {
      y.resize(x.shape());
      kernels::activation_forward(ActivationKind::gelu, 1, x.size(), x.data(), y.data());
    }
    void do_backward(const Tensor& dy, bool, Tensor& dx) override {
      dx.resize(dy.shape());
      kernels::activation_backward(ActivationKind::gelu, 1, dy.size(), output_.data(), dy.data(),
                                   dx.data());
    }
  };
  YOnlyGelu bad;
  Random rng(3);
  bad.build(Shape{4}, rng);
  EXPECT_FALSE(test::check_layer_gradients(bad, test::random_normal(Shape{3, 4}, rng)));
}

TEST(GradientCheck, ExpectCloseReportsTheWorstElement) {
  const Tensor a(Shape{2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
  Tensor b = a;
  b[4] = 5.5f;
  b[1] = 2.01f;
  const auto r = test::all_close(a, b, 1e-3, 0.0);
  ASSERT_FALSE(r);
  const std::string msg = r.message();
  EXPECT_NE(msg.find("2 of 6"), std::string::npos) << msg;
  EXPECT_NE(msg.find("index 4 [1, 1]"), std::string::npos) << msg;
  EXPECT_TRUE(test::all_close(a, a, 0.0, 0.0));
  EXPECT_FALSE(test::all_close(a, a.reshaped(Shape{3, 2}), 1.0, 1.0));  // shape mismatch
  Tensor n = a;
  n[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(test::all_close(n, n, 1.0, 1.0));  // NaN never matches
}

}  // namespace
}  // namespace bnorm
