// tests/io/test_files.hpp — temporary directories and small IDX files for the io and cli tests.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/core/error.hpp"

namespace bnorm::testing {

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "bnorm-test-XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// IDX bytes: magic 0x0000 08 <rank>, big-endian u32 dims, then the values.
inline std::string idx_bytes(const std::vector<std::uint32_t>& dims,
                             const std::vector<std::uint8_t>& values) {
  std::string out{'\0', '\0', '\x08', static_cast<char>(dims.size())};
  for (auto d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8)
      out.push_back(static_cast<char>((d >> shift) & 0xFF));
  }
  out.append(values.begin(), values.end());
  return out;
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// gzip-compressed with zlib's gz API (as Debian's dataset-fashion-mnist ships its files).
inline void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("gzopen failed: " + path);
  if (!bytes.empty() && gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) !=
                            static_cast<int>(bytes.size())) {
    gzclose(f);
    throw std::runtime_error("gzwrite failed: " + path);
  }
  if (gzclose(f) != Z_OK) throw std::runtime_error("gzclose failed: " + path);
}

// Deterministic pseudo-random bytes (values below `bound`).
inline std::vector<std::uint8_t> pattern_bytes(std::size_t n, unsigned bound, unsigned seed = 1) {
  std::vector<std::uint8_t> v(n);
  std::uint32_t s = seed * 2654435761u + 12345u;
  for (auto& b : v) {
    s = s * 1664525u + 1013904223u;
    b = static_cast<std::uint8_t>((s >> 16) % bound);
  }
  return v;
}

// A small Fashion-MNIST-shaped data set (28x28 images, labels 0..9) in `dir`.
inline void write_fake_fashion_mnist(const std::string& dir, std::uint32_t train,
                                     std::uint32_t test, bool gzip = true) {
  auto put = [&](const std::string& name, const std::string& bytes) {
    if (gzip) {
      write_gzip(dir + "/" + name + ".gz", bytes);
    } else {
      write_bytes(dir + "/" + name, bytes);
    }
  };
  put("train-images-idx3-ubyte", idx_bytes({train, 28, 28}, pattern_bytes(train * 784u, 256, 1)));
  put("train-labels-idx1-ubyte", idx_bytes({train}, pattern_bytes(train, 10, 2)));
  put("t10k-images-idx3-ubyte", idx_bytes({test, 28, 28}, pattern_bytes(test * 784u, 256, 3)));
  put("t10k-labels-idx1-ubyte", idx_bytes({test}, pattern_bytes(test, 10, 4)));
}

inline constexpr const char* kRealFashionMnist = "/usr/share/datasets/fashion-mnist";

// Runs `f`, expects an IoError, and returns its message.
template <class F>
std::string io_error(F&& f) {
  try {
    f();
  } catch (const IoError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected IoError, got another exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected IoError, nothing was thrown";
  return {};
}

// f() must throw IoError with one line containing `needle`.
template <class F>
void expect_io_error(F&& f, const std::string& needle) {
  const std::string what = io_error(std::forward<F>(f));
  EXPECT_NE(what.find(needle), std::string::npos) << "message: " << what;
  EXPECT_EQ(what.find('\n'), std::string::npos) << "not one line: " << what;
}

// A string's bytes as the loaders' in-memory entry points take them.
inline std::span<const unsigned char> bytes_of(const std::string& s) {
  return {reinterpret_cast<const unsigned char*>(s.data()), s.size()};
}

}  // namespace bnorm::testing

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "message: " << (haystack)
