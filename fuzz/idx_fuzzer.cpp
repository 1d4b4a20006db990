// libFuzzer harness: IDX files (raw or gzip), read as images and as labels. The IDX reader takes
// a path, so the input is held in a memory-only file (memory_file.hpp).
// Any bnorm::Error is a correct refusal; anything else is a bug.
#include <cstddef>
#include <cstdint>

#include "bnorm/core/error.hpp"
#include "bnorm/io/idx.hpp"
#include "memory_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static MemoryFile file;
  const std::string& path = file.hold(data, size);
  try {
    (void)bnorm::io::read_idx_images(path);
  } catch (const bnorm::Error&) {
  }
  try {
    (void)bnorm::io::read_idx_labels(path);
  } catch (const bnorm::Error&) {
  }
  return 0;
}
