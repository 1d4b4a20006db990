// tests/dist/dist_models.hpp — the models, data and comparisons of the distributed tests, shared
// by the in-process tests (dist_test.cpp, ranks as threads) and the MPI ones (mpi_test.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/dropout.hpp"
#include "bnorm/layers/flatten.hpp"
#include "bnorm/layers/merge.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/model/model.hpp"
#include "support/test_support.hpp"

namespace bnorm::test {

// The rows [begin, end) of x.
inline Tensor rows(const Tensor& x, std::int64_t begin, std::int64_t end) {
  Shape s = x.shape();
  const std::int64_t row = x.size() / s[0];
  std::vector<std::int64_t> dims = s.dims();
  dims[0] = end - begin;
  Tensor out{Shape(dims)};
  std::copy(x.data() + begin * row, x.data() + end * row, out.data());
  return out;
}

// The layers before a BN have no bias (BN's beta replaces it, as in the presets): a bias there
// gets a gradient of exactly zero in exact arithmetic, so its trained value is rounding noise.
inline const char* model_name(int kind) {
  static const char* const names[] = {"dense", "residual CNN", "dense + dropout", "cnn"};
  return names[kind];
}

inline Model make_model(int kind, std::uint64_t seed, bool synchronized) {
  BatchNormalization::Options bo;
  bo.synchronized = synchronized;
  bo.momentum = 0.9;
  if (kind == 0 || kind == 2) {
    Input x(Shape{12});
    SymbolicTensor h = Dense(Dense::Options{.units = 16, .use_bias = false})(x);
    h = Activation("relu")(BatchNormalization(bo)(h));
    if (kind == 2) h = Dropout(0.4f)(h);  // masks drawn by the sample's place in the global batch
    return Model(x, Dense(4, "softmax")(h), kind == 2 ? "dropout" : "dense", seed);
  }
  if (kind == 3) {  // the cnn preset in small: pooling, Dropout, Flatten, Dense -> BN
    Input x(Shape{6, 6, 2});
    SymbolicTensor h = Conv2D(Conv2D::Options{
        .filters = 4, .kernel_size = {3, 3}, .padding = "same", .use_bias = false})(x);
    h = MaxPooling2D(2)(Activation("relu")(BatchNormalization(bo)(h)));
    h = Flatten()(Dropout(0.25f)(h));
    h = Dense(Dense::Options{.units = 8, .use_bias = false})(h);
    h = Dropout(0.3f)(Activation("relu")(BatchNormalization(bo)(h)));
    return Model(x, Dense(4, "softmax")(h), "cnn", seed);
  }
  const auto conv = [] {
    return Conv2D(
        Conv2D::Options{.filters = 4, .kernel_size = {3, 3}, .padding = "same", .use_bias = false});
  };
  Input x(Shape{6, 6, 2});
  SymbolicTensor h = Activation("relu")(BatchNormalization(bo)(conv()(x)));
  SymbolicTensor y = BatchNormalization(bo)(conv()(h));
  h = Activation("relu")(Add()({y, h}));
  h = GlobalAveragePooling2D()(h);
  return Model(x, Dense(4, "softmax")(h), "residual", seed);
}

struct Data {
  Tensor x, y;
};
inline Data make_data(int kind, std::int64_t n, std::uint64_t seed) {
  Random rng(seed);
  Data d;
  d.x = kind == 0 || kind == 2 ? test::random_normal(Shape{n, 12}, rng, 0.5f, 2.0f)
                               : test::random_normal(Shape{n, 6, 6, 2}, rng, 0.5f, 2.0f);
  d.y = test::random_labels(n, 4, rng);
  return d;
}

// Largest |a - b| / max|b| over each weight tensor (the error relative to the tensor's scale).
inline double max_relative_difference(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    double scale = 0.0, diff = 0.0;
    for (std::int64_t k = 0; k < b[i].size(); ++k) {
      scale = std::max(scale, std::fabs(static_cast<double>(b[i][k])));
      diff = std::max(diff, std::fabs(static_cast<double>(a[i][k]) - b[i][k]));
    }
    worst = std::max(worst, scale > 0.0 ? diff / scale : diff);
  }
  return worst;
}

inline bool bitwise_equal(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].size() != b[i].size() ||
        std::memcmp(a[i].data(), b[i].data(), sizeof(float) * a[i].size()) != 0)
      return false;
  return true;
}

// The rows [begin, end) of a data set.
inline Data slice(const Data& d, std::int64_t begin, std::int64_t end) {
  return {rows(d.x, begin, end), rows(d.y, begin, end)};
}

inline std::unique_ptr<Model> compiled(int kind, float momentum) {
  auto m = std::make_unique<Model>(make_model(kind, 5, true));
  m->compile(std::make_unique<SGD>(SGD::Options{.learning_rate = 0.05f, .momentum = momentum}),
             LossKind::sparse_categorical_crossentropy);
  return m;
}

}  // namespace bnorm::test
