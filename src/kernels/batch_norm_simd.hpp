// src/kernels/batch_norm_simd.hpp — the per-instruction-set bodies of the batch-norm kernels.
//
// Each function works on one tile on one thread; kernels/batch_norm.cpp owns blocking, threads
// and the per-channel math between passes. Highway compiles batch_norm_simd.cpp once per
// instruction set (scalar, SSSE3, SSE4, AVX2, AVX-512) and ops() returns the table of the set
// chosen at startup (bnorm::active_isa(), BNORM_ISA overrides).
//
// "rows" functions see x as `rows` rows of stride `ld` floats and touch channels [0, nc) of each
// (the caller offsets x to the tile's first channel); per-channel arrays have nc entries.
// "plane" functions see one contiguous run of n values of a single channel. The rows functions
// end their non-temporal stores with a fence; plane functions leave that to the caller (once per
// chunk of planes: a fence per plane drains the write-combining buffers thousands of times).
// Sums are float64: s1 += sum(v), s2 += sum(v * w). relu_inv == nullptr (rows) or relu == false
// (plane) means no ReLU; otherwise dy is masked by pre = (x - mean) * relu_inv + relu_beta > 0,
// computed exactly as the forward computes it, so the mask equals the forward's (y > 0).
// shortcut != nullptr (only with the ReLU) is the residual Add between BN and ReLU: the forward
// writes max(bn + shortcut, 0) with bn rounded to float32 before the add, and the mask is
// bn + shortcut > 0 with the same two roundings. A shortcut is laid out like x (same offsets).
#pragma once

#include <cstdint>

namespace bnorm::kernels::simd {

struct BatchNormOps {
  // s1[j] += sum_r (x - shift[j]);  s2[j] += sum_r (x - shift[j])^2.
  void (*rows_sums)(const float* x, std::int64_t ld, std::int64_t rows, std::int64_t nc,
                    const float* shift, double* s1, double* s2);
  // g = dy (masked by the ReLU); s1[j] += sum_r g;  s2[j] += sum_r g * (x - mean[j]).
  // dshortcut != nullptr: g is also written there (stream: non-temporal stores).
  void (*rows_grad_sums)(const float* x, const float* dy, std::int64_t ld, std::int64_t rows,
                         std::int64_t nc, const float* mean, const float* relu_inv,
                         const float* relu_beta, const float* shortcut, double* s1, double* s2,
                         float* dshortcut, bool stream);
  // y = (x - mean) * inv + beta, then max(y, 0) when relu (max(y + shortcut, 0) with a
  // shortcut). stream: non-temporal stores.
  void (*rows_normalize)(const float* x, const float* shortcut, float* y, std::int64_t ld,
                         std::int64_t rows, std::int64_t nc, const float* mean, const float* inv,
                         const float* beta, bool relu, bool stream);
  // dx = a * g + b * (x - mean) + k, g = dy masked by the ReLU.
  void (*rows_dx)(const float* x, const float* dy, float* dx, std::int64_t ld, std::int64_t rows,
                  std::int64_t nc, const float* mean, const float* a, const float* b,
                  const float* k, const float* relu_inv, const float* relu_beta,
                  const float* shortcut, bool stream);

  // *s1 = sum(x - shift), *s2 = sum((x - shift)^2) over n values (overwrites).
  void (*plane_sums)(const float* x, std::int64_t n, float shift, double* s1, double* s2);
  // *s1 = sum(g), *s2 = sum(g * (x - mean)) (overwrites); g also to dshortcut unless nullptr.
  void (*plane_grad_sums)(const float* x, const float* dy, std::int64_t n, float mean, bool relu,
                          float relu_inv, float relu_beta, const float* shortcut, double* s1,
                          double* s2, float* dshortcut, bool stream);
  void (*plane_normalize)(const float* x, const float* shortcut, float* y, std::int64_t n,
                          float mean, float inv, float beta, bool relu, bool stream);
  void (*plane_dx)(const float* x, const float* dy, float* dx, std::int64_t n, float mean, float a,
                   float b, float k, bool relu, float relu_inv, float relu_beta,
                   const float* shortcut, bool stream);

  // Per-channel math between passes (nc channels).
  // inv = gamma / sqrt(variance + epsilon) in float32 (gamma == nullptr: 1).
  void (*channel_inv)(std::int64_t nc, const float* variance, const float* gamma, float epsilon,
                      float* inv);
  // mean = shift + s1/n, variance = max(s2/n - (s1/n)^2, 0).
  void (*finalize_moments)(std::int64_t nc, const float* shift, const double* s1, const double* s2,
                           double n, float* mean, float* variance);
  // dbeta, dgamma (each may be nullptr) and the dx coefficients a, b, k from the sums.
  void (*backward_coefficients)(std::int64_t nc, const double* s1, const double* s2,
                                const float* variance, const float* gamma, float epsilon, double n,
                                bool batch_statistics, float* dgamma, float* dbeta, float* a,
                                float* b, float* k);
};

// The table for the active instruction set.
const BatchNormOps& ops() noexcept;

}  // namespace bnorm::kernels::simd
