// Fused BN + Add + ReLU kernels (a residual block's tail): bit-identical to the unfused
// composition of the fast kernels (BN rounded to float32, + shortcut in float32, ReLU), close to
// the float64 reference, on every instruction set, channels-last and channels-first, odd sizes,
// optional outputs, streaming stores, and the same bits at 1, 2 and 3 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "bnorm/core/isa.hpp"
#include "bnorm/core/parallel.hpp"
#include "kernels/activation.hpp"
#include "kernels/batch_norm.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

using kernels::BatchNormDims;
using test::BnView;

constexpr float kEps = 1e-3f;

struct Case {
  std::int64_t outer, channels, inner;
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << "[outer " << c.outer << ", channels " << c.channels << ", inner " << c.inner << "]";
}

using IsaCase = std::tuple<Case, std::string>;

std::string case_name(const ::testing::TestParamInfo<IsaCase>& info) {
  const Case& c = std::get<0>(info.param);
  return std::get<1>(info.param) + "_o" + std::to_string(c.outer) + "_c" +
         std::to_string(c.channels) + "_i" + std::to_string(c.inner);
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// First index where two arrays differ bitwise, for failure messages.
std::string first_difference(const std::vector<float>& actual, const std::vector<float>& expected) {
  for (std::size_t i = 0; i < actual.size() && i < expected.size(); ++i) {
    if (std::memcmp(&actual[i], &expected[i], sizeof(float)) != 0) {
      return "first difference at " + std::to_string(i) + ": " + std::to_string(actual[i]) +
             " vs " + std::to_string(expected[i]);
    }
  }
  return actual.size() == expected.size() ? "equal" : "sizes differ";
}

#define EXPECT_SAME_BITS(actual, expected) \
  EXPECT_TRUE(same_bits(actual, expected)) << first_difference(actual, expected)

// The unfused layers on the BN output y1: Add in float32, then the ReLU activation kernel.
std::vector<float> add_then_relu(const std::vector<float>& y1, const std::vector<float>& shortcut) {
  std::vector<float> sum(y1.size());
  for (std::size_t i = 0; i < y1.size(); ++i) sum[i] = y1[i] + shortcut[i];
  std::vector<float> y(sum.size());
  kernels::activation_forward(ActivationKind::relu, 1, static_cast<std::int64_t>(sum.size()),
                              sum.data(), y.data());
  return y;
}

// The ReLU's backward on its output y (what the unfused Activation layer does), then the Add
// passes the gradient to both of its inputs.
std::vector<float> relu_backward(const std::vector<float>& y, const std::vector<float>& dy) {
  std::vector<float> g(dy.size());
  kernels::activation_backward(ActivationKind::relu, 1, static_cast<std::int64_t>(dy.size()),
                               y.data(), dy.data(), g.data());
  return g;
}

class BatchNormAddReluTest : public ::testing::TestWithParam<IsaCase> {
 protected:
  void SetUp() override {
    set_isa(std::get<1>(GetParam()));
    ASSERT_EQ(active_isa(), std::get<1>(GetParam()));
    const Case c = std::get<0>(GetParam());
    dims = {c.outer, c.channels, c.inner};
    view = {c.outer, c.channels, c.inner};
    Random rng(7000 + static_cast<std::uint64_t>(c.outer * 131 + c.channels * 17 + c.inner));
    x = random_values(rng, dims.size(), 0.5f, 2.0f);
    for (std::int64_t o = 0; o < c.outer; ++o)
      for (std::int64_t ch = 0; ch < c.channels; ++ch)
        for (std::int64_t i = 0; i < c.inner; ++i)
          x[static_cast<std::size_t>(view.index(o, ch, i))] += static_cast<float>(ch % 5) - 2.0f;
    dy = random_values(rng, dims.size(), 0.0f, 1.0f);
    noise = random_values(rng, dims.size(), 0.0f, 1.0f);
    gamma = random_values(rng, c.channels, 1.0f, 0.3f);
    beta = random_values(rng, c.channels, 0.0f, 0.5f);
    const std::size_t nc = static_cast<std::size_t>(c.channels);
    batch_mean.resize(nc);
    batch_var.resize(nc);
    kernels::batch_norm_moments(dims, x.data(), batch_mean.data(), batch_var.data());
    moving_mean.resize(nc);
    moving_var.resize(nc);
    for (std::size_t j = 0; j < nc; ++j) {
      moving_mean[j] = 0.3f * static_cast<float>(j % 3) - 0.2f;
      moving_var[j] = 0.5f + 0.25f * static_cast<float>(j % 4);
    }
  }
  void TearDown() override { set_isa("best"); }

  static std::vector<float> random_values(Random& rng, std::int64_t n, float mean, float stddev) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& f : v) f = mean + stddev * rng.normal();
    return v;
  }

  // A shortcut for BN output y1: random values around zero, and at every third element exactly
  // -y1, so that y1 + shortcut is 0 in float32. Those ties are where rounding the BN value once
  // more than a contracted (fused multiply-add) version matters: MulAdd(x - mean, inv,
  // beta + shortcut) would leave tiny nonzero values there, half of them positive.
  std::vector<float> shortcut_for(const std::vector<float>& y1) const {
    std::vector<float> s(y1.size());
    for (std::size_t i = 0; i < s.size(); ++i)
      s[i] = i % 3 == 1 && y1[i] != 0.0f ? -y1[i] : noise[i];
    return s;
  }

  std::vector<float> bn(const float* mean, const float* var, const float* g, const float* b) const {
    std::vector<float> y1(x.size());
    kernels::batch_norm_forward(dims, x.data(), mean, var, g, b, kEps, y1.data());
    return y1;
  }

  BatchNormDims dims;
  BnView view;
  std::vector<float> x, dy, noise, gamma, beta, batch_mean, batch_var, moving_mean, moving_var;
};

TEST_P(BatchNormAddReluTest, ForwardIsBitIdenticalToBatchNormThenAddThenRelu) {
  struct Flags {
    bool center, scale;
  };
  for (Flags f : {Flags{true, true}, Flags{false, true}, Flags{true, false}, Flags{false, false}}) {
    for (bool moving : {false, true}) {
      SCOPED_TRACE(std::string("center ") + (f.center ? "on" : "off") + ", scale " +
                   (f.scale ? "on" : "off") + (moving ? ", moving" : ", batch") + " statistics");
      const float* g = f.scale ? gamma.data() : nullptr;
      const float* b = f.center ? beta.data() : nullptr;
      const float* mean = moving ? moving_mean.data() : batch_mean.data();
      const float* var = moving ? moving_var.data() : batch_var.data();
      const auto y1 = bn(mean, var, g, b);
      const auto s = shortcut_for(y1);
      std::vector<float> y(x.size(), std::nanf(""));
      kernels::batch_norm_forward_add_relu(dims, x.data(), s.data(), mean, var, g, b, kEps,
                                           y.data());
      EXPECT_SAME_BITS(y, add_then_relu(y1, s));
    }
  }
}

TEST_P(BatchNormAddReluTest, ForwardMatchesFloat64) {
  const std::vector<double> mean64(batch_mean.begin(), batch_mean.end()),
      var64(batch_var.begin(), batch_var.end());
  const auto s = shortcut_for(bn(batch_mean.data(), batch_var.data(), gamma.data(), beta.data()));
  auto expected = test::naive_bn_forward(view, x, mean64, var64, gamma, beta, kEps);
  for (std::size_t i = 0; i < expected.size(); ++i)
    expected[i] = std::max(expected[i] + static_cast<double>(s[i]), 0.0);
  std::vector<float> y(x.size(), std::nanf(""));
  kernels::batch_norm_forward_add_relu(dims, x.data(), s.data(), batch_mean.data(),
                                       batch_var.data(), gamma.data(), beta.data(), kEps, y.data());
  // Absolute: near the ReLU's kink (and at the ties) the sum cancels to a few ulps of |bn|.
  test::expect_close(y, expected, 1e-5, 1e-5);
}

TEST_P(BatchNormAddReluTest, TrainingForwardIsMomentsThenForwardAddRelu) {
  const auto y1 = bn(batch_mean.data(), batch_var.data(), gamma.data(), beta.data());
  const auto s = shortcut_for(y1);
  const std::size_t nc = batch_mean.size();
  std::vector<float> mean(nc, -1.0f), var(nc, -1.0f), y(x.size(), std::nanf(""));
  kernels::batch_norm_forward_training_add_relu(dims, x.data(), s.data(), gamma.data(), beta.data(),
                                                kEps, mean.data(), var.data(), y.data());
  EXPECT_SAME_BITS(mean, batch_mean);
  EXPECT_SAME_BITS(var, batch_var);
  EXPECT_SAME_BITS(y, add_then_relu(y1, s));
  // The unfused training layer: batch_norm_forward_training (no ReLU), then Add, then ReLU.
  std::vector<float> tm(nc), tv(nc), ty1(x.size());
  kernels::batch_norm_forward_training(dims, x.data(), gamma.data(), beta.data(), kEps, false,
                                       tm.data(), tv.data(), ty1.data());
  EXPECT_SAME_BITS(y, add_then_relu(ty1, s));
}

// dshortcut = dy * [y > 0] and dx, dgamma, dbeta = batch_norm_backward of it, bit for bit, with
// y from the fused forward (its mask re-derived from x and the shortcut, never stored).
TEST_P(BatchNormAddReluTest, BackwardIsBatchNormBackwardOfReluMaskedGradient) {
  const std::size_t nc = batch_mean.size();
  for (bool batch_statistics : {true, false}) {
    SCOPED_TRACE(batch_statistics ? "batch statistics" : "moving statistics");
    const std::vector<float>& mean = batch_statistics ? batch_mean : moving_mean;
    const std::vector<float>& var = batch_statistics ? batch_var : moving_var;
    const auto s = shortcut_for(bn(mean.data(), var.data(), gamma.data(), beta.data()));
    std::vector<float> y(x.size());
    kernels::batch_norm_forward_add_relu(dims, x.data(), s.data(), mean.data(), var.data(),
                                         gamma.data(), beta.data(), kEps, y.data());
    const auto masked = relu_backward(y, dy);
    std::size_t zeros = 0;
    for (float v : y) zeros += v > 0.0f ? 0 : 1;
    if (x.size() >= 3) {
      EXPECT_GT(zeros, 0u) << "the data should exercise the mask";
      EXPECT_LT(zeros, x.size()) << "the data should exercise the mask";
    }

    std::vector<float> dx(x.size()), dg(nc), db(nc);
    kernels::batch_norm_backward(dims, x.data(), masked.data(), mean.data(), var.data(),
                                 gamma.data(), kEps, batch_statistics, dx.data(), dg.data(),
                                 db.data());
    std::vector<float> fdx(x.size(), std::nanf("")), fds(x.size(), std::nanf("")),
        fdg(nc, std::nanf("")), fdb(nc, std::nanf(""));
    kernels::batch_norm_add_relu_backward(
        dims, x.data(), s.data(), dy.data(), mean.data(), var.data(), gamma.data(), beta.data(),
        kEps, batch_statistics, fdx.data(), fds.data(), fdg.data(), fdb.data());
    EXPECT_SAME_BITS(fds, masked);
    EXPECT_SAME_BITS(fdx, dx);
    EXPECT_SAME_BITS(fdg, dg);
    EXPECT_SAME_BITS(fdb, db);

    // Against the float64 reference of the same masked gradient.
    const std::vector<double> mu64(mean.begin(), mean.end()), vr64(var.begin(), var.end());
    const auto expected =
        test::naive_bn_backward(view, x, masked, mu64, vr64, gamma, kEps, batch_statistics);
    const double count = static_cast<double>(dims.count());
    test::expect_close(fdx, expected.dx, 1e-4, 1e-5);
    test::expect_close(fdg, expected.dgamma, 1e-5, 1e-6 * count);
    test::expect_close(fdb, expected.dbeta, 1e-5, 1e-6 * count);
  }
}

// Each output may be skipped; without dshortcut, dx re-derives the mask from x, dy and the
// shortcut in its own pass and must give the same bits. dshortcut may be dy itself.
TEST_P(BatchNormAddReluTest, BackwardOptionalOutputsAndInPlaceShortcutGradient) {
  const std::size_t nc = batch_mean.size();
  const auto s = shortcut_for(bn(batch_mean.data(), batch_var.data(), gamma.data(), beta.data()));
  auto backward = [&](float* dx, float* ds, float* dg, float* db) {
    kernels::batch_norm_add_relu_backward(dims, x.data(), s.data(), dy.data(), batch_mean.data(),
                                          batch_var.data(), gamma.data(), beta.data(), kEps, true,
                                          dx, ds, dg, db);
  };
  std::vector<float> dx(x.size()), ds(x.size()), dg(nc), db(nc);
  backward(dx.data(), ds.data(), dg.data(), db.data());

  std::vector<float> dx2(x.size(), std::nanf("")), dg2(nc, std::nanf("")), db2(nc, std::nanf(""));
  backward(dx2.data(), nullptr, dg2.data(), db2.data());
  EXPECT_SAME_BITS(dx2, dx);
  EXPECT_SAME_BITS(dg2, dg);
  EXPECT_SAME_BITS(db2, db);

  std::vector<float> dx3(x.size(), std::nanf(""));
  backward(dx3.data(), nullptr, nullptr, nullptr);
  EXPECT_SAME_BITS(dx3, dx);

  std::vector<float> ds4(x.size(), std::nanf(""));
  backward(nullptr, ds4.data(), nullptr, nullptr);
  EXPECT_SAME_BITS(ds4, ds);

  std::vector<float> dg5(nc, std::nanf("")), db5(nc, std::nanf(""));
  backward(nullptr, nullptr, dg5.data(), db5.data());
  EXPECT_SAME_BITS(dg5, dg);
  EXPECT_SAME_BITS(db5, db);
  backward(nullptr, nullptr, nullptr, nullptr);  // nothing to write: must not touch anything

  // In place: the shortcut's gradient overwrites dy.
  std::vector<float> g = dy, dx6(x.size(), std::nanf(""));
  kernels::batch_norm_add_relu_backward(dims, x.data(), s.data(), g.data(), batch_mean.data(),
                                        batch_var.data(), gamma.data(), beta.data(), kEps, true,
                                        dx6.data(), g.data(), nullptr, nullptr);
  EXPECT_SAME_BITS(g, ds);
  EXPECT_SAME_BITS(dx6, dx);
}

// Channels-last (inner = 1) and channels-first (inner > 1) views; channels not a multiple of any
// vector width, one row, one channel; several tiles of 1024 channels (c1100, c2100: the latter
// runs its tiles in parallel); several reduction blocks; threaded and unthreaded passes.
INSTANTIATE_TEST_SUITE_P(
    Views, BatchNormAddReluTest,
    ::testing::Combine(::testing::Values(
                           // channels last: outer = N (x H x W), inner = 1
                           Case{32, 64, 1}, Case{1, 5, 1}, Case{1, 64, 1}, Case{7, 1, 1},
                           Case{33, 17, 1}, Case{2, 130, 1}, Case{1000, 33, 1}, Case{4096, 64, 1},
                           Case{600, 300, 1}, Case{3, 1100, 1}, Case{40, 2100, 1},
                           // channels first: outer = N, inner = H x W
                           Case{2, 3, 35}, Case{5, 8, 9}, Case{1, 4, 13}, Case{3, 1, 11},
                           Case{16, 16, 49}, Case{9, 2, 100}, Case{64, 8, 196}, Case{2, 300, 120},
                           Case{40, 3, 1000}),
                       ::testing::ValuesIn(available_isas())),
    case_name);

// Every fused kernel, every instruction set, shapes that split into several reduction blocks
// and tiles: the same bits at 1, 2 and 3 threads.
TEST(BatchNormAddRelu, SameBitsAtOneTwoAndThreeThreads) {
  const int saved = num_threads();
  for (const std::string& isa : available_isas()) {
    set_isa(isa);
    for (const BatchNormDims dims :
         {BatchNormDims{2048, 24, 9}, BatchNormDims{8192, 64, 1}, BatchNormDims{600, 300, 1},
          BatchNormDims{64, 300, 7}, BatchNormDims{256, 600, 1}, BatchNormDims{40, 2100, 1},
          BatchNormDims{3, 5, 9001}}) {
      SCOPED_TRACE(isa + " [" + std::to_string(dims.outer) + ", " + std::to_string(dims.channels) +
                   ", " + std::to_string(dims.inner) + "]");
      Random rng(5);
      std::vector<float> x(static_cast<std::size_t>(dims.size())), dy(x.size()), s(x.size());
      for (float& v : x) v = 3.0f + rng.normal();
      for (float& v : dy) v = rng.normal();
      for (float& v : s) v = rng.normal();
      const std::size_t c = static_cast<std::size_t>(dims.channels);
      std::vector<float> gamma(c, 1.5f), beta(c, 0.5f);
      auto run = [&](int threads) {
        set_num_threads(threads);
        std::vector<float> out(c * 6 + x.size() * 5);
        float* p = out.data();
        auto take = [&p](std::size_t n) {
          float* q = p;
          p += n;
          return q;
        };
        float *mean = take(c), *var = take(c), *dg = take(c), *db = take(c), *dg2 = take(c),
              *db2 = take(c);
        float *y = take(x.size()), *iy = take(x.size()), *dx = take(x.size()), *ds = take(x.size()),
              *dx2 = take(x.size());
        kernels::batch_norm_forward_training_add_relu(dims, x.data(), s.data(), gamma.data(),
                                                      beta.data(), kEps, mean, var, y);
        kernels::batch_norm_forward_add_relu(dims, x.data(), s.data(), mean, var, gamma.data(),
                                             beta.data(), kEps, iy);
        kernels::batch_norm_add_relu_backward(dims, x.data(), s.data(), dy.data(), mean, var,
                                              gamma.data(), beta.data(), kEps, true, dx, ds, dg,
                                              db);
        kernels::batch_norm_add_relu_backward(dims, x.data(), s.data(), dy.data(), mean, var,
                                              gamma.data(), beta.data(), kEps, false, dx2, nullptr,
                                              dg2, db2);
        return out;
      };
      const auto one = run(1);
      for (int threads : {2, 3}) {
        const auto other = run(threads);
        EXPECT_TRUE(same_bits(one, other)) << threads << " threads";
      }
    }
  }
  set_isa("best");
  set_num_threads(saved);
}

// Non-temporal stores (outputs of 8 MiB and more, or forced) write the same values, including
// the shortcut's gradient written during the reduction pass, on every instruction set.
TEST(BatchNormAddRelu, StreamingStoresWriteTheSameValues) {
  for (const std::string& isa : available_isas()) {
    set_isa(isa);
    for (const BatchNormDims dims : {BatchNormDims{1000, 72, 1}, BatchNormDims{333, 37, 1},
                                     BatchNormDims{10, 6, 1001}, BatchNormDims{3, 5, 37}}) {
      SCOPED_TRACE(isa + " [" + std::to_string(dims.outer) + ", " + std::to_string(dims.channels) +
                   ", " + std::to_string(dims.inner) + "]");
      Random rng(11);
      std::vector<float> x(static_cast<std::size_t>(dims.size())), dy(x.size()), s(x.size());
      for (float& v : x) v = rng.normal();
      for (float& v : dy) v = rng.normal();
      for (float& v : s) v = rng.normal();
      const std::size_t c = static_cast<std::size_t>(dims.channels);
      std::vector<float> gamma(c, 0.7f), beta(c, 0.1f);
      auto run = [&](kernels::StreamingStores mode) {
        kernels::set_streaming_stores(mode);
        // Separate allocations, so a store past the end of one is an ASan error, not a silent
        // write into the next.
        std::vector<std::vector<float>> out{
            std::vector<float>(c),       std::vector<float>(c),        std::vector<float>(c),
            std::vector<float>(c),       std::vector<float>(x.size()), std::vector<float>(x.size()),
            std::vector<float>(x.size())};
        kernels::batch_norm_forward_training_add_relu(dims, x.data(), s.data(), gamma.data(),
                                                      beta.data(), kEps, out[0].data(),
                                                      out[1].data(), out[4].data());
        kernels::batch_norm_add_relu_backward(
            dims, x.data(), s.data(), dy.data(), out[0].data(), out[1].data(), gamma.data(),
            beta.data(), kEps, true, out[5].data(), out[6].data(), out[2].data(), out[3].data());
        return out;
      };
      const auto streamed = run(kernels::StreamingStores::always);
      const auto cached = run(kernels::StreamingStores::never);
      kernels::set_streaming_stores(kernels::StreamingStores::automatic);
      for (std::size_t k = 0; k < cached.size(); ++k) {
        EXPECT_SAME_BITS(streamed[k], cached[k]);
      }
    }
  }
  set_isa("best");
}

}  // namespace
}  // namespace bnorm
