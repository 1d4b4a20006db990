// Zip archives in memory: round trips (stored and deflate), and hostile archives built by
// patching real ones (bombs, lying sizes, duplicate names, encryption, other methods, truncation).
#include "io/zip.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/core/error.hpp"
#include "io/test_files.hpp"

namespace {

using bnorm::IoError;
using bnorm::ValueError;
using bnorm::io::detail::zip_archive;
using bnorm::io::detail::ZipLimits;
using bnorm::io::detail::ZipReader;
using bnorm::testing::bytes_of;
using bnorm::testing::expect_io_error;

std::string text_of(const std::vector<unsigned char>& v) { return {v.begin(), v.end()}; }

void put32(std::string& s, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) s[at + static_cast<std::size_t>(i)] = static_cast<char>(v >> (8 * i));
}
void put16(std::string& s, std::size_t at, std::uint16_t v) {
  s[at] = static_cast<char>(v & 0xFF);
  s[at + 1] = static_cast<char>(v >> 8);
}

// Offsets of every local ("PK\3\4") or central ("PK\1\2") file header.
std::vector<std::size_t> headers(const std::string& zip, char kind) {
  std::vector<std::size_t> at;
  const std::string sig = std::string("PK") + kind + static_cast<char>(kind + 1);
  for (std::size_t p = zip.find(sig); p != std::string::npos; p = zip.find(sig, p + 1))
    at.push_back(p);
  return at;
}
// Field offsets within the two header kinds (APPNOTE 4.3.7 and 4.3.12).
constexpr std::size_t kLocalFlags = 6, kLocalMethod = 8, kLocalUsize = 22, kLocalName = 30;
constexpr std::size_t kCentralFlags = 8, kCentralMethod = 10, kCentralUsize = 24, kCentralName = 46;

std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  std::uint32_t x = seed * 2654435761u + 1u;
  for (auto& c : s) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

const std::vector<std::pair<std::string, std::string>> kMembers = {
    {"config.json", R"({"class_name": "Sequential"})"},
    {"empty.bin", ""},
    {"dir/weights.bin", pattern(5000, 3)},
    {"zeros.bin", std::string(20000, '\0')}};

void expect_round_trip(bool deflate) {
  const std::string zip = zip_archive(kMembers, deflate);
  const ZipReader reader(bytes_of(zip), "test: ");
  std::vector<std::string> expected_names;
  for (const auto& [name, data] : kMembers) expected_names.push_back(name);
  EXPECT_EQ(reader.names(), expected_names);
  for (const auto& [name, data] : kMembers) {
    EXPECT_TRUE(reader.has(name));
    EXPECT_EQ(reader.declared_size(name), data.size());
    EXPECT_EQ(text_of(reader.read(name, data.size())), data) << name;
  }
  EXPECT_FALSE(reader.has("missing"));
  expect_io_error([&] { (void)reader.declared_size("missing"); }, "no member 'missing'");
  expect_io_error([&] { (void)reader.read("missing", 10); }, "no member 'missing'");
}

TEST(Zip, RoundTripStored) {
  expect_round_trip(false);
  // Stored: every member's bytes appear verbatim in the archive (Keras's own layout).
  const std::string zip = zip_archive(kMembers, false);
  EXPECT_NE(zip.find(kMembers[2].second), std::string::npos);
  EXPECT_GT(zip.size(), 25000u);
}

TEST(Zip, RoundTripDeflate) {
  expect_round_trip(true);
  const std::string zip = zip_archive(kMembers, true);
  // 20000 zeros compress to almost nothing (libzip stores the random member when deflate
  // would enlarge it, as zipfile may too).
  EXPECT_LT(zip.size(), 6000u);
}

TEST(Zip, SameInputSameBytes) {
  EXPECT_EQ(zip_archive(kMembers, true), zip_archive(kMembers, true));
}

TEST(Zip, EmptyArchive) {
  const std::string zip = zip_archive({});
  const ZipReader reader(bytes_of(zip), "test: ");
  EXPECT_TRUE(reader.names().empty());
}

TEST(Zip, WriterRefusesBadNames) {
  for (const std::string name : {"../evil", "/abs", "a/../b", "a\\b", "", "a/.."}) {
    EXPECT_THROW((void)zip_archive({{name, "x"}}), ValueError) << name;
  }
  EXPECT_THROW((void)zip_archive({{"a", "x"}, {"a", "y"}}), ValueError);
  EXPECT_NO_THROW((void)zip_archive({{"a/..b/c.txt", "x"}}));  // ".." only as a whole component
}

TEST(Zip, ReadCapIsCheckedBeforeReading) {
  const std::string zip = zip_archive(kMembers, true);
  const ZipReader reader(bytes_of(zip), "test: ");
  expect_io_error([&] { (void)reader.read("zeros.bin", 19999); }, "at most 19999 bytes");
}

TEST(Zip, NotAZip) {
  const std::string text = "this is plainly not a zip archive, just some text bytes";
  expect_io_error([&] { ZipReader r(bytes_of(text), "x.npz: "); }, "x.npz: not a zip archive");
  expect_io_error([&] { ZipReader r(bytes_of(std::string("PK")), "x: "); }, "not a zip archive");
  expect_io_error([&] { ZipReader r(std::span<const unsigned char>(), "x: "); },
                  "not a zip archive");
}

TEST(Zip, EveryTruncationIsRefused) {
  for (bool deflate : {false, true}) {
    const std::string zip = zip_archive(kMembers, deflate);
    for (std::size_t n = 0; n < zip.size(); n += (n < 200 || zip.size() - n < 200) ? 1 : 97) {
      const std::string cut = zip.substr(0, n);
      bool refused = false;
      try {
        const ZipReader reader(bytes_of(cut), "cut: ");
        for (const auto& name : reader.names()) (void)reader.read(name, 1 << 20);
      } catch (const IoError&) {
        refused = true;
      }
      EXPECT_TRUE(refused) << "an archive cut to " << n << " of " << zip.size()
                           << " bytes was accepted";
    }
  }
}

// A real deflate archive of 8 MiB of zeros (a few KiB compressed) whose directory then claims
// 3 GiB: refused from the directory alone, before anything is inflated.
TEST(Zip, BombRatioRefused) {
  std::string zip = zip_archive({{"bomb.npy", std::string(std::size_t{8} << 20, '\0')}}, true);
  ASSERT_LT(zip.size(), 100000u);
  for (auto at : headers(zip, '\1')) put32(zip, at + kCentralUsize, 3u << 30);
  for (auto at : headers(zip, '\3')) put32(zip, at + kLocalUsize, 3u << 30);
  expect_io_error([&] { ZipReader r(bytes_of(zip), "bomb.npz: "); }, "zip bomb");
}

// A small member claiming more than deflate's 1032:1 can produce is refused before its buffer is
// allocated, even below the 64 MiB ratio threshold.
TEST(Zip, SizeBeyondDeflatesRatioRefused) {
  std::string zip = zip_archive({{"a.bin", std::string(1000, 'a')}}, true);
  for (auto at : headers(zip, '\1')) put32(zip, at + kCentralUsize, 50u << 20);
  for (auto at : headers(zip, '\3')) put32(zip, at + kLocalUsize, 50u << 20);
  expect_io_error([&] { ZipReader r(bytes_of(zip), "test: "); }, "more than deflate can produce");
}

TEST(Zip, HighRatioBelow64MiBIsAccepted) {
  // 8 MiB of zeros compresses ~1000:1 but is small: real data, not a bomb.
  const std::string data(std::size_t{8} << 20, '\0');
  const std::string zip = zip_archive({{"zeros", data}}, true);
  const ZipReader reader(bytes_of(zip), "test: ");
  EXPECT_EQ(reader.read("zeros", data.size()).size(), data.size());
}

TEST(Zip, MemberSizeCap) {
  const std::string zip = zip_archive(kMembers, false);
  ZipLimits limits;
  limits.max_member_bytes = 10000;
  expect_io_error([&] { ZipReader r(bytes_of(zip), "test: ", limits); },
                  "member 'zeros.bin' declares 20000 bytes; at most 10000");
}

TEST(Zip, TooManyMembers) {
  const std::string zip = zip_archive(kMembers, false);
  ZipLimits limits;
  limits.max_members = 3;
  expect_io_error([&] { ZipReader r(bytes_of(zip), "test: ", limits); }, "at most 3");
}

TEST(Zip, DuplicateNamesRefused) {
  std::string zip = zip_archive({{"a.npy", "first"}, {"b.npy", "second"}}, false);
  // Rename b.npy to a.npy in both its local and central header.
  for (auto at : headers(zip, '\3'))
    if (zip[at + kLocalName] == 'b') zip[at + kLocalName] = 'a';
  for (auto at : headers(zip, '\1'))
    if (zip[at + kCentralName] == 'b') zip[at + kCentralName] = 'a';
  expect_io_error([&] { ZipReader r(bytes_of(zip), "test: "); }, "appears twice");
}

TEST(Zip, EncryptedMemberRefused) {
  std::string zip = zip_archive({{"a.npy", "secret"}}, false);
  for (auto at : headers(zip, '\3')) zip[at + kLocalFlags] |= 1;
  for (auto at : headers(zip, '\1')) zip[at + kCentralFlags] |= 1;
  expect_io_error([&] { ZipReader r(bytes_of(zip), "test: "); }, "encrypted");
}

TEST(Zip, OtherCompressionRefused) {
  std::string zip = zip_archive({{"a.npy", pattern(100, 1)}}, true);
  for (auto at : headers(zip, '\3')) put16(zip, at + kLocalMethod, 12);  // bzip2
  for (auto at : headers(zip, '\1')) put16(zip, at + kCentralMethod, 12);
  expect_io_error([&] { ZipReader r(bytes_of(zip), "test: "); }, "compression method 12");
}

TEST(Zip, CorruptStoredDataFailsCrc) {
  const std::string data = pattern(300, 9);
  std::string zip = zip_archive({{"a.bin", data}}, false);
  const std::size_t at = zip.find(data);
  ASSERT_NE(at, std::string::npos);
  zip[at + 150] = static_cast<char>(zip[at + 150] ^ 0x40);
  const ZipReader reader(bytes_of(zip), "test: ");
  expect_io_error([&] { (void)reader.read("a.bin", 1000); }, "member 'a.bin'");
}

// A deflate member of 4000 bytes whose directory and local header declare `declared` bytes
// instead: whether reading it is refused.
bool lying_size_refused(std::uint32_t declared, int seed) {
  std::string zip = zip_archive({{"a.bin", pattern(4000, seed)}}, true);
  for (auto at : headers(zip, '\1')) put32(zip, at + kCentralUsize, declared);
  for (auto at : headers(zip, '\3')) put32(zip, at + kLocalUsize, declared);
  try {
    const ZipReader reader(bytes_of(zip), "test: ");
    (void)reader.read("a.bin", 1 << 20);
  } catch (const IoError&) {
    return true;
  }
  return false;
}

// Understated: the data inflates to more bytes than declared (never written past the buffer).
TEST(Zip, UnderstatedSizeRefused) { EXPECT_TRUE(lying_size_refused(1000, 5)); }

// Overstated: the inflated data ends early (truncated).
TEST(Zip, OverstatedSizeRefused) { EXPECT_TRUE(lying_size_refused(9000, 6)); }

}  // namespace
