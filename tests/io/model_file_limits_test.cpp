// Issue 16 item 5 (model files): a small file with a valid checksum whose architecture declares
// huge shapes (input shape [2e7] before a Dense: 2.5 GB of kernel) must be refused with an
// IoError before anything of that size is allocated. This binary replaces the global operator
// new: while a load runs, any request above kLimit is recorded and refused with std::bad_alloc
// (never allocated), so the test fails, cheaply, on a loader that builds before it checks.
#include <gtest/gtest.h>
#include <zlib.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <nlohmann/json.hpp>
#include <string>

#include "bnorm/core/error.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "io/test_files.hpp"
#include "support/replaced_operator_new.hpp"  // this binary's operator new/delete

namespace {
constexpr std::size_t kLimit = std::size_t{64} << 20;  // 64 MiB: far above what these files hold
std::atomic<bool> g_armed{false};
std::atomic<std::size_t> g_largest{0};
}  // namespace

namespace bnorm::testing {
bool allow_allocation(std::size_t size) {
  if (!g_armed.load(std::memory_order_relaxed)) return true;
  std::size_t seen = g_largest.load(std::memory_order_relaxed);
  while (size > seen && !g_largest.compare_exchange_weak(seen, size)) {
  }
  return size <= kLimit;
}
}  // namespace bnorm::testing

namespace bnorm::io {
namespace {

using bnorm::testing::TempDir;
using bnorm::testing::write_bytes;
using json = nlohmann::ordered_json;

// A complete model file around `description` with `data_bytes` zero bytes of weights: header,
// JSON, weights and a valid CRC-32 (docs/model-format.md).
std::string model_file(const json& description, std::size_t data_bytes = 0) {
  const std::string text = description.dump();
  std::string out = "BNORMMDL";
  auto put = [&](std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  };
  put(1, 4);  // format version
  put(0, 4);  // reserved
  put(text.size(), 8);
  put(data_bytes, 8);
  out += text;
  out.append(data_bytes, '\0');
  put(crc32(0L, reinterpret_cast<const Bytef*>(out.data()), static_cast<uInt>(out.size())), 4);
  return out;
}

json sequential(const json& input_shape, const json& layers) {
  return {{"format", "bnorm-model"},
          {"format_version", 1},
          {"model",
           {{"class_name", "Sequential"},
            {"name", "m"},
            {"seed", 0},
            {"input_shape", input_shape},
            {"built", true}}},
          {"layers", layers},
          {"compile", nullptr}};
}

json layer(const std::string& cls, const json& config, const json& weights = json::array()) {
  return {{"class_name", cls},
          {"name", "l_" + cls},
          {"trainable", true},
          {"config", config},
          {"weights", weights}};
}

// Loads the file with large allocations refused and returns the IoError's message; fails if the
// load threw anything else or asked for more than kLimit bytes at once.
std::string load_error(const std::string& bytes) {
  TempDir dir;
  const std::string path = dir.file("m.bnorm");
  write_bytes(path, bytes);
  g_largest = 0;
  std::string message;
  g_armed = true;
  try {
    load_model(path);
    ADD_FAILURE() << "the file loaded";
  } catch (const IoError& e) {
    message = e.what();
  } catch (const std::bad_alloc&) {
    ADD_FAILURE() << "the loader asked for " << g_largest.load() << " bytes at once";
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected IoError, got: " << e.what();
  }
  g_armed = false;
  EXPECT_LE(g_largest.load(), std::size_t{1} << 20) << message;
  return message;
}

TEST(ModelFileLimits, HugeInputShapeWithoutWeightsIsRefusedBeforeBuilding) {
  // The file: ~300 bytes, valid checksum, a Dense on input shape [2e7] (2.5 GB of kernel)
  // and [1e8] (12.8 GB), listing no weights.
  for (const std::int64_t n : {std::int64_t{20000000}, std::int64_t{100000000}}) {
    const std::string bytes =
        model_file(sequential({n}, json::array({layer("Dense", {{"units", 32}})})));
    EXPECT_LT(bytes.size(), 400u);
    EXPECT_CONTAINS(load_error(bytes), "has 0 weights in the file; its config and input shape (" +
                                           std::to_string(n) + ",) need 2");
  }
}

TEST(ModelFileLimits, ListedWeightsMustFitTheBytesPresent) {
  // The manifest agrees with the architecture, but the file does not hold those bytes.
  const json weights =
      json::array({{{"name", "kernel"}, {"shape", {100000000, 32}}, {"offset", 0}},
                   {{"name", "bias"}, {"shape", {32}}, {"offset", std::uint64_t{12800000000}}}});
  EXPECT_CONTAINS(load_error(model_file(sequential(
                      {100000000}, json::array({layer("Dense", {{"units", 32}}, weights)})))),
                  "runs past the end of the weights section");
}

TEST(ModelFileLimits, ListedWeightsMustMatchTheImpliedShapes) {
  // Small listed weights do not make a huge architecture acceptable.
  const json weights = json::array({{{"name", "kernel"}, {"shape", {4, 32}}, {"offset", 0}},
                                    {{"name", "bias"}, {"shape", {32}}, {"offset", 512}}});
  EXPECT_CONTAINS(
      load_error(model_file(
          sequential({20000000}, json::array({layer("Dense", {{"units", 32}}, weights)})), 640)),
      "the architecture needs (20000000, 32)");
}

TEST(ModelFileLimits, LaterLayersAreCheckedOnTheShapesTheyWillGet) {
  // A small input padded into a huge one (no weights), then a Dense on it: 3.2 GB of kernel.
  const json layers =
      json::array({layer("Reshape", {{"target_shape", {2, 2, 1}}}),
                   layer("ZeroPadding2D", {{"padding", {{50000000, 0}, {0, 0}}}}),
                   layer("Flatten", json::object()), layer("Dense", {{"units", 8}})});
  const std::string message = load_error(model_file(sequential({4}, layers)));
  EXPECT_CONTAINS(message, "l_Dense");
  EXPECT_CONTAINS(message, "input shape (100000004,) need 2");
}

TEST(ModelFileLimits, FunctionalGraphsAreCheckedToo) {
  json doc = sequential(nullptr, json::array({layer("Dense", {{"units", 64}})}));
  doc["model"]["class_name"] = "Functional";
  doc["graph"] = {{"inputs", json::array({{{"name", "x"}, {"shape", {50000000}}}})},
                  {"calls", json::array({{{"layer", 0}, {"inputs", {0}}}})},
                  {"outputs", {1}}};
  EXPECT_CONTAINS(load_error(model_file(doc)), "has 0 weights in the file");
}

TEST(ModelFileLimits, PerChannelBuffersWithoutStoredWeightsAreLimited) {
  // BatchNormalization with no weights at all and Normalization with constant statistics still
  // allocate per-channel buffers at build; nothing in the file bounds their size.
  EXPECT_CONTAINS(
      load_error(model_file(sequential(
          {1 << 30},
          json::array({layer(
              "BatchNormalization",
              {{"center", false}, {"scale", false}, {"track_moving_statistics", false}})})))),
      "would normalize 1073741824 channels");
  EXPECT_CONTAINS(
      load_error(model_file(sequential(
          {1 << 30}, json::array({layer("Normalization", {{"mean", 0.5}, {"variance", 2.0}})})))),
      "would normalize 1073741824 channels");
}

}  // namespace
}  // namespace bnorm::io
