// Data sets from the user's files: x_train, y_train, x_test, y_test as keras.datasets returns
// them, into the Dataset that bnorm's trainer takes (float32 features, float class indices).
#include <algorithm>
#include <cmath>

#include "bnorm/core/error.hpp"
#include "bnorm/io/data.hpp"

namespace bnorm::io {

namespace {

// Labels travel as float32 class indices (what the trainer takes); every integer up to 2^24 is
// exact in float32, and no classifier has more classes than that.
constexpr std::int64_t kMaxLabel = std::int64_t{1} << 24;

Tensor labels_tensor(const std::vector<std::int64_t>& labels, const std::string& what) {
  Tensor t(Shape{static_cast<std::int64_t>(labels.size())});
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] >= kMaxLabel) {
      throw IoError(what + ": label " + std::to_string(labels[i]) + " at index " +
                    std::to_string(i) + " is too large to be a class index (at most " +
                    std::to_string(kMaxLabel - 1) + ")");
    }
    t[static_cast<std::int64_t>(i)] = static_cast<float>(labels[i]);
  }
  return t;
}

std::string per_sample(const Shape& s) {
  std::vector<std::int64_t> dims(s.dims().begin() + 1, s.dims().end());
  return Shape(dims).str();
}

void check_split(const Tensor& x, const Tensor& y, const std::string& where, const char* split) {
  if (x.rank() < 2) {
    throw IoError(where + "x_" + split + " has shape " + x.shape().str() +
                  "; samples need shape (n, ...) with at least one value each");
  }
  if (x.shape()[0] != y.shape()[0]) {
    throw IoError(where + "x_" + split + " holds " + std::to_string(x.shape()[0]) +
                  " samples but y_" + split + " holds " + std::to_string(y.shape()[0]) + " labels");
  }
  if (x.shape()[0] == 0) throw IoError(where + "x_" + split + " holds no samples");
}

void check_same_samples(const Dataset& d, const std::string& where) {
  const auto& a = d.train_x.shape().dims();
  const auto& b = d.test_x.shape().dims();
  if (!std::equal(a.begin() + 1, a.end(), b.begin() + 1, b.end())) {
    throw IoError(where + "training samples have shape " + per_sample(d.train_x.shape()) +
                  " but test samples have shape " + per_sample(d.test_x.shape()));
  }
}

}  // namespace

Dataset load_npz_dataset(const std::string& path, Rescale rescale) {
  const std::string where = "'" + path + "': ";
  static const std::vector<std::string> kArrays = {"x_train", "y_train", "x_test", "y_test"};
  std::map<std::string, NpyArray> arrays = read_npz(path, kArrays);
  for (const auto& name : kArrays) {
    if (!arrays.count(name)) {
      throw IoError(where + "no array '" + name +
                    "' (a data set .npz holds x_train, y_train, x_test, y_test, as "
                    "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...) writes)");
    }
  }
  Dataset d;
  d.train_x = npy_features(arrays["x_train"], where + "x_train", rescale);
  arrays.erase("x_train");
  d.test_x = npy_features(arrays["x_test"], where + "x_test", rescale);
  arrays.erase("x_test");
  d.train_y = labels_tensor(npy_labels(arrays["y_train"], where + "y_train"), where + "y_train");
  d.test_y = labels_tensor(npy_labels(arrays["y_test"], where + "y_test"), where + "y_test");
  check_split(d.train_x, d.train_y, where, "train");
  check_split(d.test_x, d.test_y, where, "test");
  check_same_samples(d, where);
  return d;
}

Dataset load_csv_dataset(const std::string& train_path, const std::string& test_path,
                         const std::string& label_column) {
  CsvData train = read_csv(train_path, label_column);
  CsvData test = read_csv(test_path, label_column);
  if (train.columns != test.columns) {
    throw IoError("'" + test_path + "': the header differs from the training file '" + train_path +
                  "' (the same columns in the same order are needed)");
  }
  Dataset d;
  const std::string train_where = "'" + train_path + "'", test_where = "'" + test_path + "'";
  d.train_y = labels_tensor(train.labels, train_where);
  d.test_y = labels_tensor(test.labels, test_where);
  d.train_x = std::move(train.features);
  d.test_x = std::move(test.features);
  return d;
}

void check_class_labels(const Tensor& labels, std::int64_t num_classes, const std::string& what) {
  for (std::int64_t i = 0; i < labels.size(); ++i) {
    const float v = labels[i];
    if (!(v >= 0.0f && v < static_cast<float>(num_classes))) {
      const std::string value = std::isnan(v) ? "nan" : std::to_string(static_cast<double>(v));
      throw IoError(
          what + ": label " +
          (std::isfinite(v) && v == std::floor(v) ? std::to_string(static_cast<long long>(v))
                                                  : value) +
          " at index " + std::to_string(i) + " is outside the model's " +
          std::to_string(num_classes) + " classes (0.." + std::to_string(num_classes - 1) + ")");
    }
  }
}

std::int64_t count_classes(const Dataset& data) {
  float top = 0.0f;
  for (const Tensor* y : {&data.train_y, &data.test_y}) {
    for (float v : y->values()) top = std::max(top, v);
  }
  return static_cast<std::int64_t>(top) + 1;
}

}  // namespace bnorm::io
