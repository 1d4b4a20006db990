// IDX reader (the MNIST file format): a 4-byte magic 0x00 0x00 <type> <rank>, <rank> big-endian
// u32 dimensions, then the values. zlib's gz* API reads gzip and raw files alike, so one code
// path serves both; the size checks below are what catch truncated or padded files.
#include "bnorm/io/idx.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"

namespace bnorm::io {

namespace {

constexpr unsigned char kUnsignedByteType = 0x08;
// Refuse headers that claim more than 4 GiB of values (Fashion-MNIST is 47 MB).
constexpr std::uint64_t kMaxValues = std::uint64_t{1} << 32;
// Deflate's largest possible expansion (a 258-byte match in about 2 bits): a gzip file of n bytes
// cannot hold more than ~1032 n bytes, so a header claiming more is refused before allocating.
constexpr std::uint64_t kMaxDeflateRatio = 1032;

std::string dims_str(const std::vector<std::uint64_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

struct GzCloser {
  void operator()(gzFile_s* f) const noexcept { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

class IdxReader {
 public:
  explicit IdxReader(std::string path) : path_(std::move(path)) {
    std::error_code ec;
    if (std::filesystem::is_directory(path_, ec)) fail("is a directory, not a file");
    // gzopen would block forever on a FIFO without a writer: anything that exists and is not a
    // regular file is refused first (stat does not open it).
    const auto status = std::filesystem::status(path_, ec);
    if (!ec && std::filesystem::exists(status) && !std::filesystem::is_regular_file(status)) {
      fail("not a regular file");
    }
    errno = 0;
    file_.reset(gzopen(path_.c_str(), "rb"));
    if (!file_)
      fail(std::string("cannot open (") + (errno ? std::strerror(errno) : "unknown error") + ")");
    gzbuffer(file_.get(), 1 << 17);
    file_bytes_ = std::filesystem::file_size(path_, ec);
    if (ec) file_bytes_ = std::numeric_limits<std::uint64_t>::max();
  }

  [[noreturn]] void fail(const std::string& problem) const {
    throw IoError("IDX file '" + path_ + "': " + problem);
  }

  // Reads up to `size` bytes; returns how many arrived (fewer only at end of data). A damaged
  // gzip stream (bad CRC, corrupt deflate data) is an error, not a short read.
  std::size_t read(unsigned char* out, std::size_t size) {
    std::size_t done = 0;
    while (done < size) {
      const std::size_t chunk = std::min<std::size_t>(size - done, 1u << 30);
      const int got = gzread(file_.get(), out + done, static_cast<unsigned>(chunk));
      if (got < 0) {
        int code = 0;
        const char* message = gzerror(file_.get(), &code);
        fail(std::string("corrupt data (") + (message ? message : "read error") + ")");
      }
      if (got == 0) {
        // zlib reports a gzip stream cut short as Z_BUF_ERROR; the caller names it truncation.
        int code = 0;
        gzerror(file_.get(), &code);
        if (code != Z_OK && code != Z_BUF_ERROR) {
          const char* message = gzerror(file_.get(), &code);
          fail(std::string("corrupt data (") + (message ? message : "read error") + ")");
        }
        break;
      }
      done += static_cast<std::size_t>(got);
    }
    return done;
  }

  // Reads and checks the header: magic (type 0x08 = unsigned byte, the expected rank), dims.
  std::vector<std::uint64_t> read_header(std::uint32_t expected_magic, const char* kind) {
    unsigned char magic[4];
    const std::size_t got = read(magic, 4);
    if (got < 4) {
      fail("truncated (" + std::to_string(got) + " bytes; an IDX header needs at least 4)");
    }
    const std::uint32_t value = (std::uint32_t{magic[0]} << 24) | (std::uint32_t{magic[1]} << 16) |
                                (std::uint32_t{magic[2]} << 8) | std::uint32_t{magic[3]};
    if (value != expected_magic) {
      std::string what = "bad magic number " + hex32(value) + " (expected " +
                         hex32(expected_magic) + " for an IDX " + kind + " file";
      if (magic[0] == 0 && magic[1] == 0 && magic[2] == kUnsignedByteType && magic[3] >= 1) {
        what += (magic[3] == 1 ? "; this looks like a labels file"
                               : (magic[3] == 3 ? "; this looks like an images file" : ""));
      } else if (magic[0] != 0 || magic[1] != 0) {
        what += "; this is not an IDX file";
      }
      fail(what + ")");
    }
    const int rank = magic[3];
    std::vector<std::uint64_t> dims(static_cast<std::size_t>(rank));
    for (int i = 0; i < rank; ++i) {
      unsigned char b[4];
      if (read(b, 4) < 4)
        fail("truncated header (expected " + std::to_string(rank) + " dimensions)");
      dims[static_cast<std::size_t>(i)] = (std::uint64_t{b[0]} << 24) |
                                          (std::uint64_t{b[1]} << 16) | (std::uint64_t{b[2]} << 8) |
                                          std::uint64_t{b[3]};
    }
    std::uint64_t total = 1;
    for (auto d : dims) {
      if (d == 0) fail("dimensions " + dims_str(dims) + " contain a zero; the file holds no data");
      if (total > kMaxValues / d) fail("dimensions " + dims_str(dims) + " are implausibly large");
      total *= d;
    }
    // The values must fit in the file before memory is allocated for them: exactly for a raw
    // file, within deflate's maximum ratio for a gzip one (gzdirect: 1 = not compressed).
    const std::uint64_t header_bytes = 4 + 4 * static_cast<std::uint64_t>(rank);
    const bool raw = gzdirect(file_.get()) == 1;
    const std::uint64_t room =
        raw ? (file_bytes_ >= header_bytes ? file_bytes_ - header_bytes : 0)
            : (file_bytes_ > kMaxValues ? kMaxValues : file_bytes_ * kMaxDeflateRatio);
    if (total > room) {
      const std::string what = std::string(" bytes of ") + (rank == 1 ? "labels" : "pixels");
      fail("truncated (dimensions " + dims_str(dims) + " need " + std::to_string(total) + what +
           (raw ? ", found " + std::to_string(room)
                : ", more than a " + std::to_string(file_bytes_) + "-byte gzip file can hold") +
           ")");
    }
    return dims;
  }

  // Reads exactly `count` bytes of values; the file must end right after them.
  // Reads exactly `count` bytes in chunks of at most 1 MiB, handing each to
  // consume(offset, bytes, n), then requires the end of the file. Chunks keep a data set from
  // being held as bytes and as floats at the same time (60000 images: 45 MiB + 180 MiB).
  template <class Consume>
  void read_values(std::uint64_t count, const std::vector<std::uint64_t>& dims, const char* what,
                   Consume&& consume) {
    std::vector<unsigned char> chunk(
        static_cast<std::size_t>(std::min<std::uint64_t>(count, 1u << 20)));
    std::uint64_t done = 0;
    while (done < count) {
      const auto want =
          static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), count - done));
      const std::size_t got = read(chunk.data(), want);
      consume(done, chunk.data(), got);
      done += got;
      if (got < want) {
        fail("truncated (dimensions " + dims_str(dims) + " need " + std::to_string(count) +
             " bytes of " + what + ", found " + std::to_string(done) + ")");
      }
    }
    unsigned char extra[4096];
    std::uint64_t trailing = 0;
    for (std::size_t n; (n = read(extra, sizeof extra)) > 0;) trailing += n;
    if (trailing > 0) {
      fail(std::to_string(trailing) + " unexpected bytes after the " + std::to_string(count) +
           " bytes of " + what + " that dimensions " + dims_str(dims) +
           " describe (count mismatch?)");
    }
  }

 private:
  std::string path_;
  GzFile file_;
  std::uint64_t file_bytes_ = 0;
};

}  // namespace

Tensor read_idx_images(const std::string& path) {
  IdxReader reader(path);
  const auto dims = reader.read_header(0x00000803u, "images");
  const std::uint64_t count = dims[0] * dims[1] * dims[2];
  Tensor images(Shape{static_cast<std::int64_t>(dims[0]), static_cast<std::int64_t>(dims[1]),
                      static_cast<std::int64_t>(dims[2])});
  float* out = images.data();
  reader.read_values(count, dims, "pixels",
                     [out](std::uint64_t at, const unsigned char* bytes, std::size_t n) {
                       for (std::size_t i = 0; i < n; ++i)
                         out[at + i] = static_cast<float>(bytes[i]) / 255.0f;
                     });
  return images;
}

Tensor read_idx_labels(const std::string& path) {
  IdxReader reader(path);
  const auto dims = reader.read_header(0x00000801u, "labels");
  Tensor labels(Shape{static_cast<std::int64_t>(dims[0])});
  float* out = labels.data();
  reader.read_values(dims[0], dims, "labels",
                     [out](std::uint64_t at, const unsigned char* bytes, std::size_t n) {
                       for (std::size_t i = 0; i < n; ++i)
                         out[at + i] = static_cast<float>(bytes[i]);
                     });
  return labels;
}

namespace {

constexpr int kFashionMnistClasses = 10;

std::string not_found(const std::string& dir, const std::string& why) {
  return "Fashion-MNIST not found in " + dir + " (" + why +
         "); install it with: apt-get install dataset-fashion-mnist, or pass --data DIR";
}

// "<dir>/<name>.gz" or "<dir>/<name>", whichever exists (gzip preferred, as Debian ships it).
std::string locate(const std::string& dir, const std::string& name) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& candidate : {name + ".gz", name}) {
    const fs::path p = fs::path(dir) / candidate;
    if (fs::exists(p, ec)) return p.string();
  }
  throw IoError(not_found(dir, "missing " + name + ".gz"));
}

void check_labels(const Tensor& labels, const std::string& path) {
  for (std::int64_t i = 0; i < labels.size(); ++i) {
    if (labels[i] >= static_cast<float>(kFashionMnistClasses)) {
      throw IoError("IDX file '" + path + "': label " +
                    std::to_string(static_cast<int>(labels[i])) + " at index " + std::to_string(i) +
                    " is outside the " + std::to_string(kFashionMnistClasses) +
                    " Fashion-MNIST classes (0..9)");
    }
  }
}

void load_split(const std::string& dir, const std::string& prefix, Tensor& x, Tensor& y) {
  const std::string images_path = locate(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = locate(dir, prefix + "-labels-idx1-ubyte");
  x = read_idx_images(images_path);
  y = read_idx_labels(labels_path);
  if (x.shape()[0] != y.shape()[0]) {
    throw IoError("Fashion-MNIST in " + dir + ": '" + images_path + "' holds " +
                  std::to_string(x.shape()[0]) + " images but '" + labels_path + "' holds " +
                  std::to_string(y.shape()[0]) + " labels (count mismatch)");
  }
  check_labels(y, labels_path);
}

}  // namespace

Dataset load_fashion_mnist(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    throw IoError(
        not_found(dir, std::filesystem::exists(dir, ec) ? "not a directory" : "no such directory"));
  }
  Dataset data;
  load_split(dir, "train", data.train_x, data.train_y);
  load_split(dir, "t10k", data.test_x, data.test_y);
  if (data.train_x.shape()[1] != data.test_x.shape()[1] ||
      data.train_x.shape()[2] != data.test_x.shape()[2]) {
    throw IoError("Fashion-MNIST in " + dir + ": training images are " +
                  std::to_string(data.train_x.shape()[1]) + "x" +
                  std::to_string(data.train_x.shape()[2]) + " but test images are " +
                  std::to_string(data.test_x.shape()[1]) + "x" +
                  std::to_string(data.test_x.shape()[2]));
  }
  return data;
}

}  // namespace bnorm::io
