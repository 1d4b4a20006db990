// bnorm/model/presets.hpp — ready-made functional models (built with the Functional API).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bnorm/model/model.hpp"

namespace bnorm {

// A small residual network for images (He et al. 2016's CIFAR ResNets, scaled to 28x28):
//   stem: Conv2D(f0, 3, same) -> BN -> ReLU
//   per stage s (filters f_s; stages after the first start with stride 2):
//     blocks_per_stage basic blocks: y = BN(Conv2D(3x3)) -> ReLU -> BN(Conv2D(3x3));
//     out = ReLU(y + shortcut), the shortcut an identity, or BN(Conv2D(1x1, stride)) where the
//     shape changes (a projection)
//   GlobalAveragePooling2D -> Dense(classes, softmax).
// Depth = 2 + 2 * stages * blocks_per_stage weighted layers on the main path (ResNet-8 with the
// defaults). With batch_norm = false every BatchNormalization is left out and the
// convolutions get biases (the same network without BN).
struct ResNetOptions {
  Shape input_shape{28, 28, 1};
  std::vector<std::int64_t> filters{16, 32, 64};
  int blocks_per_stage = 1;
  bool batch_norm = true;
  std::int64_t classes = 10;
};
// ValueError for an empty filters list, blocks_per_stage < 1 or an input that is not (H, W, C).
Model resnet(const ResNetOptions& options, std::uint64_t seed = 0, std::string name = "resnet");

}  // namespace bnorm
