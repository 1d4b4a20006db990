#include "support/test_support.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "kernels/conv2d.hpp"

namespace bnorm::test {

Tensor to_channels_last(const Tensor& x) {
  const Shape& s = x.shape();
  Tensor out(Shape{s[0], s[2], s[3], s[1]});
  kernels::transpose_channels_first_to_last(s[0], s[1], s[2] * s[3], x.data(), out.data());
  return out;
}

Tensor to_channels_first(const Tensor& x) {
  const Shape& s = x.shape();
  Tensor out(Shape{s[0], s[3], s[1], s[2]});
  kernels::transpose_channels_last_to_first(s[0], s[3], s[1] * s[2], x.data(), out.data());
  return out;
}

Tensor random_uniform(const Shape& shape, Random& rng, float low, float high) {
  Tensor t(shape);
  fill_uniform(t, rng, low, high);
  return t;
}

Tensor random_normal(const Shape& shape, Random& rng, float mean, float stddev) {
  Tensor t(shape);
  fill_normal(t, rng, mean, stddev);
  return t;
}

void fill_uniform(Tensor& t, Random& rng, float low, float high) {
  for (float& v : t.values()) v = rng.uniform(low, high);
}

void fill_normal(Tensor& t, Random& rng, float mean, float stddev) {
  for (float& v : t.values()) v = mean + stddev * rng.normal();
}

Tensor random_labels(std::int64_t n, std::int64_t classes, Random& rng) {
  Tensor t(Shape{n});
  for (float& v : t.values())
    v = static_cast<float>(rng.below(static_cast<std::uint64_t>(classes)));
  return t;
}

std::vector<float> to_vector(const Tensor& t) { return {t.values().begin(), t.values().end()}; }

std::vector<double> to_double(std::span<const float> values) {
  return {values.begin(), values.end()};
}

namespace {

std::string multi_index(const Shape* shape, std::int64_t flat) {
  if (shape == nullptr || shape->rank() == 0) return "";
  std::vector<std::int64_t> idx(static_cast<std::size_t>(shape->rank()));
  for (int d = shape->rank() - 1; d >= 0; --d) {
    const std::int64_t n = (*shape)[d];
    idx[static_cast<std::size_t>(d)] = n > 0 ? flat % n : 0;
    flat = n > 0 ? flat / n : 0;
  }
  std::ostringstream os;
  os << " [";
  for (std::size_t i = 0; i < idx.size(); ++i) os << (i ? ", " : "") << idx[i];
  os << "]";
  return os.str();
}

}  // namespace

::testing::AssertionResult all_close(std::span<const float> actual,
                                     std::span<const double> expected, double rtol, double atol,
                                     const Shape* shape) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure() << "size mismatch: actual has " << actual.size()
                                         << " values, expected " << expected.size();
  }
  std::size_t mismatches = 0;
  std::size_t worst = 0;
  double worst_excess = -1.0;  // |diff| / tolerance, > 1 fails
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i];
    const double e = expected[i];
    const double tol = atol + rtol * std::abs(e);
    const double diff = std::abs(a - e);
    double excess;
    if (std::isnan(a) || std::isnan(e)) {
      excess = std::numeric_limits<double>::infinity();
    } else if (a == e) {
      excess = 0.0;  // also covers equal infinities
    } else {
      excess = tol > 0 ? diff / tol : std::numeric_limits<double>::infinity();
      if (std::isnan(excess)) excess = std::numeric_limits<double>::infinity();
    }
    if (excess > 1.0) ++mismatches;
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  const double a = actual[worst];
  const double e = expected[worst];
  std::ostringstream os;
  os.precision(9);
  os << mismatches << " of " << actual.size() << " values differ (rtol " << rtol << ", atol "
     << atol << "); worst at index " << worst
     << multi_index(shape, static_cast<std::int64_t>(worst)) << ": actual " << a << ", expected "
     << e << ", |diff| " << std::abs(a - e) << ", allowed " << (atol + rtol * std::abs(e));
  return ::testing::AssertionFailure() << os.str();
}

::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, double rtol,
                                     double atol) {
  if (!(actual.shape() == expected.shape())) {
    return ::testing::AssertionFailure() << "shape mismatch: actual " << actual.shape().str()
                                         << ", expected " << expected.shape().str();
  }
  const std::vector<double> e = to_double(expected.values());
  return all_close(actual.values(), e, rtol, atol, &actual.shape());
}

void expect_close(const Tensor& actual, const Tensor& expected, double rtol, double atol,
                  std::source_location where) {
  const auto r = all_close(actual, expected, rtol, atol);
  if (!r) ADD_FAILURE_AT(where.file_name(), static_cast<int>(where.line())) << r.message();
}

void expect_close(std::span<const float> actual, std::span<const double> expected, double rtol,
                  double atol, std::source_location where) {
  const auto r = all_close(actual, expected, rtol, atol);
  if (!r) ADD_FAILURE_AT(where.file_name(), static_cast<int>(where.line())) << r.message();
}

void expect_close(std::span<const float> actual, std::span<const float> expected, double rtol,
                  double atol, std::source_location where) {
  const std::vector<double> e = to_double(expected);
  const auto r = all_close(actual, e, rtol, atol);
  if (!r) ADD_FAILURE_AT(where.file_name(), static_cast<int>(where.line())) << r.message();
}

::testing::AssertionResult bitwise_equal(const Tensor& a, const Tensor& b) {
  if (!(a.shape() == b.shape())) {
    return ::testing::AssertionFailure()
           << "shape mismatch: " << a.shape().str() << " vs " << b.shape().str();
  }
  for (std::int64_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a.data()[i], &b.data()[i], sizeof(float)) != 0) {
      std::ostringstream os;
      os.precision(9);
      os << "first difference at index " << i << multi_index(&a.shape(), i) << ": " << a[i]
         << " vs " << b[i];
      return ::testing::AssertionFailure() << os.str();
    }
  }
  return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------------------------

BnView bn_view(const Shape& full_shape, int axis) {
  const int rank = full_shape.rank();
  const int a = axis < 0 ? axis + rank : axis;
  BnView v;
  v.outer = 1;
  v.inner = 1;
  for (int d = 0; d < a; ++d) v.outer *= full_shape[d];
  v.channels = full_shape[a];
  for (int d = a + 1; d < rank; ++d) v.inner *= full_shape[d];
  return v;
}

BnMoments naive_bn_moments(const BnView& v, std::span<const float> x) {
  BnMoments m;
  m.mean.assign(static_cast<std::size_t>(v.channels), 0.0);
  m.variance.assign(static_cast<std::size_t>(v.channels), 0.0);
  const double n = static_cast<double>(v.count());
  for (std::int64_t c = 0; c < v.channels; ++c) {
    double sum = 0.0;
    for (std::int64_t o = 0; o < v.outer; ++o)
      for (std::int64_t i = 0; i < v.inner; ++i)
        sum += x[static_cast<std::size_t>(v.index(o, c, i))];
    const double mean = sum / n;
    double ss = 0.0;
    for (std::int64_t o = 0; o < v.outer; ++o)
      for (std::int64_t i = 0; i < v.inner; ++i) {
        const double d = x[static_cast<std::size_t>(v.index(o, c, i))] - mean;
        ss += d * d;
      }
    m.mean[static_cast<std::size_t>(c)] = mean;
    m.variance[static_cast<std::size_t>(c)] = ss / n;
  }
  return m;
}

std::vector<double> naive_bn_forward(const BnView& v, std::span<const float> x,
                                     std::span<const double> mean, std::span<const double> variance,
                                     std::span<const float> gamma, std::span<const float> beta,
                                     double epsilon) {
  std::vector<double> y(static_cast<std::size_t>(v.size()));
  for (std::int64_t o = 0; o < v.outer; ++o)
    for (std::int64_t c = 0; c < v.channels; ++c) {
      const auto cc = static_cast<std::size_t>(c);
      const double g = gamma.empty() ? 1.0 : gamma[cc];
      const double b = beta.empty() ? 0.0 : beta[cc];
      for (std::int64_t i = 0; i < v.inner; ++i) {
        const auto k = static_cast<std::size_t>(v.index(o, c, i));
        y[k] = (x[k] - mean[cc]) / std::sqrt(variance[cc] + epsilon) * g + b;
      }
    }
  return y;
}

BnGradients naive_bn_backward(const BnView& v, std::span<const float> x, std::span<const float> dy,
                              std::span<const double> mean, std::span<const double> variance,
                              std::span<const float> gamma, double epsilon, bool batch_statistics) {
  BnGradients g;
  g.dx.assign(static_cast<std::size_t>(v.size()), 0.0);
  g.dgamma.assign(static_cast<std::size_t>(v.channels), 0.0);
  g.dbeta.assign(static_cast<std::size_t>(v.channels), 0.0);
  const double m = static_cast<double>(v.count());
  for (std::int64_t c = 0; c < v.channels; ++c) {
    const auto cc = static_cast<std::size_t>(c);
    const double gam = gamma.empty() ? 1.0 : gamma[cc];
    const double mu = mean[cc];
    const double var_eps = variance[cc] + epsilon;
    const double inv_std = 1.0 / std::sqrt(var_eps);
    double sum_dxhat_xmu = 0.0, sum_dxhat = 0.0, sum_xmu = 0.0;
    for (std::int64_t o = 0; o < v.outer; ++o)
      for (std::int64_t i = 0; i < v.inner; ++i) {
        const auto k = static_cast<std::size_t>(v.index(o, c, i));
        const double xmu = x[k] - mu;
        const double dxhat = dy[k] * gam;
        sum_dxhat_xmu += dxhat * xmu;
        sum_dxhat += dxhat;
        sum_xmu += xmu;
        g.dbeta[cc] += dy[k];
        g.dgamma[cc] += dy[k] * xmu * inv_std;
      }
    const double dvar = sum_dxhat_xmu * -0.5 * std::pow(var_eps, -1.5);
    const double dmu = -sum_dxhat * inv_std + dvar * (-2.0 * sum_xmu) / m;
    for (std::int64_t o = 0; o < v.outer; ++o)
      for (std::int64_t i = 0; i < v.inner; ++i) {
        const auto k = static_cast<std::size_t>(v.index(o, c, i));
        const double dxhat = dy[k] * gam;
        if (batch_statistics) {
          g.dx[k] = dxhat * inv_std + dvar * 2.0 * (x[k] - mu) / m + dmu / m;
        } else {
          g.dx[k] = dxhat * inv_std;
        }
      }
  }
  return g;
}

// ---------------------------------------------------------------------------------------------

Tensor forward_copy(Layer& layer, const Tensor& x, Mode mode) { return layer.forward(x, mode); }

Shape with_batch(std::int64_t batch, const Shape& per_sample) {
  std::vector<std::int64_t> dims{batch};
  dims.insert(dims.end(), per_sample.dims().begin(), per_sample.dims().end());
  return Shape(dims);
}

namespace {

double weighted_sum(const Tensor& y, const Tensor& r) {
  double s = 0.0;
  for (std::int64_t i = 0; i < y.size(); ++i) s += static_cast<double>(y[i]) * r[i];
  return s;
}

struct ElementCheck {
  bool ok;
  double numeric;
  double one_sided_plus;
  double one_sided_minus;
};

// Perturbs *value by +-h and evaluates the loss; restores the value afterwards.
template <class LossFn>
ElementCheck check_element(float* value, double analytic, double loss0, const LossFn& loss,
                           const GradCheckOptions& o) {
  const float original = *value;
  const double h = o.h * std::max(1.0, std::abs(static_cast<double>(original)));
  const float plus = static_cast<float>(original + h);
  const float minus = static_cast<float>(original - h);
  *value = plus;
  const double lp = loss();
  *value = minus;
  const double lm = loss();
  *value = original;
  const double numeric = (lp - lm) / (static_cast<double>(plus) - minus);
  const double dplus = (lp - loss0) / (static_cast<double>(plus) - original);
  const double dminus = (loss0 - lm) / (static_cast<double>(original) - minus);
  auto close = [&](double num) {
    return std::abs(num - analytic) <=
           o.atol + o.rtol * std::max(std::abs(num), std::abs(analytic));
  };
  bool ok = close(numeric);
  if (!ok && o.allow_kinks) ok = close(dplus) || close(dminus);
  return {ok, numeric, dplus, dminus};
}

}  // namespace

::testing::AssertionResult check_layer_gradients(Layer& layer, const Tensor& x,
                                                 const GradCheckOptions& o) {
  Random rng(o.seed);
  const Tensor y0 = layer.forward(x, o.mode);
  const Tensor r = random_uniform(y0.shape(), rng, -1.0f, 1.0f);
  const Tensor dx = layer.backward(r, /*compute_dx=*/true);
  if (!(dx.shape() == x.shape())) {
    return ::testing::AssertionFailure() << "backward returned dx of shape " << dx.shape().str()
                                         << " for x of shape " << x.shape().str();
  }
  std::vector<Variable*> weights;
  std::vector<Tensor> analytic_weight_grads;
  if (o.check_weights) {
    weights = layer.trainable_weights();
    for (Variable* w : weights) {
      if (!(w->gradient.shape() == w->value.shape())) {
        return ::testing::AssertionFailure()
               << "gradient of weight '" << w->name << "' has shape " << w->gradient.shape().str()
               << "; value has " << w->value.shape().str();
      }
      analytic_weight_grads.push_back(w->gradient);
    }
  }

  Tensor xp = x;
  auto loss = [&] { return weighted_sum(layer.forward(xp, o.mode), r); };
  const double loss0 = weighted_sum(layer.forward(xp, o.mode), r);

  std::ostringstream failures;
  failures.precision(7);
  int failed = 0;
  auto report = [&](const std::string& what, std::int64_t i, double analytic,
                    const ElementCheck& c) {
    if (++failed <= 8) {
      failures << "\n  " << what << "[" << i << "]: analytic " << analytic << ", numeric "
               << c.numeric << " (one-sided " << c.one_sided_minus << " / " << c.one_sided_plus
               << ")";
    }
  };
  for (std::int64_t i = 0; i < xp.size(); ++i) {
    const ElementCheck c = check_element(&xp.data()[i], dx[i], loss0, loss, o);
    if (!c.ok) report("dx", i, dx[i], c);
  }
  for (std::size_t w = 0; w < weights.size(); ++w) {
    Tensor& value = weights[w]->value;
    const Tensor& grad = analytic_weight_grads[w];
    for (std::int64_t i = 0; i < value.size(); ++i) {
      const ElementCheck c = check_element(&value.data()[i], grad[i], loss0, loss, o);
      if (!c.ok) report("d" + weights[w]->name, i, grad[i], c);
    }
  }
  if (failed == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << layer.class_name() << " '" << layer.name() << "': " << failed
         << " gradient values disagree with central "
         << "differences (h " << o.h << ", rtol " << o.rtol << ", atol " << o.atol
         << "):" << failures.str();
}

std::vector<double> log_softmax64(const std::vector<float>& z, std::int64_t rows,
                                  std::int64_t cols) {
  std::vector<double> out(z.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* row = z.data() + r * cols;
    double mx = -INFINITY;
    for (std::int64_t c = 0; c < cols; ++c) mx = std::max(mx, static_cast<double>(row[c]));
    double s = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) s += std::exp(row[c] - mx);
    for (std::int64_t c = 0; c < cols; ++c)
      out[static_cast<std::size_t>(r * cols + c)] = row[c] - mx - std::log(s);
  }
  return out;
}

std::vector<double> softmax64(const std::vector<float>& z, std::int64_t rows, std::int64_t cols) {
  std::vector<double> p = log_softmax64(z, rows, cols);
  for (double& v : p) v = std::exp(v);
  return p;
}

}  // namespace bnorm::test
