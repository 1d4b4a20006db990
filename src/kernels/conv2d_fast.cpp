#include "kernels/conv2d_fast.hpp"

#ifdef BNORM_HAVE_ONEDNN

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <vector>

#include "bnorm/core/parallel.hpp"
#include "core/library_call.hpp"
#include "kernels/activation.hpp"

namespace bnorm::kernels {

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// About this many output pixels per chunk: small enough that a batch of 28x28 maps splits over
// the threads, large enough that a call's fixed cost stays small.
constexpr std::int64_t kChunkPixels = 1024;

std::int64_t chunk_samples_for(const Conv2dDims& d) {
  const std::int64_t want = (kChunkPixels + d.out_positions() - 1) / d.out_positions();
  std::int64_t c = 1;
  while (c < want) c *= 2;
  return std::min(c, d.batch);
}

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}
dnnl::stream& cpu_stream() {
  static dnnl::stream stream(cpu_engine());
  return stream;
}

// Runs a primitive with the C API: no std::unordered_map / std::vector built per call.
template <std::size_t N>
void execute(const dnnl::primitive& p, const std::array<dnnl_exec_arg_t, N>& args, int n = N) {
  dnnl_primitive_execute(p.get(), cpu_stream().get(), n, args.data());
}

// The primitives for one chunk size (the full chunks, or the shorter last one).
struct ChunkKind {
  std::int64_t mb = 0;
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights::primitive_desc bwd_weights_pd;
  dnnl::convolution_backward_weights bwd_weights;
};

// One chunk's memory objects: views of the caller's arrays (handles set per call) and the
// chunk's own scratchpad and gradient partial sums.
struct ChunkMemory {
  memory src, dst, diff_src, diff_dst, scratchpad, diff_weights, diff_bias;
};

}  // namespace

struct Conv2dFast::Impl {
  // What a setup is for.
  struct Key {
    Conv2dDims d;
    bool has_bias = false, training = false;
    bool operator==(const Key&) const = default;
  };
  struct Setup : Key {
    std::int64_t chunk = 1, chunks = 1;
    ChunkKind full, tail;  // tail.mb == 0: every chunk is full
    memory user_weights;   // Keras's (kh, kw, in_c, filters): dims (O, I, H, W) tagged hwio
    memory fwd_weights, bwd_data_weights;
    std::optional<dnnl::reorder> to_fwd_weights, to_bwd_data_weights, to_user_weights;
    memory user_diff_weights;  // the caller's dkernel
    memory bias;               // the caller's bias
    std::vector<ChunkMemory> mem;
    std::string impl;

    const ChunkKind& kind(std::int64_t c) const { return (c + 1) * chunk <= d.batch ? full : tail; }
  };
  static constexpr std::size_t kKeep = 4;  // setups kept: train batch, last batch, predict, ...
  std::deque<Setup> setups;
  std::vector<Key> declined;  // shapes oneDNN has no implementation for: not asked again
  Setup* current = nullptr;
};

bool conv2d_fast_built_in() noexcept { return true; }

Conv2dFast::Conv2dFast() : impl_(std::make_unique<Impl>()) {}
Conv2dFast::~Conv2dFast() = default;
Conv2dFast::Conv2dFast(Conv2dFast&&) noexcept = default;
Conv2dFast& Conv2dFast::operator=(Conv2dFast&&) noexcept = default;

namespace {

void make_kind(const Conv2dDims& d, std::int64_t mb, bool has_bias, bool training, ChunkKind& k) {
  const dnnl::engine& eng = cpu_engine();
  k.mb = mb;
  const memory::desc src({mb, d.in_c, d.in_h, d.in_w}, dt::f32, tag::nhwc);
  const memory::desc dst({mb, d.filters, d.out_h, d.out_w}, dt::f32, tag::nhwc);
  const memory::desc weights({d.filters, d.in_c, d.kernel_h, d.kernel_w}, dt::f32, tag::any);
  const memory::desc bias = has_bias ? memory::desc({d.filters}, dt::f32, tag::a) : memory::desc();
  const memory::dims strides{d.stride_h, d.stride_w};
  const memory::dims dilates{d.dilation_h - 1, d.dilation_w - 1};
  const memory::dims pad_l{d.pad_top, d.pad_left};
  // The padding after: whatever the last window reaches past the input (0 when it does not).
  const auto after = [](std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t s,
                        std::int64_t dil, std::int64_t before) {
    return std::max<std::int64_t>(0, (out - 1) * s + dil * (k - 1) + 1 - in - before);
  };
  const memory::dims pad_r{
      after(d.in_h, d.out_h, d.kernel_h, d.stride_h, d.dilation_h, d.pad_top),
      after(d.in_w, d.out_w, d.kernel_w, d.stride_w, d.dilation_w, d.pad_left)};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto prop =
      training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  const dnnl::convolution_forward::desc fd(prop, dnnl::algorithm::convolution_direct, src, weights,
                                           bias, dst, strides, dilates, pad_l, pad_r);
  k.fwd_pd = dnnl::convolution_forward::primitive_desc(fd, attr, eng);
  k.fwd = dnnl::convolution_forward(k.fwd_pd);
  if (!training) return;
  const dnnl::convolution_backward_data::desc bd(dnnl::algorithm::convolution_direct, src, weights,
                                                 dst, strides, dilates, pad_l, pad_r);
  k.bwd_data_pd = dnnl::convolution_backward_data::primitive_desc(bd, attr, eng, k.fwd_pd);
  k.bwd_data = dnnl::convolution_backward_data(k.bwd_data_pd);
  const dnnl::convolution_backward_weights::desc wd(
      dnnl::algorithm::convolution_direct, src, weights, bias, dst, strides, dilates, pad_l, pad_r);
  k.bwd_weights_pd = dnnl::convolution_backward_weights::primitive_desc(wd, attr, eng, k.fwd_pd);
  k.bwd_weights = dnnl::convolution_backward_weights(k.bwd_weights_pd);
}

memory view(const memory::desc& md) { return memory(md, cpu_engine(), DNNL_MEMORY_NONE); }

void set(memory& m, const void* p) { m.set_data_handle(const_cast<void*>(p)); }

}  // namespace

bool Conv2dFast::prepare(const Conv2dDims& d, bool has_bias, bool training) {
  const Impl::Key key{d, has_bias, training};
  impl_->current = nullptr;
  for (auto& s : impl_->setups) {
    if (static_cast<const Impl::Key&>(s) == key) {
      impl_->current = &s;
      return true;
    }
  }
  if (d.batch < 1 || d.out_h < 1 || d.out_w < 1) return false;
  if (std::find(impl_->declined.begin(), impl_->declined.end(), key) != impl_->declined.end()) {
    return false;
  }
  Impl::Setup s;
  static_cast<Impl::Key&>(s) = key;
  s.chunk = chunk_samples_for(d);
  s.chunks = (d.batch + s.chunk - 1) / s.chunk;
  try {
    // Set up for one thread: the way every call runs.
    const ScopedLibraryCall one_thread;
    make_kind(d, s.chunk, has_bias, training, s.full);
    if (d.batch % s.chunk != 0) {
      make_kind(d, d.batch % s.chunk, has_bias, training, s.tail);
    }
    const dnnl::engine& eng = cpu_engine();
    const memory::desc user_w({d.filters, d.in_c, d.kernel_h, d.kernel_w}, dt::f32, tag::hwio);
    s.user_weights = view(user_w);
    if (has_bias) s.bias = view(s.full.fwd_pd.bias_desc());
    s.fwd_weights = memory(s.full.fwd_pd.weights_desc(), eng);
    if (s.full.fwd_pd.weights_desc() != user_w) {
      s.to_fwd_weights.emplace(s.user_weights, s.fwd_weights);
    }
    // The tail's primitives must read the weights in the same layout as the full chunks'.
    if (s.tail.mb > 0 && s.tail.fwd_pd.weights_desc() != s.fwd_weights.get_desc()) {
      throw dnnl::error(dnnl_unimplemented, "tail chunk with another weights layout");
    }
    std::size_t scratch = s.full.fwd_pd.scratchpad_desc().get_size();
    if (s.tail.mb > 0) scratch = std::max(scratch, s.tail.fwd_pd.scratchpad_desc().get_size());
    if (training) {
      const memory::desc bw = s.full.bwd_data_pd.weights_desc();
      const memory::desc dw = s.full.bwd_weights_pd.diff_weights_desc();
      if (s.tail.mb > 0 && (s.tail.bwd_data_pd.weights_desc() != bw ||
                            s.tail.bwd_weights_pd.diff_weights_desc() != dw)) {
        throw dnnl::error(dnnl_unimplemented, "tail chunk with another weights layout");
      }
      s.bwd_data_weights = memory(bw, eng);
      if (bw != user_w) s.to_bwd_data_weights.emplace(s.user_weights, s.bwd_data_weights);
      s.user_diff_weights = view(user_w);
      for (const ChunkKind* k : {&s.full, &s.tail}) {
        if (k->mb == 0) continue;
        scratch = std::max({scratch, k->bwd_data_pd.scratchpad_desc().get_size(),
                            k->bwd_weights_pd.scratchpad_desc().get_size()});
      }
    }
    const memory::desc scratch_md({static_cast<memory::dim>(std::max<std::size_t>(scratch, 1))},
                                  dt::u8, tag::a);
    s.mem.resize(static_cast<std::size_t>(s.chunks));
    for (std::int64_t c = 0; c < s.chunks; ++c) {
      const ChunkKind& k = s.kind(c);
      ChunkMemory& m = s.mem[static_cast<std::size_t>(c)];
      m.src = view(k.fwd_pd.src_desc());
      m.dst = view(k.fwd_pd.dst_desc());
      m.scratchpad = memory(scratch_md, eng);
      if (training) {
        m.diff_src = view(k.bwd_data_pd.diff_src_desc());
        m.diff_dst = view(k.bwd_data_pd.diff_dst_desc());
        m.diff_weights = memory(k.bwd_weights_pd.diff_weights_desc(), eng);
        if (has_bias) m.diff_bias = memory(k.bwd_weights_pd.diff_bias_desc(), eng);
      }
    }
    if (training) {
      // The chunk sums end in chunk 0's buffer, reordered from there to Keras's layout.
      if (s.mem[0].diff_weights.get_desc() != user_w) {
        s.to_user_weights.emplace(s.mem[0].diff_weights, s.user_diff_weights);
      }
    }
    s.impl = s.full.fwd_pd.impl_info_str();
    if (training) {
      s.impl += std::string(" / ") + s.full.bwd_data_pd.impl_info_str() + " / " +
                s.full.bwd_weights_pd.impl_info_str();
    }
  } catch (const dnnl::error&) {
    impl_->declined.push_back(key);  // no implementation here: the im2col path runs this shape
    return false;
  }
  if (impl_->setups.size() == Impl::kKeep) impl_->setups.pop_front();
  impl_->setups.push_back(std::move(s));
  impl_->current = &impl_->setups.back();
  return true;
}

std::string Conv2dFast::implementation() const {
  return impl_->current ? impl_->current->impl : std::string();
}

namespace {

// Reorders `from` into `to` (the weights between Keras's layout and oneDNN's), on one thread.
void run_reorder(const dnnl::reorder& r, const memory& from, const memory& to) {
  const ScopedLibraryCall one_thread;
  execute<2>(r, {{{DNNL_ARG_FROM, from.get()}, {DNNL_ARG_TO, to.get()}}});
}

}  // namespace

namespace {

// body(c, memory of chunk c, x offset, y offset) for every chunk, chunks in parallel_for, each
// thread's oneDNN calls on one thread.
template <class Setup, class Body>
void for_each_chunk(Setup& s, Body&& body) {
  const Conv2dDims& d = s.d;
  const std::int64_t x_sample = d.in_h * d.in_w * d.in_c;
  const std::int64_t y_sample = d.out_h * d.out_w * d.filters;
  parallel_for(s.chunks, 1, [&](std::int64_t c0, std::int64_t c1) {
    const ScopedLibraryCall one_thread;
    for (std::int64_t c = c0; c < c1; ++c) {
      body(s.kind(c), s.mem[static_cast<std::size_t>(c)], c * s.chunk * x_sample,
           c * s.chunk * y_sample);
    }
  });
}

}  // namespace

void Conv2dFast::forward(const float* x, const float* kernel, const float* bias, float* y,
                         ActivationKind epilogue) noexcept {
  Impl::Setup& s = *impl_->current;
  set(s.user_weights, kernel);
  if (s.to_fwd_weights) run_reorder(*s.to_fwd_weights, s.user_weights, s.fwd_weights);
  const memory& weights = s.to_fwd_weights ? s.fwd_weights : s.user_weights;
  if (s.has_bias) set(s.bias, bias);
  for_each_chunk(s, [&](const ChunkKind& k, ChunkMemory& m, std::int64_t x_at, std::int64_t y_at) {
    set(m.src, x + x_at);
    set(m.dst, y + y_at);
    execute<5>(k.fwd,
               {{{DNNL_ARG_SRC, m.src.get()},
                 {DNNL_ARG_WEIGHTS, weights.get()},
                 {DNNL_ARG_DST, m.dst.get()},
                 {DNNL_ARG_SCRATCHPAD, m.scratchpad.get()},
                 {DNNL_ARG_BIAS, s.has_bias ? s.bias.get() : nullptr}}},
               s.has_bias ? 5 : 4);
    if (epilogue != ActivationKind::linear) {
      activation_forward(epilogue, k.mb * s.d.out_positions(), s.d.filters, y + y_at, y + y_at);
    }
  });
}

void Conv2dFast::backward(const float* x, const float* dy, const float* kernel, float* dx,
                          float* dkernel, float* dbias) noexcept {
  Impl::Setup& s = *impl_->current;
  const Conv2dDims& d = s.d;
  const bool want_weights = dkernel != nullptr || (dbias != nullptr && s.has_bias);
  if (dx) {
    set(s.user_weights, kernel);
    if (s.to_bwd_data_weights) {
      run_reorder(*s.to_bwd_data_weights, s.user_weights, s.bwd_data_weights);
    }
  }
  const memory& weights = s.to_bwd_data_weights ? s.bwd_data_weights : s.user_weights;
  for_each_chunk(s, [&](const ChunkKind& k, ChunkMemory& m, std::int64_t x_at, std::int64_t y_at) {
    set(m.diff_dst, dy + y_at);
    if (dx) {
      set(m.diff_src, dx + x_at);
      execute<4>(k.bwd_data, {{{DNNL_ARG_DIFF_DST, m.diff_dst.get()},
                               {DNNL_ARG_WEIGHTS, weights.get()},
                               {DNNL_ARG_DIFF_SRC, m.diff_src.get()},
                               {DNNL_ARG_SCRATCHPAD, m.scratchpad.get()}}});
    }
    if (want_weights) {
      set(m.src, x + x_at);
      execute<5>(k.bwd_weights,
                 {{{DNNL_ARG_SRC, m.src.get()},
                   {DNNL_ARG_DIFF_DST, m.diff_dst.get()},
                   {DNNL_ARG_DIFF_WEIGHTS, m.diff_weights.get()},
                   {DNNL_ARG_SCRATCHPAD, m.scratchpad.get()},
                   {DNNL_ARG_DIFF_BIAS, s.has_bias ? m.diff_bias.get() : nullptr}}},
                 s.has_bias ? 5 : 4);
    }
  });
  if (!want_weights) return;
  // Chunk sums in chunk order, element by element (blocks of elements in parallel): the same
  // bits at any thread count. The sums land in chunk 0's buffers.
  const auto reduce = [&](std::int64_t count, auto buffer_of) {
    float* total = buffer_of(s.mem[0]);
    parallel_for(count, 4096, [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t c = 1; c < s.chunks; ++c) {
        const float* part = buffer_of(s.mem[static_cast<std::size_t>(c)]);
        for (std::int64_t i = i0; i < i1; ++i) total[i] += part[i];
      }
    });
    return total;
  };
  if (dkernel) {
    const auto count = static_cast<std::int64_t>(s.mem[0].diff_weights.get_desc().get_size() / 4);
    float* total = reduce(count, [](ChunkMemory& m) {
      return static_cast<float*>(m.diff_weights.get_data_handle());
    });
    if (s.to_user_weights) {
      set(s.user_diff_weights, dkernel);
      run_reorder(*s.to_user_weights, s.mem[0].diff_weights, s.user_diff_weights);
    } else {
      std::copy(total, total + d.kernel_size(), dkernel);
    }
  }
  if (dbias && s.has_bias) {
    const float* total = reduce(d.filters, [](ChunkMemory& m) {
      return static_cast<float*>(m.diff_bias.get_data_handle());
    });
    std::copy(total, total + d.filters, dbias);
  }
}

}  // namespace bnorm::kernels

#else  // built without oneDNN: prepare() always declines and the im2col path runs

namespace bnorm::kernels {

struct Conv2dFast::Impl {};

bool conv2d_fast_built_in() noexcept { return false; }
Conv2dFast::Conv2dFast() = default;
Conv2dFast::~Conv2dFast() = default;
Conv2dFast::Conv2dFast(Conv2dFast&&) noexcept = default;
Conv2dFast& Conv2dFast::operator=(Conv2dFast&&) noexcept = default;
bool Conv2dFast::prepare(const Conv2dDims&, bool, bool) { return false; }
void Conv2dFast::forward(const float*, const float*, const float*, float*,
                         ActivationKind) noexcept {}
void Conv2dFast::backward(const float*, const float*, const float*, float*, float*,
                          float*) noexcept {}
std::string Conv2dFast::implementation() const { return {}; }

}  // namespace bnorm::kernels

#endif
