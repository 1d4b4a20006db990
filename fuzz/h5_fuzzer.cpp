// libFuzzer harness: legacy Keras HDF5 model files (model_config + model_weights) from memory.
// Any bnorm::Error is a correct refusal; anything else is a bug (see keras_fuzzer.cpp).
#include <cstddef>
#include <cstdint>
#include <span>

#include "bnorm/core/error.hpp"
#include "io/keras/keras_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)bnorm::io::detail::keras::load_h5_bytes(std::span<const unsigned char>(data, size),
                                                  "fuzz: ");
  } catch (const bnorm::Error&) {
  }
  return 0;
}
