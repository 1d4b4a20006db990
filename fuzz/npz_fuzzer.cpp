// libFuzzer harness: .npz archives from memory (zip + .npy members).
// Any bnorm::Error is a correct refusal; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "bnorm/core/error.hpp"
#include "bnorm/io/data.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)bnorm::io::read_npz_bytes(std::span<const unsigned char>(data, size), "fuzz: ");
  } catch (const bnorm::Error&) {
  }
  return 0;
}
