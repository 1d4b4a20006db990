// Per-instruction-set bodies of the batch-norm kernels (see batch_norm_simd.hpp). Highway
// re-includes this file once per target; everything between HWY_BEFORE_NAMESPACE and
// HWY_AFTER_NAMESPACE is compiled for each.
//
// Sums run in float64 lanes: float32 data is promoted as it is loaded, so a sum over millions
// of values keeps ~1e-16 relative error, and the one-pass shifted variance (s2 - s1^2/n)/n
// does not cancel: the shift is a value of the channel, so |x - shift| is of the order of the
// spread, not of |mean|. Differences are taken in float64, where +-3e38 data cannot overflow.
// Elementwise passes run in float32 lanes. Tails shorter than a vector go through a small
// stack buffer, so no lane ever reads or writes past the caller's memory.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/batch_norm_simd.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// foreach_target.h must come first.
#include <cstdint>
#include <cstring>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/batch_norm_simd.hpp"

HWY_BEFORE_NAMESPACE();
namespace bnorm::kernels::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;   // full float vector (elementwise passes)
using DD = hn::ScalableTag<double>;  // float64 accumulators
using DH = hn::Rebind<float, DD>;    // as many floats as DD has doubles (promoted to DD)

constexpr std::size_t kMaxLanes = HWY_MAX_BYTES / sizeof(float);

// Loads n < Lanes(d) values, zero-filling the rest.
template <class D, typename T = hn::TFromD<D>>
HWY_INLINE hn::Vec<D> LoadPart(D d, const T* p, std::size_t n) {
  alignas(64) T buf[kMaxLanes] = {};
  std::memcpy(buf, p, n * sizeof(T));
  return hn::Load(d, buf);
}

template <class D, typename T = hn::TFromD<D>>
HWY_INLINE void StorePart(hn::Vec<D> v, D d, T* p, std::size_t n) {
  alignas(64) T buf[kMaxLanes];
  hn::Store(v, d, buf);
  std::memcpy(p, buf, n * sizeof(T));
}

// Stores a full vector, non-temporally when asked and the address allows it.
template <class D, typename T = hn::TFromD<D>>
HWY_INLINE void StoreFull(hn::Vec<D> v, D d, T* p, bool stream) {
  if (stream && (reinterpret_cast<std::uintptr_t>(p) % (hn::Lanes(d) * sizeof(T))) == 0) {
    hn::Stream(v, d, p);
  } else {
    hn::StoreU(v, d, p);
  }
}

// The normalization, written once so the backward's ReLU mask sees the forward's exact bits.
template <class V>
HWY_INLINE V Normalize(V x, V mean, V inv, V beta) {
  return hn::MulAdd(hn::Sub(x, mean), inv, beta);
}

// What a kernel fuses after the normalization: nothing, a ReLU, or the residual Add then a ReLU.
enum class Fuse { kNone, kRelu, kAddRelu };

// The fused forward's value from the normalized y: max(y, 0), or max(y + shortcut, 0). The add
// is a separate float32 operation on the rounded y, never folded into Normalize's MulAdd
// (MulAdd(x - mean, inv, beta + s) would round once instead of twice), so the result is the
// bits of the unfused BatchNormalization -> Add -> ReLU.
template <Fuse kFuse, class V>
HWY_INLINE V Epilogue(V y, V shortcut) {
  if constexpr (kFuse == Fuse::kAddRelu) y = hn::Add(y, shortcut);
  if constexpr (kFuse != Fuse::kNone) y = hn::Max(y, hn::Zero(hn::DFromV<V>()));
  return y;
}

// dy masked by the fused ReLU, [Epilogue's argument of max > 0] recomputed from x (and the
// shortcut) with the forward's exact operations, so the mask equals the forward's (y > 0).
template <Fuse kFuse, class V>
HWY_INLINE V MaskGrad(V x, V dy, V mean, V inv, V beta, V shortcut) {
  if constexpr (kFuse == Fuse::kNone) {
    return dy;
  } else {
    auto pre = Normalize(x, mean, inv, beta);
    if constexpr (kFuse == Fuse::kAddRelu) pre = hn::Add(pre, shortcut);
    return hn::IfThenElseZero(hn::Gt(pre, hn::Zero(hn::DFromV<V>())), dy);
  }
}

// The shortcut's vector at base + off when the kernel has one (zero otherwise, and base may be
// nullptr: Epilogue/MaskGrad ignore it).
template <Fuse kFuse, class D>
HWY_INLINE hn::Vec<D> LoadShortcut(D d, const float* base, std::int64_t off) {
  if constexpr (kFuse == Fuse::kAddRelu) return hn::LoadU(d, base + off);
  return hn::Zero(d);
}
template <Fuse kFuse, class D>
HWY_INLINE hn::Vec<D> LoadShortcutPart(D d, const float* base, std::int64_t off, std::size_t n) {
  if constexpr (kFuse == Fuse::kAddRelu) return LoadPart(d, base + off, n);
  return hn::Zero(d);
}

// Stores a masked gradient held in DH lanes (half a float vector). Streams only vectors of 16
// bytes or more: x86's Stream of a 64-bit vector (SSE targets) would write 16 bytes.
HWY_INLINE void StoreGrad(hn::Vec<DH> g, float* p, bool stream) {
  const DH dh;
  if constexpr (hn::MaxLanes(DH()) * sizeof(float) >= 16) {
    StoreFull(g, dh, p, stream);
  } else {
    hn::StoreU(g, dh, p);
  }
}

// Rows per group in the elementwise passes over wide rows. 1 = strictly row after row (the
// per-channel constants come from L1 each time): 2 or 8 rows per group, strip by strip, measured
// slower (infer of (25088, 256): 1767 / 1288 us against 1106 us; 3 streams per row group are
// more than the prefetchers follow well).
constexpr std::int64_t kRowGroup = 1;

// Reductions over rows keep a group of per-channel accumulators in registers while walking 4
// rows, then move to the next group of channels of the same 4 rows: 4 sequential streams for
// the prefetchers (taller tiles read each row in slices, which measured up to 2x slower).
constexpr std::int64_t kRowTile = 4;

// ---------------------------------------------------------------- rows: sums
// One strip of lanes columns: accumulate over the rows of a tile.
template <int kStrips>
HWY_INLINE void RowsSumsStrips(const float* x, std::int64_t ld, std::int64_t rows,
                               const float* shift, double* s1, double* s2) {
  const DD dd;
  const DH dh;
  const std::size_t N = hn::Lanes(dd);
  hn::Vec<DD> a1[kStrips], a2[kStrips], k[kStrips];
  for (int s = 0; s < kStrips; ++s) {
    a1[s] = hn::LoadU(dd, s1 + s * N);
    a2[s] = hn::LoadU(dd, s2 + s * N);
    k[s] = hn::PromoteTo(dd, hn::LoadU(dh, shift + s * N));
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld;
    for (int s = 0; s < kStrips; ++s) {
      const auto v = hn::Sub(hn::PromoteTo(dd, hn::LoadU(dh, xr + s * N)), k[s]);
      a1[s] = hn::Add(a1[s], v);
      a2[s] = hn::MulAdd(v, v, a2[s]);
    }
  }
  for (int s = 0; s < kStrips; ++s) {
    hn::StoreU(a1[s], dd, s1 + s * N);
    hn::StoreU(a2[s], dd, s2 + s * N);
  }
}

void RowsSums(const float* x, std::int64_t ld, std::int64_t rows, std::int64_t nc,
              const float* shift, double* s1, double* s2) {
  const DD dd;
  const DH dh;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(dd));
  const std::int64_t tile = kRowTile;
  for (std::int64_t r0 = 0; r0 < rows; r0 += tile) {
    const std::int64_t nr = rows - r0 < tile ? rows - r0 : tile;
    const float* xt = x + r0 * ld;
    std::int64_t j = 0;
    for (; j + 4 * N <= nc; j += 4 * N)
      RowsSumsStrips<4>(xt + j, ld, nr, shift + j, s1 + j, s2 + j);
    for (; j + N <= nc; j += N) RowsSumsStrips<1>(xt + j, ld, nr, shift + j, s1 + j, s2 + j);
    if (j < nc) {
      const std::size_t n = static_cast<std::size_t>(nc - j);
      auto a1 = LoadPart(dd, s1 + j, n), a2 = LoadPart(dd, s2 + j, n);
      const auto k = hn::PromoteTo(dd, LoadPart(dh, shift + j, n));
      for (std::int64_t r = 0; r < nr; ++r) {
        const auto v = hn::Sub(hn::PromoteTo(dd, LoadPart(dh, xt + r * ld + j, n)), k);
        a1 = hn::Add(a1, v);
        a2 = hn::MulAdd(v, v, a2);
      }
      StorePart(a1, dd, s1 + j, n);
      StorePart(a2, dd, s2 + j, n);
    }
  }
}

// ---------------------------------------------------------------- rows: gradient sums
// a1 += g, a2 += g * (x - mean), for an already masked g.
HWY_INLINE void GradTerm(hn::Vec<DH> x, hn::Vec<DH> g, hn::Vec<DH> m, hn::Vec<DD>& a1,
                         hn::Vec<DD>& a2) {
  const DD dd;
  // x - mean in float64: exact enough, and finite even where float32 would overflow.
  const auto xc = hn::Sub(hn::PromoteTo(dd, x), hn::PromoteTo(dd, m));
  const auto gd = hn::PromoteTo(dd, g);
  a1 = hn::Add(a1, gd);
  a2 = hn::MulAdd(gd, xc, a2);
}

// Pointers of one gradient-sums call, offset to the current strip (ds: nullptr, or the masked
// gradient's destination).
struct GradPtrs {
  const float* x;
  const float* dy;
  const float* s;
  float* ds;
};

template <Fuse kFuse, int kStrips>
HWY_INLINE void RowsGradStrips(GradPtrs p, std::int64_t ld, std::int64_t rows, const float* mean,
                               const float* inv, const float* beta, double* s1, double* s2,
                               bool stream) {
  const DD dd;
  const DH dh;
  const std::size_t N = hn::Lanes(dd);
  constexpr bool kMask = kFuse != Fuse::kNone;
  hn::Vec<DD> a1[kStrips], a2[kStrips];
  hn::Vec<DH> m[kStrips], iv[kStrips], b[kStrips];
  for (int s = 0; s < kStrips; ++s) {
    a1[s] = hn::LoadU(dd, s1 + s * N);
    a2[s] = hn::LoadU(dd, s2 + s * N);
    m[s] = hn::LoadU(dh, mean + s * N);
    iv[s] = kMask ? hn::LoadU(dh, inv + s * N) : hn::Zero(dh);
    b[s] = kMask ? hn::LoadU(dh, beta + s * N) : hn::Zero(dh);
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    for (int s = 0; s < kStrips; ++s) {
      const std::int64_t o = r * ld + static_cast<std::int64_t>(s * N);
      const auto x = hn::LoadU(dh, p.x + o);
      const auto g = MaskGrad<kFuse>(x, hn::LoadU(dh, p.dy + o), m[s], iv[s], b[s],
                                     LoadShortcut<kFuse>(dh, p.s, o));
      if (p.ds) StoreGrad(g, p.ds + o, stream);
      GradTerm(x, g, m[s], a1[s], a2[s]);
    }
  }
  for (int s = 0; s < kStrips; ++s) {
    hn::StoreU(a1[s], dd, s1 + s * N);
    hn::StoreU(a2[s], dd, s2 + s * N);
  }
}

template <Fuse kFuse>
void RowsGradSumsT(GradPtrs p, std::int64_t ld, std::int64_t rows, std::int64_t nc,
                   const float* mean, const float* inv, const float* beta, double* s1, double* s2,
                   bool stream) {
  const DD dd;
  const DH dh;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(dd));
  const std::int64_t tile = kRowTile;
  constexpr bool kMask = kFuse != Fuse::kNone;
  auto at = [&p](std::int64_t off) {
    return GradPtrs{p.x + off, p.dy + off, p.s ? p.s + off : nullptr, p.ds ? p.ds + off : nullptr};
  };
  // inv and beta are read only by the fused ReLU's mask; without it they may be null, and an
  // offset applied to a null pointer is undefined behaviour (UBSan: pointer-overflow).
  auto masked = [](const float* p, std::int64_t off) -> const float* {
    return kMask && p ? p + off : nullptr;
  };
  for (std::int64_t r0 = 0; r0 < rows; r0 += tile) {
    const std::int64_t nr = rows - r0 < tile ? rows - r0 : tile;
    std::int64_t j = 0;
    for (; j + 4 * N <= nc; j += 4 * N)
      RowsGradStrips<kFuse, 4>(at(r0 * ld + j), ld, nr, mean + j, masked(inv, j), masked(beta, j),
                               s1 + j, s2 + j, stream);
    for (; j + N <= nc; j += N)
      RowsGradStrips<kFuse, 1>(at(r0 * ld + j), ld, nr, mean + j, masked(inv, j), masked(beta, j),
                               s1 + j, s2 + j, stream);
    if (j < nc) {
      const std::size_t n = static_cast<std::size_t>(nc - j);
      auto a1 = LoadPart(dd, s1 + j, n), a2 = LoadPart(dd, s2 + j, n);
      const auto m = LoadPart(dh, mean + j, n);
      const auto iv = kMask ? LoadPart(dh, inv + j, n) : hn::Zero(dh);
      const auto b = kMask ? LoadPart(dh, beta + j, n) : hn::Zero(dh);
      for (std::int64_t r = r0; r < r0 + nr; ++r) {
        const GradPtrs q = at(r * ld + j);
        const auto x = LoadPart(dh, q.x, n);
        const auto g = MaskGrad<kFuse>(x, LoadPart(dh, q.dy, n), m, iv, b,
                                       LoadShortcutPart<kFuse>(dh, q.s, 0, n));
        if (q.ds) StorePart(g, dh, q.ds, n);
        GradTerm(x, g, m, a1, a2);
      }
      StorePart(a1, dd, s1 + j, n);
      StorePart(a2, dd, s2 + j, n);
    }
  }
  if (stream && p.ds) hwy::FlushStream();
}

void RowsGradSums(const float* x, const float* dy, std::int64_t ld, std::int64_t rows,
                  std::int64_t nc, const float* mean, const float* relu_inv, const float* relu_beta,
                  const float* shortcut, double* s1, double* s2, float* dshortcut, bool stream) {
  const GradPtrs p{x, dy, shortcut, dshortcut};
  if (shortcut)
    return RowsGradSumsT<Fuse::kAddRelu>(p, ld, rows, nc, mean, relu_inv, relu_beta, s1, s2,
                                         stream);
  if (relu_inv)
    return RowsGradSumsT<Fuse::kRelu>(p, ld, rows, nc, mean, relu_inv, relu_beta, s1, s2, stream);
  RowsGradSumsT<Fuse::kNone>(p, ld, rows, nc, mean, nullptr, nullptr, s1, s2, stream);
}

// ---------------------------------------------------------------- rows: normalize
// Whole rows at a time (row-major order), so non-temporal stores fill complete cache lines.
template <Fuse kFuse>
void RowsNormalizeT(const float* x, const float* sc, float* y, std::int64_t ld, std::int64_t rows,
                    std::int64_t nc, const float* mean, const float* inv, const float* beta,
                    bool stream) {
  const DF df;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(df));
  const std::int64_t full = nc - nc % N;
  const std::size_t tail = static_cast<std::size_t>(nc - full);
  // Up to 4 strips: keep the per-channel constants in registers for the whole row loop.
  if (full == nc && nc <= 4 * N) {
    const int strips = static_cast<int>(nc / N);
    hn::Vec<DF> m[4], iv[4], b[4];
    for (int s = 0; s < strips; ++s) {
      m[s] = hn::LoadU(df, mean + s * N);
      iv[s] = hn::LoadU(df, inv + s * N);
      b[s] = hn::LoadU(df, beta + s * N);
    }
    for (std::int64_t r = 0; r < rows; ++r) {
      for (int s = 0; s < strips; ++s) {
        const std::int64_t o = r * ld + s * N;
        const auto v = Normalize(hn::LoadU(df, x + o), m[s], iv[s], b[s]);
        StoreFull(Epilogue<kFuse>(v, LoadShortcut<kFuse>(df, sc, o)), df, y + o, stream);
      }
    }
  } else {
    // Wider rows: kRowGroup rows at a time, one strip of channels after another.
    for (std::int64_t r0 = 0; r0 < rows; r0 += kRowGroup) {
      const std::int64_t nr = rows - r0 < kRowGroup ? rows - r0 : kRowGroup;
      for (std::int64_t j = 0; j < full; j += N) {
        const auto m = hn::LoadU(df, mean + j), iv = hn::LoadU(df, inv + j),
                   b = hn::LoadU(df, beta + j);
        for (std::int64_t r = r0; r < r0 + nr; ++r) {
          const std::int64_t o = r * ld + j;
          const auto v = Normalize(hn::LoadU(df, x + o), m, iv, b);
          StoreFull(Epilogue<kFuse>(v, LoadShortcut<kFuse>(df, sc, o)), df, y + o, stream);
        }
      }
      if (tail) {
        const auto m = LoadPart(df, mean + full, tail), iv = LoadPart(df, inv + full, tail),
                   b = LoadPart(df, beta + full, tail);
        for (std::int64_t r = r0; r < r0 + nr; ++r) {
          const std::int64_t o = r * ld + full;
          const auto v = Normalize(LoadPart(df, x + o, tail), m, iv, b);
          StorePart(Epilogue<kFuse>(v, LoadShortcutPart<kFuse>(df, sc, o, tail)), df, y + o, tail);
        }
      }
    }
  }
  if (stream) hwy::FlushStream();
}

void RowsNormalize(const float* x, const float* shortcut, float* y, std::int64_t ld,
                   std::int64_t rows, std::int64_t nc, const float* mean, const float* inv,
                   const float* beta, bool relu, bool stream) {
  if (shortcut)
    return RowsNormalizeT<Fuse::kAddRelu>(x, shortcut, y, ld, rows, nc, mean, inv, beta, stream);
  if (relu)
    return RowsNormalizeT<Fuse::kRelu>(x, nullptr, y, ld, rows, nc, mean, inv, beta, stream);
  RowsNormalizeT<Fuse::kNone>(x, nullptr, y, ld, rows, nc, mean, inv, beta, stream);
}

// ---------------------------------------------------------------- rows: dx
template <Fuse kFuse>
HWY_INLINE hn::Vec<DF> DxTerm(hn::Vec<DF> x, hn::Vec<DF> g, hn::Vec<DF> sc, hn::Vec<DF> m,
                              hn::Vec<DF> a, hn::Vec<DF> b, hn::Vec<DF> k, hn::Vec<DF> inv,
                              hn::Vec<DF> beta) {
  g = MaskGrad<kFuse>(x, g, m, inv, beta, sc);
  return hn::MulAdd(a, g, hn::MulAdd(b, hn::Sub(x, m), k));
}

template <Fuse kFuse>
void RowsDxT(const float* x, const float* dy, const float* sc, float* dx, std::int64_t ld,
             std::int64_t rows, std::int64_t nc, const float* mean, const float* a, const float* b,
             const float* k, const float* inv, const float* beta, bool stream) {
  const DF df;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(df));
  const std::int64_t full = nc - nc % N;
  const std::size_t tail = static_cast<std::size_t>(nc - full);
  const auto zero = hn::Zero(df);
  constexpr bool kMask = kFuse != Fuse::kNone;
  // Up to 4 strips: the per-channel constants stay in registers, rows are walked in order.
  if (full == nc && nc <= 4 * N) {
    const int strips = static_cast<int>(nc / N);
    hn::Vec<DF> m[4], va[4], vb[4], vk[4], iv[4], bt[4];
    for (int s = 0; s < strips; ++s) {
      m[s] = hn::LoadU(df, mean + s * N);
      va[s] = hn::LoadU(df, a + s * N);
      vb[s] = hn::LoadU(df, b + s * N);
      vk[s] = hn::LoadU(df, k + s * N);
      iv[s] = kMask ? hn::LoadU(df, inv + s * N) : zero;
      bt[s] = kMask ? hn::LoadU(df, beta + s * N) : zero;
    }
    for (std::int64_t r = 0; r < rows; ++r) {
      for (int s = 0; s < strips; ++s) {
        const std::int64_t o = r * ld + s * N;
        StoreFull(
            DxTerm<kFuse>(hn::LoadU(df, x + o), hn::LoadU(df, dy + o),
                          LoadShortcut<kFuse>(df, sc, o), m[s], va[s], vb[s], vk[s], iv[s], bt[s]),
            df, dx + o, stream);
      }
    }
    if (stream) hwy::FlushStream();
    return;
  }
  // Wider rows, as RowsNormalize.
  for (std::int64_t r0 = 0; r0 < rows; r0 += kRowGroup) {
    const std::int64_t nr = rows - r0 < kRowGroup ? rows - r0 : kRowGroup;
    for (std::int64_t j = 0; j < full; j += N) {
      const auto m = hn::LoadU(df, mean + j), va = hn::LoadU(df, a + j), vb = hn::LoadU(df, b + j),
                 vk = hn::LoadU(df, k + j);
      const auto iv = kMask ? hn::LoadU(df, inv + j) : zero;
      const auto bt = kMask ? hn::LoadU(df, beta + j) : zero;
      for (std::int64_t r = r0; r < r0 + nr; ++r) {
        const std::int64_t o = r * ld + j;
        StoreFull(DxTerm<kFuse>(hn::LoadU(df, x + o), hn::LoadU(df, dy + o),
                                LoadShortcut<kFuse>(df, sc, o), m, va, vb, vk, iv, bt),
                  df, dx + o, stream);
      }
    }
    if (tail) {
      const auto m = LoadPart(df, mean + full, tail), va = LoadPart(df, a + full, tail),
                 vb = LoadPart(df, b + full, tail), vk = LoadPart(df, k + full, tail);
      const auto iv = kMask ? LoadPart(df, inv + full, tail) : zero;
      const auto bt = kMask ? LoadPart(df, beta + full, tail) : zero;
      for (std::int64_t r = r0; r < r0 + nr; ++r) {
        const std::int64_t o = r * ld + full;
        StorePart(DxTerm<kFuse>(LoadPart(df, x + o, tail), LoadPart(df, dy + o, tail),
                                LoadShortcutPart<kFuse>(df, sc, o, tail), m, va, vb, vk, iv, bt),
                  df, dx + o, tail);
      }
    }
  }
  if (stream) hwy::FlushStream();
}

void RowsDx(const float* x, const float* dy, float* dx, std::int64_t ld, std::int64_t rows,
            std::int64_t nc, const float* mean, const float* a, const float* b, const float* k,
            const float* relu_inv, const float* relu_beta, const float* shortcut, bool stream) {
  if (shortcut)
    return RowsDxT<Fuse::kAddRelu>(x, dy, shortcut, dx, ld, rows, nc, mean, a, b, k, relu_inv,
                                   relu_beta, stream);
  if (relu_inv)
    return RowsDxT<Fuse::kRelu>(x, dy, nullptr, dx, ld, rows, nc, mean, a, b, k, relu_inv,
                                relu_beta, stream);
  RowsDxT<Fuse::kNone>(x, dy, nullptr, dx, ld, rows, nc, mean, a, b, k, nullptr, nullptr, stream);
}

// ---------------------------------------------------------------- planes
// Four independent accumulator pairs hide the add latency.
void PlaneSums(const float* x, std::int64_t n, float shift, double* s1, double* s2) {
  const DD dd;
  const DH dh;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(dd));
  const auto k = hn::Set(dd, static_cast<double>(shift));
  auto a0 = hn::Zero(dd), a1 = hn::Zero(dd), a2 = hn::Zero(dd), a3 = hn::Zero(dd);
  auto q0 = hn::Zero(dd), q1 = hn::Zero(dd), q2 = hn::Zero(dd), q3 = hn::Zero(dd);
  std::int64_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    const auto v0 = hn::Sub(hn::PromoteTo(dd, hn::LoadU(dh, x + i)), k);
    const auto v1 = hn::Sub(hn::PromoteTo(dd, hn::LoadU(dh, x + i + N)), k);
    const auto v2 = hn::Sub(hn::PromoteTo(dd, hn::LoadU(dh, x + i + 2 * N)), k);
    const auto v3 = hn::Sub(hn::PromoteTo(dd, hn::LoadU(dh, x + i + 3 * N)), k);
    a0 = hn::Add(a0, v0);
    a1 = hn::Add(a1, v1);
    a2 = hn::Add(a2, v2);
    a3 = hn::Add(a3, v3);
    q0 = hn::MulAdd(v0, v0, q0);
    q1 = hn::MulAdd(v1, v1, q1);
    q2 = hn::MulAdd(v2, v2, q2);
    q3 = hn::MulAdd(v3, v3, q3);
  }
  for (; i + N <= n; i += N) {
    const auto v = hn::Sub(hn::PromoteTo(dd, hn::LoadU(dh, x + i)), k);
    a0 = hn::Add(a0, v);
    q0 = hn::MulAdd(v, v, q0);
  }
  if (i < n) {
    const std::size_t t = static_cast<std::size_t>(n - i);
    const auto live = hn::FirstN(dd, t);
    const auto v = hn::IfThenElseZero(live, hn::Sub(hn::PromoteTo(dd, LoadPart(dh, x + i, t)), k));
    a0 = hn::Add(a0, v);
    q0 = hn::MulAdd(v, v, q0);
  }
  *s1 = hn::GetLane(hn::SumOfLanes(dd, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  *s2 = hn::GetLane(hn::SumOfLanes(dd, hn::Add(hn::Add(q0, q1), hn::Add(q2, q3))));
}

// One vector of a plane's gradient sums at offset i: mask, write the masked gradient (if asked),
// accumulate.
template <Fuse kFuse>
HWY_INLINE void PlaneGradStep(GradPtrs p, std::int64_t i, hn::Vec<DH> m, hn::Vec<DH> iv,
                              hn::Vec<DH> b, hn::Vec<DD>& a1, hn::Vec<DD>& a2, bool stream) {
  const DH dh;
  const auto x = hn::LoadU(dh, p.x + i);
  const auto g =
      MaskGrad<kFuse>(x, hn::LoadU(dh, p.dy + i), m, iv, b, LoadShortcut<kFuse>(dh, p.s, i));
  if (p.ds) StoreGrad(g, p.ds + i, stream);
  GradTerm(x, g, m, a1, a2);
}

template <Fuse kFuse>
void PlaneGradSumsT(GradPtrs p, std::int64_t n, float mean, float inv, float beta, double* s1,
                    double* s2, bool stream) {
  const DD dd;
  const DH dh;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(dd));
  const auto m = hn::Set(dh, mean), iv = hn::Set(dh, inv), b = hn::Set(dh, beta);
  auto a0 = hn::Zero(dd), a1 = hn::Zero(dd), q0 = hn::Zero(dd), q1 = hn::Zero(dd);
  std::int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    PlaneGradStep<kFuse>(p, i, m, iv, b, a0, q0, stream);
    PlaneGradStep<kFuse>(p, i + N, m, iv, b, a1, q1, stream);
  }
  for (; i + N <= n; i += N) PlaneGradStep<kFuse>(p, i, m, iv, b, a0, q0, stream);
  if (i < n) {
    // Zero-filled dy lanes contribute nothing (masked or not).
    const std::size_t t = static_cast<std::size_t>(n - i);
    const auto x = LoadPart(dh, p.x + i, t);
    const auto g = MaskGrad<kFuse>(x, LoadPart(dh, p.dy + i, t), m, iv, b,
                                   LoadShortcutPart<kFuse>(dh, p.s, i, t));
    if (p.ds) StorePart(g, dh, p.ds + i, t);
    GradTerm(x, g, m, a0, q0);
  }
  *s1 = hn::GetLane(hn::SumOfLanes(dd, hn::Add(a0, a1)));
  *s2 = hn::GetLane(hn::SumOfLanes(dd, hn::Add(q0, q1)));
}

void PlaneGradSums(const float* x, const float* dy, std::int64_t n, float mean, bool relu,
                   float relu_inv, float relu_beta, const float* shortcut, double* s1, double* s2,
                   float* dshortcut, bool stream) {
  const GradPtrs p{x, dy, shortcut, dshortcut};
  if (shortcut)
    return PlaneGradSumsT<Fuse::kAddRelu>(p, n, mean, relu_inv, relu_beta, s1, s2, stream);
  if (relu) return PlaneGradSumsT<Fuse::kRelu>(p, n, mean, relu_inv, relu_beta, s1, s2, stream);
  PlaneGradSumsT<Fuse::kNone>(p, n, mean, 0.0f, 0.0f, s1, s2, stream);
}

template <Fuse kFuse>
void PlaneNormalizeT(const float* x, const float* sc, float* y, std::int64_t n, float mean,
                     float inv, float beta, bool stream) {
  const DF df;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(df));
  const auto m = hn::Set(df, mean), iv = hn::Set(df, inv), b = hn::Set(df, beta);
  std::int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = Normalize(hn::LoadU(df, x + i), m, iv, b);
    StoreFull(Epilogue<kFuse>(v, LoadShortcut<kFuse>(df, sc, i)), df, y + i, stream);
  }
  if (i < n) {
    const std::size_t t = static_cast<std::size_t>(n - i);
    const auto v = Normalize(LoadPart(df, x + i, t), m, iv, b);
    StorePart(Epilogue<kFuse>(v, LoadShortcutPart<kFuse>(df, sc, i, t)), df, y + i, t);
  }
}

void PlaneNormalize(const float* x, const float* shortcut, float* y, std::int64_t n, float mean,
                    float inv, float beta, bool relu, bool stream) {
  if (shortcut) return PlaneNormalizeT<Fuse::kAddRelu>(x, shortcut, y, n, mean, inv, beta, stream);
  if (relu) return PlaneNormalizeT<Fuse::kRelu>(x, nullptr, y, n, mean, inv, beta, stream);
  PlaneNormalizeT<Fuse::kNone>(x, nullptr, y, n, mean, inv, beta, stream);
}

template <Fuse kFuse>
void PlaneDxT(const float* x, const float* dy, const float* sc, float* dx, std::int64_t n,
              float mean, float a, float b, float k, float inv, float beta, bool stream) {
  const DF df;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(df));
  const auto m = hn::Set(df, mean), va = hn::Set(df, a), vb = hn::Set(df, b), vk = hn::Set(df, k);
  const auto iv = hn::Set(df, inv), bt = hn::Set(df, beta);
  std::int64_t i = 0;
  for (; i + N <= n; i += N) {
    StoreFull(DxTerm<kFuse>(hn::LoadU(df, x + i), hn::LoadU(df, dy + i),
                            LoadShortcut<kFuse>(df, sc, i), m, va, vb, vk, iv, bt),
              df, dx + i, stream);
  }
  if (i < n) {
    const std::size_t t = static_cast<std::size_t>(n - i);
    StorePart(DxTerm<kFuse>(LoadPart(df, x + i, t), LoadPart(df, dy + i, t),
                            LoadShortcutPart<kFuse>(df, sc, i, t), m, va, vb, vk, iv, bt),
              df, dx + i, t);
  }
}

void PlaneDx(const float* x, const float* dy, float* dx, std::int64_t n, float mean, float a,
             float b, float k, bool relu, float relu_inv, float relu_beta, const float* shortcut,
             bool stream) {
  if (shortcut)
    return PlaneDxT<Fuse::kAddRelu>(x, dy, shortcut, dx, n, mean, a, b, k, relu_inv, relu_beta,
                                    stream);
  if (relu)
    return PlaneDxT<Fuse::kRelu>(x, dy, nullptr, dx, n, mean, a, b, k, relu_inv, relu_beta, stream);
  PlaneDxT<Fuse::kNone>(x, dy, nullptr, dx, n, mean, a, b, k, 0.0f, 0.0f, stream);
}

// ---------------------------------------------------------------- per-channel math
// Vectorized: with tens of channels these loops (sqrt, divisions) cost as much as the data
// passes of a small batch. Sqrt and Div are correctly rounded IEEE operations, so the results
// are the same bits on every instruction set.

// inv = gamma * (1 / sqrt(variance + epsilon)), float32; gamma == nullptr means 1.
void ChannelInv(std::int64_t nc, const float* variance, const float* gamma, float epsilon,
                float* inv) {
  const DF df;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(df));
  const auto eps = hn::Set(df, epsilon), one = hn::Set(df, 1.0f);
  for (std::int64_t j = 0; j < nc; j += N) {
    const std::size_t n = static_cast<std::size_t>(nc - j < N ? nc - j : N);
    const bool part = static_cast<std::int64_t>(n) < N;
    const auto v = part ? LoadPart(df, variance + j, n) : hn::LoadU(df, variance + j);
    auto r = hn::Div(one, hn::Sqrt(hn::Add(v, eps)));
    if (gamma) r = hn::Mul(part ? LoadPart(df, gamma + j, n) : hn::LoadU(df, gamma + j), r);
    part ? StorePart(r, df, inv + j, n) : hn::StoreU(r, df, inv + j);
  }
}

// mean = shift + s1 / n, variance = max(s2 / n - (s1 / n)^2, 0), in float64 then rounded.
void FinalizeMoments(std::int64_t nc, const float* shift, const double* s1, const double* s2,
                     double count, float* mean, float* variance) {
  const DD dd;
  const DH dh;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(dd));
  const auto n = hn::Set(dd, count), zero = hn::Zero(dd);
  for (std::int64_t j = 0; j < nc; j += N) {
    const std::size_t t = static_cast<std::size_t>(nc - j < N ? nc - j : N);
    const bool part = static_cast<std::int64_t>(t) < N;
    const auto a1 = part ? LoadPart(dd, s1 + j, t) : hn::LoadU(dd, s1 + j);
    const auto a2 = part ? LoadPart(dd, s2 + j, t) : hn::LoadU(dd, s2 + j);
    const auto k = hn::PromoteTo(dd, part ? LoadPart(dh, shift + j, t) : hn::LoadU(dh, shift + j));
    const auto m1 = hn::Div(a1, n);
    const auto m = hn::DemoteTo(dh, hn::Add(k, m1));
    const auto v = hn::DemoteTo(dh, hn::Max(hn::Sub(hn::Div(a2, n), hn::Mul(m1, m1)), zero));
    if (part) {
      StorePart(m, dh, mean + j, t);
      StorePart(v, dh, variance + j, t);
    } else {
      hn::StoreU(m, dh, mean + j);
      hn::StoreU(v, dh, variance + j);
    }
  }
}

// From s1 = sum(g), s2 = sum(g * (x - mean)) per channel, in float64 (rstd = 1/sqrt(var + eps)):
// dbeta = s1, dgamma = s2 * rstd, and dx = a * g + b * (x - mean) + k with a = gamma * rstd,
// b = -gamma * rstd^3 * s2 / n, k = -gamma * rstd * s1 / n (b = k = 0 for constant statistics).
void BackwardCoefficients(std::int64_t nc, const double* s1, const double* s2,
                          const float* variance, const float* gamma, float epsilon, double count,
                          bool batch_statistics, float* dgamma, float* dbeta, float* a, float* b,
                          float* k) {
  const DD dd;
  const DH dh;
  const std::int64_t N = static_cast<std::int64_t>(hn::Lanes(dd));
  const auto eps = hn::Set(dd, static_cast<double>(epsilon)), one = hn::Set(dd, 1.0);
  const auto n = hn::Set(dd, count);
  for (std::int64_t j = 0; j < nc; j += N) {
    const std::size_t t = static_cast<std::size_t>(nc - j < N ? nc - j : N);
    const bool part = static_cast<std::int64_t>(t) < N;
    auto load_d = [&](const double* p) {
      return part ? LoadPart(dd, p + j, t) : hn::LoadU(dd, p + j);
    };
    auto load_f = [&](const float* p) {
      return hn::PromoteTo(dd, part ? LoadPart(dh, p + j, t) : hn::LoadU(dh, p + j));
    };
    auto store_f = [&](hn::Vec<DD> v, float* p) {
      if (!p) return;
      const auto f = hn::DemoteTo(dh, v);
      part ? StorePart(f, dh, p + j, t) : hn::StoreU(f, dh, p + j);
    };
    const auto a1 = load_d(s1), a2 = load_d(s2);
    const auto rstd = hn::Div(one, hn::Sqrt(hn::Add(load_f(variance), eps)));
    const auto g = gamma ? load_f(gamma) : one;
    store_f(a1, dbeta);
    store_f(hn::Mul(a2, rstd), dgamma);
    const auto gr = hn::Mul(g, rstd);
    store_f(gr, a);
    if (batch_statistics) {
      store_f(hn::Neg(hn::Div(hn::Mul(hn::Mul(gr, hn::Mul(rstd, rstd)), a2), n)), b);
      store_f(hn::Neg(hn::Div(hn::Mul(gr, a1), n)), k);
    } else {
      store_f(hn::Zero(dd), b);
      store_f(hn::Zero(dd), k);
    }
  }
}

const BatchNormOps* GetOps() {
  static const BatchNormOps table = {.rows_sums = &RowsSums,
                                     .rows_grad_sums = &RowsGradSums,
                                     .rows_normalize = &RowsNormalize,
                                     .rows_dx = &RowsDx,
                                     .plane_sums = &PlaneSums,
                                     .plane_grad_sums = &PlaneGradSums,
                                     .plane_normalize = &PlaneNormalize,
                                     .plane_dx = &PlaneDx,
                                     .channel_inv = &ChannelInv,
                                     .finalize_moments = &FinalizeMoments,
                                     .backward_coefficients = &BackwardCoefficients};
  return &table;
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace bnorm::kernels::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "bnorm/core/isa.hpp"

namespace bnorm::kernels::simd {

HWY_EXPORT(GetOps);

const BatchNormOps& ops() noexcept {
  bnorm::detail::ensure_isa_selected();
  return *HWY_DYNAMIC_DISPATCH(GetOps)();
}

}  // namespace bnorm::kernels::simd
#endif  // HWY_ONCE
