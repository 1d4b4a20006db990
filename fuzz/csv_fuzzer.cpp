// libFuzzer harness: CSV text, with the label as the last column and as a column named "y".
// Any bnorm::Error is a correct refusal; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "bnorm/core/error.hpp"
#include "bnorm/io/data.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const char* label : {"", "y"}) {
    try {
      (void)bnorm::io::read_csv_text(text, label, "fuzz: ");
    } catch (const bnorm::Error&) {
    }
  }
  return 0;
}
