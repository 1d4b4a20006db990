// bnorm/core/tensor.hpp — float32, contiguous (row-major), 64-byte-aligned storage, rank 1..5.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace bnorm {

// A tensor shape: rank 1..5 once attached to a Tensor; dims are non-negative.
class Shape {
 public:
  static constexpr int kMaxRank = 5;
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims);
  explicit Shape(std::vector<std::int64_t> dims);

  int rank() const noexcept { return static_cast<int>(dims_.size()); }
  std::int64_t operator[](int i) const { return dims_.at(static_cast<std::size_t>(i)); }
  std::int64_t& operator[](int i) { return dims_.at(static_cast<std::size_t>(i)); }
  // Dimension by Keras-style index: -1 is the last axis. Throws ShapeError when out of range.
  std::int64_t dim(int axis) const;
  // Normalizes a possibly negative axis to [0, rank); ShapeError naming `what` otherwise.
  int normalize_axis(int axis, const std::string& what) const;
  // Product of all dims (1 for rank 0).
  std::int64_t size() const noexcept;
  const std::vector<std::int64_t>& dims() const noexcept { return dims_; }
  // "(32, 28, 28)"; a rank-1 shape prints as "(5,)", as Python does.
  std::string str() const;
  bool operator==(const Shape& other) const noexcept = default;

 private:
  std::vector<std::int64_t> dims_;
};

class Tensor {
 public:
  Tensor() = default;
  // Zero-initialized tensor. ShapeError for rank outside 1..5 or a negative dim.
  explicit Tensor(Shape shape);
  Tensor(Shape shape, std::span<const float> values);
  static Tensor full(Shape shape, float value);
  // A tensor over memory it does not own (e.g. a NumPy array's buffer, so data goes in without a
  // copy): for reading, passed on as `const Tensor&`. The caller keeps `data` (shape.size()
  // floats, any alignment) alive and unchanged while the tensor and anything reading it live.
  // Copies of it own their storage; resizing it to another shape gives it storage of its own.
  static Tensor borrow(Shape shape, const float* data);
  // Whether the storage belongs to someone else (borrow).
  bool borrowed() const noexcept { return !data_.get_deleter().owned; }

  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);
  // A moved-from tensor is empty (rank 0, size 0), never a shape without storage.
  Tensor(Tensor&& other) noexcept;
  Tensor& operator=(Tensor&& other) noexcept;

  const Shape& shape() const noexcept { return shape_; }
  int rank() const noexcept { return shape_.rank(); }
  std::int64_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  float* data() noexcept { return data_.get(); }
  const float* data() const noexcept { return data_.get(); }
  std::span<float> values() noexcept { return {data_.get(), static_cast<std::size_t>(size_)}; }
  std::span<const float> values() const noexcept {
    return {data_.get(), static_cast<std::size_t>(size_)};
  }
  float& operator[](std::int64_t i) noexcept { return data_.get()[i]; }
  float operator[](std::int64_t i) const noexcept { return data_.get()[i]; }

  // Reuses the storage when the element count is unchanged (no allocation per training step).
  void resize(const Shape& shape);
  // Resizes to `like` with dimension `axis` (0 <= axis < rank) replaced by `size`, e.g. a batch
  // of other rows or a layer's output of other units. Allocates nothing (not even a Shape) when
  // the rank is unchanged and the capacity suffices: the steady state of a training loop, the
  // last partial batch included.
  void resize_like(const Shape& like, int axis, std::int64_t size);
  // Resizes to `dims`; like resize_like, allocates nothing when the rank is unchanged and the
  // capacity suffices (a layer's per-step buffers).
  void resize_dims(std::initializer_list<std::int64_t> dims);
  // Resizes to (batch, per_sample...), allocation-free in the same way.
  void resize_batch(std::int64_t batch, const Shape& per_sample);
  // Same data viewed with another shape of equal size; ShapeError otherwise.
  Tensor reshaped(const Shape& shape) const&;
  // The rvalue form moves the storage instead of copying it (e.g. a whole data set).
  Tensor reshaped(const Shape& shape) &&;
  void fill(float value) noexcept;
  // Rows [begin, end) along dim 0 as a new tensor.
  Tensor slice_rows(std::int64_t begin, std::int64_t end) const;
  bool all_finite() const noexcept { return first_non_finite() < 0; }
  // Index of the first NaN/Inf value, or -1 when every value is finite.
  std::int64_t first_non_finite() const noexcept;

 private:
  struct AlignedFree {
    // Constructors rather than a member initializer: the enclosing class needs the deleter
    // default-constructible before it is complete.
    constexpr AlignedFree() noexcept : owned(true) {}
    constexpr explicit AlignedFree(bool owned_storage) noexcept : owned(owned_storage) {}
    bool owned;  // false: borrowed storage, never freed here
    void operator()(float* p) const noexcept;
  };
  void allocate(std::int64_t count);

  Shape shape_;
  std::int64_t size_ = 0;
  std::int64_t capacity_ = 0;
  std::unique_ptr<float[], AlignedFree> data_;
};

// Throws ShapeError "<what>: expected shape A; received B" when the shapes differ.
void check_same_shape(const Shape& expected, const Shape& received, const std::string& what);

}  // namespace bnorm
