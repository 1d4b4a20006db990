#include "bnorm/core/tensor.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <utility>

#include "bnorm/core/error.hpp"

namespace bnorm {

namespace {
constexpr std::size_t kAlignment = 64;

std::string dims_str(const std::vector<std::int64_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  if (dims.size() == 1) s += ",";
  return s + ")";
}

void check_dims(const std::vector<std::int64_t>& dims) {
  std::int64_t size = 1;
  for (auto d : dims) {
    if (d < 0) throw ShapeError("shape " + dims_str(dims) + ": dimensions must be >= 0");
    // A product that wraps around would allocate a small buffer for a huge shape.
    if (__builtin_mul_overflow(size, d, &size)) {
      throw ShapeError("shape " + dims_str(dims) + ": the number of elements overflows int64");
    }
  }
}
}  // namespace

Shape::Shape(std::initializer_list<std::int64_t> dims) : dims_(dims) { check_dims(dims_); }
Shape::Shape(std::vector<std::int64_t> dims) : dims_(std::move(dims)) { check_dims(dims_); }

int Shape::normalize_axis(int axis, const std::string& what) const {
  const int r = rank();
  const int a = axis < 0 ? axis + r : axis;
  if (a < 0 || a >= r) {
    throw ShapeError(what + ": axis " + std::to_string(axis) + " is out of range for rank " +
                     std::to_string(r) + " (expected -" + std::to_string(r) + " <= axis < " +
                     std::to_string(r) + ")");
  }
  return a;
}

std::int64_t Shape::dim(int axis) const {
  return dims_[static_cast<std::size_t>(normalize_axis(axis, "Shape" + str()))];
}

std::int64_t Shape::size() const noexcept {
  std::int64_t n = 1;
  for (auto d : dims_) n *= d;
  return n;
}

std::string Shape::str() const { return dims_str(dims_); }

void Tensor::AlignedFree::operator()(float* p) const noexcept {
  if (owned) ::operator delete[](p, std::align_val_t{kAlignment});
}

void Tensor::allocate(std::int64_t count) {
  const std::int64_t padded = std::max<std::int64_t>(count, 1);
  data_.reset(static_cast<float*>(::operator new[](static_cast<std::size_t>(padded) * sizeof(float),
                                                   std::align_val_t{kAlignment})));
  data_.get_deleter().owned = true;
  capacity_ = padded;
}

Tensor Tensor::borrow(Shape shape, const float* data) {
  Tensor t;
  t.shape_ = std::move(shape);
  if (t.shape_.rank() < 1 || t.shape_.rank() > Shape::kMaxRank) {
    throw ShapeError("Tensor: rank must be 1..5; received rank " + std::to_string(t.shape_.rank()) +
                     " shape " + t.shape_.str());
  }
  t.size_ = t.shape_.size();
  if (t.size_ == 0 || data == nullptr) {
    t.allocate(t.size_);  // nothing to share: an empty tensor of its own
    return t;
  }
  // const_cast: the storage is only read (see the header); capacity 0 makes every resize to
  // another shape allocate storage of the tensor's own instead of writing into the caller's.
  t.data_ = std::unique_ptr<float[], AlignedFree>(const_cast<float*>(data), AlignedFree{false});
  t.capacity_ = 0;
  return t;
}

Tensor::Tensor(Shape shape) : shape_(std::move(shape)) {
  if (shape_.rank() < 1 || shape_.rank() > Shape::kMaxRank) {
    throw ShapeError("Tensor: rank must be 1..5; received rank " + std::to_string(shape_.rank()) +
                     " shape " + shape_.str());
  }
  size_ = shape_.size();
  allocate(size_);
  fill(0.0f);
}

Tensor::Tensor(Shape shape, std::span<const float> values) : Tensor(std::move(shape)) {
  if (static_cast<std::int64_t>(values.size()) != size_) {
    throw ShapeError("Tensor: shape " + shape_.str() + " needs " + std::to_string(size_) +
                     " values; received " + std::to_string(values.size()));
  }
  std::copy(values.begin(), values.end(), data_.get());
}

Tensor Tensor::full(Shape shape, float value) {
  Tensor t(std::move(shape));
  t.fill(value);
  return t;
}

Tensor::Tensor(const Tensor& other) : shape_(other.shape_), size_(other.size_) {
  if (other.data_) {
    allocate(size_);
    std::memcpy(data_.get(), other.data_.get(), static_cast<std::size_t>(size_) * sizeof(float));
  }
}

Tensor::Tensor(Tensor&& other) noexcept
    : shape_(std::exchange(other.shape_, Shape())),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)),
      data_(std::move(other.data_)) {}

Tensor& Tensor::operator=(Tensor&& other) noexcept {
  if (this == &other) return *this;
  shape_ = std::exchange(other.shape_, Shape());
  size_ = std::exchange(other.size_, 0);
  capacity_ = std::exchange(other.capacity_, 0);
  data_ = std::move(other.data_);
  return *this;
}

Tensor& Tensor::operator=(const Tensor& other) {
  if (this == &other) return *this;
  if (!other.data_) {
    *this = Tensor();
    return *this;
  }
  if (!data_ || capacity_ < other.size_) allocate(other.size_);
  shape_ = other.shape_;
  size_ = other.size_;
  std::memcpy(data_.get(), other.data_.get(), static_cast<std::size_t>(size_) * sizeof(float));
  return *this;
}

void Tensor::resize(const Shape& shape) {
  if (data_ && shape == shape_) return;
  if (shape.rank() < 1 || shape.rank() > Shape::kMaxRank) {
    throw ShapeError("Tensor: rank must be 1..5; received shape " + shape.str());
  }
  const std::int64_t n = shape.size();
  if (!data_ || capacity_ < n) allocate(n);
  shape_ = shape;
  size_ = n;
}

void Tensor::resize_like(const Shape& like, int axis, std::int64_t size) {
  if (data_ && rank() == like.rank() && size >= 0) {
    bool same = true;
    std::int64_t n = 1;
    bool overflow = false;
    for (int i = 0; i < like.rank(); ++i) {
      const std::int64_t d = i == axis ? size : like[i];
      same = same && shape_[i] == d;
      overflow = overflow || __builtin_mul_overflow(n, d, &n);
    }
    if (same) return;
    // Same rank and enough capacity: overwrite the dims in place (no new vector, no new buffer).
    if (!overflow && n <= capacity_) {
      shape_ = like;  // equal lengths: std::vector's copy assignment reuses the storage
      shape_[axis] = size;
      size_ = n;
      return;
    }
  }
  Shape s = like;
  s[axis] = size;
  resize(s);
}

namespace {
// Writes `dims` over `shape` when the rank matches and `capacity` holds them; false otherwise.
template <class Dims>
bool fits_in_place(Shape& shape, std::int64_t& size, std::int64_t capacity, const Dims& dims) {
  if (static_cast<std::size_t>(shape.rank()) != dims.size()) return false;
  std::int64_t n = 1;
  for (std::int64_t d : dims)
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return false;
  if (n > capacity) return false;
  int i = 0;
  for (std::int64_t d : dims) shape[i++] = d;
  size = n;
  return true;
}
}  // namespace

void Tensor::resize_dims(std::initializer_list<std::int64_t> dims) {
  if (data_ && fits_in_place(shape_, size_, capacity_, dims)) return;
  resize(Shape(dims));
}

void Tensor::resize_batch(std::int64_t batch, const Shape& per_sample) {
  if (data_ && rank() == per_sample.rank() + 1) {
    std::array<std::int64_t, Shape::kMaxRank> dims{};
    dims[0] = batch;
    for (int i = 0; i < per_sample.rank(); ++i)
      dims[static_cast<std::size_t>(i) + 1] = per_sample[i];
    if (fits_in_place(shape_, size_, capacity_,
                      std::span<const std::int64_t>(dims.data(), static_cast<std::size_t>(rank()))))
      return;
  }
  std::vector<std::int64_t> dims{batch};
  dims.insert(dims.end(), per_sample.dims().begin(), per_sample.dims().end());
  resize(Shape(std::move(dims)));
}

Tensor Tensor::reshaped(const Shape& shape) const& {
  if (shape.size() != size_) {
    throw ShapeError("reshape: cannot view " + shape_.str() + " (" + std::to_string(size_) +
                     " values) as " + shape.str());
  }
  Tensor t(shape);
  std::copy(data(), data() + size_, t.data());
  return t;
}

Tensor Tensor::reshaped(const Shape& shape) && {
  if (shape.size() != size_ || shape.rank() < 1 || shape.rank() > Shape::kMaxRank) {
    return std::as_const(*this).reshaped(shape);  // the same ShapeError (or a rank error)
  }
  Tensor t(std::move(*this));
  t.shape_ = shape;
  return t;
}

void Tensor::fill(float value) noexcept { std::fill(data_.get(), data_.get() + size_, value); }

Tensor Tensor::slice_rows(std::int64_t begin, std::int64_t end) const {
  const std::int64_t rows = shape_[0];
  if (begin < 0 || end < begin || end > rows) {
    throw ShapeError("slice_rows: range [" + std::to_string(begin) + ", " + std::to_string(end) +
                     ") is outside 0.." + std::to_string(rows));
  }
  Shape s = shape_;
  s[0] = end - begin;
  Tensor t(s);
  const std::int64_t row_size = rows ? size_ / rows : 0;
  std::copy(data() + begin * row_size, data() + end * row_size, t.data());
  return t;
}

std::int64_t Tensor::first_non_finite() const noexcept {
  const float* p = data();
  for (std::int64_t i = 0; i < size_; ++i)
    if (!std::isfinite(p[i])) return i;
  return -1;
}

void check_same_shape(const Shape& expected, const Shape& received, const std::string& what) {
  if (!(expected == received)) {
    throw ShapeError(what + ": expected shape " + expected.str() + "; received " + received.str());
  }
}

}  // namespace bnorm
