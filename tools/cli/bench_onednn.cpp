// bnorm bench — oneDNN's batch_normalization and convolution primitives as peers (when built with
// oneDNN). BN: forward_training: batch moments + normalize (use_scale | use_shift);
// forward_inference with use_global_stats; backward (prop_kind::backward): diff_src, diff_scale
// and diff_shift. Convolution: forward_training, backward_data, backward_weights (with bias).
#include "bench.hpp"

#ifdef BNORM_HAVE_ONEDNN
#include <omp.h>

#include <algorithm>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>

#include "bnorm/core/random.hpp"
#include "bnorm/core/tensor.hpp"
#endif

namespace bnorm::cli::bench {

bool use_onednn_peer(bool wanted, bool peers_explicit, std::vector<std::string>& notes) {
  if (!wanted || onednn_built_in()) return wanted;
  const std::string why = "oneDNN: not built in (install libdnnl-dev and rebuild bnorm)";
  if (peers_explicit) throw Error(why);
  notes.push_back(why);
  return false;
}

#ifndef BNORM_HAVE_ONEDNN

bool onednn_built_in() { return false; }
std::string onednn_version() { return ""; }

struct OneDnnPeer::Buffers {};
OneDnnPeer::OneDnnPeer(Layout, const std::vector<std::int64_t>&) {}
OneDnnPeer::~OneDnnPeer() = default;
PeerResult OneDnnPeer::time(BnMode, bool, int, double) {
  return {false, 0.0, "oneDNN: not built in"};
}

struct OneDnnConvPeer::State {};
OneDnnConvPeer::OneDnnConvPeer(const kernels::Conv2dDims&, bool, const ConvData&) {}
OneDnnConvPeer::~OneDnnConvPeer() = default;
PeerResult OneDnnConvPeer::time(ConvPass, int, double) {
  return {false, 0.0, "oneDNN: not built in"};
}
std::string OneDnnConvPeer::implementation() const { return ""; }

#else

namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;

// oneDNN's logical dims are always N, C, spatial...; the tag gives the memory order.
memory::desc data_desc(Layout layout, const std::vector<std::int64_t>& shape, bool nhwc_view) {
  const auto f32 = memory::data_type::f32;
  switch (layout) {
    case Layout::nhwc:
      return {{shape[0], shape[3], shape[1], shape[2]}, f32, tag::nhwc};
    case Layout::nchw:
      return {{shape[0], shape[1], shape[2], shape[3]}, f32, tag::nchw};
    case Layout::nc:
      if (nhwc_view) return {{shape[0], shape[1], 1, 1}, f32, tag::nhwc};
      return {{shape[0], shape[1]}, f32, tag::nc};
  }
  return {};
}

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

using fwd = dnnl::batch_normalization_forward;
using bwd = dnnl::batch_normalization_backward;

// Primitive descriptors through the API of the installed major version (2.x: op descriptors;
// 3.x: engine-first constructors).
fwd::primitive_desc make_forward(dnnl::prop_kind kind, const memory::desc& md, float epsilon,
                                 dnnl::normalization_flags flags) {
#if DNNL_VERSION_MAJOR >= 3
  return fwd::primitive_desc(cpu_engine(), kind, md, md, epsilon, flags);
#else
  return fwd::primitive_desc(fwd::desc(kind, md, epsilon, flags), cpu_engine());
#endif
}

bwd::primitive_desc make_backward(const memory::desc& md, float epsilon,
                                  dnnl::normalization_flags flags,
                                  const fwd::primitive_desc& hint) {
#if DNNL_VERSION_MAJOR >= 3
  return bwd::primitive_desc(cpu_engine(), dnnl::prop_kind::backward, md, md, md, epsilon, flags,
                             hint);
#else
  return bwd::primitive_desc(bwd::desc(dnnl::prop_kind::backward, md, md, epsilon, flags),
                             cpu_engine(), hint);
#endif
}

// Median seconds per execution of `prim` on `args`, waited for.
PeerResult time_primitive(const dnnl::primitive& prim, dnnl::stream& stream,
                          const std::unordered_map<int, memory>& args, double min_time) {
  const double seconds = median_seconds_per_call(
      [&] {
        prim.execute(stream, args);
        stream.wait();
      },
      min_time);
  return {true, seconds, ""};
}

}  // namespace

bool onednn_built_in() { return true; }

std::string onednn_version() {
  const dnnl_version_t* v = dnnl::version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

struct OneDnnPeer::Buffers {
  Layout layout;
  std::vector<std::int64_t> shape;
  std::int64_t channels;
  Tensor x, y, dy, dx, scale, shift, mean, variance, dscale, dshift;
};

OneDnnPeer::OneDnnPeer(Layout layout, const std::vector<std::int64_t>& shape) {
  const std::int64_t channels = layout == Layout::nhwc ? shape[3] : shape[1];
  std::int64_t size = 1;
  for (auto d : shape) size *= d;
  // Own buffers (64-byte aligned, zeroed so touched), same distributions as bnorm's workload.
  buffers_.reset(new Buffers{layout, shape, channels, Tensor(Shape{size}), Tensor(Shape{size}),
                             Tensor(Shape{size}), Tensor(Shape{size}), Tensor(Shape{channels}),
                             Tensor(Shape{channels}), Tensor(Shape{channels}),
                             Tensor(Shape{channels}), Tensor(Shape{channels}),
                             Tensor(Shape{channels})});
  Buffers& b = *buffers_;
  Random rng(42);
  for (std::int64_t c = 0; c < channels; ++c) {
    b.scale[c] = rng.uniform(0.5f, 1.5f);
    b.shift[c] = rng.uniform(-0.5f, 0.5f);
  }
  for (std::int64_t i = 0; i < size; ++i) {
    b.x[i] = 2.0f * rng.normal() + 0.5f;
    b.dy[i] = rng.normal();
  }
}

OneDnnPeer::~OneDnnPeer() = default;

PeerResult OneDnnPeer::time(BnMode mode, bool nhwc_view, int threads, double min_time) {
  try {
    Buffers& b = *buffers_;
    // oneDNN runs on OpenMP; its kernels are configured for the thread count at creation.
    omp_set_num_threads(threads);
    const float epsilon = bnorm::bench::kBenchEpsilon;
    const memory::desc md = data_desc(b.layout, b.shape, nhwc_view);
    auto& engine = cpu_engine();
    dnnl::stream stream(engine);
    const memory::desc cd({b.channels}, memory::data_type::f32, tag::x);
    memory x_m(md, engine, b.x.data()), y_m(md, engine, b.y.data()), dy_m(md, engine, b.dy.data()),
        dx_m(md, engine, b.dx.data());
    memory scale_m(cd, engine, b.scale.data()), shift_m(cd, engine, b.shift.data()),
        mean_m(cd, engine, b.mean.data()), var_m(cd, engine, b.variance.data()),
        dscale_m(cd, engine, b.dscale.data()), dshift_m(cd, engine, b.dshift.data());

    const auto affine = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    const auto train_pd = make_forward(dnnl::prop_kind::forward_training, md, epsilon, affine);
    const fwd train(train_pd);
    const std::unordered_map<int, memory> train_args = {
        {DNNL_ARG_SRC, x_m},       {DNNL_ARG_DST, y_m},     {DNNL_ARG_SCALE, scale_m},
        {DNNL_ARG_SHIFT, shift_m}, {DNNL_ARG_MEAN, mean_m}, {DNNL_ARG_VARIANCE, var_m}};
    // Batch moments for inference and backward.
    train.execute(stream, train_args);
    stream.wait();

    dnnl::primitive prim;
    std::unordered_map<int, memory> args;
    switch (mode) {
      case BnMode::train:
        prim = train;
        args = train_args;
        break;
      case BnMode::infer:
        prim = fwd(make_forward(dnnl::prop_kind::forward_inference, md, epsilon,
                                affine | dnnl::normalization_flags::use_global_stats));
        args = train_args;
        break;
      case BnMode::backward:
        prim = bwd(make_backward(md, epsilon, affine, train_pd));
        // oneDNN 2.6 refuses to execute the backward pass without the shift argument, although
        // the gradients do not depend on it.
        args = {{DNNL_ARG_SRC, x_m},
                {DNNL_ARG_DIFF_DST, dy_m},
                {DNNL_ARG_MEAN, mean_m},
                {DNNL_ARG_VARIANCE, var_m},
                {DNNL_ARG_SCALE, scale_m},
                {DNNL_ARG_SHIFT, shift_m},
                {DNNL_ARG_DIFF_SRC, dx_m},
                {DNNL_ARG_DIFF_SCALE, dscale_m},
                {DNNL_ARG_DIFF_SHIFT, dshift_m}};
        break;
    }
    return time_primitive(prim, stream, args, min_time);
  } catch (const dnnl::error& e) {
    return {false, 0.0, std::string("oneDNN: ") + e.what()};
  }
}

namespace {

// Fills a memory object oneDNN allocated (any layout, padding included) with `value`.
void fill(const memory& m, float value) {
  float* p = static_cast<float*>(m.get_data_handle());
  const std::size_t count = m.get_desc().get_size() / sizeof(float);
  std::fill(p, p + count, value);
}

}  // namespace

struct OneDnnConvPeer::State {
  kernels::Conv2dDims d;
  bool depthwise;
  ConvData data;
  std::string impl[3];
};

OneDnnConvPeer::OneDnnConvPeer(const kernels::Conv2dDims& d, bool depthwise, const ConvData& data)
    : state_(new State{d, depthwise, data, {}}) {}

OneDnnConvPeer::~OneDnnConvPeer() = default;

std::string OneDnnConvPeer::implementation() const {
  std::string out;
  for (const auto& name : state_->impl)
    out += (out.empty() ? "" : " / ") + (name.empty() ? "-" : name);
  return out;
}

PeerResult OneDnnConvPeer::time(ConvPass pass, int threads, double min_time) {
  using conv_fwd = dnnl::convolution_forward;
  using conv_bwd_data = dnnl::convolution_backward_data;
  using conv_bwd_weights = dnnl::convolution_backward_weights;
  try {
    State& s = *state_;
    const kernels::Conv2dDims& d = s.d;
    omp_set_num_threads(threads);  // oneDNN's kernels are set up for the count at creation
    auto& engine = cpu_engine();
    dnnl::stream stream(engine);
    const auto f32 = memory::data_type::f32;
    const memory::desc src({d.batch, d.in_c, d.in_h, d.in_w}, f32, tag::nhwc);
    const memory::desc dst({d.batch, d.filters, d.out_h, d.out_w}, f32, tag::nhwc);
    const memory::dims weight_dims = s.depthwise
                                         ? memory::dims{d.in_c, 1, 1, d.kernel_h, d.kernel_w}
                                         : memory::dims{d.filters, d.in_c, d.kernel_h, d.kernel_w};
    const memory::desc weights(weight_dims, f32, tag::any);
    const memory::desc bias({d.filters}, f32, tag::a);
    // "same" padding: the extra row/column goes after, as in TensorFlow.
    const auto pad_after = [](std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t st,
                              std::int64_t before) {
      return std::max<std::int64_t>(0, (out - 1) * st + k - in - before);
    };
    const memory::dims strides{d.stride_h, d.stride_w}, dilates{0, 0}, pad_l{d.pad_top, d.pad_left},
        pad_r{pad_after(d.in_h, d.out_h, d.kernel_h, d.stride_h, d.pad_top),
              pad_after(d.in_w, d.out_w, d.kernel_w, d.stride_w, d.pad_left)};
    const auto algo = dnnl::algorithm::convolution_direct;
    const conv_fwd::primitive_desc fwd_pd(
        conv_fwd::desc(dnnl::prop_kind::forward_training, algo, src, weights, bias, dst, strides,
                       dilates, pad_l, pad_r),
        engine);
    memory x_m(src, engine, s.data.x), y_m(dst, engine, s.data.y), dy_m(dst, engine, s.data.dy),
        dx_m(src, engine, s.data.dx), bias_m(bias, engine, s.data.bias),
        dbias_m(bias, engine, s.data.dbias);
    dnnl::primitive prim;
    std::unordered_map<int, memory> args;
    std::string impl;
    switch (pass) {
      case ConvPass::forward: {
        memory w(fwd_pd.weights_desc(), engine);
        fill(w, 0.01f);
        prim = conv_fwd(fwd_pd);
        args = {{DNNL_ARG_SRC, x_m},
                {DNNL_ARG_WEIGHTS, w},
                {DNNL_ARG_BIAS, bias_m},
                {DNNL_ARG_DST, y_m}};
        impl = fwd_pd.impl_info_str();
        break;
      }
      case ConvPass::backward_data: {
        const conv_bwd_data::primitive_desc pd(
            conv_bwd_data::desc(algo, src, weights, dst, strides, dilates, pad_l, pad_r), engine,
            fwd_pd);
        memory w(pd.weights_desc(), engine);
        fill(w, 0.01f);
        prim = conv_bwd_data(pd);
        args = {{DNNL_ARG_DIFF_DST, dy_m}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_SRC, dx_m}};
        impl = pd.impl_info_str();
        break;
      }
      case ConvPass::backward_weights: {
        const conv_bwd_weights::primitive_desc pd(
            conv_bwd_weights::desc(algo, src, weights, bias, dst, strides, dilates, pad_l, pad_r),
            engine, fwd_pd);
        memory dw(pd.diff_weights_desc(), engine);
        prim = conv_bwd_weights(pd);
        args = {{DNNL_ARG_SRC, x_m},
                {DNNL_ARG_DIFF_DST, dy_m},
                {DNNL_ARG_DIFF_WEIGHTS, dw},
                {DNNL_ARG_DIFF_BIAS, dbias_m}};
        impl = pd.impl_info_str();
        break;
      }
    }
    s.impl[static_cast<int>(pass)] = impl;
    return time_primitive(prim, stream, args, min_time);
  } catch (const dnnl::error& e) {
    return {false, 0.0, std::string("oneDNN: ") + e.what()};
  }
}

#endif

}  // namespace bnorm::cli::bench
