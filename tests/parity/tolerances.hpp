// tests/parity/tolerances.hpp — the parity tolerances; docs/numerics.md gives the reason for each.
#pragma once

namespace bnorm::parity {
// Errors are |actual - expected| / max(|expected|, kRelFloor): relative for values of magnitude
// >= kRelFloor, absolute (scaled by kRelFloor) below it, where relative error is meaningless.
inline constexpr double kRelFloor = 1.0;
// Single forward/update: both sides compute in float32 from identical inputs (also a whole
// model's inference forward, and pooling gradients, which route or scale <= 9 dy values).
inline constexpr double kForwardTol = 1e-5;
// Gradients: sums over the batch (and a convolution's output positions) in different orders
// (TF vs bnorm) add rounding.
inline constexpr double kGradientTol = 1e-4;
// Training trajectories (20 train_on_batch steps, 3 fit steps of the CNN): rounding differences
// compound through the updates.
inline constexpr double kTrajectoryTol = 1e-4;
// Keras's own distance from exact arithmetic on |mean|/std ~ 1e4 data (its output formula
// cancels); bnorm is held to kForwardTol against float64 truth on that case instead.
inline constexpr double kLargeMeanKerasTol = 5e-2;
}  // namespace bnorm::parity
