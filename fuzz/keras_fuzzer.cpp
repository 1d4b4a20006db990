// libFuzzer harness: Keras 3 .keras archives (zip + config.json + model.weights.h5) from memory.
// Any bnorm::Error is a correct refusal; anything else (a crash, another exception, a leak, an
// allocation beyond libFuzzer's -malloc_limit_mb) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "bnorm/core/error.hpp"
#include "io/keras/keras_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)bnorm::io::detail::keras::load_keras_bytes(std::span<const unsigned char>(data, size),
                                                     "fuzz: ");
  } catch (const bnorm::Error&) {
  }
  return 0;
}
