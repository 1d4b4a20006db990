// NumPy arrays <-> bnorm tensors for the Python module.
//
// In: a float32 C-contiguous array is borrowed (the tensor reads the array's own buffer, no
// copy); the Python side (bnorm/_arrays.py) converts anything else to that form first, so a
// conversion is always explicit and never silently wrong. Out: a tensor's storage is handed to
// NumPy with a capsule that frees it (no copy).
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/tensor.hpp"

namespace bnorm::python {

namespace nb = nanobind;

// What the bindings accept: read-only is fine (const), C order, on the CPU, float32 exactly
// (nanobind never converts it: the Python layer already did, or refused).
using InArray = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using OutArray = nb::ndarray<nb::numpy, float>;

inline Shape shape_of(const InArray& a, const char* what) {
  if (a.ndim() < 1 || a.ndim() > static_cast<std::size_t>(Shape::kMaxRank)) {
    throw ShapeError(std::string(what) + ": expected an array of rank 1 to " +
                     std::to_string(Shape::kMaxRank) + "; received rank " +
                     std::to_string(a.ndim()));
  }
  std::vector<std::int64_t> dims;
  for (std::size_t i = 0; i < a.ndim(); ++i) dims.push_back(static_cast<std::int64_t>(a.shape(i)));
  return Shape(std::move(dims));
}

// A tensor over the array's memory (valid while the array lives and is not resized).
inline Tensor borrow(const InArray& a, const char* what) {
  return Tensor::borrow(shape_of(a, what), a.data());
}

inline std::vector<Tensor> borrow_all(const std::vector<InArray>& arrays, const char* what) {
  std::vector<Tensor> out;
  out.reserve(arrays.size());
  for (const auto& a : arrays) out.push_back(borrow(a, what));
  return out;
}

inline std::vector<const Tensor*> pointers(const std::vector<Tensor>& tensors) {
  std::vector<const Tensor*> out;
  for (const auto& t : tensors) out.push_back(&t);
  return out;
}

// Hands the tensor's storage to NumPy (needs the GIL).
inline OutArray to_numpy(Tensor&& t) {
  auto* owner = new Tensor(std::move(t));
  nb::capsule deleter(owner, [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  std::size_t dims[Shape::kMaxRank];
  for (int i = 0; i < owner->rank(); ++i) dims[i] = static_cast<std::size_t>(owner->shape()[i]);
  return OutArray(owner->data(), static_cast<std::size_t>(owner->rank()), dims, deleter);
}

inline OutArray to_numpy(const Tensor& t) { return to_numpy(Tensor(t)); }

}  // namespace bnorm::python
