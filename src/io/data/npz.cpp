// NumPy .npz files: a zip of .npy members named "<key>.npy" (np.savez stores them,
// np.savez_compressed deflates them), read from memory through ZipReader's caps.
#include <algorithm>
#include <string_view>

#include "bnorm/core/error.hpp"
#include "bnorm/io/data.hpp"
#include "io/files.hpp"
#include "io/zip.hpp"

namespace bnorm::io {

namespace {

// The whole archive is read into memory; 64 GiB bounds what a data set file can be.
constexpr std::uint64_t kMaxNpzBytes = std::uint64_t{64} << 30;

}  // namespace

std::map<std::string, NpyArray> read_npz_bytes(std::span<const unsigned char> bytes,
                                               const std::string& context,
                                               const std::vector<std::string>& wanted) {
  const detail::ZipLimits limits;
  const detail::ZipReader zip(bytes, context, limits);
  std::map<std::string, NpyArray> arrays;
  for (const auto& name : zip.names()) {
    constexpr std::string_view kSuffix = ".npy";
    if (name.size() <= kSuffix.size() ||
        name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) {
      throw IoError(context + "member '" + name +
                    "' is not a .npy array (an .npz holds only <name>.npy members)");
    }
    const std::string key = name.substr(0, name.size() - kSuffix.size());
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), key) == wanted.end()) continue;
    const std::vector<unsigned char> member = zip.read(name, limits.max_member_bytes);
    arrays.emplace(key, read_npy_bytes(member, context + "array '" + key + "': "));
  }
  return arrays;
}

std::map<std::string, NpyArray> read_npz(const std::string& path,
                                         const std::vector<std::string>& wanted) {
  const std::string context = "'" + path + "': ";
  const std::vector<unsigned char> bytes = detail::read_file(path, context, kMaxNpzBytes);
  return read_npz_bytes(bytes, context, wanted);
}

}  // namespace bnorm::io
