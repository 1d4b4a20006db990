// libFuzzer harness: the model spec parser (`bnorm train --model "dense64-relu,bn,..."`). The input
// is the spec text; layers are created (every option validated) but not built, so the harness
// fuzzes the parser and the layers' option checks without allocating weights (building is
// bounded by the weight memory limit, tested in tests/model/spec_test.cpp). A bnorm::Error is a
// correct refusal; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "bnorm/core/error.hpp"
#include "bnorm/model/sequential.hpp"
#include "bnorm/model/spec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string spec(reinterpret_cast<const char*>(data), size);
  try {
    bnorm::Sequential model(1);
    bnorm::add_layers_from_spec(model, spec);
    (void)model.size();
  } catch (const bnorm::Error&) {
  }
  return 0;
}
