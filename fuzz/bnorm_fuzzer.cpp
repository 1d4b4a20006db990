// libFuzzer harness: bnorm's own model files (.bnorm, docs/model-format.md). The loader takes a
// path, so the input is held in a memory-only file (memory_file.hpp). Each input is loaded as
// given, then with its last 4 bytes replaced by the CRC-32 of the rest: almost every mutation
// breaks the checksum, and the fixed-up copy lets the fuzzer reach the JSON and weight parsers.
// Any bnorm::Error is a correct refusal; anything else is a bug.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "memory_file.hpp"

namespace {

void load(MemoryFile& file, const std::uint8_t* data, std::size_t size) {
  try {
    (void)bnorm::io::load_native_model(file.hold(data, size));
  } catch (const bnorm::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static MemoryFile file;
  load(file, data, size);
  if (size >= 36) {
    std::vector<std::uint8_t> fixed(data, data + size);
    const auto crc = static_cast<std::uint32_t>(
        crc32(crc32(0L, Z_NULL, 0), fixed.data(), static_cast<uInt>(size - 4)));
    for (int i = 0; i < 4; ++i)
      fixed[size - 4 + static_cast<std::size_t>(i)] = (crc >> (8 * i)) & 0xFF;
    load(file, fixed.data(), size);
  }
  return 0;
}
