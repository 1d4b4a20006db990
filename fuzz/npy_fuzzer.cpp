// libFuzzer harness: .npy files from memory, then their conversion to features and labels.
// Any bnorm::Error is a correct refusal; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "bnorm/core/error.hpp"
#include "bnorm/io/data.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const bnorm::io::NpyArray array =
        bnorm::io::read_npy_bytes(std::span<const unsigned char>(data, size), "fuzz: ");
    try {
      (void)bnorm::io::npy_features(array, "fuzz", bnorm::io::Rescale::uint8_unit);
    } catch (const bnorm::Error&) {
    }
    (void)bnorm::io::npy_labels(array, "fuzz");
  } catch (const bnorm::Error&) {
  }
  return 0;
}
