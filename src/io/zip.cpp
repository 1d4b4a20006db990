// Zip archives in memory through libzip: a read-only buffer source for reading (libzip parses
// the central directory and, with ZIP_CHECKCONS, checks every local header against it), and a
// writable buffer source kept alive across zip_close for writing.
#include "io/zip.hpp"

#include <zip.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <unordered_set>

#include "bnorm/core/error.hpp"

namespace bnorm::io::detail {

namespace {

// Members above this size must also pass the compression-ratio test (a zip bomb declares a
// huge size for a few bytes of deflate data; small members with high ratios are harmless).
constexpr std::uint64_t kRatioCheckedAbove = std::uint64_t{64} << 20;
// Deflate's largest possible expansion (a 258-byte match coded in about 2 bits): a member that
// declares more than this times its compressed size is lying, whatever its size.
constexpr std::uint64_t kMaxDeflateRatio = 1032;
// Smallest central directory record (the fixed part of a central file header).
constexpr std::uint64_t kCentralHeaderBytes = 46;

std::string size_text(std::uint64_t bytes) { return std::to_string(bytes) + " bytes"; }

// libzip's error as text; zip_error_t owns a string buffer, so it is finalized here.
std::string error_text(zip_error_t* error) {
  std::string text;
  switch (zip_error_code_zip(error)) {
    case ZIP_ER_NOZIP:
      text = "not a zip archive";
      break;
    case ZIP_ER_INCONS:
      text = "inconsistent or truncated zip archive";
      break;
    case ZIP_ER_EXISTS:  // ZIP_CHECKCONS finds duplicates while reading the directory
      text = "a member name appears twice in the archive";
      break;
    case ZIP_ER_MEMORY:
      text = "out of memory";
      break;
    default:
      text = zip_error_strerror(error);
  }
  zip_error_fini(error);
  return text;
}

std::uint16_t le16(const unsigned char* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}

// The end-of-central-directory record's entry count, when it can be found, read before libzip
// sees the archive: libzip allocates its entry table from this count, so an archive that claims
// more members than the limit, or more than its central directory could hold, is refused first.
// (Zip64 archives declare 0xFFFF here; their 64-bit count is checked by libzip against the
// central directory's size, and the member count is checked again after opening.)
void precheck_entry_count(std::span<const unsigned char> bytes, std::size_t max_members,
                          const std::string& context) {
  constexpr std::size_t kEocdBytes = 22;
  if (bytes.size() < kEocdBytes) {
    throw IoError(context + "not a zip archive (" + size_text(bytes.size()) +
                  "; a zip archive has at least 22)");
  }
  // The record sits within the last 22 + 65535 (comment) bytes.
  const std::size_t lowest =
      bytes.size() > kEocdBytes + 0xFFFF ? bytes.size() - kEocdBytes - 0xFFFF : 0;
  for (std::size_t at = bytes.size() - kEocdBytes + 1; at-- > lowest;) {
    const unsigned char* p = bytes.data() + at;
    if (p[0] != 'P' || p[1] != 'K' || p[2] != 5 || p[3] != 6) continue;
    const std::uint16_t entries = le16(p + 10);
    const std::uint64_t cdir_size =
        std::uint64_t{le16(p + 12)} | (std::uint64_t{le16(p + 14)} << 16);
    if (entries == 0xFFFF || cdir_size == 0xFFFFFFFFu) return;  // zip64: libzip checks it
    if (entries > max_members) {
      throw IoError(context + "the archive declares " + std::to_string(entries) +
                    " members; at most " + std::to_string(max_members) + " are accepted");
    }
    if (entries * kCentralHeaderBytes > cdir_size) {
      throw IoError(context + "inconsistent zip archive (" + std::to_string(entries) +
                    " members cannot fit a central directory of " + size_text(cdir_size) + ")");
    }
    return;
  }
  // No record found: libzip reports "not a zip archive".
}

struct ArchiveCloser {
  void operator()(zip_t* archive) const noexcept { zip_discard(archive); }
};
struct FileCloser {
  void operator()(zip_file_t* file) const noexcept { zip_fclose(file); }
};
struct SourceFree {
  void operator()(zip_source_t* source) const noexcept { zip_source_free(source); }
};

}  // namespace

ZipReader::ZipReader(std::span<const unsigned char> bytes, std::string context, ZipLimits limits)
    : context_(std::move(context)), limits_(limits) {
  precheck_entry_count(bytes, limits_.max_members, context_);
  zip_error_t error;
  zip_error_init(&error);
  // A zero-length buffer needs a non-null pointer for libzip; the precheck refused it anyway.
  zip_source_t* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (!source) throw IoError(context_ + "cannot read the archive (" + error_text(&error) + ")");
  archive_ = zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error);
  if (!archive_) {
    zip_source_free(source);  // zip_open_from_source took no reference on failure
    throw IoError(context_ + error_text(&error));
  }
  zip_error_fini(&error);
  // From here the archive owns the source; a throw below must discard the archive.
  std::unique_ptr<zip_t, ArchiveCloser> guard(archive_);

  const zip_int64_t count = zip_get_num_entries(archive_, 0);
  if (count < 0 || static_cast<std::uint64_t>(count) > limits_.max_members) {
    throw IoError(context_ + "the archive holds " + std::to_string(count) + " members; at most " +
                  std::to_string(limits_.max_members) + " are accepted");
  }
  std::unordered_set<std::string> seen;
  members_.reserve(static_cast<std::size_t>(count));
  for (zip_int64_t i = 0; i < count; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(archive_, static_cast<zip_uint64_t>(i), 0, &st) != 0 ||
        !(st.valid & ZIP_STAT_NAME) || !(st.valid & ZIP_STAT_SIZE) ||
        !(st.valid & ZIP_STAT_COMP_SIZE) || !(st.valid & ZIP_STAT_COMP_METHOD) ||
        !(st.valid & ZIP_STAT_CRC)) {
      throw IoError(context_ + "member " + std::to_string(i) +
                    " has an unreadable directory entry (" + zip_strerror(archive_) + ")");
    }
    Member m;
    m.name = st.name;
    m.index = static_cast<std::uint64_t>(i);
    m.size = st.size;
    m.compressed_size = st.comp_size;
    m.crc = st.crc;
    const std::string what = context_ + "member '" + m.name + "' ";
    if ((st.valid & ZIP_STAT_ENCRYPTION_METHOD) && st.encryption_method != ZIP_EM_NONE) {
      throw IoError(what + "is encrypted; encrypted archives are not supported");
    }
    if (st.comp_method != ZIP_CM_STORE && st.comp_method != ZIP_CM_DEFLATE) {
      throw IoError(what + "uses compression method " + std::to_string(st.comp_method) +
                    "; only stored (0) and deflate (8) are supported");
    }
    if (st.comp_method == ZIP_CM_STORE && m.size != m.compressed_size) {
      throw IoError(what + "is stored uncompressed but declares " + size_text(m.size) +
                    " of data in " + size_text(m.compressed_size) + " (inconsistent archive)");
    }
    if (m.compressed_size > bytes.size()) {
      throw IoError(what + "declares " + size_text(m.compressed_size) +
                    " of compressed data in a " + size_text(bytes.size()) +
                    " archive (inconsistent or truncated archive)");
    }
    if (m.size > limits_.max_member_bytes) {
      throw IoError(what + "declares " + size_text(m.size) + "; at most " +
                    size_text(limits_.max_member_bytes) + " are accepted");
    }
    if (m.size > kRatioCheckedAbove &&
        static_cast<double>(m.size) > limits_.max_ratio * static_cast<double>(m.compressed_size)) {
      throw IoError(what + "declares " + size_text(m.size) + " from " +
                    size_text(m.compressed_size) + " of compressed data (ratio above " +
                    std::to_string(static_cast<int>(limits_.max_ratio)) +
                    "): refused as a zip bomb");
    }
    if (m.size / kMaxDeflateRatio > m.compressed_size) {
      throw IoError(what + "declares " + size_text(m.size) + " from " +
                    size_text(m.compressed_size) +
                    " of compressed data, more than deflate can produce (inconsistent archive)");
    }
    if (!seen.insert(m.name).second) {
      throw IoError(context_ + "member name '" + m.name + "' appears twice in the archive");
    }
    members_.push_back(std::move(m));
  }
  guard.release();
}

ZipReader::~ZipReader() {
  if (archive_) zip_discard(archive_);
}

std::vector<std::string> ZipReader::names() const {
  std::vector<std::string> out;
  out.reserve(members_.size());
  for (const auto& m : members_) out.push_back(m.name);
  return out;
}

bool ZipReader::has(const std::string& name) const {
  return std::any_of(members_.begin(), members_.end(),
                     [&](const Member& m) { return m.name == name; });
}

const ZipReader::Member& ZipReader::member(const std::string& name) const {
  for (const auto& m : members_) {
    if (m.name == name) return m;
  }
  throw IoError(context_ + "the archive has no member '" + name + "'");
}

std::uint64_t ZipReader::declared_size(const std::string& name) const { return member(name).size; }

std::vector<unsigned char> ZipReader::read(const std::string& name, std::uint64_t max_bytes) const {
  const Member& m = member(name);
  const std::string what = context_ + "member '" + name + "' ";
  if (m.size > max_bytes) {
    throw IoError(what + "declares " + size_text(m.size) + "; at most " + size_text(max_bytes) +
                  " are accepted");
  }
  std::unique_ptr<zip_file_t, FileCloser> file(zip_fopen_index(archive_, m.index, 0));
  if (!file) throw IoError(what + "cannot be opened (" + zip_strerror(archive_) + ")");
  std::vector<unsigned char> out(static_cast<std::size_t>(m.size));
  std::uint64_t done = 0;
  while (done < m.size) {
    const zip_int64_t got = zip_fread(file.get(), out.data() + done, m.size - done);
    if (got < 0) {
      throw IoError(what + "is corrupt (" + zip_file_strerror(file.get()) + ")");
    }
    if (got == 0) break;
    done += static_cast<std::uint64_t>(got);
  }
  if (done != m.size) {
    throw IoError(what + "is truncated (declares " + size_text(m.size) + ", holds " +
                  size_text(done) + ")");
  }
  unsigned char extra = 0;
  const zip_int64_t more = zip_fread(file.get(), &extra, 1);
  if (more != 0) {
    throw IoError(what + (more < 0
                              ? std::string("is corrupt (") + zip_file_strerror(file.get()) + ")"
                              : "holds more data than the " + size_text(m.size) + " it declares"));
  }
  // libzip checks the CRC at the end of the data too; this check does not depend on it.
  uLong crc = crc32(0L, Z_NULL, 0);
  for (std::uint64_t at = 0; at < m.size;) {
    const auto chunk = static_cast<uInt>(std::min<std::uint64_t>(m.size - at, 1u << 30));
    crc = crc32(crc, out.data() + at, chunk);
    at += chunk;
  }
  if (static_cast<std::uint32_t>(crc) != m.crc) {
    throw IoError(what + "fails its CRC-32 check (corrupt data)");
  }
  return out;
}

namespace {

void check_member_name(const std::string& name) {
  bool dotdot = false;
  std::size_t start = 0;
  while (start <= name.size()) {
    const std::size_t end = std::min(name.find('/', start), name.size());
    if (name.compare(start, end - start, "..") == 0) dotdot = true;
    start = end + 1;
  }
  if (name.empty() || name.front() == '/' || name.find('\\') != std::string::npos ||
      name.find('\0') != std::string::npos || dotdot) {
    throw ValueError("zip member name '" + name +
                     "' must be a non-empty relative path without '..' or backslashes");
  }
}

}  // namespace

std::string zip_archive(const std::vector<std::pair<std::string, std::string>>& members,
                        bool deflate) {
  std::unordered_set<std::string> seen;
  for (const auto& [name, data] : members) {
    check_member_name(name);
    if (!seen.insert(name).second) {
      throw ValueError("zip member name '" + name + "' is given twice");
    }
  }
  if (members.empty()) {
    // libzip removes an archive left empty instead of writing one; this is the empty zip.
    return std::string("PK\x05\x06", 4) + std::string(18, '\0');
  }
  zip_error_t error;
  zip_error_init(&error);
  std::unique_ptr<zip_source_t, SourceFree> buffer(zip_source_buffer_create(nullptr, 0, 0, &error));
  if (!buffer) throw IoError("cannot create a zip archive (" + error_text(&error) + ")");
  zip_source_keep(buffer.get());  // the archive's reference; ours stays for reading the result
  zip_t* archive = zip_open_from_source(buffer.get(), ZIP_TRUNCATE, &error);
  if (!archive) {
    zip_source_free(buffer.get());  // drop the archive's reference, which it did not take
    throw IoError("cannot create a zip archive (" + error_text(&error) + ")");
  }
  zip_error_fini(&error);
  std::unique_ptr<zip_t, ArchiveCloser> guard(archive);
  auto fail = [&](const std::string& doing) {
    throw IoError("cannot create a zip archive: " + doing + " (" + zip_strerror(archive) + ")");
  };
  // 1980-01-01 12:00 UTC: the first date zip can express, whatever the local time zone.
  constexpr time_t kFixedTime = 315576000;
  for (const auto& [name, data] : members) {
    zip_source_t* member = zip_source_buffer(archive, data.data(), data.size(), 0);
    if (!member) fail("member '" + name + "'");
    const zip_int64_t index = zip_file_add(archive, name.c_str(), member, ZIP_FL_ENC_UTF_8);
    if (index < 0) {
      zip_source_free(member);
      fail("member '" + name + "'");
    }
    const auto at = static_cast<zip_uint64_t>(index);
    if (zip_set_file_compression(archive, at, deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0) != 0 ||
        zip_file_set_mtime(archive, at, kFixedTime, 0) != 0) {
      fail("member '" + name + "'");
    }
  }
  if (zip_close(archive) != 0) fail("writing the archive");
  guard.release();  // zip_close freed it

  zip_source_t* source = buffer.get();
  if (zip_source_open(source) != 0) {
    throw IoError("cannot read back the zip archive (" +
                  std::string(zip_error_strerror(zip_source_error(source))) + ")");
  }
  std::string out;
  char chunk[1 << 16];
  for (;;) {
    const zip_int64_t got = zip_source_read(source, chunk, sizeof chunk);
    if (got < 0) {
      zip_source_close(source);
      throw IoError("cannot read back the zip archive (" +
                    std::string(zip_error_strerror(zip_source_error(source))) + ")");
    }
    if (got == 0) break;
    out.append(chunk, static_cast<std::size_t>(got));
  }
  zip_source_close(source);
  return out;
}

}  // namespace bnorm::io::detail
