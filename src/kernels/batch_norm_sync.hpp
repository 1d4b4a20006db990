// src/kernels/batch_norm_sync.hpp — the pieces of synchronized batch normalization (Keras
// BatchNormalization(synchronized=True) across the ranks of a distributed run): per-rank partial
// moments, their merge, and the backward given sums over every rank. Float64 throughout: what
// travels between ranks is (count, mean, M2), never E[x^2] - E[x]^2 (Keras's own synchronized
// path) nor 1/sqrt(var + eps) (PyTorch's SyncBatchNorm), both of which lose the variance when
// |mean| >> std. Scalar loops over the [outer, channels, inner] view, row order (the
// per-channel accumulators stay in cache for channels-last data). Layout as batch_norm.hpp.
#pragma once

#include <cstdint>

#include "kernels/batch_norm.hpp"

namespace bnorm::kernels {

// Partial moments of this rank's values per channel: mean and M2 = sum((x - mean)^2), both
// float64, from sums shifted by the channel's first value K (mean = K + S/n, M2 = Q - S^2/n with
// S = sum(x - K), Q = sum((x - K)^2); the shift by a value of the data keeps the difference
// accurate for |mean| >> std). dims.count() >= 1.
void batch_norm_partial_moments(BatchNormDims dims, const float* x, double* mean,
                                double* m2) noexcept;

// Chan, Golub & LeVeque's pairwise merge, per channel, of partition B into A (in place):
//   n = nA + nB, d = meanB - meanA, mean = meanA + d * nB / n, M2 = M2A + M2B + d^2 nA nB / n.
// nA == 0 copies B exactly (an empty rank changes nothing); nB == 0 leaves A as it is.
void batch_norm_merge_moments(std::int64_t channels, double count_a, double* mean_a, double* m2_a,
                              double count_b, const double* mean_b, const double* m2_b) noexcept;

// This rank's backward sums per channel with the (global) statistics mean/variance:
// sum_dy = sum(dy), sum_dy_xhat = sum(dy * xhat), xhat = (x - mean) / sqrt(variance + epsilon).
// rstd: scratch of `channels` doubles.
void batch_norm_backward_sums(BatchNormDims dims, const float* x, const float* dy,
                              const float* mean, const float* variance, float epsilon,
                              double* sum_dy, double* sum_dy_xhat, double* rstd) noexcept;

// dx of training-mode BN when the statistics came from `count` values over every rank and
// sum_dy/sum_dy_xhat are those sums over every rank (batch_norm_backward_sums, all-reduced):
//   dx = gamma * rstd * (dy - sum_dy / count - xhat * sum_dy_xhat / count).
// gamma == nullptr: 1. scratch: 3 * channels doubles.
void batch_norm_backward_dx_from_sums(BatchNormDims dims, const float* x, const float* dy,
                                      const float* mean, const float* variance, const float* gamma,
                                      float epsilon, double count, const double* sum_dy,
                                      const double* sum_dy_xhat, double* scratch,
                                      float* dx) noexcept;

}  // namespace bnorm::kernels
