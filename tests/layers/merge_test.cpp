// Merge layers (Add, Subtract, Multiply, Average, Concatenate): values against float64
// references, broadcasting over dimensions of 1, gradients by central differences, errors.
#include "bnorm/layers/merge.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "bnorm/core/error.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

// Forward of `layer` on inputs of the given per-sample shapes, then its gradients for
// L = sum(y * w) (w random) against central differences of that scalar in float64.
void check_merge(Layer& layer, const std::vector<Shape>& shapes, std::int64_t batch) {
  Random rng(3);
  layer.build_inputs(shapes, rng);
  std::vector<Tensor> xs;
  for (const Shape& s : shapes) xs.push_back(test::random_uniform(test::with_batch(batch, s), rng));
  std::vector<const Tensor*> ptrs;
  for (auto& x : xs) ptrs.push_back(&x);
  const Tensor y = layer.forward_inputs(ptrs, Mode::training);
  const Tensor w = test::random_uniform(y.shape(), rng);
  std::vector<const Tensor*> dxs(xs.size());
  std::unique_ptr<bool[]> need(new bool[xs.size()]);
  for (std::size_t i = 0; i < xs.size(); ++i) need[i] = true;
  layer.backward_inputs(w, std::span<const bool>(need.get(), xs.size()), dxs);
  std::vector<Tensor> grads;
  for (auto* g : dxs) grads.push_back(*g);  // copies: later forwards overwrite the buffers
  auto objective = [&]() {
    const Tensor& out = layer.forward_inputs(ptrs, Mode::training);
    double s = 0.0;
    for (std::int64_t k = 0; k < out.size(); ++k) s += static_cast<double>(out[k]) * w[k];
    return s;
  };
  for (std::size_t i = 0; i < xs.size(); ++i) {
    ASSERT_EQ(grads[i].shape(), xs[i].shape());
    for (std::int64_t k = 0; k < xs[i].size(); ++k) {
      const float v = xs[i][k];
      xs[i][k] = v + 1e-2f;
      const double plus = objective();
      xs[i][k] = v - 1e-2f;
      const double minus = objective();
      xs[i][k] = v;
      const double numeric = (plus - minus) / 2e-2;
      EXPECT_NEAR(grads[i][k], numeric, 1e-3 + 1e-3 * std::abs(numeric))
          << "input " << i << "[" << k << "]";
    }
  }
}

TEST(Merge, ElementwiseValuesFoldLeftToRight) {
  Random rng(1);
  const Tensor a = test::random_uniform(Shape{3, 4}, rng),
               b = test::random_uniform(Shape{3, 4}, rng),
               c = test::random_uniform(Shape{3, 4}, rng);
  std::vector<const Tensor*> xs{&a, &b, &c};
  Add add;
  Multiply mul;
  Average avg;
  Subtract sub;
  for (Layer* l : std::vector<Layer*>{&add, &mul, &avg})
    l->build_inputs(std::vector<Shape>(3, Shape{4}), rng);
  sub.build_inputs(std::vector<Shape>(2, Shape{4}), rng);
  const Tensor& s = add.forward_inputs(xs, Mode::inference);
  const Tensor& m = mul.forward_inputs(xs, Mode::inference);
  const Tensor& v = avg.forward_inputs(xs, Mode::inference);
  const Tensor& d = sub.forward_inputs(std::vector<const Tensor*>{&a, &b}, Mode::inference);
  for (std::int64_t i = 0; i < 12; ++i) {
    EXPECT_EQ(s[i], (a[i] + b[i]) + c[i]);
    EXPECT_EQ(m[i], (a[i] * b[i]) * c[i]);
    EXPECT_EQ(v[i], ((a[i] + b[i]) + c[i]) / 3.0f);
    EXPECT_EQ(d[i], a[i] - b[i]);
  }
}

TEST(Merge, GradientsIncludingBroadcasts) {
  {
    Add l;
    check_merge(l, {Shape{2, 3}, Shape{2, 3}}, 2);
  }
  {
    Add l;
    check_merge(l, {Shape{2, 3, 4}, Shape{1, 1, 4}}, 2);  // squeeze-and-excitation style
  }
  {
    Multiply l;
    check_merge(l, {Shape{3, 3, 2}, Shape{1, 1, 2}, Shape{3, 1, 2}}, 2);
  }
  {
    Subtract l;
    check_merge(l, {Shape{4}, Shape{1}}, 3);
  }
  {
    Average l;
    check_merge(l, {Shape{2, 2}, Shape{2, 2}, Shape{2, 2}}, 2);
  }
  {
    Concatenate l(-1);
    check_merge(l, {Shape{2, 3}, Shape{2, 1}, Shape{2, 2}}, 2);
  }
  {
    Concatenate l(1);
    check_merge(l, {Shape{2, 3}, Shape{4, 3}}, 2);
  }
}

TEST(Merge, ConcatenateJoinsAlongTheAxis) {
  Random rng(2);
  Concatenate c(-1);
  c.build_inputs(std::vector<Shape>{Shape{2, 1}, Shape{2, 2}}, rng);
  const std::vector<float> av{1, 2}, bv{3, 4, 5, 6};
  const Tensor a(Shape{1, 2, 1}, av);
  const Tensor b(Shape{1, 2, 2}, bv);
  const Tensor& y = c.forward_inputs(std::vector<const Tensor*>{&a, &b}, Mode::inference);
  EXPECT_EQ(y.shape(), (Shape{1, 2, 3}));
  EXPECT_EQ(test::to_vector(y), (std::vector<float>{1, 3, 4, 2, 5, 6}));
}

TEST(Merge, ShapeErrorsAreOneLine) {
  Random rng(1);
  Add add;
  EXPECT_THROW(add.build_inputs(std::vector<Shape>{Shape{3}, Shape{4}}, rng), ShapeError);
  EXPECT_THROW(add.build_inputs(std::vector<Shape>{Shape{3}}, rng), ValueError);
  Subtract sub;
  EXPECT_THROW(sub.build_inputs(std::vector<Shape>(3, Shape{3}), rng), ValueError);
  Concatenate cat(-1);
  EXPECT_THROW(cat.build_inputs(std::vector<Shape>{Shape{2, 3}, Shape{3, 3}}, rng), ShapeError);
  EXPECT_THROW(Concatenate(0), ValueError);
  EXPECT_THROW(add.output_shape(Shape{3}), ValueError);
}

}  // namespace
}  // namespace bnorm
