// src/kernels/conv2d_fast.hpp — the fast 2-D convolution: oneDNN's convolution primitives
// (Debian's libdnnl, the library PyTorch's CPU convolutions use) on NHWC float32 memory, with
// the work split by bnorm so that results do not depend on the thread count.
//
// Same operation, layouts and geometry as kernels/conv2d.hpp (x NHWC, the kernel in Keras's
// (kernel_h, kernel_w, in_c, filters) order, y NHWC); conv2d.hpp's im2col + GEMM path is the
// fallback when bnorm is built without oneDNN or oneDNN has no implementation for a shape, and
// its float64 reference is the specification both are tested against.
//
// How the work is split (DESIGN convention 7: a seed gives the same bits at any thread count):
// the batch is cut into chunks of a fixed number of samples that depends only on the shape (a
// power of two, about 1024 output pixels per chunk); each chunk is one oneDNN call on one thread
// (primitives are created and run under ScopedLibraryCall), chunks run in parallel_for. The
// forward and the input gradient of a chunk depend on that chunk only. The kernel and bias
// gradients are computed per chunk into the chunk's own buffer and then summed over the chunks
// in chunk order. The weights are reordered once per call into oneDNN's blocked layout (and the
// kernel gradient back to Keras's), which is what lets oneDNN pick its direct (jit/brgemm)
// kernels instead of its GEMM-based ones.
//
// prepare() creates the primitives and buffers for one shape (allocates; a few shapes are kept,
// so the last, shorter batch of an epoch and the predict batch do not re-create them). forward()
// and backward() allocate nothing themselves; each oneDNN call builds a small execution context
// inside the library (see core/library_call.hpp).
#pragma once

#include <memory>
#include <string>

#include "bnorm/core/activation_kind.hpp"
#include "kernels/conv2d.hpp"

namespace bnorm::kernels {

// Whether bnorm was built with oneDNN.
bool conv2d_fast_built_in() noexcept;

class Conv2dFast {
 public:
  Conv2dFast();
  ~Conv2dFast();
  Conv2dFast(Conv2dFast&&) noexcept;
  Conv2dFast& operator=(Conv2dFast&&) noexcept;

  // Selects (creating it on first use) the setup for d: `training` adds the backward primitives.
  // Returns false when the fast path cannot run this shape (not built in, or oneDNN has no
  // implementation, which is remembered rather than asked again): the caller then uses
  // conv2d_forward/conv2d_backward.
  // (No activation runs in oneDNN's own epilogue: its relu post-op turns NaN into 0, where
  // Keras's relu keeps NaN; forward's epilogue applies bnorm's activation per chunk instead.)
  bool prepare(const Conv2dDims& d, bool has_bias, bool training);

  // y = epilogue(conv(x, kernel) + bias) for the shape of the last successful prepare. The
  // epilogue (kernels::activation_forward, softmax over the filters of each pixel) runs on each
  // chunk right after its convolution, while the chunk's output is still in cache, on the
  // chunk's thread: the same bits as a separate pass over y.
  void forward(const float* x, const float* kernel, const float* bias, float* y,
               ActivationKind epilogue = ActivationKind::linear) noexcept;
  // Gradients for the last successful prepare (training): dx, dkernel and dbias may each be null
  // to skip them; x is the forward's input.
  void backward(const float* x, const float* dy, const float* kernel, float* dx, float* dkernel,
                float* dbias) noexcept;

  // oneDNN's implementation names for the current setup ("brgconv:avx512_core / ..."), for
  // benchmarks and logs; empty before a successful prepare.
  std::string implementation() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bnorm::kernels
