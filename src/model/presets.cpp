#include "bnorm/model/presets.hpp"

#include "bnorm/core/error.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/merge.hpp"
#include "bnorm/layers/pooling.hpp"

namespace bnorm {

namespace {
// Conv2D (bias only without BN: BN's beta makes it redundant) followed by BN when on.
SymbolicTensor conv_bn(const SymbolicTensor& x, std::int64_t filters, std::int64_t kernel,
                       std::int64_t stride, bool batch_norm) {
  Conv2D::Options o;
  o.filters = filters;
  o.kernel_size = {kernel, kernel};
  o.strides = {stride, stride};
  o.padding = "same";
  o.use_bias = !batch_norm;
  SymbolicTensor y = Conv2D(o)(x);
  return batch_norm ? BatchNormalization()(y) : y;
}
}  // namespace

Model resnet(const ResNetOptions& options, std::uint64_t seed, std::string name) {
  if (options.filters.empty()) throw ValueError("resnet: filters must list at least one stage");
  if (options.blocks_per_stage < 1)
    throw ValueError("resnet: blocks_per_stage must be >= 1; received " +
                     std::to_string(options.blocks_per_stage));
  if (options.input_shape.rank() != 3)
    throw ValueError("resnet: the input must be (height, width, channels); received " +
                     options.input_shape.str());
  const bool bn = options.batch_norm;
  Input x(options.input_shape);
  SymbolicTensor h = Activation("relu")(conv_bn(x, options.filters[0], 3, 1, bn));
  std::int64_t channels = options.filters[0];
  for (std::size_t s = 0; s < options.filters.size(); ++s) {
    const std::int64_t f = options.filters[s];
    for (int b = 0; b < options.blocks_per_stage; ++b) {
      const std::int64_t stride = s > 0 && b == 0 ? 2 : 1;
      SymbolicTensor y = Activation("relu")(conv_bn(h, f, 3, stride, bn));
      y = conv_bn(y, f, 3, 1, bn);
      const SymbolicTensor shortcut =
          stride == 1 && channels == f ? h : conv_bn(h, f, 1, stride, bn);
      h = Activation("relu")(Add()({y, shortcut}));
      channels = f;
    }
  }
  h = GlobalAveragePooling2D()(h);
  return Model(x, Dense(options.classes, "softmax")(h), std::move(name), seed);
}

}  // namespace bnorm
