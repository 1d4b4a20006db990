#include "bnorm/core/denormal.hpp"

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define BNORM_HAS_MXCSR 1
#endif

namespace bnorm {

#ifdef BNORM_HAS_MXCSR
namespace {
constexpr unsigned kFlushToZero = 0x8000;     // MXCSR.FTZ: denormal results become 0
constexpr unsigned kDenormalsAreZero = 0x40;  // MXCSR.DAZ: denormal inputs read as 0
}  // namespace

ScopedFlushDenormal::ScopedFlushDenormal() noexcept : saved_(_mm_getcsr()) {
  _mm_setcsr(saved_ | kFlushToZero | kDenormalsAreZero);
}
ScopedFlushDenormal::~ScopedFlushDenormal() { _mm_setcsr(saved_); }
bool flushing_denormals() noexcept {
  return (_mm_getcsr() & (kFlushToZero | kDenormalsAreZero)) == (kFlushToZero | kDenormalsAreZero);
}
#else
ScopedFlushDenormal::ScopedFlushDenormal() noexcept {}
ScopedFlushDenormal::~ScopedFlushDenormal() {}
bool flushing_denormals() noexcept { return false; }
#endif

}  // namespace bnorm
