// bnorm/io/idx.hpp — IDX files (MNIST / Fashion-MNIST format), raw or gzip-compressed.
#pragma once

#include <cstdint>
#include <string>

#include "bnorm/core/tensor.hpp"

namespace bnorm::io {

// Images file (magic 0x00000803, unsigned bytes): returns (N, rows, cols) scaled to [0, 1].
// Labels file (magic 0x00000801): returns (N,) with the class indices as floats.
// Files ending in ".gz" (or starting with the gzip magic) are decompressed with zlib.
// IoError naming the file for a missing/unreadable file, a wrong magic number, dimensions that
// do not match the data size, or truncated data.
Tensor read_idx_images(const std::string& path);
Tensor read_idx_labels(const std::string& path);

struct Dataset {
  Tensor train_x, train_y, test_x, test_y;  // images (N, 28, 28), labels (N,)
};

// Where Debian's dataset-fashion-mnist package installs the data.
inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// Loads train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-* from `dir`.
// IoError saying which package to install when the directory or a file is missing; IoError when
// image and label counts differ.
Dataset load_fashion_mnist(const std::string& dir = kDefaultFashionMnistDir);

}  // namespace bnorm::io
