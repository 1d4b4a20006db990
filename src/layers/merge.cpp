#include "bnorm/layers/merge.hpp"

#include <algorithm>
#include <array>

#include "bnorm/core/error.hpp"

namespace bnorm {

namespace {

std::string batch_str(const Shape& per_sample) {
  std::string s = "(None";
  for (auto d : per_sample.dims()) s += ", " + std::to_string(d);
  return s + ")";
}

Shape with_batch(const Shape& per_sample, std::int64_t batch) {
  std::vector<std::int64_t> dims{batch};
  dims.insert(dims.end(), per_sample.dims().begin(), per_sample.dims().end());
  return Shape(std::move(dims));
}

// Row-major strides of `in` (full shape, batch included) read at output positions of `out`:
// 0 along a dimension the input broadcasts (size 1 where the output is larger).
std::array<std::int64_t, Shape::kMaxRank> broadcast_strides(const Shape& in, const Shape& out) {
  std::array<std::int64_t, Shape::kMaxRank> st{};
  std::int64_t stride = 1;
  for (int d = in.rank() - 1; d >= 0; --d) {
    st[static_cast<std::size_t>(d)] = in[d] == out[d] ? stride : 0;
    stride *= in[d];
  }
  return st;
}

// Calls f(output index, offset of input 0, offset of input 1, ...) for every output element in
// row-major order; `strides[i]` from broadcast_strides. Allocates nothing.
template <class F>
void for_each_broadcast(const Shape& out,
                        std::span<const std::array<std::int64_t, Shape::kMaxRank>> strides,
                        std::int64_t* offsets, F&& f) {
  const int rank = out.rank();
  std::array<std::int64_t, Shape::kMaxRank> idx{};
  std::fill(offsets, offsets + strides.size(), 0);
  const std::int64_t n = out.size();
  for (std::int64_t o = 0; o < n; ++o) {
    f(o, offsets);
    for (int d = rank - 1; d >= 0; --d) {
      const auto du = static_cast<std::size_t>(d);
      ++idx[du];
      for (std::size_t i = 0; i < strides.size(); ++i) offsets[i] += strides[i][du];
      if (idx[du] < out[d]) break;
      for (std::size_t i = 0; i < strides.size(); ++i) offsets[i] -= strides[i][du] * idx[du];
      idx[du] = 0;
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Merge

Shape Merge::output_shape(const Shape&) const {
  throw ValueError(label() + " takes a list of inputs, e.g. " + class_name() + "()({a, b})");
}

Shape Merge::output_shape_for(std::span<const Shape> input_shapes) const {
  const auto n = static_cast<int>(input_shapes.size());
  if (n < min_inputs() || n > max_inputs()) {
    throw ValueError(label() + " takes " +
                     (max_inputs() == min_inputs() ? std::to_string(min_inputs())
                                                   : "at least " + std::to_string(min_inputs())) +
                     " inputs; received " + std::to_string(n));
  }
  return merged_shape(input_shapes);
}

void Merge::build_inputs(std::span<const Shape> input_shapes, Random& rng) {
  if (built() && !input_shapes_.empty()) {  // (a clone is built without its input list)
    bool same = input_shapes.size() == input_shapes_.size();
    for (std::size_t i = 0; same && i < input_shapes.size(); ++i)
      same = input_shapes[i] == input_shapes_[i];
    if (!same) throw ShapeError(label() + ": already built for other input shapes");
    return;
  }
  output_shape_for(input_shapes);  // validates
  input_shapes_.assign(input_shapes.begin(), input_shapes.end());
  output_template_ = with_batch(merged_shape(input_shapes), 1);
  inputs_.assign(input_shapes.size(), nullptr);
  grads_.resize(input_shapes.size());
  build(input_shapes[0], rng);
}

const Tensor& Merge::forward_inputs(std::span<const Tensor* const> xs, Mode) {
  if (!built()) throw ValueError(label() + ": forward called before build");
  if (xs.size() != input_shapes_.size()) {
    throw ValueError(label() + ": built for " + std::to_string(input_shapes_.size()) +
                     " inputs; received " + std::to_string(xs.size()));
  }
  const std::int64_t batch = xs[0]->rank() > 0 ? xs[0]->shape()[0] : 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const Shape& s = xs[i]->shape();
    bool ok = s.rank() == input_shapes_[i].rank() + 1 && s[0] == batch;
    for (int d = 0; ok && d < input_shapes_[i].rank(); ++d) ok = s[d + 1] == input_shapes_[i][d];
    if (!ok) {
      throw ShapeError(label() + ": input " + std::to_string(i) + " should have shape " +
                       batch_str(input_shapes_[i]) + " with batch " + std::to_string(batch) +
                       "; received " + s.str());
    }
  }
  if (batch == 0) throw ShapeError(label() + ": received an empty batch (batch size 0)");
  last_input_ = nullptr;
  std::copy(xs.begin(), xs.end(), inputs_.begin());
  merge_forward(xs, output_);
  last_input_ = xs[0];
  return output_;
}

void Merge::backward_inputs(const Tensor& dy, std::span<const bool> need_dx,
                            std::span<const Tensor*> dxs) {
  if (!last_input_) throw ValueError(label() + ": backward called before forward");
  if (!(output_.shape() == dy.shape()))
    check_same_shape(output_.shape(), dy.shape(), label() + " backward: gradient dy");
  std::fill(dxs.begin(), dxs.end(), nullptr);
  merge_backward(dy, need_dx, dxs);
}

void Merge::do_forward(const Tensor&, Mode, Tensor&) {
  throw ValueError(label() + " takes a list of inputs, e.g. " + class_name() + "()({a, b})");
}
void Merge::do_backward(const Tensor&, bool, Tensor&) {
  throw ValueError(label() + " takes a list of inputs");
}

// ---------------------------------------------------------------------------------------------
// Elementwise merges

Shape ElementwiseMerge::merged_shape(std::span<const Shape> input_shapes) const {
  const Shape& first = input_shapes[0];
  std::vector<std::int64_t> out = first.dims();
  for (const Shape& s : input_shapes) {
    bool ok = s.rank() == first.rank();
    for (int d = 0; ok && d < s.rank(); ++d) {
      const auto du = static_cast<std::size_t>(d);
      if (s[d] == out[du] || s[d] == 1) continue;
      if (out[du] == 1) {
        out[du] = s[d];
        continue;
      }
      ok = false;
    }
    if (!ok) {
      std::string all;
      for (const Shape& t : input_shapes) all += (all.empty() ? "" : ", ") + batch_str(t);
      throw ShapeError(label() +
                       ": inputs must have the same shape (or dimensions of 1 to broadcast); "
                       "received " +
                       all);
    }
  }
  return Shape(std::move(out));
}

bool ElementwiseMerge::same_shapes() const noexcept {
  for (const Shape& s : input_shapes_)
    if (!(s == input_shapes_[0])) return false;
  return true;
}

void ElementwiseMerge::merge_forward(std::span<const Tensor* const> xs, Tensor& y) {
  y.resize_like(output_template_, 0, xs[0]->shape()[0]);
  const Shape& out = y.shape();
  float* py = y.data();
  const std::int64_t n = y.size();
  if (same_shapes()) {
    // Left to right, as Keras folds its inputs: ((x0 op x1) op x2) ...
    std::copy(xs[0]->data(), xs[0]->data() + n, py);
    for (std::size_t i = 1; i < xs.size(); ++i) {
      const float* px = xs[i]->data();
      switch (op_) {
        case Op::add:
        case Op::average:
          for (std::int64_t k = 0; k < n; ++k) py[k] += px[k];
          break;
        case Op::subtract:
          for (std::int64_t k = 0; k < n; ++k) py[k] -= px[k];
          break;
        case Op::multiply:
          for (std::int64_t k = 0; k < n; ++k) py[k] *= px[k];
          break;
      }
    }
  } else {
    std::array<std::array<std::int64_t, Shape::kMaxRank>, 2> st;
    std::array<std::int64_t, 2> off{};
    // Fold pairwise: y = x0 (broadcast to out), then y = y op x_i.
    st[0] = broadcast_strides(xs[0]->shape(), out);
    const float* p0 = xs[0]->data();
    for_each_broadcast(out, std::span(st.data(), 1), off.data(),
                       [&](std::int64_t o, const std::int64_t* of) { py[o] = p0[of[0]]; });
    for (std::size_t i = 1; i < xs.size(); ++i) {
      st[0] = broadcast_strides(xs[i]->shape(), out);
      const float* px = xs[i]->data();
      for_each_broadcast(out, std::span(st.data(), 1), off.data(),
                         [&](std::int64_t o, const std::int64_t* of) {
                           const float v = px[of[0]];
                           switch (op_) {
                             case Op::add:
                             case Op::average:
                               py[o] += v;
                               break;
                             case Op::subtract:
                               py[o] -= v;
                               break;
                             case Op::multiply:
                               py[o] *= v;
                               break;
                           }
                         });
    }
  }
  if (op_ == Op::average) {
    const float k = static_cast<float>(xs.size());
    for (std::int64_t i = 0; i < n; ++i) py[i] /= k;
  }
}

void ElementwiseMerge::merge_backward(const Tensor& dy, std::span<const bool> need_dx,
                                      std::span<const Tensor*> dxs) {
  const Shape& out = dy.shape();
  const std::int64_t n = dy.size();
  const float* pdy = dy.data();
  const bool same = same_shapes();
  const auto inputs = static_cast<std::size_t>(inputs_.size());
  for (std::size_t i = 0; i < inputs; ++i) {
    if (!need_dx[i]) continue;
    // Add passes dy through untouched (no copy) when nothing broadcasts.
    if (same && op_ == Op::add) {
      dxs[i] = &dy;
      continue;
    }
    if (same && op_ == Op::subtract && i == 0) {
      dxs[i] = &dy;
      continue;
    }
    Tensor& g = grads_[i];
    g.resize(inputs_[i]->shape());
    float* pg = g.data();
    // The local derivative d y / d x_i at an output position o (x offsets in `of`).
    auto local = [&](std::int64_t o, const std::int64_t* of) -> float {
      switch (op_) {
        case Op::add:
          return pdy[o];
        case Op::subtract:
          return i == 0 ? pdy[o] : -pdy[o];
        case Op::average:
          return pdy[o] / static_cast<float>(inputs);
        case Op::multiply: {
          float p = pdy[o];
          for (std::size_t j = 0; j < inputs; ++j)
            if (j != i) p *= inputs_[j]->data()[of[j]];
          return p;
        }
      }
      return 0.0f;
    };
    if (same) {
      if (op_ == Op::multiply) {
        for (std::int64_t o = 0; o < n; ++o) {
          float p = pdy[o];
          for (std::size_t j = 0; j < inputs; ++j)
            if (j != i) p *= inputs_[j]->data()[o];
          pg[o] = p;
        }
      } else {
        for (std::int64_t o = 0; o < n; ++o)
          pg[o] = op_ == Op::subtract ? -pdy[o] : pdy[o] / static_cast<float>(inputs);
      }
    } else {
      // Sum over the axes x_i broadcasts along, in output order (deterministic).
      g.fill(0.0f);
      std::array<std::array<std::int64_t, Shape::kMaxRank>, 8> st_small;
      std::vector<std::array<std::int64_t, Shape::kMaxRank>> st_big;
      std::array<std::int64_t, 8> off_small{};
      std::vector<std::int64_t> off_big;
      std::span<std::array<std::int64_t, Shape::kMaxRank>> st;
      std::int64_t* off;
      if (inputs <= st_small.size()) {
        st = std::span(st_small.data(), inputs);
        off = off_small.data();
      } else {
        st_big.resize(inputs);
        off_big.resize(inputs);
        st = st_big;
        off = off_big.data();
      }
      for (std::size_t j = 0; j < inputs; ++j) st[j] = broadcast_strides(inputs_[j]->shape(), out);
      for_each_broadcast(
          out, std::span<const std::array<std::int64_t, Shape::kMaxRank>>(st), off,
          [&](std::int64_t o, const std::int64_t* of) { pg[of[i]] += local(o, of); });
    }
    dxs[i] = &g;
  }
}

// ---------------------------------------------------------------------------------------------
// Concatenate

Concatenate::Concatenate(int axis) : Merge("concatenate"), axis_(axis) {
  if (axis == 0) throw ValueError("Concatenate: axis 0 is the batch axis; received axis=0");
}

Shape Concatenate::merged_shape(std::span<const Shape> input_shapes) const {
  const int rank = input_shapes[0].rank() + 1;  // batch tensor rank
  const int a = axis_ < 0 ? axis_ + rank : axis_;
  if (a < 1 || a >= rank) {
    throw ShapeError(label() + ": axis " + std::to_string(axis_) + " is out of range for inputs " +
                     batch_str(input_shapes[0]));
  }
  std::vector<std::int64_t> out = input_shapes[0].dims();
  const auto pa = static_cast<std::size_t>(a - 1);
  out[pa] = 0;
  for (const Shape& s : input_shapes) {
    bool ok = s.rank() == rank - 1;
    for (int d = 0; ok && d < s.rank(); ++d) ok = d == a - 1 || s[d] == input_shapes[0][d];
    if (!ok) {
      std::string all;
      for (const Shape& t : input_shapes) all += (all.empty() ? "" : ", ") + batch_str(t);
      throw ShapeError(label() + ": inputs must match in every dimension but axis " +
                       std::to_string(axis_) + "; received " + all);
    }
    out[pa] += s[a - 1];
  }
  return Shape(std::move(out));
}

void Concatenate::merge_forward(std::span<const Tensor* const> xs, Tensor& y) {
  const int rank = output_template_.rank();
  batch_axis_ = axis_ < 0 ? axis_ + rank : axis_;
  y.resize_like(output_template_, 0, xs[0]->shape()[0]);
  const Shape& out = y.shape();
  // outer = product of dims before the axis; each input contributes a block of axis*inner.
  std::int64_t outer = 1, inner = 1;
  for (int d = 0; d < batch_axis_; ++d) outer *= out[d];
  for (int d = batch_axis_ + 1; d < rank; ++d) inner *= out[d];
  const std::int64_t row = out[batch_axis_] * inner;
  std::int64_t at = 0;
  for (const Tensor* x : xs) {
    const std::int64_t block = x->shape()[batch_axis_] * inner;
    for (std::int64_t o = 0; o < outer; ++o)
      std::copy(x->data() + o * block, x->data() + (o + 1) * block, y.data() + o * row + at);
    at += block;
  }
}

void Concatenate::merge_backward(const Tensor& dy, std::span<const bool> need_dx,
                                 std::span<const Tensor*> dxs) {
  const Shape& out = dy.shape();
  std::int64_t outer = 1, inner = 1;
  for (int d = 0; d < batch_axis_; ++d) outer *= out[d];
  for (int d = batch_axis_ + 1; d < out.rank(); ++d) inner *= out[d];
  const std::int64_t row = out[batch_axis_] * inner;
  std::int64_t at = 0;
  for (std::size_t i = 0; i < inputs_.size(); ++i) {
    const std::int64_t block = inputs_[i]->shape()[batch_axis_] * inner;
    if (need_dx[i]) {
      Tensor& g = grads_[i];
      g.resize(inputs_[i]->shape());
      for (std::int64_t o = 0; o < outer; ++o)
        std::copy(dy.data() + o * row + at, dy.data() + o * row + at + block, g.data() + o * block);
      dxs[i] = &g;
    }
    at += block;
  }
}

}  // namespace bnorm
