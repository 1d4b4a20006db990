// ONNX's own BatchNormalization operator tests (onnx/backend/test/data/node/test_batchnorm_*,
// committed with their license in tests/parity/onnx) run through bnorm's kernels.
#include <gtest/gtest.h>

#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fixture.hpp"
#include "kernels/batch_norm.hpp"
#include "onnx_tensor.pb.h"
#include "tolerances.hpp"

namespace bnorm::parity {
namespace {

namespace fs = std::filesystem;

fs::path onnx_root() { return fs::path(BNORM_SOURCE_DIR) / "tests" / "parity" / "onnx"; }

std::vector<std::string> onnx_cases() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(onnx_root()))
    if (e.is_directory() && fs::exists(e.path() / "expected.json"))
      out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// A TensorProto file as a float32 Tensor.
Tensor read_tensor(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  bnorm_onnx::TensorProto t;
  if (!in || !t.ParseFromIstream(&in)) throw std::runtime_error("cannot parse " + path.string());
  std::vector<std::int64_t> dims(t.dims().begin(), t.dims().end());
  if (dims.empty()) dims = {1};
  const std::int64_t n = Shape(dims).size();
  std::vector<float> v(static_cast<std::size_t>(n));
  if (t.data_type() != 1) throw std::runtime_error(path.string() + ": not FLOAT");
  if (t.has_raw_data()) {
    if (t.raw_data().size() != v.size() * sizeof(float))
      throw std::runtime_error(path.string() + ": raw size");
    std::memcpy(v.data(), t.raw_data().data(), t.raw_data().size());
  } else {
    if (t.float_data_size() != n) throw std::runtime_error(path.string() + ": float_data size");
    std::copy(t.float_data().begin(), t.float_data().end(), v.begin());
  }
  return Tensor(Shape(dims), v);
}

NpyArray as_array(const Tensor& t) {
  NpyArray a;
  a.shape = t.shape().dims();
  a.values.assign(t.data(), t.data() + t.size());
  return a;
}

class OnnxBatchNorm : public ::testing::TestWithParam<std::string> {};

TEST_P(OnnxBatchNorm, MatchesOperatorTestData) {
  const fs::path dir = onnx_root() / GetParam();
  std::ifstream in(dir / "expected.json");
  const auto meta = nlohmann::json::parse(in);
  std::map<std::string, Tensor> io;
  for (const char* group : {"inputs", "outputs"})
    for (const auto& e : meta.at(group))
      io[e.at("role").get<std::string>()] = read_tensor(dir / e.at("file").get<std::string>());
  const auto& attrs = meta.at("attributes");
  const float epsilon = attrs.at("epsilon").get<float>();
  const double momentum = attrs.at("momentum").get<float>();  // ONNX attributes are float32
  const bool training = attrs.at("training_mode").get<int>() == 1;

  // ONNX BatchNormalization normalizes axis 1 of (N, C, D1, ...).
  const Tensor& x = io.at("X");
  kernels::BatchNormDims d;
  d.outer = x.shape()[0];
  d.channels = x.shape()[1];
  for (int i = 2; i < x.rank(); ++i) d.inner *= x.shape()[i];
  Tensor y(x.shape());
  const std::string name = "onnx/" + GetParam();
  if (!training) {
    kernels::batch_norm_forward(d, x.data(), io.at("input_mean").data(), io.at("input_var").data(),
                                io.at("scale").data(), io.at("B").data(), epsilon, y.data());
  } else {
    Tensor mean(Shape{d.channels}), var(Shape{d.channels});
    kernels::batch_norm_moments(d, x.data(), mean.data(), var.data());
    kernels::batch_norm_forward(d, x.data(), mean.data(), var.data(), io.at("scale").data(),
                                io.at("B").data(), epsilon, y.data());
    // ONNX (opset 15): running = input * momentum + batch * (1 - momentum), biased variance.
    Tensor running_mean = io.at("input_mean"), running_var = io.at("input_var");
    kernels::batch_norm_update_moving(d.channels, mean.data(), var.data(), momentum, 1.0f,
                                      running_mean.data(), running_var.data());
    for (auto [role, actual] :
         {std::pair{"running_mean", &running_mean}, std::pair{"running_var", &running_var}}) {
      const auto e = compare(*actual, as_array(io.at(role)), kRelFloor);
      report(name, role, e);
      EXPECT_LE(e.max_rel, kForwardTol) << role;
    }
  }
  const auto e = compare(y, as_array(io.at("Y")), kRelFloor);
  report(name, "Y", e);
  EXPECT_LE(e.max_rel, kForwardTol);
}

INSTANTIATE_TEST_SUITE_P(OperatorTests, OnnxBatchNorm, ::testing::ValuesIn(onnx_cases()),
                         [](const auto& info) { return info.param; });

TEST(OnnxBatchNormData, AllFourCasesPresent) { EXPECT_EQ(onnx_cases().size(), 4u); }

}  // namespace
}  // namespace bnorm::parity
