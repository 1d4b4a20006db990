#include "bnorm/model/losses.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "bnorm/core/error.hpp"
#include "kernels/softmax_cross_entropy.hpp"

namespace bnorm {

namespace {
constexpr float kKerasEpsilon = 1e-7f;  // keras.config.epsilon(), used to clip probabilities

std::int64_t rows_of(const Tensor& p) { return p.shape()[0]; }
std::int64_t cols_of(const Tensor& p) { return p.size() / std::max<std::int64_t>(1, p.shape()[0]); }

// Sparse labels as int32, validated: shape (N,) or (N, 1), integral values in [0, classes).
const std::vector<std::int32_t>& sparse_labels(const Tensor& predictions, const Tensor& y_true) {
  thread_local std::vector<std::int32_t> labels;
  const std::int64_t n = rows_of(predictions), classes = cols_of(predictions);
  const bool shape_ok = y_true.shape()[0] == n && y_true.size() == n;
  if (!shape_ok) {
    throw ShapeError("sparse_categorical_crossentropy: labels must have shape (" +
                     std::to_string(n) + ",) to match predictions " + predictions.shape().str() +
                     "; received " + y_true.shape().str());
  }
  labels.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = y_true[i];
    if (!(v >= 0.0f && v < static_cast<float>(classes)) || v != std::floor(v)) {
      throw ValueError("sparse_categorical_crossentropy: label " + std::to_string(v) +
                       " at index " + std::to_string(i) + " is not a class index in [0, " +
                       std::to_string(classes) + ")");
    }
    labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(v);
  }
  return labels;
}

std::int64_t argmax_row(const float* row, std::int64_t cols) {
  return std::max_element(row, row + cols) - row;
}
}  // namespace

LossKind parse_loss(const std::string& name) {
  if (name == "sparse_categorical_crossentropy" || name == "scce")
    return LossKind::sparse_categorical_crossentropy;
  if (name == "categorical_crossentropy" || name == "cce")
    return LossKind::categorical_crossentropy;
  if (name == "mean_squared_error" || name == "mse") return LossKind::mean_squared_error;
  throw ValueError("unknown loss '" + name +
                   "'; expected one of: sparse_categorical_crossentropy, categorical_crossentropy, "
                   "mean_squared_error");
}

std::string loss_name(LossKind kind) {
  switch (kind) {
    case LossKind::sparse_categorical_crossentropy:
      return "sparse_categorical_crossentropy";
    case LossKind::categorical_crossentropy:
      return "categorical_crossentropy";
    case LossKind::mean_squared_error:
      return "mean_squared_error";
  }
  return "?";
}

double compute_loss(LossKind kind, const Tensor& predictions, const Tensor* logits,
                    const Tensor& y_true, Tensor* gradient, std::int64_t normalizer) {
  const std::int64_t n = rows_of(predictions), cols = cols_of(predictions);
  if (n == 0) throw ShapeError("loss: empty batch");
  if (normalizer == 0) normalizer = n;
  const float scale = 1.0f / static_cast<float>(normalizer);
  const bool from_logits = logits != nullptr && kind != LossKind::mean_squared_error;
  if (gradient) gradient->resize(from_logits ? logits->shape() : predictions.shape());
  float* g = gradient ? gradient->data() : nullptr;
  double total = 0.0;
  switch (kind) {
    case LossKind::sparse_categorical_crossentropy: {
      const auto& labels = sparse_labels(predictions, y_true);
      if (from_logits) {
        total = kernels::sparse_softmax_cross_entropy(n, cols, logits->data(), labels.data(), scale,
                                                      nullptr, g);
      } else {
        thread_local std::vector<float> onehot;
        onehot.assign(static_cast<std::size_t>(n * cols), 0.0f);
        for (std::int64_t i = 0; i < n; ++i)
          onehot[static_cast<std::size_t>(i * cols + labels[i])] = 1.0f;
        total = kernels::probability_cross_entropy(n, cols, predictions.data(), onehot.data(),
                                                   kKerasEpsilon, scale, g);
      }
      break;
    }
    case LossKind::categorical_crossentropy:
      check_same_shape(predictions.shape(), y_true.shape(), "categorical_crossentropy: targets");
      total = from_logits
                  ? kernels::softmax_cross_entropy(n, cols, logits->data(), y_true.data(), scale,
                                                   nullptr, g)
                  : kernels::probability_cross_entropy(n, cols, predictions.data(), y_true.data(),
                                                       kKerasEpsilon, scale, g);
      break;
    case LossKind::mean_squared_error:
      check_same_shape(predictions.shape(), y_true.shape(), "mean_squared_error: targets");
      total = kernels::mean_squared_error(n, cols, predictions.data(), y_true.data(), scale, g);
      break;
  }
  return total / static_cast<double>(normalizer);
}

double accuracy_count(LossKind kind, const Tensor& predictions, const Tensor& y_true) {
  const std::int64_t n = rows_of(predictions), cols = cols_of(predictions);
  double correct = 0.0;
  if (kind == LossKind::sparse_categorical_crossentropy) {
    const auto& labels = sparse_labels(predictions, y_true);
    for (std::int64_t i = 0; i < n; ++i)
      correct +=
          argmax_row(predictions.data() + i * cols, cols) == labels[static_cast<std::size_t>(i)];
    return correct;
  }
  check_same_shape(predictions.shape(), y_true.shape(), "accuracy: targets");
  for (std::int64_t i = 0; i < n; ++i) {
    const float* p = predictions.data() + i * cols;
    const float* t = y_true.data() + i * cols;
    if (cols == 1) {
      correct += (p[0] > 0.5f) == (t[0] > 0.5f);  // Keras binary_accuracy, threshold 0.5
    } else {
      correct += argmax_row(p, cols) == argmax_row(t, cols);
    }
  }
  return correct;
}

}  // namespace bnorm
