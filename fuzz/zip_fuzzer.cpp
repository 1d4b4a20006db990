// libFuzzer harness: zip archives in memory (the .npz and .keras container); every member is read
// (at most 64 MiB each), whatever its name. Any bnorm::Error is a correct refusal.
#include <cstddef>
#include <cstdint>
#include <span>

#include "bnorm/core/error.hpp"
#include "io/zip.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const bnorm::io::detail::ZipReader zip(std::span<const unsigned char>(data, size), "fuzz: ");
    for (const auto& name : zip.names()) {
      try {
        (void)zip.read(name, std::uint64_t{64} << 20);
      } catch (const bnorm::Error&) {
      }
    }
  } catch (const bnorm::Error&) {
  }
  return 0;
}
