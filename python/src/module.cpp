// bnorm._core: the C++ library as the Python package `bnorm` sees it. Bindings only: every
// behaviour lives in the library; the Keras-shaped API (argument names, defaults, History,
// callbacks) is written in Python on top of this (python/bnorm/).
//
// Threads: long calls (fit, evaluate, predict, train_on_batch, an eager layer call) release the
// GIL; fit takes it back between batches to call Python callbacks and to let Ctrl-C interrupt
// (KeyboardInterrupt after the current batch; the weights are those of the last full step).
#include <Python.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "arrays.hpp"
#include "bnorm/bnorm.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace bnorm::python {
namespace {

PyObject* g_non_finite_error = nullptr;

void translate_errors(const std::exception_ptr& p, void*) {
  try {
    std::rethrow_exception(p);
  } catch (const NonFiniteError& e) {
    PyErr_SetString(g_non_finite_error, e.what());
  } catch (const ShapeError& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const ValueError& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const IoError& e) {
    PyErr_SetString(PyExc_OSError, e.what());
  } catch (const Error& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
}

std::vector<std::int64_t> dims_of(const Shape& s) { return s.dims(); }

// One model may not run in two Python threads at once (the GIL is released while it runs). The
// thread that runs it may re-enter from a callback (evaluate, get/set_weights at an epoch's end,
// as Keras callbacks do).
struct BusyState {
  std::mutex mutex;
  std::thread::id owner;
  int depth = 0;
};

class Busy {
 public:
  explicit Busy(BusyState& state) : state_(state) {
    std::lock_guard lock(state_.mutex);
    if (state_.depth > 0 && state_.owner != std::this_thread::get_id())
      throw std::runtime_error("this model is already running in another thread");
    state_.owner = std::this_thread::get_id();
    ++state_.depth;
  }
  ~Busy() {
    std::lock_guard lock(state_.mutex);
    --state_.depth;
  }
  Busy(const Busy&) = delete;
  Busy& operator=(const Busy&) = delete;

 private:
  BusyState& state_;
};

// The C++ model plus what the bindings need beside it.
struct PyModel {
  std::unique_ptr<Model> model;
  BusyState busy;
  bool sequential() const { return model->is_sequential(); }
  Sequential& as_sequential() {
    auto* s = static_cast<Sequential*>(model.get());  // Sequential adds no members (model.hpp)
    if (!model->is_sequential()) throw ValueError("this model is not a Sequential");
    return *s;
  }
};

// Python callbacks as one C++ callback. `target` is bnorm.callbacks.CallbackList; the GIL is
// taken for each call and Ctrl-C is checked after every batch.
class PythonCallbacks final : public Callback {
 public:
  PythonCallbacks(nb::object target, bool batch_calls)
      : target_(std::move(target)), batch_calls_(batch_calls) {}
  void on_train_begin(Model&, int epochs, std::int64_t steps) override {
    nb::gil_scoped_acquire gil;
    target_.attr("on_train_begin")(epochs, steps);
  }
  void on_epoch_begin(Model&, int epoch) override {
    nb::gil_scoped_acquire gil;
    target_.attr("on_epoch_begin")(epoch);
  }
  void on_train_batch_end(Model&, std::int64_t step, const Logs& logs) override {
    nb::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
    if (batch_calls_) target_.attr("on_train_batch_end")(step, logs);
  }
  void on_epoch_end(Model&, int epoch, const Logs& logs) override {
    nb::gil_scoped_acquire gil;
    target_.attr("on_epoch_end")(epoch, logs);
  }
  void on_train_end(Model&) override {
    nb::gil_scoped_acquire gil;
    target_.attr("on_train_end")();
  }

 private:
  nb::object target_;
  bool batch_calls_;
};

Random& eager_rng() {
  static Random rng(0);
  return rng;
}

// An eager call of a layer on arrays (Keras's layer(x, training=...)): builds it on first use.
OutArray call_eager(Layer& layer, const std::vector<InArray>& xs, bool training) {
  std::vector<Tensor> ts = borrow_all(xs, "layer call");
  std::vector<const Tensor*> ps = pointers(ts);
  Tensor out;
  {
    nb::gil_scoped_release release;
    std::vector<Shape> shapes;
    for (const auto& t : ts) {
      if (t.rank() < 2)
        throw ShapeError(layer.class_name() + " '" + layer.name() +
                         "': expected a batch (rank >= 2, axis 0 the batch); received shape " +
                         t.shape().str());
      std::vector<std::int64_t> d(t.shape().dims().begin() + 1, t.shape().dims().end());
      shapes.emplace_back(std::move(d));
    }
    if (!layer.built()) layer.build_inputs(shapes, eager_rng());
    const Mode mode = training ? Mode::training : Mode::inference;
    out = layer.forward_inputs(ps, mode);
  }
  return to_numpy(std::move(out));
}

Variable& find_weight(Layer& layer, const std::string& name) {
  for (Variable* v : layer.weights())
    if (v->name == name) return *v;
  throw ValueError(layer.class_name() + " '" + layer.name() + "' has no weight '" + name + "'");
}

void assign(Variable& v, const InArray& a, const std::string& what) {
  Tensor t = borrow(a, what.c_str());
  check_same_shape(v.value.shape(), t.shape(), what);
  std::copy(t.values().begin(), t.values().end(), v.value.data());
}

std::vector<OutArray> numpy_list(std::vector<Tensor>&& ts) {
  std::vector<OutArray> out;
  for (auto& t : ts) out.push_back(to_numpy(std::move(t)));
  return out;
}

std::vector<Tensor> borrowed_weights(const std::vector<InArray>& ws) {
  return borrow_all(ws, "set_weights");
}

nb::object wrap_model(std::unique_ptr<Model> m) {
  auto pm = std::make_unique<PyModel>();
  pm->model = std::move(m);
  return nb::cast(pm.release(), nb::rv_policy::take_ownership);
}

}  // namespace
}  // namespace bnorm::python

NB_MODULE(_core, m) {
  using namespace bnorm;
  using namespace bnorm::python;
  m.doc() = "bnorm's C++ core (bindings only; use the bnorm package).";
  m.attr("__version__") = BNORM_VERSION_STRING;

  static nb::object non_finite =
      nb::steal(PyErr_NewExceptionWithDoc("bnorm.NonFiniteError",
                                          "NaN or Inf where a finite value is required (a batch, "
                                          "a loss); a ValueError.",
                                          PyExc_ValueError, nullptr));
  g_non_finite_error = non_finite.ptr();
  m.attr("NonFiniteError") = non_finite;
  nb::register_exception_translator(translate_errors);

  m.def("set_num_threads", &set_num_threads, "n"_a, "Threads bnorm's kernels use.");
  m.def("num_threads", &num_threads, "Threads bnorm's kernels use.");
  m.def(
      "set_seed", [](std::uint64_t seed) { eager_rng() = Random(seed); }, "seed"_a,
      "Seeds the generator that builds layers called eagerly.");
  m.def(
      "_tensor_address",
      [](const InArray& a) {
        const Tensor t = borrow(a, "array");
        return reinterpret_cast<std::uintptr_t>(t.data());
      },
      nb::arg("a").noconvert(),
      "Address of the memory a tensor made from this array reads (zero-copy checks).");

  // ---- symbolic tensors --------------------------------------------------------------------
  nb::class_<SymbolicTensor>(m, "SymbolicTensor", "A tensor of a functional graph (no data).")
      .def_prop_ro(
          "shape", [](const SymbolicTensor& t) { return dims_of(t.shape()); },
          "Per-sample shape (without the batch dimension).")
      .def_prop_ro("producer", &SymbolicTensor::producer_name,
                   "Name of the layer or input that produces it.")
      .def("same", &SymbolicTensor::operator==, "other"_a, "Whether both are the same tensor.");
  m.def(
      "make_input",
      [](std::vector<std::int64_t> shape, std::string name) -> SymbolicTensor {
        return Input(Shape(std::move(shape)), std::move(name));
      },
      "shape"_a, "name"_a = "", "keras.Input(shape, name).");

  // ---- layers ------------------------------------------------------------------------------
  nb::class_<Layer>(m, "Layer", "A bnorm layer (shared by every model that calls it).")
      .def_prop_ro("class_name", &Layer::class_name, "Keras class name.")
      .def_prop_rw(
          "name", [](const Layer& l) { return l.name(); },
          [](Layer& l, std::string n) { l.set_name(std::move(n)); }, "Layer name.")
      .def_prop_rw("trainable", &Layer::trainable, &Layer::set_trainable,
                   "Keras trainable flag (a frozen BatchNormalization normalizes with its moving "
                   "statistics during fit).")
      .def_prop_ro("built", &Layer::built, "Whether the weights exist.")
      .def_prop_ro(
          "input_shape", [](const Layer& l) { return dims_of(l.input_shape()); },
          "Per-sample input shape of the first call (built layers).")
      .def_prop_ro(
          "address", [](const Layer& l) { return reinterpret_cast<std::uintptr_t>(&l); },
          "Identity of the C++ layer.")
      .def("count_params", &Layer::count_params, "Number of weights' elements.")
      .def(
          "weight_info",
          [](Layer& l) {
            std::vector<std::tuple<std::string, std::vector<std::int64_t>, bool>> out;
            for (const Variable* v : l.weights())
              out.emplace_back(v->name, v->value.shape().dims(), v->trainable);
            return out;
          },
          "(name, shape, trainable) of each weight, in Keras order.")
      .def(
          "get_weights",
          [](Layer& l) {
            std::vector<Tensor> ts;
            for (const Variable* v : l.weights()) ts.push_back(v->value);
            return numpy_list(std::move(ts));
          },
          "Copies of the weights in Keras order.")
      .def(
          "set_weights",
          [](Layer& l, const std::vector<InArray>& ws) {
            const auto vs = l.weights();
            if (vs.size() != ws.size())
              throw ValueError(l.class_name() + " '" + l.name() + "': set_weights expects " +
                               std::to_string(vs.size()) + " arrays; received " +
                               std::to_string(ws.size()));
            std::vector<Tensor> ts = borrowed_weights(ws);
            for (std::size_t i = 0; i < vs.size(); ++i)
              check_same_shape(vs[i]->value.shape(), ts[i].shape(),
                               l.name() + " weight '" + vs[i]->name + "'");
            for (std::size_t i = 0; i < vs.size(); ++i)
              std::copy(ts[i].values().begin(), ts[i].values().end(), vs[i]->value.data());
          },
          "weights"_a, "Sets every weight (shapes checked before anything is written).")
      .def(
          "get_weight",
          [](Layer& l, const std::string& n) { return to_numpy(find_weight(l, n).value); },
          "name"_a, "A copy of one weight.")
      .def(
          "set_weight",
          [](Layer& l, const std::string& n, const InArray& a) {
            assign(find_weight(l, n), a, l.name() + " weight '" + n + "'");
          },
          "name"_a, "value"_a, "Writes one weight.")
      .def(
          "config", [](const Layer& l) { return io::keras_layer_config(l); },
          "Keras's get_config() as JSON.")
      .def(
          "build",
          [](Layer& l, std::vector<std::vector<std::int64_t>> shapes) {
            std::vector<Shape> ss;
            for (auto& s : shapes) ss.emplace_back(std::move(s));
            l.build_inputs(ss, eager_rng());
          },
          "input_shapes"_a, "Creates the weights for per-sample input shapes.")
      .def(
          "call_symbolic",
          [](Layer& l, const std::vector<SymbolicTensor>& xs) {
            return xs.size() == 1 && l.max_inputs() == 1 ? l(xs[0]) : l(xs);
          },
          "inputs"_a, "Adds a call of this layer to the graph of its inputs.")
      .def("call_eager", &call_eager, "inputs"_a, "training"_a,
           "Runs the layer on arrays (building it on first use).")
      .def_prop_ro("min_inputs", &Layer::min_inputs, "Fewest inputs a call takes.")
      .def_prop_ro("max_inputs", &Layer::max_inputs, "Most inputs a call takes.");
  m.def("make_layer", &io::make_keras_layer, "class_name"_a, "args_json"_a,
        "A new layer from Keras's constructor arguments (as JSON).");

  // ---- models -----------------------------------------------------------------------------
  nb::class_<PyModel>(m, "Model", "A bnorm model (Sequential or Functional).")
      .def_static(
          "functional",
          [](const std::vector<SymbolicTensor>& inputs, const std::vector<SymbolicTensor>& outputs,
             std::string name, std::uint64_t seed) {
            return wrap_model(std::make_unique<Model>(inputs, outputs, std::move(name), seed));
          },
          "inputs"_a, "outputs"_a, "name"_a, "seed"_a, "keras.Model(inputs, outputs).")
      .def_static(
          "sequential",
          [](std::string name, std::uint64_t seed) {
            return wrap_model(std::make_unique<Sequential>(seed, std::move(name)));
          },
          "name"_a, "seed"_a, "An empty keras.Sequential.")
      .def_prop_ro(
          "name", [](const PyModel& p) { return p.model->name(); }, "Model name.")
      .def_prop_ro("is_sequential", &PyModel::sequential, "Whether the graph is a chain.")
      .def_prop_ro(
          "built", [](const PyModel& p) { return p.model->built(); }, "Built.")
      .def_prop_ro(
          "compiled", [](const PyModel& p) { return p.model->compiled(); }, "Compiled.")
      .def(
          "add_input",
          [](PyModel& p, std::vector<std::int64_t> shape, std::string name) {
            p.as_sequential().add(Input(Shape(std::move(shape)), std::move(name)));
          },
          "shape"_a, "name"_a = "", "Sequential: declares the input shape.")
      .def(
          "add", [](PyModel& p, std::shared_ptr<Layer> l) { p.as_sequential().add(std::move(l)); },
          "layer"_a, "Sequential.add.")
      .def(
          "add_layers",
          [](PyModel& p, std::vector<std::shared_ptr<Layer>> ls) {
            p.as_sequential().add(std::move(ls));
          },
          "layers"_a, "Sequential.add of several layers at once (the graph is set once).")
      .def(
          "build_sequential",
          [](PyModel& p, std::vector<std::int64_t> shape) {
            p.as_sequential().build(Shape(std::move(shape)));
          },
          "input_shape"_a, "Sequential.build(input_shape) (per sample).")
      .def_prop_ro(
          "layers", [](const PyModel& p) { return p.model->layers(); },
          "Every layer once, in graph order.")
      .def_prop_ro(
          "input_shapes",
          [](const PyModel& p) {
            std::vector<std::vector<std::int64_t>> out;
            for (const auto& t : p.model->inputs()) out.push_back(dims_of(t.shape()));
            if (out.empty() && p.model->input_shape())
              out.push_back(dims_of(*p.model->input_shape()));
            return out;
          },
          "Per-sample shapes of the inputs.")
      .def_prop_ro(
          "output_shapes",
          [](const PyModel& p) {
            std::vector<std::vector<std::int64_t>> out;
            for (const auto& t : p.model->outputs()) out.push_back(dims_of(t.shape()));
            return out;
          },
          "Per-sample shapes of the outputs.")
      .def_prop_ro(
          "inputs", [](const PyModel& p) { return p.model->inputs(); }, "Symbolic inputs.")
      .def_prop_ro(
          "outputs", [](const PyModel& p) { return p.model->outputs(); }, "Symbolic outputs.")
      .def(
          "call_symbolic",
          [](const PyModel& p, const std::vector<SymbolicTensor>& xs) { return p.model->call(xs); },
          "inputs"_a, "Calls the model as a layer (a nested model).")
      .def(
          "compile",
          [](PyModel& p, const std::string& optimizer, const std::map<std::string, double>& config,
             const std::string& loss, std::vector<std::string> metrics) {
            p.model->compile(make_optimizer(optimizer, config), parse_loss(loss),
                             std::move(metrics));
          },
          "optimizer"_a, "config"_a, "loss"_a, "metrics"_a, "compile(optimizer, loss, metrics).")
      .def_prop_ro(
          "optimizer_name", [](const PyModel& p) { return p.model->optimizer().name(); },
          "Class name of the optimizer.")
      .def_prop_ro(
          "optimizer_config", [](const PyModel& p) { return p.model->optimizer().config(); },
          "Hyper-parameters of the optimizer.")
      .def_prop_rw(
          "learning_rate", [](const PyModel& p) { return p.model->optimizer().learning_rate(); },
          [](PyModel& p, double lr) { p.model->optimizer().set_learning_rate(lr); },
          "The optimizer's learning rate.")
      .def_prop_ro(
          "iterations", [](const PyModel& p) { return p.model->optimizer().iterations(); },
          "Steps the optimizer has taken.")
      .def_prop_ro(
          "loss_name", [](const PyModel& p) { return loss_name(p.model->loss()); }, "Loss.")
      .def_prop_ro(
          "metrics", [](const PyModel& p) { return p.model->metrics(); }, "Metric names.")
      .def_prop_rw(
          "stop_training", [](const PyModel& p) { return p.model->stop_training; },
          [](PyModel& p, bool v) { p.model->stop_training = v; },
          "Set by a callback to end fit after the current epoch.")
      .def_prop_rw(
          "inference_folding", [](const PyModel& p) { return p.model->inference_folding(); },
          [](PyModel& p, bool v) { p.model->set_inference_folding(v); },
          "Whether predict/evaluate fold BN into the layer before it.")
      .def(
          "fit",
          [](PyModel& p, const std::vector<InArray>& xs, const std::vector<InArray>& ys,
             std::int64_t batch_size, int epochs, double validation_split,
             std::optional<std::pair<InArray, InArray>> validation, bool shuffle,
             nb::object callbacks, bool batch_calls, std::optional<nb::object> progress_writer,
             bool interactive, int initial_epoch) {
            Busy busy(p.busy);
            std::vector<Tensor> tx = borrow_all(xs, "fit x"), ty = borrow_all(ys, "fit y");
            Tensor vx, vy;
            FitOptions o;
            o.batch_size = batch_size;
            o.epochs = epochs;
            o.validation_split = validation_split;
            o.shuffle = shuffle;
            o.initial_epoch = initial_epoch;
            if (validation) {
              vx = borrow(validation->first, "validation_data x");
              vy = borrow(validation->second, "validation_data y");
              o.validation_x = &vx;
              o.validation_y = &vy;
            }
            PythonCallbacks bridge(std::move(callbacks), batch_calls);
            std::unique_ptr<ProgressBar> bar;
            if (progress_writer) {
              nb::object writer = *progress_writer;
              bar = std::make_unique<ProgressBar>(
                  [writer](const std::string& text) {
                    nb::gil_scoped_acquire gil;
                    writer(text);
                  },
                  interactive);
              o.callbacks.push_back(bar.get());
            }
            o.callbacks.push_back(&bridge);
            nb::gil_scoped_release release;
            p.model->fit(pointers(tx), pointers(ty), o);
          },
          "x"_a, "y"_a, "batch_size"_a, "epochs"_a, "validation_split"_a, "validation"_a.none(),
          "shuffle"_a, "callbacks"_a, "batch_calls"_a, "progress_writer"_a.none(), "interactive"_a,
          "initial_epoch"_a = 0, "Trains (the GIL is released between callback calls).")
      .def(
          "train_on_batch",
          [](PyModel& p, const std::vector<InArray>& xs, const std::vector<InArray>& ys) {
            Busy busy(p.busy);
            std::vector<Tensor> tx = borrow_all(xs, "x"), ty = borrow_all(ys, "y");
            nb::gil_scoped_release release;
            double correct = 0.0;
            const double loss = p.model->train_on_batch(pointers(tx), pointers(ty), &correct);
            return std::make_pair(loss, correct);
          },
          "x"_a, "y"_a,
          "One gradient step: (the batch's loss before the update, samples classified right).")
      .def(
          "evaluate",
          [](PyModel& p, const std::vector<InArray>& xs, const std::vector<InArray>& ys,
             std::int64_t batch_size, bool training) {
            Busy busy(p.busy);
            std::vector<Tensor> tx = borrow_all(xs, "x"), ty = borrow_all(ys, "y");
            nb::gil_scoped_release release;
            const EvaluateResult r = p.model->evaluate(pointers(tx), pointers(ty), batch_size,
                                                       training ? Mode::training : Mode::inference);
            return std::make_pair(r.loss, r.accuracy);
          },
          "x"_a, "y"_a, "batch_size"_a, "training"_a, "(loss, accuracy).")
      .def(
          "predict",
          [](PyModel& p, const std::vector<InArray>& xs, std::int64_t batch_size) {
            Busy busy(p.busy);
            std::vector<Tensor> tx = borrow_all(xs, "x");
            std::vector<Tensor> out;
            {
              nb::gil_scoped_release release;
              out = p.model->predict_all(pointers(tx), batch_size);
            }
            return numpy_list(std::move(out));
          },
          "x"_a, "batch_size"_a, "Outputs in inference mode, one array per model output.")
      .def(
          "recalibrate_batch_norm",
          [](PyModel& p, const std::vector<InArray>& xs, std::int64_t batch_size,
             std::int64_t batches) {
            Busy busy(p.busy);
            std::vector<Tensor> tx = borrow_all(xs, "x");
            nb::gil_scoped_release release;
            return p.model->recalibrate_batch_norm(pointers(tx), batch_size, batches);
          },
          "x"_a, "batch_size"_a, "batches"_a,
          "PreciseBN: moving statistics = the average of the batch statistics; batches used.")
      .def(
          "summary", [](const PyModel& p) { return p.model->summary(); }, "Keras summary().")
      .def(
          "count_params", [](const PyModel& p) { return p.model->count_params(); },
          "Number of weight elements.")
      .def(
          "count_trainable_params",
          [](const PyModel& p) { return p.model->count_trainable_params(); },
          "Number of trainable weight elements.")
      .def(
          "get_weights", [](const PyModel& p) { return numpy_list(p.model->get_weights()); },
          "Copies of every weight, Keras order.")
      .def(
          "set_weights",
          [](PyModel& p, const std::vector<InArray>& ws) {
            Busy busy(p.busy);
            p.model->set_weights(borrowed_weights(ws));
          },
          "weights"_a, "Sets every weight (count and shapes checked first).")
      .def(
          "save",
          [](const PyModel& p, const std::string& path) {
            nb::gil_scoped_release release;
            io::save_model(*p.model, path);
          },
          "path"_a, "Saves atomically; the format follows the extension (.keras, .h5, .bnorm).")
      .def(
          "load_weights",
          [](PyModel& p, const std::string& path) {
            Busy busy(p.busy);
            nb::gil_scoped_release release;
            io::load_weights(*p.model, path);
          },
          "path"_a, "Weights from a model or weights file.");
  m.def(
      "load_model",
      [](const std::string& path) {
        std::unique_ptr<Model> loaded;
        {
          nb::gil_scoped_release release;
          Model model = io::load_model(path);
          loaded = model.is_sequential() ? std::make_unique<Sequential>(std::move(model))
                                         : std::make_unique<Model>(std::move(model));
        }
        return wrap_model(std::move(loaded));
      },
      "path"_a, "A model from a .keras, .h5 or .bnorm file (format by content).");

  // ---- data --------------------------------------------------------------------------------
  m.def(
      "load_fashion_mnist",
      [](const std::string& dir) {
        io::Dataset d;
        {
          nb::gil_scoped_release release;
          d = io::load_fashion_mnist(dir);
        }
        return std::make_tuple(to_numpy(std::move(d.train_x)), to_numpy(std::move(d.train_y)),
                               to_numpy(std::move(d.test_x)), to_numpy(std::move(d.test_y)));
      },
      "directory"_a = std::string(io::kDefaultFashionMnistDir),
      "Fashion-MNIST from Debian's dataset-fashion-mnist: images in [0, 1], labels as floats.");

  // ---- batch normalization ops -------------------------------------------------------------
  auto opt_tensor = [](const std::optional<InArray>& a, const char* what) -> std::optional<Tensor> {
    if (!a) return std::nullopt;
    return borrow(*a, what);
  };
  m.def(
      "bn_moments",
      [](const InArray& x, int axis) {
        const Tensor tx = borrow(x, "x");
        BatchNormStatistics s = batch_norm_moments(tx, axis);
        return std::make_pair(to_numpy(std::move(s.batch_mean)),
                              to_numpy(std::move(s.batch_variance)));
      },
      "x"_a, "axis"_a, "Biased per-channel mean and variance over every other axis.");
  m.def(
      "bn_inference",
      [opt_tensor](const InArray& x, const InArray& mean, const InArray& variance,
                   std::optional<InArray> scale, std::optional<InArray> offset, float epsilon,
                   int axis) {
        const auto s = opt_tensor(scale, "scale");
        const auto o = opt_tensor(offset, "offset");
        return to_numpy(batch_norm_inference(borrow(x, "x"), borrow(mean, "mean"),
                                             borrow(variance, "variance"), s ? &*s : nullptr,
                                             o ? &*o : nullptr, epsilon, axis));
      },
      "x"_a, "mean"_a, "variance"_a, "scale"_a.none(), "offset"_a.none(), "epsilon"_a, "axis"_a,
      "(x - mean) / sqrt(variance + epsilon) * scale + offset per channel.");
  m.def(
      "bn_training",
      [opt_tensor](const InArray& x, std::optional<InArray> scale, std::optional<InArray> offset,
                   float epsilon, int axis) {
        const auto s = opt_tensor(scale, "scale");
        const auto o = opt_tensor(offset, "offset");
        BatchNormTrainingResult r = batch_norm_training(borrow(x, "x"), s ? &*s : nullptr,
                                                        o ? &*o : nullptr, epsilon, axis);
        return std::make_tuple(to_numpy(std::move(r.y)), to_numpy(std::move(r.batch_mean)),
                               to_numpy(std::move(r.batch_variance)));
      },
      "x"_a, "scale"_a.none(), "offset"_a.none(), "epsilon"_a, "axis"_a,
      "Normalizes with the batch's own moments; returns (y, batch_mean, batch_variance).");
  m.def(
      "bn_update_moving",
      [](const InArray& moving_mean, const InArray& moving_variance, const InArray& batch_mean,
         const InArray& batch_variance, double momentum) {
        Tensor mm = borrow(moving_mean, "moving_mean"),
               mv = borrow(moving_variance, "moving_variance");
        Tensor mean(mm), var(mv);  // the inputs stay untouched: new arrays come back
        batch_norm_update_moving(mean, var, borrow(batch_mean, "batch_mean"),
                                 borrow(batch_variance, "batch_variance"), momentum);
        return std::make_pair(to_numpy(std::move(mean)), to_numpy(std::move(var)));
      },
      "moving_mean"_a, "moving_variance"_a, "batch_mean"_a, "batch_variance"_a, "momentum"_a,
      "Keras's moving = moving * momentum + batch * (1 - momentum).");
  m.def(
      "bn_backward",
      [opt_tensor](const InArray& x, const InArray& dy, const InArray& mean,
                   const InArray& variance, std::optional<InArray> scale, float epsilon,
                   bool batch_statistics, int axis) {
        const auto s = opt_tensor(scale, "scale");
        BatchNormGradients g = batch_norm_backward(
            borrow(x, "x"), borrow(dy, "dy"), borrow(mean, "mean"), borrow(variance, "variance"),
            s ? &*s : nullptr, epsilon, batch_statistics, axis);
        return std::make_tuple(to_numpy(std::move(g.dx)), to_numpy(std::move(g.dscale)),
                               to_numpy(std::move(g.doffset)));
      },
      "x"_a, "dy"_a, "mean"_a, "variance"_a, "scale"_a.none(), "epsilon"_a, "batch_statistics"_a,
      "axis"_a, "Gradients (dx, dscale, doffset) of batch normalization given dy.");
}
