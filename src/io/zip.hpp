// Zip archives held in memory (the .keras and .npz containers), through libzip. Nothing is ever
// extracted to disk: members are decompressed into memory, one at a time, after their declared
// sizes passed the caps below.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

struct zip;         // libzip's archive handle (zip_t)
struct zip_source;  // libzip's data source (zip_source_t)

namespace bnorm::io::detail {

struct ZipLimits {
  std::uint64_t max_member_bytes = std::uint64_t{4} << 30;  // declared uncompressed size cap
  double max_ratio = 100.0;  // declared/compressed above this AND above 64 MiB -> refused (bomb)
  std::size_t max_members = 100000;
};

class ZipReader {
 public:
  // Parses the central directory of an archive held in memory (`bytes` must outlive the reader).
  // IoError "<context>..." for: not a zip, truncated, encrypted members, compression other than
  // stored/deflate, duplicate member names, too many members, bomb ratios, a member declared
  // larger than limits.max_member_bytes or than deflate can expand its compressed size to
  // (1032:1), so that read() never allocates more than ~1032 times the archive's size.
  ZipReader(std::span<const unsigned char> bytes, std::string context, ZipLimits limits = {});
  ~ZipReader();
  ZipReader(const ZipReader&) = delete;
  ZipReader& operator=(const ZipReader&) = delete;

  std::vector<std::string> names() const;  // in archive order
  bool has(const std::string& name) const;
  std::uint64_t declared_size(const std::string& name) const;  // IoError if absent
  // Decompresses one member into memory; refuses a member whose declared size exceeds max_bytes
  // BEFORE allocating, and checks the produced byte count equals the declared size and the CRC.
  std::vector<unsigned char> read(const std::string& name, std::uint64_t max_bytes) const;

 private:
  struct Member {
    std::string name;
    std::uint64_t index = 0;  // libzip's entry index
    std::uint64_t size = 0;   // declared uncompressed size
    std::uint64_t compressed_size = 0;
    std::uint32_t crc = 0;
  };
  const Member& member(const std::string& name) const;

  std::string context_;
  ZipLimits limits_;
  struct zip* archive_ = nullptr;
  std::vector<Member> members_;  // archive order
};

// One archive in memory with the members in the given order; `deflate` false = stored (as Keras
// writes .keras files), true = deflate. Member names must be relative, without ".." (ValueError
// otherwise), and unique. Timestamps are fixed (1980-01-01), so equal inputs give equal bytes.
std::string zip_archive(const std::vector<std::pair<std::string, std::string>>& members,
                        bool deflate = false);

}  // namespace bnorm::io::detail
