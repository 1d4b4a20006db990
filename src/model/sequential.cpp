#include "bnorm/model/sequential.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <sstream>
#include <utility>

#include "bnorm/core/denormal.hpp"
#include "bnorm/core/error.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"

namespace bnorm {

namespace {
// Keras's default layer names (its to_snake_case): "BatchNormalization" ->
// "batch_normalization", "Conv2D" -> "conv2d", "MaxPooling2D" -> "max_pooling2d". An underscore
// goes before a capital that follows a lower-case letter or starts a capitalized word.
std::string snake_case(const std::string& s) {
  auto lower = [&](std::size_t i) {
    return i < s.size() && std::islower(static_cast<unsigned char>(s[i]));
  };
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (std::isupper(static_cast<unsigned char>(c))) {
      if (i && (lower(i - 1) || lower(i + 1))) out += '_';
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else {
      out += c;
    }
  }
  return out;
}

std::string with_commas(std::int64_t v) {
  std::string s = std::to_string(v), out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

std::string bytes_str(std::int64_t params) {
  const double bytes = static_cast<double>(params) * 4.0;
  char buf[32];
  if (bytes < 1024)
    std::snprintf(buf, sizeof buf, "%.2f B", bytes);
  else if (bytes < 1024.0 * 1024)
    std::snprintf(buf, sizeof buf, "%.2f KB", bytes / 1024);
  else
    std::snprintf(buf, sizeof buf, "%.2f MB", bytes / (1024.0 * 1024));
  return buf;
}

std::string batch_shape_str(const Shape& per_sample) {
  std::string s = "(None";
  for (auto d : per_sample.dims()) s += ", " + std::to_string(d);
  return s + ")";
}

// Copies rows idx[begin, end) of src into dst (resized to hold them; reused across steps).
void gather_rows(const Tensor& src, const std::vector<std::int64_t>& idx, std::int64_t begin,
                 std::int64_t end, Tensor& dst) {
  const std::int64_t row = src.size() / std::max<std::int64_t>(1, src.shape()[0]);
  dst.resize_like(src.shape(), 0, end - begin);
  for (std::int64_t i = begin; i < end; ++i) {
    const float* from = src.data() + idx[static_cast<std::size_t>(i)] * row;
    std::copy(from, from + row, dst.data() + (i - begin) * row);
  }
}

// Contiguous rows [begin, end) of src into dst.
void copy_rows(const Tensor& src, std::int64_t begin, std::int64_t end, Tensor& dst) {
  const std::int64_t row = src.size() / std::max<std::int64_t>(1, src.shape()[0]);
  dst.resize_like(src.shape(), 0, end - begin);
  std::copy(src.data() + begin * row, src.data() + end * row, dst.data());
}

const Variable* find_weight(const Layer& layer, const std::string& name) {
  for (const Variable* v : layer.weights())
    if (v->name == name) return v;
  return nullptr;
}

// The Dense/Conv2D `producer` followed by `bn` as one layer (see Sequential::folded): same
// options but use_bias=true, kernel' = kernel * inv per output channel (the kernel's last axis,
// for Dense (in, units) and Conv2D (kh, kw, in, filters) alike) and
// bias' = (bias - moving_mean) * inv + beta, in float64 and rounded once.
// `activation`: an elementwise Activation layer that followed the pair and is merged into the
// folded layer ("linear" when none).
template <class L>
std::unique_ptr<Layer> fold_pair(const L& producer, const BatchNormalization& bn,
                                 const std::string& activation) {
  typename L::Options o = producer.options();
  o.use_bias = true;
  o.activation = activation;
  o.bias_initializer = Initializer::zeros();
  auto folded = std::make_unique<L>(o);
  folded->set_name(producer.name());
  folded->set_trainable(producer.trainable());
  Random unused_rng;  // every weight is overwritten below
  folded->build(producer.input_shape(), unused_rng);

  const Tensor& kernel = find_weight(producer, "kernel")->value;
  const Variable* bias = find_weight(producer, "bias");  // null with use_bias=false: b = 0
  const Variable* gamma = find_weight(bn, "gamma");      // null with scale=false: gamma = 1
  const Variable* beta = find_weight(bn, "beta");        // null with center=false: beta = 0
  const float* moving_mean = find_weight(bn, "moving_mean")->value.data();
  const float* moving_variance = find_weight(bn, "moving_variance")->value.data();
  const std::int64_t channels = kernel.shape()[kernel.rank() - 1];
  if (channels != bn.channels()) {
    throw ShapeError("fold: " + producer.class_name() + " '" + producer.name() + "' has " +
                     std::to_string(channels) + " output channels but BatchNormalization '" +
                     bn.name() + "' has " + std::to_string(bn.channels()));
  }
  const auto epsilon = static_cast<double>(bn.options().epsilon);
  std::vector<double> inv(static_cast<std::size_t>(channels));
  std::vector<Variable*> w = folded->weights();  // kernel, bias
  float* new_bias = w[1]->value.data();
  for (std::int64_t c = 0; c < channels; ++c) {
    const double g = gamma ? static_cast<double>(gamma->value.data()[c]) : 1.0;
    const double b = bias ? static_cast<double>(bias->value.data()[c]) : 0.0;
    const double shift = beta ? static_cast<double>(beta->value.data()[c]) : 0.0;
    const double scale = g / std::sqrt(static_cast<double>(moving_variance[c]) + epsilon);
    inv[static_cast<std::size_t>(c)] = scale;
    new_bias[c] = static_cast<float>((b - static_cast<double>(moving_mean[c])) * scale + shift);
  }
  const float* from = kernel.data();
  float* to = w[0]->value.data();
  for (std::int64_t i = 0; i < kernel.size(); ++i)
    to[i] = static_cast<float>(static_cast<double>(from[i]) *
                               inv[static_cast<std::size_t>(i % channels)]);
  return folded;
}
}  // namespace

std::int64_t validation_split_index(std::int64_t n, double split) noexcept {
  return static_cast<std::int64_t>(std::floor(static_cast<double>(n) * (1.0 - split)));
}

Sequential::Sequential(std::uint64_t seed, std::string name)
    : name_(std::move(name)), seed_(seed), rng_(seed) {}
Sequential::Sequential(Sequential&&) noexcept = default;
Sequential& Sequential::operator=(Sequential&&) noexcept = default;
Sequential::~Sequential() = default;

void Sequential::add(Input input) {
  if (!layers_.empty()) throw ValueError("Sequential: Input must come before any layer");
  if (input.shape.rank() < 1 || input.shape.rank() > Shape::kMaxRank - 1) {
    throw ShapeError("Sequential: input shape must have rank 1.." +
                     std::to_string(Shape::kMaxRank - 1) + " (per sample); received " +
                     input.shape.str());
  }
  for (auto d : input.shape.dims())
    if (d < 1)
      throw ShapeError("Sequential: input dimensions must be >= 1; received " + input.shape.str());
  input_shape_ = input.shape;
}

Layer& Sequential::add(std::unique_ptr<Layer> layer) {
  if (!layer) throw ValueError("Sequential: cannot add a null layer");
  // Keras-style unique names: dense, dense_1, ... (names given explicitly are kept if unique).
  const std::string base = layer->name();
  auto taken = [&](const std::string& n) {
    return std::any_of(layers_.begin(), layers_.end(), [&](auto& l) { return l->name() == n; });
  };
  if (base.empty() || base == snake_case(layer->class_name())) {
    const std::string stem = snake_case(layer->class_name());
    std::string n = stem;
    for (int i = 1; taken(n); ++i) n = stem + "_" + std::to_string(i);
    layer->set_name(n);
  } else if (taken(base)) {
    throw ValueError("Sequential: a layer named '" + base + "' already exists");
  }
  // Build eagerly when the input shape is known, so shape errors surface at add().
  if (input_shape_ && built()) layer->build(output_shape(), rng_);
  layers_.push_back(std::move(layer));
  fuse_layers();
  return *layers_.back();
}

// BatchNormalization directly followed by Activation('relu'): BN computes the ReLU in its own
// passes (forward and backward) and the Activation passes tensors through. Same values, two
// fewer passes over the activations; re-decided whenever the layer list changes.
void Sequential::fuse_layers() {
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    auto* bn = dynamic_cast<BatchNormalization*>(layers_[i].get());
    auto* next = i + 1 < layers_.size() ? dynamic_cast<Activation*>(layers_[i + 1].get()) : nullptr;
    const bool fuse = bn && next && next->activation() == ActivationKind::relu;
    if (bn) bn->set_fused_relu(fuse);
    if (auto* act = dynamic_cast<Activation*>(layers_[i].get())) {
      auto* prev = i > 0 ? dynamic_cast<BatchNormalization*>(layers_[i - 1].get()) : nullptr;
      act->set_absorbed(prev && act->activation() == ActivationKind::relu);
    }
  }
}

Layer& Sequential::layer(const std::string& name) {
  for (auto& l : layers_)
    if (l->name() == name) return *l;
  throw ValueError("Sequential: no layer named '" + name + "'");
}

bool Sequential::built() const noexcept {
  return std::all_of(layers_.begin(), layers_.end(), [](auto& l) { return l->built(); });
}

Shape Sequential::output_shape() const {
  if (!input_shape_) throw ValueError("Sequential: the input shape is unknown (add an Input)");
  Shape s = *input_shape_;
  for (auto& l : layers_) s = l->output_shape(s);
  return s;
}

void Sequential::build(const Shape& input_shape) {
  if (input_shape_ && !(*input_shape_ == input_shape) && built() && !layers_.empty()) {
    check_same_shape(*input_shape_, input_shape, "Sequential input");
  }
  if (!input_shape_) {
    // Validated like an Input, but allowed after layers were added (Keras model.build(shape)).
    Sequential probe;
    probe.add(Input{input_shape});
    input_shape_ = input_shape;
  }
  Shape s = *input_shape_;
  for (auto& l : layers_) {
    l->build(s, rng_);
    s = l->output_shape(s);
  }
}

void Sequential::build_for(const Tensor& x) {
  // Already built for this per-sample shape: nothing to do, and nothing allocated (per step).
  bool same = input_shape_ && x.rank() == input_shape_->rank() + 1 && built();
  for (int i = 0; same && i < input_shape_->rank(); ++i)
    same = x.shape()[i + 1] == (*input_shape_)[i];
  if (same) return;
  build(Shape(std::vector<std::int64_t>(x.shape().dims().begin() + 1, x.shape().dims().end())));
}

void Sequential::build() {
  if (!input_shape_)
    throw ValueError("Sequential: cannot build without an input shape (add an Input)");
  build(*input_shape_);
}

void Sequential::compile(std::unique_ptr<Optimizer> optimizer, LossKind loss,
                         std::vector<std::string> metrics) {
  if (!optimizer) throw ValueError("Sequential::compile: optimizer is null");
  for (auto& m : metrics) {
    if (m == "acc") m = "accuracy";
    if (m != "accuracy")
      throw ValueError("Sequential::compile: unknown metric '" + m + "'; expected: accuracy");
  }
  optimizer_ = std::move(optimizer);
  loss_ = loss;
  metrics_ = std::move(metrics);
  if (input_shape_) build();
}

void Sequential::compile(const std::string& optimizer, const std::string& loss,
                         std::vector<std::string> metrics) {
  compile(make_optimizer(optimizer), parse_loss(loss), std::move(metrics));
}

Optimizer& Sequential::optimizer() {
  return const_cast<Optimizer&>(std::as_const(*this).optimizer());
}

const Optimizer& Sequential::optimizer() const {
  if (!optimizer_) throw ValueError("Sequential: the model is not compiled");
  return *optimizer_;
}

void Sequential::check_xy(const Tensor& x, const Tensor& y, const std::string& what) const {
  if (x.rank() == 0) throw ShapeError(what + ": x is empty");
  if (y.rank() == 0) throw ShapeError(what + ": y is empty");
  if (x.shape()[0] != y.shape()[0]) {
    throw ShapeError(what + ": x has " + std::to_string(x.shape()[0]) + " samples but y has " +
                     std::to_string(y.shape()[0]));
  }
  if (x.shape()[0] == 0) throw ShapeError(what + ": x has 0 samples");
}

const Tensor& Sequential::forward(const Tensor& x, Mode mode) {
  if (layers_.empty()) throw ValueError("Sequential: the model has no layers");
  const Tensor* h = &x;
  for (auto& l : layers_) h = &l->forward(*h, mode);
  return *h;
}

double Sequential::train_step(const Tensor& x, const Tensor& y, double* correct) {
  const Tensor& out = forward(x, Mode::training);
  Layer& last = *layers_.back();
  const Tensor* logits = loss_ == LossKind::mean_squared_error ? nullptr : last.softmax_logits();
  double loss = compute_loss(loss_, out, logits, y, &loss_gradient_);
  for (auto& l : layers_) loss += l->regularization_loss();
  if (correct) *correct = metrics_.empty() ? 0.0 : accuracy_count(loss_, out, y);
  if (!std::isfinite(loss)) return loss;  // the caller reports it; no update with NaN gradients
  const Tensor* g = logits ? &last.backward_from_logits(loss_gradient_, layers_.size() > 1)
                           : &last.backward(loss_gradient_, layers_.size() > 1);
  for (std::size_t i = layers_.size() - 1; i-- > 0;) g = &layers_[i]->backward(*g, i > 0);
  for (auto& l : layers_) l->add_regularization_gradients();
  optimizer_->apply(trainable_);
  return loss;
}

void Sequential::collect_trainable() {
  trainable_.clear();  // keeps its capacity: no allocation after the first call
  for (auto& l : layers_) l->append_trainable_weights(trainable_);
}

double Sequential::train_on_batch(const Tensor& x, const Tensor& y) {
  const ScopedFlushDenormal flush_denormals;  // as TensorFlow runs its CPU kernels
  if (!optimizer_) throw ValueError("Sequential::train_on_batch: compile the model first");
  check_xy(x, y, "train_on_batch");
  build_for(x);
  collect_trainable();
  const double loss = train_step(x, y, nullptr);
  if (!std::isfinite(loss)) throw NonFiniteError("train_on_batch: the loss is not finite");
  return loss;
}

History Sequential::fit(const Tensor& x, const Tensor& y, const FitOptions& o) {
  const ScopedFlushDenormal flush_denormals;  // as TensorFlow runs its CPU kernels
  if (!optimizer_) throw ValueError("Sequential::fit: compile the model first");
  if (o.batch_size < 1)
    throw ValueError("fit: batch_size must be >= 1; received " + std::to_string(o.batch_size));
  if (o.epochs < 1)
    throw ValueError("fit: epochs must be >= 1; received " + std::to_string(o.epochs));
  if (!(o.validation_split >= 0.0 && o.validation_split < 1.0)) {
    throw ValueError("fit: validation_split must be in [0, 1); received " +
                     std::to_string(o.validation_split));
  }
  check_xy(x, y, "fit");
  build_for(x);

  // Keras: validation_split takes the last fraction of the samples, before any shuffling.
  const std::int64_t n_all = x.shape()[0];
  std::int64_t n_train = n_all;
  Tensor split_x, split_y;
  const Tensor* vx = o.validation_x;
  const Tensor* vy = o.validation_y;
  if ((vx == nullptr) != (vy == nullptr))
    throw ValueError("fit: validation data needs both x and y");
  if (vx) {
    check_xy(*vx, *vy, "fit validation data");
  } else if (o.validation_split > 0.0) {
    n_train = validation_split_index(n_all, o.validation_split);
    if (n_train < 1 || n_train == n_all) {
      throw ValueError("fit: validation_split " + std::to_string(o.validation_split) + " of " +
                       std::to_string(n_all) +
                       " samples leaves an empty training or validation set");
    }
    copy_rows(x, n_train, n_all, split_x);
    copy_rows(y, n_train, n_all, split_y);
    vx = &split_x;
    vy = &split_y;
  }

  const std::int64_t steps = (n_train + o.batch_size - 1) / o.batch_size;
  std::vector<std::int64_t> order(static_cast<std::size_t>(n_train));
  std::iota(order.begin(), order.end(), 0);
  Random shuffle_rng = rng_.split();
  Tensor bx, by;
  History history;
  stop_training = false;
  collect_trainable();  // trainable flags are read once per fit, as Keras reads them at compile
  for (auto* cb : o.callbacks) cb->on_train_begin(*this, o.epochs, steps);
  for (int epoch = 0; epoch < o.epochs && !stop_training; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    for (auto* cb : o.callbacks) cb->on_epoch_begin(*this, epoch);
    if (o.shuffle) shuffle_rng.shuffle(order);
    double loss_sum = 0.0, correct_sum = 0.0;
    std::int64_t seen = 0;
    Logs logs;
    for (std::int64_t step = 0; step < steps; ++step) {
      const std::int64_t b0 = step * o.batch_size, b1 = std::min(n_train, b0 + o.batch_size);
      gather_rows(x, order, b0, b1, bx);
      gather_rows(y, order, b0, b1, by);
      double correct = 0.0, loss = 0.0;
      const auto where = [&] {
        return "epoch " + std::to_string(epoch + 1) + "/" + std::to_string(o.epochs) + ", step " +
               std::to_string(step + 1) + "/" + std::to_string(steps);
      };
      try {
        loss = train_step(bx, by, &correct);
      } catch (const NonFiniteError& e) {
        throw NonFiniteError("training stopped at " + where() + ": " + e.what());
      }
      if (!std::isfinite(loss)) {
        throw NonFiniteError(
            "training stopped at " + where() + ": the loss is " +
            (std::isnan(loss) ? "NaN" : "infinite") +
            " (try a lower learning rate); weights of the previous step were not updated");
      }
      const auto b = static_cast<double>(b1 - b0);
      loss_sum += loss * b;
      correct_sum += correct;
      seen += b1 - b0;
      logs["loss"] = loss_sum / static_cast<double>(seen);
      if (!metrics_.empty()) logs["accuracy"] = correct_sum / static_cast<double>(seen);
      for (auto* cb : o.callbacks) cb->on_train_batch_end(*this, step, logs);
    }
    if (vx) {
      const auto v = evaluate(*vx, *vy, o.batch_size);
      logs["val_loss"] = v.loss;
      if (!metrics_.empty()) logs["val_accuracy"] = v.accuracy;
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    history.epoch_seconds.push_back(seconds);
    for (const auto& [k, v] : logs) history.history[k].push_back(v);
    for (auto* cb : o.callbacks) cb->on_epoch_end(*this, epoch, logs);
  }
  for (auto* cb : o.callbacks) cb->on_train_end(*this);
  return history;
}

EvaluateResult Sequential::evaluate(const Tensor& x, const Tensor& y, std::int64_t batch_size,
                                    Mode mode) {
  const ScopedFlushDenormal flush_denormals;  // as TensorFlow runs its CPU kernels
  if (batch_size < 1)
    throw ValueError("evaluate: batch_size must be >= 1; received " + std::to_string(batch_size));
  check_xy(x, y, "evaluate");
  build_for(x);
  // Inference runs on the folded copy when a pair folds (same loss function and metrics); the
  // regularization term below is this model's.
  std::optional<Sequential> folded =
      mode == Mode::inference ? folded_for_inference() : std::nullopt;
  const auto [loss_sum, correct] = folded ? folded->evaluate_batches(x, y, batch_size, mode)
                                          : evaluate_batches(x, y, batch_size, mode);
  double reg = 0.0;
  for (auto& l : layers_) reg += l->regularization_loss();
  const auto n = static_cast<double>(x.shape()[0]);
  return {loss_sum / n + reg, correct / n};
}

std::pair<double, double> Sequential::evaluate_batches(const Tensor& x, const Tensor& y,
                                                       std::int64_t batch_size, Mode mode) {
  // Training mode updates BN moving statistics: keep a copy and put it back afterwards.
  std::vector<Tensor> saved;
  std::vector<std::int64_t> tracked;
  if (mode == Mode::training) {
    saved = get_weights();
    for (auto& l : layers_)
      if (auto* bn = dynamic_cast<BatchNormalization*>(l.get()))
        tracked.push_back(bn->num_batches_tracked());
  }
  const std::int64_t n = x.shape()[0];
  double loss_sum = 0.0, correct = 0.0;
  Tensor bx, by;
  for (std::int64_t b0 = 0; b0 < n; b0 += batch_size) {
    const std::int64_t b1 = std::min(n, b0 + batch_size);
    copy_rows(x, b0, b1, bx);
    copy_rows(y, b0, b1, by);
    const Tensor& out = forward(bx, mode);
    const Tensor* logits =
        loss_ == LossKind::mean_squared_error ? nullptr : layers_.back()->softmax_logits();
    loss_sum += compute_loss(loss_, out, logits, by, nullptr) * static_cast<double>(b1 - b0);
    correct += accuracy_count(loss_, out, by);
  }
  if (mode == Mode::training) {
    set_weights(saved);
    std::size_t i = 0;
    for (auto& l : layers_)
      if (auto* bn = dynamic_cast<BatchNormalization*>(l.get()))
        bn->set_num_batches_tracked(tracked[i++]);
  }
  return {loss_sum, correct};
}

Tensor Sequential::predict(const Tensor& x, std::int64_t batch_size) {
  const ScopedFlushDenormal flush_denormals;  // as TensorFlow runs its CPU kernels
  if (batch_size < 1)
    throw ValueError("predict: batch_size must be >= 1; received " + std::to_string(batch_size));
  if (x.rank() < 2 || x.shape()[0] == 0)
    throw ShapeError("predict: x must be a non-empty batch; received " + x.shape().str());
  build_for(x);
  if (std::optional<Sequential> folded = folded_for_inference())
    return folded->predict_batches(x, batch_size);
  return predict_batches(x, batch_size);
}

Tensor Sequential::predict_batches(const Tensor& x, std::int64_t batch_size) {
  const std::int64_t n = x.shape()[0];
  std::vector<std::int64_t> out_dims{n};
  const Shape per = output_shape();
  out_dims.insert(out_dims.end(), per.dims().begin(), per.dims().end());
  Tensor result{Shape(out_dims)};
  const std::int64_t row = per.size();
  Tensor bx;
  for (std::int64_t b0 = 0; b0 < n; b0 += batch_size) {
    const std::int64_t b1 = std::min(n, b0 + batch_size);
    copy_rows(x, b0, b1, bx);
    const Tensor& out = forward(bx, Mode::inference);
    std::copy(out.data(), out.data() + out.size(), result.data() + b0 * row);
  }
  return result;
}

std::vector<std::size_t> Sequential::fold_plan() const {
  std::vector<std::size_t> plan;
  for (std::size_t i = 0; i + 1 < layers_.size(); ++i) {
    const Layer& producer = *layers_[i];
    const auto* bn = dynamic_cast<const BatchNormalization*>(layers_[i + 1].get());
    // Moving statistics only: a BN that normalizes with batch statistics is not affine.
    if (!bn || !bn->built() || !producer.built() || bn->uses_batch_statistics(Mode::inference))
      continue;
    // The producer's channel axis in the batch tensor; -1: not a linear Dense/Conv2D.
    int channel_axis = -1;
    if (const auto* d = dynamic_cast<const Dense*>(&producer)) {
      if (d->activation() == ActivationKind::linear) channel_axis = d->input_shape().rank();
    } else if (const auto* c = dynamic_cast<const Conv2D*>(&producer)) {
      if (c->activation() == ActivationKind::linear)
        channel_axis = c->options().data_format == "channels_first" ? 1 : 3;
    }
    if (channel_axis < 1 || bn->axis() != channel_axis) continue;
    plan.push_back(i);
    ++i;  // this BatchNormalization is folded away; it cannot start a pair
  }
  return plan;
}

std::size_t Sequential::foldable_pairs() const { return fold_plan().size(); }

std::optional<Sequential> Sequential::fold_copy() const {
  if (!input_shape_ || !built())
    throw ValueError("Sequential::folded: the model is not built (add an Input or call build)");
  const std::vector<std::size_t> plan = fold_plan();
  Sequential out(seed_, name_);
  out.add(Input{*input_shape_});
  std::size_t next = 0;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = *layers_[i];
    if (next < plan.size() && plan[next] == i) {
      ++next;
      const auto& bn = static_cast<const BatchNormalization&>(*layers_[++i]);
      // An elementwise Activation right after the pair becomes the folded layer's own
      // activation (same values: the layer applies it to the same pre-activation), so the
      // folded model is the same network as one built without BN.
      std::string activation = "linear";
      if (i + 1 < layers_.size()) {
        const auto* act = dynamic_cast<const Activation*>(layers_[i + 1].get());
        if (act && act->activation() != ActivationKind::softmax) {
          activation = activation_name(act->activation());
          ++i;
        }
      }
      if (const auto* d = dynamic_cast<const Dense*>(&l))
        out.add(fold_pair(*d, bn, activation));
      else
        out.add(fold_pair(static_cast<const Conv2D&>(l), bn, activation));
      continue;
    }
    std::unique_ptr<Layer> copy = l.clone();
    if (!copy) return std::nullopt;
    out.add(std::move(copy));  // built already: add only checks the shape
  }
  out.loss_ = loss_;
  out.metrics_ = metrics_;
  out.rng_ = rng_;
  out.inference_folding_ = inference_folding_;
  return out;
}

std::optional<Sequential> Sequential::folded_for_inference() const {
  if (!inference_folding_ || fold_plan().empty()) return std::nullopt;
  return fold_copy();
}

Sequential Sequential::folded() const {
  std::optional<Sequential> out = fold_copy();
  if (!out) {
    for (auto& l : layers_)
      if (!l->clone())
        throw ValueError("Sequential::folded: layer " + l->class_name() + " '" + l->name() +
                         "' cannot be copied");
    throw ValueError("Sequential::folded: a layer cannot be copied");
  }
  return std::move(*out);
}

std::int64_t Sequential::count_params() const {
  std::int64_t n = 0;
  for (auto& l : layers_) n += l->count_params();
  return n;
}

std::int64_t Sequential::count_trainable_params() const {
  std::int64_t n = 0;
  for (auto& l : layers_) n += l->count_trainable_params();
  return n;
}

std::string Sequential::summary() const {
  constexpr int w1 = 33, w2 = 24, w3 = 15;
  auto rule = [](const char* l, const char* m, const char* r, const char* fill) {
    std::string s = l;
    for (int i = 0; i < w1; ++i) s += fill;
    s += m;
    for (int i = 0; i < w2; ++i) s += fill;
    s += m;
    for (int i = 0; i < w3; ++i) s += fill;
    return s + r + "\n";
  };
  auto pad = [](std::string s, int w, bool right) {
    if (static_cast<int>(s.size()) > w - 2) s = s.substr(0, static_cast<std::size_t>(w - 3)) + "~";
    const std::string space(static_cast<std::size_t>(w - 2 - static_cast<int>(s.size())), ' ');
    return " " + (right ? space + s : s + space) + " ";
  };
  // Like Keras, a first cell that does not fit wraps at its spaces onto extra lines.
  auto wrap = [](const std::string& text, int w) {
    std::vector<std::string> lines;
    std::string line;
    std::istringstream words(text);
    for (std::string word; words >> word;) {
      if (!line.empty() && static_cast<int>(line.size() + 1 + word.size()) > w - 2) {
        lines.push_back(line);
        line.clear();
      }
      line += (line.empty() ? "" : " ") + word;
    }
    lines.push_back(line);
    return lines;
  };
  auto row = [&](const char* bar, const std::string& a, const std::string& b,
                 const std::string& c) {
    std::string out;
    const auto lines = wrap(a, w1);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      out += std::string(bar) + pad(lines[i], w1, false) + bar + pad(i ? "" : b, w2, false) + bar +
             pad(i ? "" : c, w3, true) + bar + "\n";
    }
    return out;
  };
  std::string out = "Model: \"" + name_ + "\"\n";
  out += rule("\u250f", "\u2533", "\u2513", "\u2501");
  out += row("\u2503", "Layer (type)", "Output Shape", "Param #");
  out += rule("\u2521", "\u2547", "\u2529", "\u2501");
  std::optional<Shape> s = input_shape_;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = *layers_[i];
    std::string shape = "?";
    if (s) {
      s = l.output_shape(*s);
      shape = batch_shape_str(*s);
    }
    out += row("\u2502", l.name() + " (" + l.class_name() + ")", shape,
               l.built() ? with_commas(l.count_params()) : "0 (unbuilt)");
    if (i + 1 < layers_.size()) out += rule("\u251c", "\u253c", "\u2524", "\u2500");
  }
  out += rule("\u2514", "\u2534", "\u2518", "\u2500");
  const std::int64_t total = count_params(), trainable = count_trainable_params();
  out += " Total params: " + with_commas(total) + " (" + bytes_str(total) + ")\n";
  out += " Trainable params: " + with_commas(trainable) + " (" + bytes_str(trainable) + ")\n";
  out += " Non-trainable params: " + with_commas(total - trainable) + " (" +
         bytes_str(total - trainable) + ")\n";
  return out;
}

std::vector<Tensor> Sequential::get_weights() const {
  std::vector<Tensor> out;
  for (auto& l : layers_)
    for (const Variable* v : std::as_const(*l).weights()) out.push_back(v->value);
  return out;
}

void Sequential::set_weights(const std::vector<Tensor>& weights) {
  std::vector<Variable*> vars;
  for (auto& l : layers_)
    for (Variable* v : l->weights()) vars.push_back(v);
  if (vars.size() != weights.size()) {
    throw ShapeError("set_weights: the model has " + std::to_string(vars.size()) +
                     " weight tensors; received " + std::to_string(weights.size()));
  }
  for (std::size_t i = 0; i < vars.size(); ++i)
    check_same_shape(vars[i]->value.shape(), weights[i].shape(),
                     "set_weights: weight '" + vars[i]->name + "'");
  for (std::size_t i = 0; i < vars.size(); ++i) vars[i]->value = weights[i];
}

}  // namespace bnorm
