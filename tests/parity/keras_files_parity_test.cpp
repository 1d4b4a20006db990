// Keras model files made by real Keras 3 and tf.keras 2 (tests/parity/generate_keras_files.py):
// every case loads from each file Keras wrote and predicts what Keras predicted, within 1e-5
// relative (|bnorm - keras| <= 1e-5 * max(1, |keras|)); the cases Keras files must not get
// through are refused with one line; and what bnorm writes back (.keras, .h5) reloads to the
// same bits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/io/keras.hpp"
#include "fixture.hpp"
#include "io/test_files.hpp"

namespace bnorm {
namespace {

namespace fs = std::filesystem;

constexpr double kTolerance = 1e-5;

fs::path cases_dir() {
  return fs::path(BNORM_SOURCE_DIR) / "tests" / "parity" / "fixtures" / "keras_files";
}

std::vector<fs::path> cases() {
  std::vector<fs::path> out;
  if (!fs::is_directory(cases_dir())) return out;
  for (const auto& e : fs::directory_iterator(cases_dir()))
    if (fs::exists(e.path() / "meta.json")) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

nlohmann::json meta_of(const fs::path& dir) {
  std::ifstream in(dir / "meta.json");
  return nlohmann::json::parse(in);
}

// x.npy / y.npy, or x0.npy, x1.npy, ... for several inputs or outputs.
std::vector<Tensor> arrays(const fs::path& dir, const std::string& stem) {
  std::vector<Tensor> out;
  if (fs::exists(dir / (stem + ".npy"))) {
    out.push_back(parity::read_npy(dir / (stem + ".npy")).tensor());
    return out;
  }
  for (int i = 0; fs::exists(dir / (stem + std::to_string(i) + ".npy")); ++i)
    out.push_back(parity::read_npy(dir / (stem + std::to_string(i) + ".npy")).tensor());
  return out;
}

double worst_error(const std::vector<Tensor>& got, const std::vector<Tensor>& want) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0.0;
  for (std::size_t k = 0; k < std::min(got.size(), want.size()); ++k) {
    EXPECT_EQ(got[k].size(), want[k].size());
    for (std::int64_t i = 0; i < std::min(got[k].size(), want[k].size()); ++i) {
      const double w = want[k].data()[i];
      worst = std::max(worst, std::abs(got[k].data()[i] - w) / std::max(1.0, std::abs(w)));
    }
  }
  return worst;
}

std::vector<Tensor> predict(Model& m, const std::vector<Tensor>& xs) {
  std::vector<const Tensor*> ptrs;
  for (const auto& x : xs) ptrs.push_back(&x);
  return m.predict_all(ptrs, 8);
}

TEST(KerasFilesParity, EveryCaseFromEveryKerasFile) {
  const auto all = cases();
  ASSERT_GE(all.size(), 20u) << "fixtures missing under " << cases_dir();
  int files = 0, refused = 0;
  double worst = 0.0;
  std::string worst_where;
  for (const auto& dir : all) {
    const auto meta = meta_of(dir);
    const bool refuse = meta.value("expect_refuse", false);
    for (const char* name : {"model.keras", "model.h5", "tf2.h5"}) {
      const fs::path path = dir / name;
      if (!fs::exists(path)) continue;
      SCOPED_TRACE(dir.filename().string() + "/" + name);
      ++files;
      if (refuse) {
        try {
          (void)io::load_model(path.string());
          ADD_FAILURE() << "loaded a file that must be refused";
        } catch (const IoError& e) {
          const std::string what = e.what();
          EXPECT_EQ(what.find('\n'), std::string::npos) << what;
          const std::string expected = meta.at("expect_error_substring").get<std::string>();
          EXPECT_NE(what.find(expected), std::string::npos) << what;
          ++refused;
        }
        continue;
      }
      Model m = io::load_model(path.string());
      if (meta.value("compiled", false)) {
        EXPECT_TRUE(m.compiled()) << "compile_config not applied";
      }
      const double err = worst_error(predict(m, arrays(dir, "x")), arrays(dir, "y"));
      EXPECT_LE(err, kTolerance);
      if (err > worst) {
        worst = err;
        worst_where = dir.filename().string() + "/" + name;
      }
    }
  }
  std::printf(
      "keras_files: %zu cases, %d files loaded or refused (%d refused); worst relative "
      "error %.3g (%s)\n",
      all.size(), files, refused, worst, worst_where.c_str());
}

// What bnorm writes back is what it read: .keras and .h5 round trips give the same bits.
TEST(KerasFilesParity, BnormRoundTripsEveryCase) {
  testing::TempDir tmp;
  for (const auto& dir : cases()) {
    const auto meta = meta_of(dir);
    if (meta.value("expect_refuse", false) || !fs::exists(dir / "model.keras")) continue;
    SCOPED_TRACE(dir.filename().string());
    Model m = io::load_model((dir / "model.keras").string());
    const auto xs = arrays(dir, "x");
    const auto want = predict(m, xs);
    for (const char* ext : {".keras", ".h5", ".bnorm"}) {
      const std::string path = tmp.file(std::string("m") + ext);
      io::save_model(m, path);
      Model back = io::load_model(path);
      const auto got = predict(back, xs);
      ASSERT_EQ(got.size(), want.size());
      for (std::size_t k = 0; k < got.size(); ++k)
        for (std::int64_t i = 0; i < got[k].size(); ++i)
          ASSERT_EQ(got[k].data()[i], want[k].data()[i]) << ext;
    }
  }
}

// The BN family in files the frameworks wrote (tests/parity/generate_bn_family.py): Keras 3's
// renorm=True in a .keras file and tf.keras 2's virtual_batch_size in a legacy .h5 (its gamma and
// beta stored (1, 1, C)) load and predict what the framework predicted. The renorm model writes
// back to .keras, .h5 and .bnorm with its seven BN weights; the Ghost BN one to .bnorm, while
// Keras 3 formats refuse it (Keras 3 has no virtual_batch_size).
TEST(KerasFilesParity, BnFamilyFiles) {
  const fs::path root = fs::path(BNORM_SOURCE_DIR) / "tests/parity/fixtures/keras_bn_family_files";
  testing::TempDir tmp;
  for (const auto& [name, file] :
       {std::pair<const char*, const char*>{"renorm_keras3", "model.keras"},
        {"ghost_tf_keras2", "model.h5"}}) {
    SCOPED_TRACE(name);
    const fs::path dir = root / name;
    Model m = io::load_model((dir / file).string());
    const auto xs = arrays(dir, "x");
    const double err = worst_error(predict(m, xs), arrays(dir, "y"));
    EXPECT_LE(err, kTolerance);
    std::printf("keras_bn_family_files/%s: worst relative error %.3g\n", name, err);
    const auto want = predict(m, xs);
    const bool ghost = std::string(name) == "ghost_tf_keras2";
    for (const char* ext : {".keras", ".h5", ".bnorm"}) {
      const std::string path = tmp.file(std::string(name) + ext);
      if (ghost && std::string(ext) != ".bnorm") {
        try {
          io::save_model(m, path);
          ADD_FAILURE() << "wrote virtual_batch_size to " << ext;
        } catch (const IoError& e) {
          EXPECT_NE(std::string(e.what()).find("virtual_batch_size"), std::string::npos)
              << e.what();
        }
        continue;
      }
      io::save_model(m, path);
      Model back = io::load_model(path);
      const auto got = predict(back, xs);
      for (std::int64_t i = 0; i < got[0].size(); ++i) ASSERT_EQ(got[0][i], want[0][i]) << ext;
      EXPECT_EQ(back.get_weights().size(), m.get_weights().size());
    }
  }
}

}  // namespace
}  // namespace bnorm
