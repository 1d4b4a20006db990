#include "bnorm/model/model.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <utility>

#include "bnorm/core/denormal.hpp"
#include "bnorm/core/error.hpp"
#include "bnorm/dist/communicator.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/elementwise.hpp"
#include "bnorm/layers/merge.hpp"
#include "model/plan.hpp"

namespace bnorm {

namespace {
// Keras's default layer names (its to_snake_case): "BatchNormalization" ->
// "batch_normalization", "Conv2D" -> "conv2d", "MaxPooling2D" -> "max_pooling2d". An underscore
// goes before a capital that follows a lower-case letter or starts a capitalized word.
}  // namespace

std::string snake_case_name(const std::string& s) {
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

namespace {
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

// The Dense/Conv2D `producer` followed by `bn` as one layer (see Model::folded_model): same
// options but use_bias=true, kernel' = kernel * inv per output channel (the kernel's last axis,
// for Dense (in, units) and Conv2D (kh, kw, in, filters) alike) and
// bias' = (bias - moving_mean) * inv + beta, in float64 and rounded once.
// `activation`: an elementwise Activation layer that followed the pair and is merged into the
// folded layer ("linear" when none).
template <class L>
std::shared_ptr<Layer> fold_pair(const L& producer, const BatchNormalization& bn,
                                 const std::string& activation) {
  typename L::Options o = producer.options();
  o.use_bias = true;
  o.activation = activation;
  o.bias_initializer = Initializer::zeros();
  auto folded = std::make_shared<L>(o);
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

// Activation('relu') or ReLU() with Keras's defaults (plain max(x, 0)).
bool is_relu_activation(const Layer& l) {
  if (const auto* act = dynamic_cast<const Activation*>(&l))
    return act->activation() == ActivationKind::relu;
  if (const auto* relu = dynamic_cast<const ReLU*>(&l)) {
    const auto& o = relu->options();
    return !o.max_value && o.negative_slope == 0.0f && o.threshold == 0.0f;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Flattening a graph into a plan.

struct Expander {
  detail::Plan& plan;
  Random& rng;
  std::vector<std::shared_ptr<Layer>>& layers;  // unique layers in graph order
  std::map<const Layer*, int> calls;            // calls of each layer so far
  std::set<const Layer*> nested;                // layers reached through a nested model
  // (node, scope) -> output slots; a scope is one expansion of a (nested) graph.
  std::map<std::pair<const Node*, int>, std::vector<int>> memo;
  std::vector<std::map<const Node*, int>> scope_inputs;  // per scope: input node -> slot
  std::vector<std::string> scope_names;

  int new_slot(const Shape& shape) {
    plan.slot_shapes.push_back(shape);
    plan.is_input.push_back(false);
    return plan.num_slots++;
  }

  int visit(const SymbolicTensor& t, int scope, int depth) {
    if (depth > 100000) throw ValueError("Model: the graph is too deep (over 100000 nodes)");
    const Node* node = t.node().get();
    const auto key = std::make_pair(node, scope);
    if (auto it = memo.find(key); it != memo.end())
      return it->second.at(static_cast<std::size_t>(t.index()));
    std::vector<int> outs;
    if (!node->layer && !node->model) {
      auto& inputs = scope_inputs[static_cast<std::size_t>(scope)];
      auto it = inputs.find(node);
      if (it == inputs.end()) {
        throw ValueError("Model '" + scope_names[static_cast<std::size_t>(scope)] +
                         "': an output depends on input '" + t.producer_name() +
                         "', which is not among the model's inputs");
      }
      outs.push_back(it->second);
    } else {
      std::vector<int> in;
      for (const auto& x : node->inputs) in.push_back(visit(x, scope, depth + 1));
      if (node->model) {
        const GraphDef& g = *node->model;
        std::map<const Node*, int> inner;
        for (std::size_t i = 0; i < g.inputs.size(); ++i) inner[g.inputs[i].node().get()] = in[i];
        scope_inputs.push_back(std::move(inner));
        scope_names.push_back(g.name);
        const int inner_scope = static_cast<int>(scope_inputs.size()) - 1;
        for (const auto& o : g.outputs) outs.push_back(visit(o, inner_scope, depth + 1));
      } else {
        outs.push_back(add_step(node->layer, in, node->output_shapes[0], scope != 0));
      }
    }
    memo[key] = outs;
    return outs.at(static_cast<std::size_t>(t.index()));
  }

  // Visits every node `ends` depend on in the order visit's recursion would (inputs first, in
  // order) but with an explicit stack, then the ends themselves: visit() then finds each node's
  // inputs memoized, so its recursion stays one level deep however long the graph (a
  // 10,000-layer chain overflowed the stack under AddressSanitizer).
  std::vector<int> visit_all(const std::vector<SymbolicTensor>& ends, int scope) {
    std::vector<std::pair<SymbolicTensor, bool>> stack;  // (tensor, inputs already pushed)
    std::set<const Node*> done;
    for (auto it = ends.rbegin(); it != ends.rend(); ++it) stack.emplace_back(*it, false);
    while (!stack.empty()) {
      auto& [t, pushed] = stack.back();
      const Node* node = t.node().get();
      if (done.count(node)) {
        stack.pop_back();
        continue;
      }
      if (!pushed && (node->layer || node->model)) {
        pushed = true;
        const std::vector<SymbolicTensor> inputs = node->inputs;  // stack may reallocate
        for (auto in = inputs.rbegin(); in != inputs.rend(); ++in)
          if (!done.count(in->node().get())) stack.emplace_back(*in, false);
        continue;
      }
      const SymbolicTensor tensor = t;
      stack.pop_back();
      (void)visit(tensor, scope, 0);
      done.insert(node);
    }
    std::vector<int> out;
    for (const auto& e : ends) out.push_back(visit(e, scope, 0));
    return out;
  }

  int add_step(const std::shared_ptr<Layer>& layer, const std::vector<int>& in, const Shape& shape,
               bool in_nested) {
    std::vector<Shape> shapes;
    for (int s : in) shapes.push_back(plan.slot_shapes[static_cast<std::size_t>(s)]);
    detail::Step st;
    const int call = calls[layer.get()]++;
    if (call == 0) {
      layer->build_inputs(shapes, rng);
      layers.push_back(layer);
      if (in_nested) nested.insert(layer.get());
      st.layer = layer;
    } else {
      // A second call of a layer: a replica with the same weights (synced before each run) and
      // its own buffers, so both calls keep what their backward needs.
      Random unused;
      std::unique_ptr<Layer> replica = layer->clone();
      if (!replica) {
        throw ValueError(layer->class_name() + " '" + layer->name() +
                         "' is called more than once, which needs a copy of it, but this layer "
                         "class cannot be copied");
      }
      replica->build_inputs(shapes, unused);
      st.layer = std::shared_ptr<Layer>(std::move(replica));
      std::vector<Variable*> a = st.layer->weights(), b = layer->weights();
      for (std::size_t i = 0; i < a.size(); ++i) st.synced.emplace_back(a[i], b[i]);
    }
    st.primary = layer.get();
    st.in = in;
    st.out = new_slot(shape);
    plan.steps.push_back(std::move(st));
    return plan.steps.back().out;
  }
};

}  // namespace

std::int64_t validation_split_index(std::int64_t n, double split) noexcept {
  return static_cast<std::int64_t>(std::floor(static_cast<double>(n) * (1.0 - split)));
}

// ---------------------------------------------------------------------------------------------
// Construction

Model::Model(std::uint64_t seed, std::string name)
    : rng_(seed), graph_(std::make_shared<GraphDef>()), name_(std::move(name)), seed_(seed) {
  graph_->name = name_;
}

Model::Model(std::vector<SymbolicTensor> inputs, std::vector<SymbolicTensor> outputs,
             std::string name, std::uint64_t seed)
    : Model(seed, std::move(name)) {
  set_graph(std::move(inputs), std::move(outputs));
}

Model::Model(const SymbolicTensor& input, const SymbolicTensor& output, std::string name,
             std::uint64_t seed)
    : Model(std::vector<SymbolicTensor>{input}, std::vector<SymbolicTensor>{output},
            std::move(name), seed) {}

Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

void Model::set_graph(std::vector<SymbolicTensor> inputs, std::vector<SymbolicTensor> outputs) {
  const std::string who = "Model '" + name_ + "'";
  if (inputs.empty()) throw ValueError(who + ": needs at least one input");
  if (outputs.empty()) throw ValueError(who + ": needs at least one output");
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const auto& t = inputs[i];
    if (!t.defined()) throw ValueError(who + ": input " + std::to_string(i) + " is undefined");
    if (t.node()->layer || t.node()->model)
      throw ValueError(who + ": input " + std::to_string(i) + " ('" + t.producer_name() +
                       "') is a layer's output, not an Input");
    for (std::size_t j = 0; j < i; ++j)
      if (inputs[j] == t)
        throw ValueError(who + ": input '" + t.producer_name() + "' is listed twice");
  }
  for (std::size_t i = 0; i < outputs.size(); ++i)
    if (!outputs[i].defined())
      throw ValueError(who + ": output " + std::to_string(i) + " is undefined");
  // Keras names unnamed inputs input_layer, input_layer_1, ...
  {
    std::set<std::string> taken;
    for (const auto& t : inputs)
      if (!t.node()->input_name.empty()) taken.insert(t.node()->input_name);
    for (const auto& t : inputs) {
      if (!t.node()->input_name.empty()) continue;
      std::string n = "input_layer";
      for (int k = 1; taken.count(n); ++k) n = "input_layer_" + std::to_string(k);
      t.node()->input_name = n;
      taken.insert(n);
    }
  }

  auto plan = std::make_unique<detail::Plan>();
  std::vector<std::shared_ptr<Layer>> layers;
  Expander ex{*plan, rng_, layers, {}, {}, {}, {}, {}};
  ex.scope_inputs.emplace_back();
  ex.scope_names.push_back(name_);
  for (const auto& t : inputs) {
    const int s = ex.new_slot(t.shape());
    plan->is_input[static_cast<std::size_t>(s)] = true;
    plan->input_slots.push_back(s);
    ex.scope_inputs[0][t.node().get()] = s;
  }
  // Names first (errors name the layers): unnamed or default-named layers get Keras's unique
  // names (dense, dense_1, ...) unless a nested model already named them.
  plan->output_slots = ex.visit_all(outputs, 0);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    bool used = std::any_of(plan->steps.begin(), plan->steps.end(), [&](const detail::Step& s) {
      return std::find(s.in.begin(), s.in.end(), plan->input_slots[i]) != s.in.end();
    });
    used = used || std::find(plan->output_slots.begin(), plan->output_slots.end(),
                             plan->input_slots[i]) != plan->output_slots.end();
    if (!used)
      throw ValueError(who + ": input '" + inputs[i].producer_name() +
                       "' is not connected to any output");
  }
  {
    std::set<std::string> taken;
    for (const auto& l : layers) {
      const bool fixed = ex.nested.count(l.get()) ||
                         (!l->name().empty() && l->name() != snake_case_name(l->class_name()));
      if (!fixed) continue;
      if (!taken.insert(l->name()).second)
        throw ValueError(who + ": two layers are named '" + l->name() + "'");
    }
    // The next suffix to try per stem, so naming n layers of one class is O(n log n) (probing
    // dense, dense_1, ... from the start for every layer made a 10,000-layer chain cubic).
    std::map<std::string, int> next_suffix;
    for (const auto& l : layers) {
      const bool fixed = ex.nested.count(l.get()) ||
                         (!l->name().empty() && l->name() != snake_case_name(l->class_name()));
      if (fixed) continue;
      const std::string stem = snake_case_name(l->class_name());
      int& k = next_suffix[stem];
      std::string n = k == 0 ? stem : stem + "_" + std::to_string(k);
      while (taken.count(n)) n = stem + "_" + std::to_string(++k);
      ++k;
      l->set_name(n);
      taken.insert(n);
    }
  }
  // Run-time state, sized once.
  const auto slots = static_cast<std::size_t>(plan->num_slots);
  plan->uses.assign(slots, 0);
  for (const auto& st : plan->steps)
    for (int s : st.in) ++plan->uses[static_cast<std::size_t>(s)];
  for (int s : plan->output_slots) ++plan->uses[static_cast<std::size_t>(s)];
  plan->value.assign(slots, nullptr);
  plan->grad.assign(slots, nullptr);
  plan->accum.resize(slots);
  plan->loss_grad.resize(plan->output_slots.size());
  for (auto& st : plan->steps) {
    st.xs.assign(st.in.size(), nullptr);
    st.dxs.assign(st.in.size() + 1, nullptr);
    st.need_dx = std::make_unique<bool[]>(st.in.size() + 1);
  }

  graph_ = std::make_shared<GraphDef>();
  graph_->name = name_;
  graph_->inputs = std::move(inputs);
  graph_->outputs = std::move(outputs);
  input_shape_ = graph_->inputs[0].shape();
  layers_ = std::move(layers);
  plan_ = std::move(plan);
  apply_fusion();
}

// BatchNormalization whose output goes only to Add(bn, shortcut), whose output goes only to a
// ReLU: BN computes relu(bn(x) + shortcut) in its own passes (forward and backward) and the Add
// and the ReLU become aliases of its output. BatchNormalization whose output goes only to a
// ReLU: BN computes max(y, 0) and the ReLU is an alias. Same values, bit for bit (tested), two
// fewer passes over the activations each.
void Model::apply_fusion() {
  if (!plan_) return;
  auto& p = *plan_;
  std::vector<int> producer(static_cast<std::size_t>(p.num_slots), -1);
  std::vector<std::vector<int>> consumers(static_cast<std::size_t>(p.num_slots));
  for (std::size_t i = 0; i < p.steps.size(); ++i) {
    auto& st = p.steps[i];
    st.alias = -1;
    producer[static_cast<std::size_t>(st.out)] = static_cast<int>(i);
    for (int s : st.in) consumers[static_cast<std::size_t>(s)].push_back(static_cast<int>(i));
    st.bn = dynamic_cast<BatchNormalization*>(st.layer.get());
    st.fused_relu = st.fused_add_relu = false;
    if (st.bn && st.in.size() > 1) st.in.erase(st.in.begin() + 1, st.in.end());
  }
  // A slot whose one use is step `c` (and is not a model output).
  auto only_consumer = [&](int slot) {
    const auto& c = consumers[static_cast<std::size_t>(slot)];
    return c.size() == 1 && p.uses[static_cast<std::size_t>(slot)] == 1 ? c[0] : -1;
  };
  std::vector<int> move_before(p.steps.size(), -1);
  for (std::size_t b = 0; b < p.steps.size(); ++b) {
    auto* bn = dynamic_cast<BatchNormalization*>(p.steps[b].layer.get());
    if (!bn || !bn->fusable()) continue;
    const int next = only_consumer(p.steps[b].out);
    if (next < 0) continue;
    auto& n = p.steps[static_cast<std::size_t>(next)];
    if (is_relu_activation(*n.layer)) {
      p.steps[b].fused_relu = true;
      n.alias = p.steps[b].out;
      continue;
    }
    auto* add = dynamic_cast<Add*>(n.layer.get());
    if (!add || n.alias >= 0 || n.in.size() != 2 || n.in[0] == n.in[1]) continue;
    if (!(p.slot_shapes[static_cast<std::size_t>(n.in[0])] ==
          p.slot_shapes[static_cast<std::size_t>(n.in[1])]))
      continue;
    const int r = only_consumer(n.out);
    if (r < 0 || !is_relu_activation(*p.steps[static_cast<std::size_t>(r)].layer)) continue;
    const int shortcut = n.in[0] == p.steps[b].out ? n.in[1] : n.in[0];
    p.steps[b].fused_add_relu = true;
    p.steps[b].in.push_back(shortcut);
    n.alias = p.steps[b].out;
    p.steps[static_cast<std::size_t>(r)].alias = n.out;
    move_before[b] = next;  // the BN step now reads the shortcut: it runs right before the Add
  }
  // Reorder: each fused BN step goes right before its Add (its shortcut is ready there; its
  // output has no other use).
  std::vector<int> order;
  std::vector<std::vector<int>> inserted(p.steps.size());
  for (std::size_t i = 0; i < p.steps.size(); ++i)
    if (move_before[i] >= 0) inserted[static_cast<std::size_t>(move_before[i])].push_back(int(i));
  for (std::size_t i = 0; i < p.steps.size(); ++i) {
    if (move_before[i] >= 0) continue;
    for (int b : inserted[i]) order.push_back(b);
    order.push_back(static_cast<int>(i));
  }
  bool changed = false;
  for (std::size_t i = 0; i < order.size(); ++i) changed |= order[i] != static_cast<int>(i);
  if (changed) {
    std::vector<detail::Step> steps;
    steps.reserve(p.steps.size());
    for (int i : order) steps.push_back(std::move(p.steps[static_cast<std::size_t>(i)]));
    p.steps = std::move(steps);
  }
  for (auto& st : p.steps) {
    st.xs.assign(st.in.size(), nullptr);
    st.dxs.assign(st.in.size(), nullptr);
    st.need_dx = std::make_unique<bool[]>(st.in.size());
  }
  p.output_steps.assign(p.output_slots.size(), -1);
  for (std::size_t o = 0; o < p.output_slots.size(); ++o)
    for (std::size_t k = 0; k < p.steps.size(); ++k)
      if (p.steps[k].out == p.output_slots[o] && p.steps[k].alias < 0)
        p.output_steps[o] = static_cast<int>(k);
  set_fusion_flags();
}

// Puts this plan's fusion choices on the layers (see Step::bn). Cheap: a few flags per step.
void Model::set_fusion_flags() {
  for (auto& st : plan_->steps) {
    if (st.bn) {
      st.bn->set_fused_relu(st.fused_relu);
      st.bn->set_fused_add_relu(st.fused_add_relu);
    }
    st.layer->set_absorbed(st.alias >= 0);
  }
}

// A Sequential without an Input builds its chain for the first batch's shape (Keras builds
// a deferred Sequential on its first call); a functional model's shapes are fixed.
void Model::ensure_graph(const std::vector<Shape>& shapes) {
  if (!sequential_ || layers_.empty() || shapes.size() != 1) return;
  if (plan_) return;  // built: prepare() reports the mismatch
  build_chain(shapes[0]);
}

void Model::build_chain(const Shape& input_shape) {
  Input in(input_shape);
  SymbolicTensor h = in;
  std::vector<std::shared_ptr<Layer>> chain = layers_;
  for (auto& l : chain) h = (*l)(h);
  set_graph({in}, {h});
}

std::unique_ptr<Model> Model::make_empty() const {
  std::unique_ptr<Model> m(new Model(seed_, name_));
  m->sequential_ = sequential_;
  return m;
}

SymbolicTensor Model::operator()(const SymbolicTensor& x) const {
  return (*this)(std::vector<SymbolicTensor>{x});
}

SymbolicTensor Model::operator()(const std::vector<SymbolicTensor>& xs) const {
  std::vector<SymbolicTensor> out = call(xs);
  if (out.size() != 1)
    throw ValueError("Model '" + name_ + "' has " + std::to_string(out.size()) +
                     " outputs; use call() to get all of them");
  return out[0];
}

std::vector<SymbolicTensor> Model::call(const std::vector<SymbolicTensor>& xs) const {
  if (!plan_) throw ValueError("Model '" + name_ + "': not built (no input shape yet)");
  if (xs.size() != graph_->inputs.size()) {
    throw ValueError("Model '" + name_ + "' takes " + std::to_string(graph_->inputs.size()) +
                     " inputs; received " + std::to_string(xs.size()));
  }
  auto node = std::make_shared<Node>();
  node->model = graph_;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!xs[i].defined()) throw ValueError("Model '" + name_ + "': undefined input tensor");
    if (!(xs[i].shape() == graph_->inputs[i].shape())) {
      throw ShapeError("Model '" + name_ + "': input " + std::to_string(i) + " expects " +
                       batch_shape_str(graph_->inputs[i].shape()) + "; received " +
                       batch_shape_str(xs[i].shape()) + " from '" + xs[i].producer_name() + "'");
    }
  }
  node->inputs = xs;
  for (const auto& o : graph_->outputs) node->output_shapes.push_back(o.shape());
  std::vector<SymbolicTensor> out;
  for (std::size_t i = 0; i < graph_->outputs.size(); ++i)
    out.emplace_back(node, static_cast<int>(i));
  return out;
}

Layer& Model::layer(const std::string& name) {
  for (auto& l : layers_)
    if (l->name() == name) return *l;
  throw ValueError(class_name() + " '" + name_ + "': no layer named '" + name + "'");
}

Shape Model::output_shape() const {
  if (graph_->outputs.empty())
    throw ValueError(class_name() + " '" + name_ + "': the input shape is unknown (add an Input)");
  return graph_->outputs[0].shape();
}

bool Model::built() const noexcept {
  return plan_ != nullptr &&
         std::all_of(layers_.begin(), layers_.end(), [](auto& l) { return l->built(); });
}

// ---------------------------------------------------------------------------------------------
// Compile

void Model::compile(std::unique_ptr<Optimizer> optimizer, LossKind loss,
                    std::vector<std::string> metrics) {
  if (!optimizer) throw ValueError(class_name() + "::compile: optimizer is null");
  for (auto& m : metrics) {
    if (m == "acc") m = "accuracy";
    if (m != "accuracy")
      throw ValueError(class_name() + "::compile: unknown metric '" + m + "'; expected: accuracy");
  }
  optimizer_ = std::move(optimizer);
  loss_ = loss;
  metrics_ = std::move(metrics);
}

void Model::compile(const std::string& optimizer, const std::string& loss,
                    std::vector<std::string> metrics) {
  compile(make_optimizer(optimizer), parse_loss(loss), std::move(metrics));
}

Optimizer& Model::optimizer() { return const_cast<Optimizer&>(std::as_const(*this).optimizer()); }

const Optimizer& Model::optimizer() const {
  if (!optimizer_) throw ValueError(class_name() + ": the model is not compiled");
  return *optimizer_;
}

// ---------------------------------------------------------------------------------------------
// Running the plan

void Model::check_xy(Tensors xs, Tensors ys, const char* what_c) const {
  const auto what = [&] { return std::string(what_c); };
  if (xs.empty() || !xs[0]) throw ShapeError(what() + ": x is empty");
  for (const Tensor* x : xs)
    if (!x || x->rank() == 0) throw ShapeError(what() + ": x is empty");
  for (const Tensor* y : ys)
    if (!y || y->rank() == 0) throw ShapeError(what() + ": y is empty");
  const std::int64_t n = xs[0]->shape()[0];
  for (const Tensor* x : xs)
    if (x->shape()[0] != n)
      throw ShapeError(what() + ": the inputs have different numbers of samples (" +
                       std::to_string(n) + " and " + std::to_string(x->shape()[0]) + ")");
  for (const Tensor* y : ys)
    if (y->shape()[0] != n)
      throw ShapeError(what() + ": x has " + std::to_string(n) + " samples but y has " +
                       std::to_string(y->shape()[0]));
  if (n == 0) throw ShapeError(what() + ": x has 0 samples");
  // Data enters the engine here (fit and its validation data, evaluate, predict, train_on_batch):
  // NaN or Inf is refused naming the sample, before any step, so no loss, metric or prediction
  // is ever computed from it (Keras would return NaN and train on; issue 16 item 8).
  auto check_finite = [&](const Tensor& t, const std::string& which) {
    const std::int64_t bad = t.first_non_finite();
    if (bad < 0) return;
    const float v = t[bad];
    const std::int64_t per_sample = t.size() / n;
    throw NonFiniteError(what() + ": " + which + " holds " +
                         (std::isnan(v) ? "NaN"
                          : v > 0       ? "inf"
                                        : "-inf") +
                         " at sample " + std::to_string(bad / per_sample) +
                         " (bnorm refuses non-finite data instead of returning NaN results)");
  };
  for (std::size_t i = 0; i < xs.size(); ++i)
    check_finite(*xs[i], xs.size() == 1 ? "x" : "x[" + std::to_string(i) + "]");
  for (std::size_t i = 0; i < ys.size(); ++i)
    check_finite(*ys[i], ys.size() == 1 ? "y" : "y[" + std::to_string(i) + "]");
}

// Makes sure the plan exists and fits inputs of these per-sample shapes (allocation-free when
// it does).
void Model::prepare(Tensors xs) {
  bool same = plan_ && xs.size() == plan_->input_slots.size();
  for (std::size_t i = 0; same && i < xs.size(); ++i) {
    const Shape& want = plan_->slot_shapes[static_cast<std::size_t>(plan_->input_slots[i])];
    same = xs[i]->rank() == want.rank() + 1;
    for (int d = 0; same && d < want.rank(); ++d) same = xs[i]->shape()[d + 1] == want[d];
  }
  if (same) return;
  std::vector<Shape> shapes;
  for (const Tensor* x : xs)
    shapes.emplace_back(
        std::vector<std::int64_t>(x->shape().dims().begin() + 1, x->shape().dims().end()));
  ensure_graph(shapes);
  if (!plan_) throw ValueError(class_name() + " '" + name_ + "': the model has no layers");
  if (xs.size() != plan_->input_slots.size()) {
    throw ValueError(class_name() + " '" + name_ + "' takes " +
                     std::to_string(plan_->input_slots.size()) + " inputs; received " +
                     std::to_string(xs.size()));
  }
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const Shape& want = plan_->slot_shapes[static_cast<std::size_t>(plan_->input_slots[i])];
    check_same_shape(want, shapes[i],
                     class_name() + " '" + name_ + "' input '" + graph_->inputs[i].producer_name() +
                         "' (per sample)");
  }
}

namespace {
// A shared layer's later call (a replica step) runs with the primary's current weights...
void take_primary_weights(detail::Step& st) {
  if (st.synced.empty()) return;
  st.layer->set_trainable(st.primary->trainable());
  for (auto& [mine, primary] : st.synced)
    std::copy(primary->value.data(), primary->value.data() + primary->value.size(),
              mine->value.data());
}
// ...and the state a training call updated (BN moving statistics) goes back to the shared layer.
void return_updated_state(detail::Step& st) {
  for (auto& [mine, primary] : st.synced)
    if (!mine->trainable)
      std::copy(mine->value.data(), mine->value.data() + mine->value.size(), primary->value.data());
}
}  // namespace

void Model::forward(std::span<const Tensor* const> xs, Mode mode) {
  auto& p = *plan_;
  set_fusion_flags();
  for (std::size_t i = 0; i < xs.size(); ++i)
    p.value[static_cast<std::size_t>(p.input_slots[i])] = xs[i];
  for (auto& st : p.steps) {
    if (st.alias >= 0) {
      p.value[static_cast<std::size_t>(st.out)] = p.value[static_cast<std::size_t>(st.alias)];
      continue;
    }
    take_primary_weights(st);
    for (std::size_t j = 0; j < st.in.size(); ++j)
      st.xs[j] = p.value[static_cast<std::size_t>(st.in[j])];
    p.value[static_cast<std::size_t>(st.out)] = &st.layer->forward_inputs(st.xs, mode);
    if (mode == Mode::training) return_updated_state(st);
  }
}

// A distributed step: the communicator, the global batch's sample count (what every rank divides
// its loss sum by) and whether this rank's share is empty.
struct Model::DistStep {
  dist::Communicator* comm = nullptr;
  std::int64_t global_count = 0;
  std::int64_t batch_offset = 0;  // where this rank's samples start in the global batch
  bool empty = false;
};

namespace {
// Puts the communicator on every BatchNormalization of a plan for one step (synchronized layers
// use it) and the rank's place in the global batch on every layer (Dropout draws by it), and
// takes both away afterwards, also when the step throws: outside the training step (evaluate,
// predict, a callback) no layer exchanges anything.
class CommunicatorScope {
 public:
  CommunicatorScope(detail::Plan& plan, dist::Communicator* comm, std::int64_t batch_offset)
      : plan_(plan), active_(comm != nullptr) {
    if (!active_) return;
    for (auto& st : plan_.steps) {
      if (st.bn) st.bn->set_communicator(comm);
      st.layer->set_batch_offset(batch_offset);
    }
  }
  ~CommunicatorScope() {
    if (!active_) return;
    for (auto& st : plan_.steps) {
      if (st.bn) st.bn->set_communicator(nullptr);
      st.layer->set_batch_offset(0);
    }
  }
  CommunicatorScope(const CommunicatorScope&) = delete;
  CommunicatorScope& operator=(const CommunicatorScope&) = delete;

 private:
  detail::Plan& plan_;
  bool active_;
};
}  // namespace

void Model::forward_empty() {
  // The forward's collectives are those of the synchronized BN steps, in step order.
  set_fusion_flags();
  for (auto& st : plan_->steps) {
    if (st.alias >= 0) continue;
    if (!st.bn) {
      st.layer->forward_skipped(Mode::training);
      continue;
    }
    take_primary_weights(st);
    st.bn->forward_empty(Mode::training);
    return_updated_state(st);
  }
}

void Model::backward_empty() {
  for (std::size_t k = plan_->steps.size(); k-- > 0;) {
    auto& st = plan_->steps[k];
    if (st.alias < 0 && st.bn) st.bn->backward_empty();
  }
  for (Variable* v : trainable_) v->gradient.fill(0.0f);
}

namespace {
// The gradients (or values) of `vars` as one message in `buffer`, and back.
Tensor Variable::*const kGradient = &Variable::gradient;
Tensor Variable::*const kValue = &Variable::value;
void pack(std::span<Variable* const> vars, Tensor Variable::*part, std::vector<float>& buffer) {
  std::size_t total = 0;
  for (const Variable* v : vars) total += static_cast<std::size_t>((v->*part).size());
  buffer.resize(total);  // no allocation once the capacity suffices
  float* at = buffer.data();
  for (const Variable* v : vars)
    at = std::copy((v->*part).data(), (v->*part).data() + (v->*part).size(), at);
}
void unpack(std::span<Variable* const> vars, Tensor Variable::*part,
            const std::vector<float>& buffer) {
  const float* at = buffer.data();
  for (Variable* v : vars) {
    std::copy(at, at + (v->*part).size(), (v->*part).data());
    at += (v->*part).size();
  }
}
}  // namespace

void Model::exchange_gradients(dist::Communicator& comm) {
  pack(trainable_, kGradient, dist_buffer_);
  comm.all_reduce_sum(dist_buffer_);
  unpack(trainable_, kGradient, dist_buffer_);
}

void Model::collect_rank_zero_statistics() {
  // Non-synchronized BN layers normalize with each rank's own shard: their moving statistics
  // differ between ranks; rank 0's are kept, as PyTorch DDP's broadcast_buffers does.
  dist_moving_.clear();
  for (auto& l : layers_) {
    auto* bn = dynamic_cast<BatchNormalization*>(l.get());
    if (!bn || bn->options().synchronized || !bn->uses_batch_statistics(Mode::training) ||
        !bn->moving_mean())
      continue;
    dist_moving_.push_back(bn->moving_mean());
    dist_moving_.push_back(bn->moving_variance());
  }
}

void Model::broadcast_moving_statistics(dist::Communicator& comm) {
  if (dist_moving_.empty()) return;
  pack(dist_moving_, kValue, dist_buffer_);
  comm.broadcast(dist_buffer_, 0);
  unpack(dist_moving_, kValue, dist_buffer_);
}

void Model::check_replicas(dist::Communicator& comm, const std::string& where) {
  // FNV-1a over the bytes of every weight, in layer order.
  std::uint64_t h = 1469598103934665603ull;
  for (auto& l : layers_)
    for (const Variable* v : std::as_const(*l).weights()) {
      const auto* b = reinterpret_cast<const unsigned char*>(v->value.data());
      for (std::int64_t i = 0; i < v->value.size() * 4; ++i) h = (h ^ b[i]) * 1099511628211ull;
    }
  double mine = 0.0;
  std::memcpy(&mine, &h, sizeof h);
  std::vector<double> all(static_cast<std::size_t>(comm.size()));
  comm.all_gather(std::span<const double>(&mine, 1), all);
  for (std::size_t r = 1; r < all.size(); ++r) {
    if (std::memcmp(&all[r], &all[0], sizeof mine) != 0) {
      std::uint64_t hr = 0, h0 = 0;
      std::memcpy(&hr, &all[r], sizeof hr);
      std::memcpy(&h0, &all[0], sizeof h0);
      char text[96];
      std::snprintf(text, sizeof text, "rank 0 has %016llx, rank %zu has %016llx",
                    static_cast<unsigned long long>(h0), r, static_cast<unsigned long long>(hr));
      throw DistError("fit: the weights differ between ranks " + where + " (" + text + ")");
    }
  }
}

double Model::train_step(std::span<const Tensor* const> xs, std::span<const Tensor* const> ys,
                         double* correct, const DistStep* dist) {
  auto& p = *plan_;
  const CommunicatorScope scope(p, dist ? dist->comm : nullptr, dist ? dist->batch_offset : 0);
  const bool empty = dist && dist->empty;
  if (empty)
    forward_empty();
  else
    forward(xs, Mode::training);
  std::fill(p.grad.begin(), p.grad.end(), nullptr);
  double loss = 0.0;
  if (correct) *correct = 0.0;
  // The loss of each output; its gradient is the first contribution to the output's slot.
  for (std::size_t o = 0; o < p.output_slots.size() && !empty; ++o) {
    const int slot = p.output_slots[o];
    const Tensor& out = *p.value[static_cast<std::size_t>(slot)];
    const Tensor* logits = nullptr;
    detail::Step* producer =
        p.output_steps[o] < 0 ? nullptr : &p.steps[static_cast<std::size_t>(p.output_steps[o])];
    if (producer) {
      producer->from_logits = false;
      if (loss_ != LossKind::mean_squared_error && p.uses[static_cast<std::size_t>(slot)] == 1)
        logits = producer->layer->softmax_logits();
      producer->from_logits = logits != nullptr;
    }
    loss +=
        compute_loss(loss_, out, logits, *ys[o], &p.loss_grad[o], dist ? dist->global_count : 0);
    if (correct && !metrics_.empty() && o == 0) *correct = accuracy_count(loss_, out, *ys[o]);
  }
  if (dist) {
    // The global batch's loss (each rank's sum is already divided by the global count) and
    // accuracy count; every rank then takes the same decision on a non-finite loss.
    double metrics[2] = {loss, correct ? *correct : 0.0};
    dist->comm->all_reduce_sum(metrics);
    loss = metrics[0];
    if (correct) *correct = metrics[1];
  }
  for (auto& l : layers_) loss += l->regularization_loss();
  if (!std::isfinite(loss)) return loss;  // the caller reports it; no update with NaN gradients
  if (empty) {
    backward_empty();
    exchange_gradients(*dist->comm);
    for (auto& l : layers_) l->add_regularization_gradients();
    optimizer_->apply(trainable_);
    broadcast_moving_statistics(*dist->comm);
    return loss;
  }

  auto contribute = [&](int slot, const Tensor* g) {
    const auto s = static_cast<std::size_t>(slot);
    if (p.uses[s] == 1) {
      p.grad[s] = g;
      return;
    }
    Tensor& acc = p.accum[s];
    if (!p.grad[s]) {
      acc = *g;  // no allocation once the buffer has the capacity
      p.grad[s] = &acc;
      return;
    }
    float* a = acc.data();
    const float* b = g->data();
    for (std::int64_t i = 0; i < acc.size(); ++i) a[i] += b[i];
  };
  for (std::size_t o = 0; o < p.output_slots.size(); ++o)
    contribute(p.output_slots[o], &p.loss_grad[o]);
  for (std::size_t k = p.steps.size(); k-- > 0;) {
    auto& st = p.steps[k];
    const Tensor* g = p.grad[static_cast<std::size_t>(st.out)];
    if (!g) continue;  // cannot happen: every step leads to an output
    if (st.alias >= 0) {
      contribute(st.alias, g);
      continue;
    }
    for (std::size_t j = 0; j < st.in.size(); ++j)
      st.need_dx[j] = !p.is_input[static_cast<std::size_t>(st.in[j])];
    if (st.from_logits) {
      const Tensor& dx = st.layer->backward_from_logits(*g, st.need_dx[0]);
      if (st.need_dx[0]) contribute(st.in[0], &dx);
      continue;
    }
    st.layer->backward_inputs(*g, std::span<const bool>(st.need_dx.get(), st.in.size()),
                              std::span<const Tensor*>(st.dxs.data(), st.in.size()));
    for (std::size_t j = 0; j < st.in.size(); ++j)
      if (st.dxs[j]) contribute(st.in[j], st.dxs[j]);
  }
  // A shared layer's gradient is the sum over its calls (first call, then the replicas in
  // graph order).
  for (auto& st : p.steps) {
    if (st.synced.empty() || !st.layer->trainable() || st.alias >= 0) continue;
    for (auto& [mine, primary] : st.synced) {
      if (!mine->trainable) continue;
      float* a = primary->gradient.data();
      const float* b = mine->gradient.data();
      for (std::int64_t i = 0; i < primary->gradient.size(); ++i) a[i] += b[i];
    }
  }
  // Regularization after the all-reduce: its gradient is added once, as in one process.
  if (dist) exchange_gradients(*dist->comm);
  for (auto& l : layers_) l->add_regularization_gradients();
  optimizer_->apply(trainable_);
  if (dist) broadcast_moving_statistics(*dist->comm);
  return loss;
}

void Model::collect_trainable() {
  trainable_.clear();  // keeps its capacity: no allocation after the first call
  for (auto& l : layers_) l->append_trainable_weights(trainable_);
}

double Model::train_on_batch(const Tensor& x, const Tensor& y) {
  const Tensor* const xs[] = {&x};
  const Tensor* const ys[] = {&y};
  return train_on_batch_impl(xs, ys);
}

double Model::train_on_batch(const std::vector<const Tensor*>& xs,
                             const std::vector<const Tensor*>& ys, double* correct) {
  return train_on_batch_impl(xs, ys, correct);
}

double Model::train_on_batch_impl(Tensors xs, Tensors ys, double* correct) {
  const ScopedFlushDenormal flush_denormals;  // as TensorFlow runs its CPU kernels
  if (!optimizer_) throw ValueError(class_name() + "::train_on_batch: compile the model first");
  check_xy(xs, ys, "train_on_batch");
  prepare(xs);
  if (ys.size() != plan_->output_slots.size()) [[unlikely]]
    throw ValueError("train_on_batch: the model has " + std::to_string(plan_->output_slots.size()) +
                     " outputs; received " + std::to_string(ys.size()) + " targets");
  collect_trainable();
  double batch_correct = 0.0;
  const double loss = train_step(xs, ys, correct ? &batch_correct : nullptr);
  if (!std::isfinite(loss)) throw NonFiniteError("train_on_batch: the loss is not finite");
  if (correct) *correct = batch_correct;
  return loss;
}

History Model::fit(const Tensor& x, const Tensor& y, const FitOptions& options) {
  return fit(std::vector<const Tensor*>{&x}, std::vector<const Tensor*>{&y}, options);
}

History Model::fit(const std::vector<const Tensor*>& xs, const std::vector<const Tensor*>& ys,
                   const FitOptions& o) {
  const ScopedFlushDenormal flush_denormals;  // as TensorFlow runs its CPU kernels
  if (!optimizer_) throw ValueError(class_name() + "::fit: compile the model first");
  if (o.batch_size < 1)
    throw ValueError("fit: batch_size must be >= 1; received " + std::to_string(o.batch_size));
  if (o.epochs < 1)
    throw ValueError("fit: epochs must be >= 1; received " + std::to_string(o.epochs));
  if (o.initial_epoch < 0) {
    throw ValueError("fit: initial_epoch must be >= 0; received " +
                     std::to_string(o.initial_epoch));
  }
  if (!(o.validation_split >= 0.0 && o.validation_split < 1.0)) {
    throw ValueError("fit: validation_split must be in [0, 1); received " +
                     std::to_string(o.validation_split));
  }
  check_xy(xs, ys, "fit");
  prepare(xs);
  if (ys.size() != plan_->output_slots.size())
    throw ValueError("fit: the model has " + std::to_string(plan_->output_slots.size()) +
                     " outputs; received " + std::to_string(ys.size()) + " targets");

  // Keras: validation_split takes the last fraction of the samples, before any shuffling.
  const std::int64_t n_all = xs[0]->shape()[0];
  std::int64_t n_train = n_all;
  std::vector<Tensor> split_x, split_y;
  std::vector<const Tensor*> vxs, vys;
  if ((o.validation_x == nullptr) != (o.validation_y == nullptr))
    throw ValueError("fit: validation data needs both x and y");
  if (o.validation_x) {
    if (xs.size() != 1 || ys.size() != 1)
      throw ValueError(
          "fit: validation_x/validation_y are for single-input, single-output "
          "models; use validation_split");
    vxs = {o.validation_x};
    vys = {o.validation_y};
    check_xy(vxs, vys, "fit validation data");
  } else if (o.validation_split > 0.0) {
    n_train = validation_split_index(n_all, o.validation_split);
    if (n_train < 1 || n_train == n_all) {
      throw ValueError("fit: validation_split " + std::to_string(o.validation_split) + " of " +
                       std::to_string(n_all) +
                       " samples leaves an empty training or validation set");
    }
    split_x.resize(xs.size());
    split_y.resize(ys.size());
    for (std::size_t i = 0; i < xs.size(); ++i) {
      copy_rows(*xs[i], n_train, n_all, split_x[i]);
      vxs.push_back(&split_x[i]);
    }
    for (std::size_t i = 0; i < ys.size(); ++i) {
      copy_rows(*ys[i], n_train, n_all, split_y[i]);
      vys.push_back(&split_y[i]);
    }
  }

  // Written so that a batch size near INT64_MAX cannot overflow: one batch of everything.
  const std::int64_t local_steps = n_train / o.batch_size + (n_train % o.batch_size != 0 ? 1 : 0);
  dist::Communicator* comm =
      o.communicator && o.communicator->size() > 1 ? o.communicator : nullptr;
  if (o.check_replicas_every < 0) {
    throw ValueError("fit: check_replicas_every must be >= 0; received " +
                     std::to_string(o.check_replicas_every));
  }
  // Distributed: the ranks agree on the number of steps (the most any rank has, without
  // sharding), and with sharding they must hold the same data set and options.
  const std::int64_t steps =
      comm && !o.shard_batches ? comm->all_reduce_max(local_steps) : local_steps;
  std::vector<std::int64_t> order(static_cast<std::size_t>(n_train));
  std::iota(order.begin(), order.end(), 0);
  // The run this fit continues (the model's state says it completed exactly initial_epoch epochs
  // on as many samples) replays its shuffles to the same order and stream; any other fit starts
  // a new run with a shuffling stream split from the model's generator.
  const bool continuing = o.initial_epoch > 0 && training_state_.epoch == o.initial_epoch &&
                          training_state_.samples == n_train;
  Random shuffle_rng;
  if (continuing) {
    shuffle_rng = Random::from_state(training_state_.shuffle_seed);
    for (std::int64_t i = 0; i < training_state_.shuffles; ++i) shuffle_rng.shuffle(order);
  } else {
    shuffle_rng = rng_.split();
    training_state_ = TrainingState{};
    training_state_.epoch = o.initial_epoch;
    training_state_.samples = n_train;
    training_state_.shuffle_seed = shuffle_rng.state();
  }
  if (comm) {
    // Every rank must run the same sequence of steps: compare what decides it, on every rank
    // (each throws the same DistError, so none is left waiting).
    const Random::State seed = shuffle_rng.state();
    std::uint64_t seed_hash = 1469598103934665603ull;
    for (auto w : seed) seed_hash = (seed_hash ^ w) * 1099511628211ull;
    const double mine[] = {static_cast<double>(o.shard_batches ? n_train : 0),
                           static_cast<double>(o.batch_size),
                           static_cast<double>(o.epochs),
                           static_cast<double>(o.initial_epoch),
                           static_cast<double>(o.shuffle) + 2.0 * o.shard_batches,
                           static_cast<double>(seed_hash >> 11)};
    constexpr std::size_t k = std::size(mine);
    std::vector<double> all(k * static_cast<std::size_t>(comm->size()));
    comm->all_gather(mine, all);
    static const char* const names[] = {"training samples",
                                        "batch_size",
                                        "epochs",
                                        "initial_epoch",
                                        "shuffle/shard_batches",
                                        "shuffling seed (the model's seed)"};
    for (std::size_t r = 1; r < static_cast<std::size_t>(comm->size()); ++r)
      for (std::size_t i = 0; i < k; ++i)
        if (all[r * k + i] != all[i]) {
          throw DistError("fit: the ranks disagree on " + std::string(names[i]) + ": rank 0 has " +
                          std::to_string(static_cast<long long>(all[i])) + ", rank " +
                          std::to_string(r) + " has " +
                          std::to_string(static_cast<long long>(all[r * k + i])) +
                          " (every rank must call fit with the same data set size, options "
                          "and model seed)");
        }
  }
  std::vector<Tensor> bx(xs.size()), by(ys.size());
  std::vector<const Tensor*> pbx, pby;
  for (auto& t : bx) pbx.push_back(&t);
  for (auto& t : by) pby.push_back(&t);
  History history;
  stop_training = false;
  collect_trainable();  // trainable flags are read once per fit, as Keras reads them at compile
  if (comm) collect_rank_zero_statistics();
  for (auto* cb : o.callbacks) cb->on_train_begin(*this, o.epochs, steps);
  for (int epoch = o.initial_epoch; epoch < o.epochs && !stop_training; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    for (auto* cb : o.callbacks) cb->on_epoch_begin(*this, epoch);
    if (o.shuffle) shuffle_rng.shuffle(order);
    double loss_sum = 0.0, correct_sum = 0.0;
    std::int64_t seen = 0;
    Logs logs;
    for (std::int64_t step = 0; step < steps; ++step) {
      std::int64_t b0 = std::min(n_train, step * o.batch_size),
                   b1 = std::min(n_train, b0 + o.batch_size);
      DistStep dist_step;
      if (comm) {
        dist_step.comm = comm;
        if (o.shard_batches) {
          // This rank's contiguous share of the global batch [b0, b1).
          dist_step.global_count = b1 - b0;
          const dist::Range r = dist::block_of(b1 - b0, comm->rank(), comm->size());
          b1 = b0 + r.end;
          b0 += r.begin;
          dist_step.batch_offset = r.begin;
        } else {
          double count = static_cast<double>(b1 - b0);
          comm->all_reduce_sum(std::span<double>(&count, 1));
          dist_step.global_count = static_cast<std::int64_t>(count);
          // As if the ranks' batches were stacked: no two ranks drop by the same draws.
          dist_step.batch_offset = comm->rank() * o.batch_size;
        }
        dist_step.empty = b1 == b0;
      }
      if (b1 > b0) {
        for (std::size_t i = 0; i < xs.size(); ++i) gather_rows(*xs[i], order, b0, b1, bx[i]);
        for (std::size_t i = 0; i < ys.size(); ++i) gather_rows(*ys[i], order, b0, b1, by[i]);
      }
      double correct = 0.0, loss = 0.0;
      const auto where = [&] {
        return "epoch " + std::to_string(epoch + 1) + "/" + std::to_string(o.epochs) + ", step " +
               std::to_string(step + 1) + "/" + std::to_string(steps);
      };
      try {
        loss = train_step(pbx, pby, &correct, comm ? &dist_step : nullptr);
      } catch (const NonFiniteError& e) {
        throw NonFiniteError("training stopped at " + where() + ": " + e.what());
      }
      if (!std::isfinite(loss)) {
        throw NonFiniteError(
            "training stopped at " + where() + ": the loss is " +
            (std::isnan(loss) ? "NaN" : "infinite") +
            " (try a lower learning rate); weights of the previous step were not updated");
      }
      const std::int64_t count = comm ? dist_step.global_count : b1 - b0;
      loss_sum += loss * static_cast<double>(count);
      correct_sum += correct;
      seen += count;
      if (comm && o.check_replicas_every > 0 && (step + 1) % o.check_replicas_every == 0)
        check_replicas(*comm, "after " + where());
      logs["loss"] = loss_sum / static_cast<double>(seen);
      if (!metrics_.empty()) logs["accuracy"] = correct_sum / static_cast<double>(seen);
      for (auto* cb : o.callbacks) cb->on_train_batch_end(*this, step, logs);
    }
    if (!vxs.empty()) {
      const auto v = evaluate(vxs, vys, o.batch_size);
      logs["val_loss"] = v.loss;
      if (!metrics_.empty()) logs["val_accuracy"] = v.accuracy;
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    history.epoch_seconds.push_back(seconds);
    for (const auto& [k, v] : logs) history.history[k].push_back(v);
    training_state_.epoch = epoch + 1;
    if (o.shuffle) ++training_state_.shuffles;
    for (const auto& [k, v] : logs) training_state_.history[k].push_back(v);
    for (auto* cb : o.callbacks) cb->on_epoch_end(*this, epoch, logs);
  }
  for (auto* cb : o.callbacks) cb->on_train_end(*this);
  return history;
}

void Model::set_training_state(TrainingState state) {
  if (state.epoch < 0 || state.samples < 0 || state.shuffles < 0 || state.shuffles > state.epoch) {
    throw ValueError(
        "set_training_state: need epoch >= 0, samples >= 0 and 0 <= shuffles <= "
        "epoch; received epoch " +
        std::to_string(state.epoch) + ", samples " + std::to_string(state.samples) + ", shuffles " +
        std::to_string(state.shuffles));
  }
  if (state.epoch > 0) Random::from_state(state.shuffle_seed);  // ValueError for all zeros
  for (const auto& [key, values] : state.history) {
    if (values.size() > static_cast<std::size_t>(state.epoch)) {
      throw ValueError("set_training_state: history '" + key + "' has " +
                       std::to_string(values.size()) + " values for " +
                       std::to_string(state.epoch) + " epochs");
    }
  }
  training_state_ = std::move(state);
}

Model::RandomStreams Model::random_streams() const {
  RandomStreams out{rng_, {}};
  if (plan_) {
    for (const auto& st : plan_->steps) {
      const Layer& layer = *st.layer;
      if (const Random* r = layer.random_stream()) out.layers.emplace_back(st.primary->name(), *r);
    }
  }
  return out;
}

void Model::set_random_streams(const RandomStreams& streams) {
  std::vector<std::pair<const Layer*, Random*>> mine;
  if (plan_) {
    for (auto& st : plan_->steps)
      if (Random* r = st.layer->random_stream()) mine.emplace_back(st.primary, r);
  }
  const auto names = [](const auto& list, auto name_of) {
    std::string text;
    for (const auto& e : list) text += (text.empty() ? "" : ", ") + name_of(e);
    return "[" + text + "]";
  };
  bool same = mine.size() == streams.layers.size();
  for (std::size_t i = 0; same && i < mine.size(); ++i)
    same = mine[i].first->name() == streams.layers[i].first;
  if (!same) {
    throw ValueError("set_random_streams: the model's layer calls that draw random numbers are " +
                     names(mine, [](const auto& e) { return e.first->name(); }) +
                     "; received streams for " +
                     names(streams.layers, [](const auto& e) { return e.first; }));
  }
  rng_ = streams.model;
  for (std::size_t i = 0; i < mine.size(); ++i) *mine[i].second = streams.layers[i].second;
}

std::int64_t Model::recalibrate_batch_norm(const Tensor& x, std::int64_t batch_size,
                                           std::int64_t batches) {
  return recalibrate_batch_norm(std::vector<const Tensor*>{&x}, batch_size, batches);
}

std::int64_t Model::recalibrate_batch_norm(const std::vector<const Tensor*>& xs,
                                           std::int64_t batch_size, std::int64_t batches) {
  const ScopedFlushDenormal flush_denormals;
  if (batch_size < 1) {
    throw ValueError("recalibrate_batch_norm: batch_size must be >= 1; received " +
                     std::to_string(batch_size));
  }
  if (batches < 0) {
    throw ValueError("recalibrate_batch_norm: batches must be >= 0; received " +
                     std::to_string(batches));
  }
  check_xy(xs, {}, "recalibrate_batch_norm");
  prepare(xs);
  struct Saved {
    BatchNormalization* bn;
    bool cumulative;
    std::int64_t tracked;
  };
  std::vector<Saved> saved;
  for (auto& l : layers_) {
    auto* bn = dynamic_cast<BatchNormalization*>(l.get());
    if (!bn || !bn->uses_batch_statistics(Mode::training) || !bn->moving_mean()) continue;
    if (bn->options().renorm || bn->options().virtual_batch_size > 0) {
      throw ValueError("recalibrate_batch_norm: layer '" + bn->name() + "' uses " +
                       (bn->options().renorm ? "renorm" : "virtual_batch_size") +
                       ", whose moving statistics are not averages of batch statistics");
    }
    saved.push_back({bn, bn->options().cumulative_moving_average, bn->num_batches_tracked()});
  }
  const RandomStreams streams = random_streams();
  // The cumulative average: the k-th batch (from 0) enters with weight 1 / (k + 1), so after K
  // batches each moving statistic is the mean of the K batch statistics.
  for (auto& s : saved) {
    s.bn->set_cumulative_moving_average(true);
    s.bn->set_num_batches_tracked(0);
  }
  const auto restore = [&] {
    for (auto& s : saved) {
      s.bn->set_cumulative_moving_average(s.cumulative);
      s.bn->set_num_batches_tracked(s.tracked);
    }
    set_random_streams(streams);
  };
  const std::int64_t n = xs[0]->shape()[0];
  std::int64_t available = n / batch_size + (n % batch_size != 0 ? 1 : 0);
  if (batches > 0) available = std::min(available, batches);
  std::vector<Tensor> bx(xs.size());
  std::vector<const Tensor*> pbx;
  for (auto& t : bx) pbx.push_back(&t);
  try {
    for (std::int64_t b = 0; b < available; ++b) {
      const std::int64_t b0 = b * batch_size, b1 = std::min(n, b0 + batch_size);
      for (std::size_t i = 0; i < xs.size(); ++i) copy_rows(*xs[i], b0, b1, bx[i]);
      forward(pbx, Mode::training);
    }
  } catch (...) {
    restore();
    throw;
  }
  restore();
  return available;
}

EvaluateResult Model::evaluate(const Tensor& x, const Tensor& y, std::int64_t batch_size,
                               Mode mode) {
  return evaluate(std::vector<const Tensor*>{&x}, std::vector<const Tensor*>{&y}, batch_size, mode);
}

EvaluateResult Model::evaluate(const std::vector<const Tensor*>& xs,
                               const std::vector<const Tensor*>& ys, std::int64_t batch_size,
                               Mode mode) {
  const ScopedFlushDenormal flush_denormals;  // as TensorFlow runs its CPU kernels
  if (batch_size < 1)
    throw ValueError("evaluate: batch_size must be >= 1; received " + std::to_string(batch_size));
  check_xy(xs, ys, "evaluate");
  prepare(xs);
  if (ys.size() != plan_->output_slots.size())
    throw ValueError("evaluate: the model has " + std::to_string(plan_->output_slots.size()) +
                     " outputs; received " + std::to_string(ys.size()) + " targets");
  // Inference runs on the folded copy when a pair folds (same loss function and metrics); the
  // regularization term below is this model's.
  std::unique_ptr<Model> folded = mode == Mode::inference ? folded_for_inference() : nullptr;
  const auto [loss_sum, correct] = folded ? folded->evaluate_batches(xs, ys, batch_size, mode)
                                          : evaluate_batches(xs, ys, batch_size, mode);
  double reg = 0.0;
  for (auto& l : layers_) reg += l->regularization_loss();
  const auto n = static_cast<double>(xs[0]->shape()[0]);
  return {loss_sum / n + reg, correct / n};
}

std::pair<double, double> Model::evaluate_batches(const std::vector<const Tensor*>& xs,
                                                  const std::vector<const Tensor*>& ys,
                                                  std::int64_t batch_size, Mode mode) {
  prepare(xs);
  // Training mode updates BN moving statistics: keep a copy and put it back afterwards.
  std::vector<Tensor> saved;
  std::vector<std::int64_t> tracked;
  if (mode == Mode::training) {
    saved = get_weights();
    for (auto& l : layers_)
      if (auto* bn = dynamic_cast<BatchNormalization*>(l.get()))
        tracked.push_back(bn->num_batches_tracked());
  }
  auto& p = *plan_;
  const std::int64_t n = xs[0]->shape()[0];
  double loss_sum = 0.0, correct = 0.0;
  std::vector<Tensor> bx(xs.size()), by(ys.size());
  std::vector<const Tensor*> pbx;
  for (auto& t : bx) pbx.push_back(&t);
  for (std::int64_t b0 = 0; b0 < n; b0 += batch_size) {
    const std::int64_t b1 = std::min(n, b0 + batch_size);
    for (std::size_t i = 0; i < xs.size(); ++i) copy_rows(*xs[i], b0, b1, bx[i]);
    for (std::size_t i = 0; i < ys.size(); ++i) copy_rows(*ys[i], b0, b1, by[i]);
    forward(pbx, mode);
    for (std::size_t o = 0; o < p.output_slots.size(); ++o) {
      const int slot = p.output_slots[o];
      const Tensor& out = *p.value[static_cast<std::size_t>(slot)];
      const Tensor* logits = nullptr;
      if (loss_ != LossKind::mean_squared_error && p.output_steps[o] >= 0)
        logits = p.steps[static_cast<std::size_t>(p.output_steps[o])].layer->softmax_logits();
      loss_sum += compute_loss(loss_, out, logits, by[o], nullptr) * static_cast<double>(b1 - b0);
      if (o == 0) correct += accuracy_count(loss_, out, by[o]);
    }
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

Tensor Model::predict(const Tensor& x, std::int64_t batch_size) {
  return std::move(predict_all(std::vector<const Tensor*>{&x}, batch_size)[0]);
}

std::vector<Tensor> Model::predict_all(const std::vector<const Tensor*>& xs,
                                       std::int64_t batch_size) {
  const ScopedFlushDenormal flush_denormals;  // as TensorFlow runs its CPU kernels
  if (batch_size < 1)
    throw ValueError("predict: batch_size must be >= 1; received " + std::to_string(batch_size));
  for (const Tensor* x : xs)
    if (!x || x->rank() < 2 || x->shape()[0] == 0)
      throw ShapeError("predict: x must be a non-empty batch; received " +
                       (x ? x->shape().str() : std::string("nothing")));
  check_xy(xs, Tensors{}, "predict");
  prepare(xs);
  if (std::unique_ptr<Model> folded = folded_for_inference())
    return folded->predict_batches(xs, batch_size);
  return predict_batches(xs, batch_size);
}

std::vector<Tensor> Model::predict_batches(const std::vector<const Tensor*>& xs,
                                           std::int64_t batch_size) {
  prepare(xs);
  auto& p = *plan_;
  const std::int64_t n = xs[0]->shape()[0];
  std::vector<Tensor> results;
  for (int slot : p.output_slots) {
    std::vector<std::int64_t> dims{n};
    const Shape& per = p.slot_shapes[static_cast<std::size_t>(slot)];
    dims.insert(dims.end(), per.dims().begin(), per.dims().end());
    results.emplace_back(Shape(dims));
  }
  std::vector<Tensor> bx(xs.size());
  std::vector<const Tensor*> pbx;
  for (auto& t : bx) pbx.push_back(&t);
  for (std::int64_t b0 = 0; b0 < n; b0 += batch_size) {
    const std::int64_t b1 = std::min(n, b0 + batch_size);
    for (std::size_t i = 0; i < xs.size(); ++i) copy_rows(*xs[i], b0, b1, bx[i]);
    forward(pbx, Mode::inference);
    for (std::size_t o = 0; o < p.output_slots.size(); ++o) {
      const Tensor& out = *p.value[static_cast<std::size_t>(p.output_slots[o])];
      const std::int64_t row = out.size() / (b1 - b0);
      std::copy(out.data(), out.data() + out.size(), results[o].data() + b0 * row);
    }
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// Rewrites: copies and BN folding

namespace {
// The channel axis of a linear Dense/Conv2D's output in the batch tensor; -1 otherwise.
int foldable_channel_axis(const Layer& producer) {
  if (!producer.built()) return -1;
  if (const auto* d = dynamic_cast<const Dense*>(&producer))
    return d->activation() == ActivationKind::linear ? d->input_shape().rank() : -1;
  if (const auto* c = dynamic_cast<const Conv2D*>(&producer))
    return c->activation() == ActivationKind::linear
               ? (c->options().data_format == "channels_first" ? 1 : 3)
               : -1;
  return -1;
}
}  // namespace

// Pairs (producer step, BN step) that fold: the producer's output goes only to the BN.
namespace {
std::vector<std::pair<std::size_t, std::size_t>> fold_pairs(const detail::Plan& p) {
  std::vector<std::pair<std::size_t, std::size_t>> pairs;
  for (std::size_t b = 0; b < p.steps.size(); ++b) {
    const auto* bn = dynamic_cast<const BatchNormalization*>(p.steps[b].layer.get());
    // Moving statistics only: a BN that normalizes with batch statistics is not affine.
    if (!bn || !bn->built() || bn->uses_batch_statistics(Mode::inference) ||
        !p.steps[b].synced.empty())
      continue;
    const int x = p.steps[b].in[0];
    if (p.uses[static_cast<std::size_t>(x)] != 1) continue;
    for (std::size_t q = 0; q < p.steps.size(); ++q) {
      if (p.steps[q].out != x || p.steps[q].alias >= 0 || !p.steps[q].synced.empty()) continue;
      const int axis = foldable_channel_axis(*p.steps[q].layer);
      if (axis >= 1 && bn->axis() == axis) pairs.emplace_back(q, b);
    }
  }
  return pairs;
}
}  // namespace

std::size_t Model::foldable_pairs() const { return plan_ ? fold_pairs(*plan_).size() : 0; }

std::unique_ptr<Model> Model::copy_graph(bool fold) const {
  if (!plan_ || !built())
    throw ValueError(class_name() +
                     "::folded: the model is not built (add an Input or call build)");
  const auto& p = *plan_;
  std::vector<std::pair<std::size_t, std::size_t>> pairs;
  if (fold) pairs = fold_pairs(p);
  // Original step order (fusion moved some BN steps; any topological order rebuilds the graph).
  std::map<std::size_t, std::size_t> bn_of_producer, producer_of_bn;
  for (auto [q, b] : pairs) {
    bn_of_producer[q] = b;
    producer_of_bn[b] = q;
  }
  std::vector<SymbolicTensor> slot(static_cast<std::size_t>(p.num_slots));
  std::vector<SymbolicTensor> inputs;
  for (std::size_t i = 0; i < p.input_slots.size(); ++i) {
    Input in(p.slot_shapes[static_cast<std::size_t>(p.input_slots[i])],
             graph_->inputs[i].node()->input_name);
    slot[static_cast<std::size_t>(p.input_slots[i])] = in;
    inputs.push_back(in);
  }
  std::map<const Layer*, std::shared_ptr<Layer>> copies;  // a shared layer stays shared
  auto copy_of = [&](const Layer* primary) -> std::shared_ptr<Layer> {
    auto it = copies.find(primary);
    if (it != copies.end()) return it->second;
    std::unique_ptr<Layer> c = primary->clone();
    if (!c) return nullptr;
    std::shared_ptr<Layer> s(std::move(c));
    copies[primary] = s;
    return s;
  };
  // Which slot an elementwise Activation directly after a folded BN reads (merged into the
  // folded layer): step index of that Activation -> true.
  std::set<std::size_t> merged_activation;
  std::map<std::size_t, std::string> fold_activation;  // BN step -> activation merged
  for (auto [q, b] : pairs) {
    const int y = p.steps[b].out;
    std::string act = "linear";
    if (p.uses[static_cast<std::size_t>(y)] == 1) {
      for (std::size_t k = 0; k < p.steps.size(); ++k) {
        const auto& st = p.steps[k];
        if (st.in.empty() || st.in[0] != y) continue;
        const auto* a = dynamic_cast<const Activation*>(st.primary);
        if (a && a->activation() != ActivationKind::softmax && st.synced.empty()) {
          act = activation_name(a->activation());
          merged_activation.insert(k);
        }
      }
    }
    fold_activation[b] = act;
  }
  // Steps in an order where inputs come first: the plan's order with fused BN steps already
  // valid (they read only earlier slots).
  std::map<int, std::size_t> producer_step;
  for (std::size_t k = 0; k < p.steps.size(); ++k) producer_step[p.steps[k].out] = k;
  std::vector<bool> done(p.steps.size(), false);
  bool uncopyable = false;
  std::function<void(std::size_t)> emit = [&](std::size_t k) {
    if (done[k]) return;
    done[k] = true;
    const auto& st = p.steps[k];
    // The graph's own inputs (the Add/ReLU a fusion aliased still has its real inputs).
    std::vector<int> in = st.in;
    if (dynamic_cast<const BatchNormalization*>(st.primary)) in.resize(1);
    for (int s : in)
      if (!p.is_input[static_cast<std::size_t>(s)]) emit(producer_step.at(s));
    if (bn_of_producer.count(k)) return;  // emitted with its BN
    if (auto it = producer_of_bn.find(k); it != producer_of_bn.end()) {
      const auto& prod = p.steps[it->second];
      for (int s : prod.in)
        if (!p.is_input[static_cast<std::size_t>(s)]) emit(producer_step.at(s));
      const auto& bn = static_cast<const BatchNormalization&>(*st.primary);
      std::shared_ptr<Layer> f;
      if (const auto* d = dynamic_cast<const Dense*>(prod.primary))
        f = fold_pair(*d, bn, fold_activation[k]);
      else
        f = fold_pair(static_cast<const Conv2D&>(*prod.primary), bn, fold_activation[k]);
      std::vector<SymbolicTensor> xs;
      for (int s : prod.in) xs.push_back(slot[static_cast<std::size_t>(s)]);
      slot[static_cast<std::size_t>(st.out)] = (*f)(xs);
      return;
    }
    if (merged_activation.count(k)) {
      slot[static_cast<std::size_t>(st.out)] = slot[static_cast<std::size_t>(st.in[0])];
      return;
    }
    std::shared_ptr<Layer> c = copy_of(st.primary);
    if (!c) {
      uncopyable = true;
      return;
    }
    std::vector<SymbolicTensor> xs;
    for (int s : in) xs.push_back(slot[static_cast<std::size_t>(s)]);
    slot[static_cast<std::size_t>(st.out)] = (*c)(xs);
  };
  std::vector<SymbolicTensor> outputs;
  for (std::size_t k = 0; k < p.steps.size() && !uncopyable; ++k) emit(k);
  if (uncopyable) return nullptr;
  for (int s : p.output_slots) outputs.push_back(slot[static_cast<std::size_t>(s)]);
  std::unique_ptr<Model> out = make_empty();
  out->rng_ = rng_;
  out->set_graph(std::move(inputs), std::move(outputs));
  out->loss_ = loss_;
  out->metrics_ = metrics_;
  out->inference_folding_ = inference_folding_;
  return out;
}

std::unique_ptr<Model> Model::folded_for_inference() const {
  if (!inference_folding_ || !plan_ || fold_pairs(*plan_).empty()) return nullptr;
  return copy_graph(true);
}

std::unique_ptr<Model> Model::folded_model() const {
  std::unique_ptr<Model> out = copy_graph(true);
  if (!out) {
    for (auto& l : layers_)
      if (!l->clone())
        throw ValueError(class_name() + "::folded: layer " + l->class_name() + " '" + l->name() +
                         "' cannot be copied");
    throw ValueError(class_name() + "::folded: a layer cannot be copied");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Flat graphs (file formats)

Model::FlatGraph Model::flat_graph() const {
  if (!plan_) throw ValueError(class_name() + " '" + name_ + "': not built (no input shape yet)");
  const auto& p = *plan_;
  FlatGraph g;
  for (std::size_t i = 0; i < p.input_slots.size(); ++i) {
    g.input_names.push_back(graph_->inputs[i].node()->input_name);
    g.input_shapes.push_back(p.slot_shapes[static_cast<std::size_t>(p.input_slots[i])]);
  }
  // Slots were numbered in graph order (fusion may have moved steps since): sort back.
  std::vector<const detail::Step*> steps;
  for (const auto& st : p.steps) steps.push_back(&st);
  std::sort(steps.begin(), steps.end(), [](auto* a, auto* b) { return a->out < b->out; });
  std::map<const Layer*, std::size_t> index;
  for (std::size_t i = 0; i < layers_.size(); ++i) index[layers_[i].get()] = i;
  for (const detail::Step* st : steps) {
    FlatGraph::Call c;
    c.layer = index.at(st->primary);
    c.inputs = st->in;
    c.output_shape = p.slot_shapes[static_cast<std::size_t>(st->out)];
    if (dynamic_cast<const BatchNormalization*>(st->primary)) c.inputs.resize(1);  // fused tail
    g.calls.push_back(std::move(c));
  }
  g.outputs = p.output_slots;
  return g;
}

Model Model::from_flat_graph(const FlatGraph& g, std::vector<std::shared_ptr<Layer>> layers,
                             std::string name, std::uint64_t seed) {
  if (g.input_shapes.size() != g.input_names.size() || g.input_shapes.empty())
    throw ValueError("graph: needs at least one input, each with a name and a shape");
  std::vector<SymbolicTensor> slots, inputs;
  for (std::size_t i = 0; i < g.input_shapes.size(); ++i) {
    Input in(g.input_shapes[i], g.input_names[i]);
    slots.push_back(in);
    inputs.push_back(in);
  }
  for (std::size_t j = 0; j < g.calls.size(); ++j) {
    const auto& c = g.calls[j];
    if (c.layer >= layers.size() || !layers[c.layer])
      throw ValueError("graph: call " + std::to_string(j) + " names layer " +
                       std::to_string(c.layer) + ", which does not exist");
    if (c.inputs.empty()) throw ValueError("graph: call " + std::to_string(j) + " has no inputs");
    std::vector<SymbolicTensor> xs;
    for (int s : c.inputs) {
      if (s < 0 || static_cast<std::size_t>(s) >= slots.size())
        throw ValueError("graph: call " + std::to_string(j) + " reads tensor " + std::to_string(s) +
                         ", which is not computed before it");
      xs.push_back(slots[static_cast<std::size_t>(s)]);
    }
    slots.push_back((*layers[c.layer])(xs));
  }
  std::vector<SymbolicTensor> outputs;
  for (int s : g.outputs) {
    if (s < 0 || static_cast<std::size_t>(s) >= slots.size())
      throw ValueError("graph: output tensor " + std::to_string(s) + " does not exist");
    outputs.push_back(slots[static_cast<std::size_t>(s)]);
  }
  Model m(std::move(inputs), std::move(outputs), std::move(name), seed);
  if (m.size() != layers.size())
    throw ValueError("graph: " + std::to_string(layers.size()) + " layers are listed but " +
                     std::to_string(m.size()) + " are used");
  for (std::size_t i = 0; i < layers.size(); ++i)
    if (m.layers_[i] != layers[i])
      throw ValueError("graph: layer " + std::to_string(i) + " ('" + layers[i]->name() +
                       "') is not called in the listed order");
  return m;
}

// ---------------------------------------------------------------------------------------------
// Weights and summary

std::int64_t Model::count_params() const {
  std::int64_t n = 0;
  for (auto& l : layers_) n += l->count_params();
  return n;
}

std::int64_t Model::count_trainable_params() const {
  std::int64_t n = 0;
  for (auto& l : layers_) n += l->count_trainable_params();
  return n;
}

std::vector<Tensor> Model::get_weights() const {
  std::vector<Tensor> out;
  for (auto& l : layers_)
    for (const Variable* v : std::as_const(*l).weights()) out.push_back(v->value);
  return out;
}

void Model::set_weights(const std::vector<Tensor>& weights) {
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

namespace {
// Keras's rich-table summary: box-drawing rules, cells padded, the first column wrapping.
struct Table {
  std::vector<int> widths;
  std::string rule(const char* l, const char* m, const char* r, const char* fill) const {
    std::string s = l;
    for (std::size_t c = 0; c < widths.size(); ++c) {
      if (c) s += m;
      for (int i = 0; i < widths[c]; ++i) s += fill;
    }
    return s + r + "\n";
  }
  static std::string pad(std::string s, int w, bool right) {
    if (static_cast<int>(s.size()) > w - 2) s = s.substr(0, static_cast<std::size_t>(w - 3)) + "~";
    const std::string space(static_cast<std::size_t>(w - 2 - static_cast<int>(s.size())), ' ');
    std::string out(1, ' ');
    if (right)
      out.append(space).append(s);
    else
      out.append(s).append(space);
    return out.append(1, ' ');
  }
  // Like Keras, a cell that does not fit wraps at its spaces onto extra lines.
  static std::vector<std::string> wrap(const std::string& text, int w) {
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
  }
  // cells[c] is a list of lines for multi-line cells (column 0 wraps, others are given).
  std::string row(const char* bar, const std::vector<std::vector<std::string>>& cells,
                  const std::vector<bool>& right) const {
    std::size_t lines = 0;
    for (auto& c : cells) lines = std::max(lines, c.size());
    std::string out;
    for (std::size_t i = 0; i < lines; ++i) {
      out += bar;
      for (std::size_t c = 0; c < widths.size(); ++c) {
        const std::string text = i < cells[c].size() ? cells[c][i] : "";
        out += pad(text, widths[c], right[c]) + bar;
      }
      out += "\n";
    }
    return out;
  }
};

std::string totals(std::int64_t total, std::int64_t trainable) {
  std::string out;
  out += " Total params: " + with_commas(total) + " (" + bytes_str(total) + ")\n";
  out += " Trainable params: " + with_commas(trainable) + " (" + bytes_str(trainable) + ")\n";
  out += " Non-trainable params: " + with_commas(total - trainable) + " (" +
         bytes_str(total - trainable) + ")\n";
  return out;
}
}  // namespace

std::string Model::summary() const {
  return sequential_ ? summary_sequential() : summary_functional();
}

std::string Model::summary_sequential() const {
  const Table t{{33, 24, 15}};
  const std::vector<bool> right{false, false, true};
  std::string out = "Model: \"" + name_ + "\"\n";
  out += t.rule("\u250f", "\u2533", "\u2513", "\u2501");
  out += t.row("\u2503", {{"Layer (type)"}, {"Output Shape"}, {"Param #"}}, right);
  out += t.rule("\u2521", "\u2547", "\u2529", "\u2501");
  std::optional<Shape> s = input_shape();
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = *layers_[i];
    std::string shape = "?";
    if (s) {
      s = l.output_shape(*s);
      shape = batch_shape_str(*s);
    }
    out += t.row("\u2502",
                 {Table::wrap(l.name() + " (" + l.class_name() + ")", t.widths[0]),
                  {shape},
                  {l.built() ? with_commas(l.count_params()) : "0 (unbuilt)"}},
                 right);
    if (i + 1 < layers_.size()) out += t.rule("\u251c", "\u253c", "\u2524", "\u2500");
  }
  out += t.rule("\u2514", "\u2534", "\u2518", "\u2500");
  return out + totals(count_params(), count_trainable_params());
}

// Keras's Functional table: one row per input and per layer call (a nested model is one row),
// with "Connected to" naming each call's inputs as name[call][output].
std::string Model::summary_functional() const {
  Table t{{30, 22, 11, 20}};
  const std::vector<bool> right{false, false, true, false};
  // Nodes of this graph (nested models not expanded) in topological order.
  std::vector<const Node*> order;
  std::set<const Node*> seen;
  std::function<void(const Node*)> visit = [&](const Node* n) {
    if (seen.count(n)) return;
    seen.insert(n);
    for (const auto& x : n->inputs) visit(x.node().get());
    order.push_back(n);
  };
  for (const auto& i : graph_->inputs) visit(i.node().get());
  for (const auto& o : graph_->outputs) visit(o.node().get());
  // Call index of each node per layer / model (Keras's node index).
  std::map<const Node*, int> call_index;
  std::map<const void*, int> calls;
  for (const Node* n : order) {
    const void* who = n->layer ? static_cast<const void*>(n->layer.get())
                               : static_cast<const void*>(n->model.get());
    if (who) call_index[n] = calls[who]++;
  }
  struct Row {
    std::string name, shape, params;
    std::vector<std::string> connected;
  };
  std::vector<Row> rows;
  for (const Node* n : order) {
    std::string name, shape;
    std::int64_t params = 0;
    std::vector<std::string> connected;
    for (const auto& x : n->inputs) {
      const Node* from = x.node().get();
      const int ci = call_index.count(from) ? call_index[from] : 0;
      connected.push_back(x.producer_name() + "[" + std::to_string(ci) + "][" +
                          std::to_string(x.index()) + "]");
    }
    for (std::size_t k = 0; k < n->output_shapes.size(); ++k)
      shape += (k ? ", " : "") + batch_shape_str(n->output_shapes[k]);
    if (n->layer) {
      name = n->layer->name() + " (" + n->layer->class_name() + ")";
      if (call_index[n] == 0) params = n->layer->count_params();
    } else if (n->model) {
      name = n->model->name + " (Functional)";
      if (call_index[n] == 0) {
        // The nested model's layers: those reached from its outputs.
        std::set<const Layer*> ls;
        std::function<void(const Node*)> collect = [&](const Node* m) {
          if (m->layer) ls.insert(m->layer.get());
          for (const auto& x : m->inputs) collect(x.node().get());
          if (m->model)
            for (const auto& o : m->model->outputs) collect(o.node().get());
        };
        for (const auto& o : n->model->outputs) collect(o.node().get());
        for (const Layer* l : ls) params += l->count_params();
      }
    } else {
      name = n->input_name + " (InputLayer)";
    }
    if (connected.empty()) connected.push_back("-");
    rows.push_back({name, shape, with_commas(params), connected});
  }
  // Shapes and connections are never cut: their columns widen to the longest entry.
  for (const Row& r : rows) {
    t.widths[1] = std::max(t.widths[1], static_cast<int>(r.shape.size()) + 2);
    for (const auto& c : r.connected)
      t.widths[3] = std::max(t.widths[3], static_cast<int>(c.size()) + 2);
  }
  std::string out = "Model: \"" + name_ + "\"\n";
  out += t.rule("\u250f", "\u2533", "\u2513", "\u2501");
  out +=
      t.row("\u2503", {{"Layer (type)"}, {"Output Shape"}, {"Param #"}, {"Connected to"}}, right);
  out += t.rule("\u2521", "\u2547", "\u2529", "\u2501");
  for (std::size_t i = 0; i < rows.size(); ++i) {
    out += t.row("\u2502",
                 {Table::wrap(rows[i].name, t.widths[0]),
                  {rows[i].shape},
                  {rows[i].params},
                  rows[i].connected},
                 right);
    if (i + 1 < rows.size()) out += t.rule("\u251c", "\u253c", "\u2524", "\u2500");
  }
  out += t.rule("\u2514", "\u2534", "\u2518", "\u2500");
  return out + totals(count_params(), count_trainable_params());
}

}  // namespace bnorm
