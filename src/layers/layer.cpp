#include "bnorm/layers/layer.hpp"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <new>
#include <string>
#include <utility>

#include "bnorm/core/error.hpp"
#include "bnorm/layers/node.hpp"

namespace bnorm {

namespace {
// A standard normal redrawn until it lies within two standard deviations (TensorFlow's
// truncated_normal).
float truncated_standard_normal(Random& rng) {
  for (;;) {
    const float z = rng.normal();
    if (z >= -2.0f && z <= 2.0f) return z;
  }
}
const char* mode_name(Initializer::Mode m) {
  return m == Initializer::Mode::fan_in    ? "fan_in"
         : m == Initializer::Mode::fan_out ? "fan_out"
                                           : "fan_avg";
}
const char* distribution_name(Initializer::Distribution d) {
  return d == Initializer::Distribution::uniform              ? "uniform"
         : d == Initializer::Distribution::untruncated_normal ? "untruncated_normal"
                                                              : "truncated_normal";
}
}  // namespace

void Initializer::apply(Tensor& t, Random& rng, std::int64_t fan_in, std::int64_t fan_out) const {
  switch (kind) {
    case Kind::zeros:
      t.fill(0.0f);
      return;
    case Kind::ones:
      t.fill(1.0f);
      return;
    case Kind::constant:
      t.fill(a);
      return;
    case Kind::glorot_uniform: {
      const float limit =
          std::sqrt(6.0f / static_cast<float>(std::max<std::int64_t>(1, fan_in + fan_out)));
      for (auto& v : t.values()) v = rng.uniform(-limit, limit);
      return;
    }
    case Kind::random_uniform:
      for (auto& v : t.values()) v = rng.uniform(a, b);
      return;
    case Kind::random_normal:
      for (auto& v : t.values()) v = a + b * rng.normal();
      return;
    case Kind::truncated_normal:
      for (auto& v : t.values()) v = a + b * truncated_standard_normal(rng);
      return;
    case Kind::variance_scaling: {
      // Keras VarianceScaling: scale / max(1, fan); the truncated normal's stddev is corrected
      // by 0.87962566103423978, the stddev of a standard normal truncated to [-2, 2].
      const double fan = mode == Mode::fan_in    ? double(fan_in)
                         : mode == Mode::fan_out ? double(fan_out)
                                                 : (double(fan_in) + double(fan_out)) / 2.0;
      const double scale = double(a) / std::max(1.0, fan);
      if (distribution == Distribution::uniform) {
        const auto limit = static_cast<float>(std::sqrt(3.0 * scale));
        for (auto& v : t.values()) v = rng.uniform(-limit, limit);
      } else if (distribution == Distribution::untruncated_normal) {
        const auto stddev = static_cast<float>(std::sqrt(scale));
        for (auto& v : t.values()) v = stddev * rng.normal();
      } else {
        const auto stddev = static_cast<float>(std::sqrt(scale) / 0.87962566103423978);
        for (auto& v : t.values()) v = stddev * truncated_standard_normal(rng);
      }
      return;
    }
  }
}

std::string Initializer::str() const {
  switch (kind) {
    case Kind::zeros:
      return "zeros";
    case Kind::ones:
      return "ones";
    case Kind::constant:
      return "constant(" + std::to_string(a) + ")";
    case Kind::glorot_uniform:
      return "glorot_uniform";
    case Kind::random_uniform:
      return "random_uniform(" + std::to_string(a) + ", " + std::to_string(b) + ")";
    case Kind::random_normal:
      return "random_normal(" + std::to_string(a) + ", " + std::to_string(b) + ")";
    case Kind::truncated_normal:
      return "truncated_normal(" + std::to_string(a) + ", " + std::to_string(b) + ")";
    case Kind::variance_scaling:
      return "variance_scaling(" + std::to_string(a) + ", " + mode_name(mode) + ", " +
             distribution_name(distribution) + ")";
  }
  return "?";
}

void Layer::build(const Shape& input_shape, Random& rng) {
  if (built_) {
    check_same_shape(input_shape_, input_shape, label() + " input");
    return;
  }
  if (input_shape.rank() < 1 || input_shape.rank() > Shape::kMaxRank - 1) {
    throw ShapeError(label() + ": per-sample input rank must be 1.." +
                     std::to_string(Shape::kMaxRank - 1) + "; received shape " + input_shape.str());
  }
  do_build(input_shape, rng);
  input_shape_ = input_shape;
  built_ = true;
}

std::unique_ptr<Layer> Layer::clone() const {
  std::unique_ptr<Layer> copy = do_clone();
  if (!copy) return nullptr;
  copy->name_ = name_;
  copy->trainable_ = trainable_;
  if (built_) {
    Random unused_rng;  // initial values are overwritten by the copied ones
    copy->build(input_shape_, unused_rng);
    if (copy->weights_.size() != weights_.size())
      throw ValueError(label() + ": clone has a different number of weights");
    for (std::size_t i = 0; i < weights_.size(); ++i) {
      check_same_shape(copy->weights_[i]->value.shape(), weights_[i]->value.shape(),
                       label() + ": clone of weight '" + weights_[i]->name + "'");
      copy->weights_[i]->value = weights_[i]->value;
    }
    copy->copy_state_from(*this);
  }
  return copy;
}

void Layer::check_input(const Tensor& x) const {
  if (!built_) throw ValueError(label() + ": forward called before build");
  const Shape& s = x.shape();
  bool ok = s.rank() == input_shape_.rank() + 1;
  for (int i = 0; ok && i < input_shape_.rank(); ++i) ok = s[i + 1] == input_shape_[i];
  if (!ok) {
    std::vector<std::int64_t> expected{-1};
    expected.insert(expected.end(), input_shape_.dims().begin(), input_shape_.dims().end());
    std::string e = "(None";
    for (auto d : input_shape_.dims()) e += ", " + std::to_string(d);
    throw ShapeError(label() + ": expected input shape " + e + "); received " + s.str());
  }
  if (s[0] == 0) throw ShapeError(label() + ": received an empty batch (batch size 0)");
}

const Tensor& Layer::forward(const Tensor& x, Mode mode) {
  check_input(x);
  if (absorbed_) {  // computed by the previous layer
    last_input_ = &x;
    return x;
  }
  // A forward that throws leaves nothing for backward (which would read a stale or dead x).
  last_input_ = nullptr;
  do_forward(x, mode, output_);
  last_input_ = &x;
  return output_;
}

const Tensor& Layer::backward(const Tensor& dy, bool compute_dx) {
  if (!last_input_) throw ValueError(label() + ": backward called before forward");
  if (absorbed_) {
    if (!(last_input_->shape() == dy.shape()))
      check_same_shape(last_input_->shape(), dy.shape(), label() + " backward: gradient dy");
    return dy;
  }
  // The message (label() allocates) is built only on a mismatch: nothing allocates per step.
  if (!(output_.shape() == dy.shape()))
    check_same_shape(output_.shape(), dy.shape(), label() + " backward: gradient dy");
  do_backward(dy, compute_dx, dx_);
  return dx_;
}

const Tensor& Layer::backward_from_logits(const Tensor& dlogits, bool compute_dx) {
  if (!last_input_) throw ValueError(label() + ": backward called before forward");
  if (!softmax_logits()) throw ValueError(label() + ": the layer's output is not a softmax");
  if (!(softmax_logits()->shape() == dlogits.shape()))
    check_same_shape(softmax_logits()->shape(), dlogits.shape(), label() + " backward: dlogits");
  do_backward_from_logits(dlogits, compute_dx, dx_);
  return dx_;
}

void Layer::do_backward_from_logits(const Tensor&, bool, Tensor&) {
  throw ValueError(label() + ": the layer's output is not a softmax");
}

namespace {
std::atomic<std::int64_t> g_weight_bytes{0};

std::string gib(std::int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / (1024.0 * 1024 * 1024));
  return buf;
}
}  // namespace

std::int64_t weight_memory_limit() noexcept {
  static const std::int64_t limit = [] {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return std::int64_t{1} << 34;  // unknown: 16 GiB
    return static_cast<std::int64_t>(pages) * static_cast<std::int64_t>(page) / 2;
  }();
  return limit;
}

std::int64_t weight_memory_in_use() noexcept { return g_weight_bytes.load(); }

WeightMemory::WeightMemory(std::int64_t bytes) noexcept : bytes_(bytes) {}
WeightMemory::WeightMemory(const WeightMemory& other) noexcept : bytes_(other.bytes_) {
  g_weight_bytes += bytes_;
}
WeightMemory::WeightMemory(WeightMemory&& other) noexcept
    : bytes_(std::exchange(other.bytes_, 0)) {}
WeightMemory& WeightMemory::operator=(WeightMemory other) noexcept {
  std::swap(bytes_, other.bytes_);  // `other` gives back what this held
  return *this;
}
WeightMemory::~WeightMemory() { g_weight_bytes -= bytes_; }

Variable& Layer::add_weight(std::string name, Shape shape, bool trainable, float l2) {
  // Reserve before allocating: values, plus gradients for a trainable weight.
  const std::int64_t elements = shape.size();
  const std::int64_t copies = trainable ? 2 : 1;
  const auto limit = weight_memory_limit();
  if (elements > limit / (copies * static_cast<std::int64_t>(sizeof(float)))) {
    throw ValueError(label() + ": weight '" + name + "' of shape " + shape.str() + " needs " +
                     std::to_string(elements) + " values, more than bnorm's weight memory limit (" +
                     gib(limit) + ", half of this machine's memory) holds");
  }
  const std::int64_t bytes = elements * copies * static_cast<std::int64_t>(sizeof(float));
  const std::int64_t before = g_weight_bytes.fetch_add(bytes);
  WeightMemory reserved(bytes);  // given back if anything below throws
  if (before + bytes > limit) {
    throw ValueError(label() + ": weight '" + name + "' of shape " + shape.str() + " needs " +
                     gib(bytes) + " (values" + (trainable ? " and gradients" : "") +
                     "); with the " + gib(before) + " other weights hold, that is over bnorm's " +
                     "weight memory limit of " + gib(limit) + " (half of this machine's memory)");
  }
  auto v = std::make_unique<Variable>();
  v->name = std::move(name);
  try {
    v->value = Tensor(shape);
    if (trainable) v->gradient = Tensor(shape);
  } catch (const std::bad_alloc&) {
    throw Error(label() + ": out of memory allocating weight '" + v->name + "' of shape " +
                shape.str() + " (" + gib(bytes) + ")");
  }
  v->trainable = trainable;
  v->l2 = l2;
  v->memory = std::move(reserved);
  weights_.push_back(std::move(v));
  return *weights_.back();
}

std::vector<Variable*> Layer::weights() {
  std::vector<Variable*> out;
  for (auto& w : weights_) out.push_back(w.get());
  return out;
}

std::vector<const Variable*> Layer::weights() const {
  std::vector<const Variable*> out;
  for (auto& w : weights_) out.push_back(w.get());
  return out;
}

std::vector<Variable*> Layer::trainable_weights() {
  std::vector<Variable*> out;
  append_trainable_weights(out);
  return out;
}

void Layer::append_trainable_weights(std::vector<Variable*>& out) {
  if (!trainable_) return;
  for (auto& w : weights_)
    if (w->trainable) out.push_back(w.get());
}

std::int64_t Layer::count_params() const {
  std::int64_t n = 0;
  for (auto& w : weights_) n += w->value.size();
  return n;
}

std::int64_t Layer::count_trainable_params() const {
  if (!trainable_) return 0;
  std::int64_t n = 0;
  for (auto& w : weights_)
    if (w->trainable) n += w->value.size();
  return n;
}

double Layer::regularization_loss() const {
  double total = 0.0;
  if (!trainable_) return total;
  for (auto& w : weights_) {
    if (!w->trainable || w->l2 == 0.0f) continue;
    double s = 0.0;
    for (float v : w->value.values()) s += static_cast<double>(v) * v;
    total += w->l2 * s;
  }
  return total;
}

void Layer::add_regularization_gradients() {
  if (!trainable_) return;
  for (auto& w : weights_) {
    if (!w->trainable || w->l2 == 0.0f) continue;
    const float k = 2.0f * w->l2;
    float* g = w->gradient.data();
    const float* v = w->value.data();
    for (std::int64_t i = 0; i < w->value.size(); ++i) g[i] += k * v[i];
  }
}

// ---------------------------------------------------------------------------------------------
// The graph interface: one input by default.

namespace {
void check_input_count(const std::string& label, int min, int max, std::size_t n) {
  if (static_cast<int>(n) >= min && static_cast<int>(n) <= max) return;
  std::string expected = min == max ? std::to_string(min) : std::to_string(min) + " or more";
  throw ValueError(label + " takes " + expected + " input" + (max == 1 ? "" : "s") + "; received " +
                   std::to_string(n));
}
}  // namespace

Shape Layer::output_shape_for(std::span<const Shape> input_shapes) const {
  check_input_count(label(), min_inputs(), max_inputs(), input_shapes.size());
  return output_shape(input_shapes[0]);
}

void Layer::build_inputs(std::span<const Shape> input_shapes, Random& rng) {
  check_input_count(label(), min_inputs(), max_inputs(), input_shapes.size());
  build(input_shapes[0], rng);
}

const Tensor& Layer::forward_inputs(std::span<const Tensor* const> xs, Mode mode) {
  if (xs.size() != 1) [[unlikely]]  // label() allocates: only on the error path
    check_input_count(label(), min_inputs(), max_inputs(), xs.size());
  return forward(*xs[0], mode);
}

void Layer::backward_inputs(const Tensor& dy, std::span<const bool> need_dx,
                            std::span<const Tensor*> dxs) {
  const Tensor& dx = backward(dy, need_dx[0]);
  dxs[0] = need_dx[0] ? &dx : nullptr;
}

// ---------------------------------------------------------------------------------------------
// Symbolic calls (bnorm/layers/node.hpp).

const Shape& SymbolicTensor::shape() const {
  if (!node_) throw ValueError("SymbolicTensor: undefined (default-constructed) tensor");
  return node_->output_shapes.at(static_cast<std::size_t>(index_));
}

std::string SymbolicTensor::producer_name() const {
  if (!node_) return "?";
  if (node_->layer) return node_->layer->name();
  if (node_->model) return node_->model->name;
  return node_->input_name.empty() ? "input" : node_->input_name;
}

Input::Input(Shape shape, std::string name) : SymbolicTensor(std::make_shared<Node>(), 0) {
  if (shape.rank() < 1 || shape.rank() > Shape::kMaxRank - 1) {
    throw ShapeError("Input: shape must have rank 1.." + std::to_string(Shape::kMaxRank - 1) +
                     " (per sample); received " + shape.str());
  }
  for (auto d : shape.dims())
    if (d < 1) throw ShapeError("Input: dimensions must be >= 1; received " + shape.str());
  node()->input_name = std::move(name);
  node()->output_shapes.push_back(std::move(shape));
}

namespace {
SymbolicTensor call_layer(std::shared_ptr<Layer> layer, const std::vector<SymbolicTensor>& xs) {
  std::vector<Shape> shapes;
  for (const auto& x : xs) {
    if (!x.defined())
      throw ValueError(layer->class_name() + " '" + layer->name() +
                       "': called on an undefined symbolic tensor");
    shapes.push_back(x.shape());
  }
  Shape out;
  try {
    out = layer->output_shape_for(shapes);
  } catch (const ShapeError& e) {
    std::string from;
    for (const auto& x : xs) {
      std::string s = "(None";
      for (auto d : x.shape().dims()) s += ", " + std::to_string(d);
      from += (from.empty() ? "" : ", ") + x.producer_name() + " " + s + ")";
    }
    throw ShapeError(std::string(e.what()) + " [inputs from: " + from + "]");
  }
  auto node = std::make_shared<Node>();
  node->layer = std::move(layer);
  node->inputs = xs;
  node->output_shapes.push_back(std::move(out));
  return SymbolicTensor(std::move(node), 0);
}
}  // namespace

SymbolicTensor Layer::operator()(const SymbolicTensor& x) & {
  return (*this)(std::vector<SymbolicTensor>{x});
}
SymbolicTensor Layer::operator()(const SymbolicTensor& x) && {
  return std::move(*this)(std::vector<SymbolicTensor>{x});
}

SymbolicTensor Layer::operator()(const std::vector<SymbolicTensor>& xs) & {
  std::shared_ptr<Layer> self = weak_from_this().lock();
  if (!self) {
    throw ValueError(label() +
                     ": a named layer called on symbolic tensors must be owned by a "
                     "std::shared_ptr (std::make_shared) so that its calls share weights; "
                     "call a temporary instead, e.g. Dense(64)(x)");
  }
  return call_layer(std::move(self), xs);
}

SymbolicTensor Layer::operator()(const std::vector<SymbolicTensor>& xs) && {
  if (std::shared_ptr<Layer> self = weak_from_this().lock()) return call_layer(std::move(self), xs);
  if (built_) throw ValueError(label() + ": a built layer cannot be moved into a graph");
  std::unique_ptr<Layer> copy = clone();
  if (!copy) throw ValueError(label() + ": this layer class cannot be used in a functional graph");
  return call_layer(std::shared_ptr<Layer>(std::move(copy)), xs);
}

}  // namespace bnorm
