#include "fixture.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace bnorm::parity {

namespace fs = std::filesystem;

Tensor NpyArray::tensor() const {
  std::vector<std::int64_t> dims = shape.empty() ? std::vector<std::int64_t>{1} : shape;
  std::vector<float> f(values.begin(), values.end());
  return Tensor(Shape(dims), f);
}

NpyArray read_npy(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0)
    throw std::runtime_error(path.string() + ": not a .npy file");
  const int major = static_cast<unsigned char>(bytes[6]);
  std::size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    offset = 10;
  } else {
    std::uint32_t len;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len;
    offset = 12;
  }
  const std::string header = bytes.substr(offset, header_len);
  auto field = [&](const std::string& key) {
    const auto k = header.find("'" + key + "'");
    if (k == std::string::npos) throw std::runtime_error(path.string() + ": header lacks " + key);
    return header.substr(header.find(':', k) + 1);
  };
  const std::string descr_text = field("descr");
  const std::string descr = descr_text.substr(descr_text.find('\'') + 1, 3);
  if (field("fortran_order").find("False") != 0 && field("fortran_order").find(" False") != 0)
    throw std::runtime_error(path.string() + ": Fortran order is not supported");
  NpyArray a;
  std::string shape_text = field("shape");
  shape_text =
      shape_text.substr(shape_text.find('(') + 1, shape_text.find(')') - shape_text.find('(') - 1);
  for (std::size_t p = 0; p < shape_text.size();) {
    while (p < shape_text.size() && (shape_text[p] == ' ' || shape_text[p] == ',')) ++p;
    if (p >= shape_text.size()) break;
    std::size_t used = 0;
    a.shape.push_back(std::stoll(shape_text.substr(p), &used));
    p += used;
  }
  std::int64_t count = 1;
  for (auto d : a.shape) count *= d;
  const char* data = bytes.data() + offset + header_len;
  const std::size_t available = bytes.size() - offset - header_len;
  auto load = [&](auto tag) {
    using T = decltype(tag);
    if (available < static_cast<std::size_t>(count) * sizeof(T))
      throw std::runtime_error(path.string() + ": truncated");
    a.values.resize(static_cast<std::size_t>(count));
    for (std::int64_t i = 0; i < count; ++i) {
      T v;
      std::memcpy(&v, data + i * static_cast<std::int64_t>(sizeof(T)), sizeof(T));
      a.values[static_cast<std::size_t>(i)] = static_cast<double>(v);
    }
  };
  if (descr == "<f4")
    load(float{});
  else if (descr == "<f8")
    load(double{});
  else if (descr == "<i8")
    load(std::int64_t{});
  else if (descr == "<i4")
    load(std::int32_t{});
  else
    throw std::runtime_error(path.string() + ": unsupported dtype " + descr);
  return a;
}

Fixture::Fixture(fs::path dir) : dir_(std::move(dir)) {
  std::ifstream in(dir_ / "meta.json");
  if (!in) throw std::runtime_error("cannot open " + (dir_ / "meta.json").string());
  meta_ = nlohmann::json::parse(in);
}

std::string Fixture::name() const {
  return meta_.at("family").get<std::string>() + "/" + meta_.at("case").get<std::string>();
}

bool Fixture::has(const std::string& array) const { return fs::exists(dir_ / (array + ".npy")); }

NpyArray Fixture::array(const std::string& name) const { return read_npy(dir_ / (name + ".npy")); }

fs::path fixtures_root() { return fs::path(BNORM_SOURCE_DIR) / "tests" / "parity" / "fixtures"; }

std::vector<std::string> list_cases(const std::string& family) {
  std::vector<std::string> out;
  const fs::path dir = fixtures_root() / family;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && fs::exists(e.path() / "meta.json"))
      out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

Errors compare(const Tensor& actual, const NpyArray& expected, double rel_floor) {
  if (static_cast<std::size_t>(actual.size()) != expected.values.size())
    throw std::runtime_error("size mismatch: " + std::to_string(actual.size()) + " vs " +
                             std::to_string(expected.values.size()));
  Errors e;
  for (std::size_t i = 0; i < expected.values.size(); ++i) {
    const double a = actual[static_cast<std::int64_t>(i)], b = expected.values[i];
    const double d = std::abs(a - b);
    if (std::isnan(a) != std::isnan(b)) return {INFINITY, INFINITY};
    e.max_abs = std::max(e.max_abs, d);
    e.max_rel = std::max(e.max_rel, d / std::max(std::abs(b), rel_floor));
  }
  return e;
}

void report(const std::string& fixture, const std::string& quantity, const Errors& e) {
  std::printf("PARITY %s %s max_abs=%.3g max_rel=%.3g\n", fixture.c_str(), quantity.c_str(),
              e.max_abs, e.max_rel);
  if (const char* path = std::getenv("BNORM_PARITY_REPORT")) {
    if (FILE* f = std::fopen(path, "a")) {
      std::fprintf(f, "%s %s %.6g %.6g\n", fixture.c_str(), quantity.c_str(), e.max_abs, e.max_rel);
      std::fclose(f);
    }
  }
}

std::array<std::int64_t, 2> keras_pair(const nlohmann::json& j) {
  const auto v = j.get<std::vector<std::int64_t>>();
  return {v.at(0), v.at(1)};
}

Conv2D::Options keras_conv2d_options(const nlohmann::json& c) {
  Conv2D::Options o;
  o.filters = c.at("filters").get<std::int64_t>();
  o.kernel_size = keras_pair(c.at("kernel_size"));
  o.strides = keras_pair(c.at("strides"));
  o.padding = c.at("padding").get<std::string>();
  o.data_format = c.at("data_format").get<std::string>();
  o.dilation_rate = keras_pair(c.at("dilation_rate"));
  o.activation = c.at("activation").get<std::string>();
  o.use_bias = c.at("use_bias").get<bool>();
  return o;
}

BatchNormalization::Options keras_bn_options(const nlohmann::json& c) {
  BatchNormalization::Options o;
  o.axis = c.at("axis").get<int>();
  o.momentum = c.at("momentum").get<double>();
  o.epsilon = c.at("epsilon").get<float>();
  o.center = c.at("center").get<bool>();
  o.scale = c.at("scale").get<bool>();
  return o;
}

Pooling2D::Options keras_pooling_options(const nlohmann::json& c) {
  Pooling2D::Options o;
  o.pool_size = keras_pair(c.at("pool_size"));
  if (!c.at("strides").is_null()) o.strides = keras_pair(c.at("strides"));
  o.padding = c.at("padding").get<std::string>();
  o.data_format = c.at("data_format").get<std::string>();
  return o;
}

}  // namespace bnorm::parity
