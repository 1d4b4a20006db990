#include "kernels/softmax_cross_entropy.hpp"

#include <algorithm>
#include <cmath>

namespace bnorm::kernels {

namespace {
// Writes softmax(z) into p (a row of `classes`) and returns log(sum(exp(z - max))) + max,
// the log-partition, so that log_softmax(z)_i = z_i - result.
double softmax_row(std::int64_t classes, const float* z, float* p) {
  const float mx = *std::max_element(z, z + classes);
  double sum = 0.0;
  for (std::int64_t c = 0; c < classes; ++c) {
    const float e = std::exp(z[c] - mx);
    p[c] = e;
    sum += e;
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (std::int64_t c = 0; c < classes; ++c) p[c] *= inv;
  return std::log(sum) + mx;
}

// Row scratch for probabilities when the caller does not want them.
constexpr std::int64_t kMaxStackClasses = 1024;

template <class TargetAt>
double cross_entropy_from_logits(std::int64_t rows, std::int64_t classes, const float* logits,
                                 TargetAt target_at, float grad_scale, float* probs,
                                 float* dlogits) {
  double total = 0.0;
  float stack_row[kMaxStackClasses];
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* z = logits + r * classes;
    float* p = probs ? probs + r * classes : (dlogits ? dlogits + r * classes : stack_row);
    double log_z;
    if (!probs && !dlogits && classes > kMaxStackClasses) {
      // Loss only, many classes: log-sum-exp without storing the row.
      const float mx = *std::max_element(z, z + classes);
      double sum = 0.0;
      for (std::int64_t c = 0; c < classes; ++c) sum += std::exp(static_cast<double>(z[c] - mx));
      log_z = std::log(sum) + mx;
    } else {
      log_z = softmax_row(classes, z, p);
    }
    double target_sum = 0.0;
    for (std::int64_t c = 0; c < classes; ++c) {
      const double t = target_at(r, c);
      if (t != 0.0) total -= t * (static_cast<double>(z[c]) - log_z);
      target_sum += t;
    }
    if (dlogits) {
      float* g = dlogits + r * classes;
      if (g != p) std::copy(p, p + classes, g);
      for (std::int64_t c = 0; c < classes; ++c)
        g[c] = static_cast<float>((g[c] * target_sum - target_at(r, c)) * grad_scale);
    }
  }
  return total;
}
}  // namespace

double sparse_softmax_cross_entropy(std::int64_t rows, std::int64_t classes, const float* logits,
                                    const std::int32_t* labels, float grad_scale, float* probs,
                                    float* dlogits) noexcept {
  return cross_entropy_from_logits(
      rows, classes, logits,
      [labels](std::int64_t r, std::int64_t c) { return labels[r] == c ? 1.0 : 0.0; }, grad_scale,
      probs, dlogits);
}

double softmax_cross_entropy(std::int64_t rows, std::int64_t classes, const float* logits,
                             const float* targets, float grad_scale, float* probs,
                             float* dlogits) noexcept {
  return cross_entropy_from_logits(
      rows, classes, logits,
      [targets, classes](std::int64_t r, std::int64_t c) {
        return static_cast<double>(targets[r * classes + c]);
      },
      grad_scale, probs, dlogits);
}

double probability_cross_entropy(std::int64_t rows, std::int64_t classes, const float* p,
                                 const float* targets, float epsilon, float grad_scale,
                                 float* dprobs) noexcept {
  double total = 0.0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* pr = p + r * classes;
    const float* tr = targets + r * classes;
    double s = 0.0;
    for (std::int64_t c = 0; c < classes; ++c) s += pr[c];
    // loss = -sum_c t_c log(clip(p_c / s)); q_c = p_c / s.
    // dL/dp_j = -t_j [j unclipped] / (q_j s) + sum_c t_c [c unclipped] / s.
    double unclipped_t = 0.0;
    for (std::int64_t c = 0; c < classes; ++c) {
      const double q = pr[c] / s;
      const double qc = std::clamp(q, static_cast<double>(epsilon), 1.0 - epsilon);
      total -= tr[c] * std::log(qc);
      if (q == qc) unclipped_t += tr[c];
    }
    if (!dprobs) continue;
    float* g = dprobs + r * classes;
    for (std::int64_t c = 0; c < classes; ++c) {
      const double q = pr[c] / s;
      const bool unclipped = q >= epsilon && q <= 1.0 - epsilon;
      const double own = unclipped ? -tr[c] / (q * s) : 0.0;
      g[c] = static_cast<float>((own + unclipped_t / s) * grad_scale);
    }
  }
  return total;
}

double mean_squared_error(std::int64_t rows, std::int64_t cols, const float* p, const float* t,
                          float grad_scale, float* dp) noexcept {
  double total = 0.0;
  for (std::int64_t r = 0; r < rows; ++r) {
    double row = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) {
      const double diff = static_cast<double>(p[r * cols + c]) - t[r * cols + c];
      row += diff * diff;
      if (dp)
        dp[r * cols + c] = static_cast<float>(2.0 * diff / static_cast<double>(cols) * grad_scale);
    }
    total += row / static_cast<double>(cols);
  }
  return total;
}

}  // namespace bnorm::kernels
