// libFuzzer harness: the batch-normalization kernels on shapes, layouts, options and values the
// fuzzer picks (not a loader: this harness exists because clang's UndefinedBehaviorSanitizer
// flags what the GCC sanitizer suite does not, e.g. an offset applied to a null pointer in the
// unfused paths). The first bytes choose outer/channels/inner, gamma/beta presence, the fused
// variant and the statistics mode; the rest fill x, dy and the shortcut. Every kernel runs on
// the same data and must leave finite inputs finite-or-not without crashing; the SIMD moments
// are also checked against the scalar reference.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/batch_norm.hpp"

namespace {

struct Reader {
  const std::uint8_t* data;
  std::size_t size;
  std::size_t at = 0;
  std::uint8_t byte() { return at < size ? data[at++] : 0; }
  float value() {  // bounded values: the kernels' own overflow checks live in the layer above
    return static_cast<float>(static_cast<std::int8_t>(byte())) / 16.0f;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace k = bnorm::kernels;
  Reader in{data, size};
  k::BatchNormDims d;
  d.outer = 1 + in.byte() % 9;
  d.channels = 1 + in.byte() % 70;  // past 4 vectors of 16 lanes: every strip path
  d.inner = in.byte() % 2 ? 1 : 1 + in.byte() % 12;
  const std::uint8_t flags = in.byte();
  const bool has_gamma = flags & 1, has_beta = flags & 2, batch_statistics = flags & 4;
  const int variant = (flags >> 3) % 3;  // plain, ReLU, Add + ReLU
  const float epsilon = 1e-3f;
  const auto n = static_cast<std::size_t>(d.size());
  const auto c = static_cast<std::size_t>(d.channels);
  std::vector<float> x(n), dy(n), shortcut(n), y(n), dx(n), dshortcut(n);
  for (auto* v : {&x, &dy, &shortcut})
    for (float& f : *v) f = in.value();
  std::vector<float> gamma(c, 1.5f), beta(c, -0.25f), mean(c), variance(c), ref_mean(c),
      ref_variance(c), dgamma(c), dbeta(c);
  const float* g = has_gamma ? gamma.data() : nullptr;
  const float* b = has_beta ? beta.data() : nullptr;

  k::batch_norm_moments(d, x.data(), mean.data(), variance.data());
  k::reference::batch_norm_moments(d, x.data(), ref_mean.data(), ref_variance.data());
  for (std::size_t i = 0; i < c; ++i) {
    if (std::fabs(mean[i] - ref_mean[i]) > 1e-4f * (1.0f + std::fabs(ref_mean[i])) ||
        std::fabs(variance[i] - ref_variance[i]) > 1e-4f * (1.0f + ref_variance[i]))
      __builtin_trap();  // the SIMD statistics left the scalar specification
  }
  switch (variant) {
    case 0:
      k::batch_norm_forward_training(d, x.data(), g, b, epsilon, false, mean.data(),
                                     variance.data(), y.data());
      k::batch_norm_backward(d, x.data(), dy.data(), mean.data(), variance.data(), g, epsilon,
                             batch_statistics, dx.data(), dgamma.data(), dbeta.data());
      k::batch_norm_forward(d, x.data(), mean.data(), variance.data(), g, b, epsilon, y.data());
      break;
    case 1:
      k::batch_norm_forward_training(d, x.data(), g, b, epsilon, true, mean.data(), variance.data(),
                                     y.data());
      k::batch_norm_relu_backward(d, x.data(), dy.data(), mean.data(), variance.data(), g, b,
                                  epsilon, batch_statistics, dx.data(), dgamma.data(),
                                  dbeta.data());
      k::batch_norm_forward_relu(d, x.data(), mean.data(), variance.data(), g, b, epsilon,
                                 y.data());
      break;
    default:
      k::batch_norm_forward_training_add_relu(d, x.data(), shortcut.data(), g, b, epsilon,
                                              mean.data(), variance.data(), y.data());
      k::batch_norm_add_relu_backward(d, x.data(), shortcut.data(), dy.data(), mean.data(),
                                      variance.data(), g, b, epsilon, batch_statistics, dx.data(),
                                      flags & 64 ? dshortcut.data() : nullptr,
                                      flags & 128 ? dgamma.data() : nullptr, dbeta.data());
      k::batch_norm_forward_add_relu(d, x.data(), shortcut.data(), mean.data(), variance.data(), g,
                                     b, epsilon, y.data());
      break;
  }
  return 0;
}
