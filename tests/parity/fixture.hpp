// tests/parity/fixture.hpp — reads the committed golden fixtures (docs/parity-fixtures.md):
// a case directory with meta.json and one .npy file per array.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/pooling.hpp"

namespace bnorm::parity {

struct NpyArray {
  std::vector<std::int64_t> shape;
  std::vector<double> values;  // float32/float64/int64 data widened to double
  Tensor tensor() const;       // float32 copy (rank-0 arrays become shape (1,))
};

// Parses .npy format 1.0/2.0, little-endian, C order, dtypes <f4, <f8, <i8, <i4.
NpyArray read_npy(const std::filesystem::path& path);

class Fixture {
 public:
  explicit Fixture(std::filesystem::path dir);
  const nlohmann::json& meta() const { return meta_; }
  const nlohmann::json& config() const { return meta_.at("config"); }
  std::string name() const;  // family/case
  bool has(const std::string& array) const;
  NpyArray array(const std::string& name) const;
  Tensor tensor(const std::string& name) const { return array(name).tensor(); }

 private:
  std::filesystem::path dir_;
  nlohmann::json meta_;
};

std::filesystem::path fixtures_root();
// Case directory names of a family, sorted.
std::vector<std::string> list_cases(const std::string& family);

// Largest |a - b| and largest |a - b| / max(|b|, floor) over all elements, for reporting.
struct Errors {
  double max_abs = 0.0, max_rel = 0.0;
};
Errors compare(const Tensor& actual, const NpyArray& expected, double rel_floor);
// Appends "family case quantity max_abs max_rel" to $BNORM_PARITY_REPORT if set and prints it.
void report(const std::string& fixture, const std::string& quantity, const Errors& e);

// Keras layer configs (the keys the generator keeps) as bnorm options.
std::array<std::int64_t, 2> keras_pair(const nlohmann::json& j);
Conv2D::Options keras_conv2d_options(const nlohmann::json& config);
BatchNormalization::Options keras_bn_options(const nlohmann::json& config);
// MaxPooling2D / AveragePooling2D (strides null: the pool size, as Keras).
Pooling2D::Options keras_pooling_options(const nlohmann::json& config);

}  // namespace bnorm::parity
