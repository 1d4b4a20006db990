// bnorm/core/isa.hpp — which SIMD instruction set the kernels run on.
//
// The batch-norm kernels are compiled once per instruction set (Google Highway) and the best
// one this CPU supports is chosen at startup. The environment variable BNORM_ISA (or set_isa)
// forces another, for tests, debugging and benchmarks. Names: "avx512", "avx2", "sse4",
// "ssse3", "scalar" (portable code without SIMD intrinsics).
#pragma once

#include <string>
#include <vector>

namespace bnorm {

// The instruction sets compiled in that this CPU supports, best first.
std::vector<std::string> available_isas();
// The one the kernels use now.
std::string active_isa();
// Switches the kernels to `name` ("best" = the default choice). ValueError naming the
// available ones when `name` is not among them. Not thread-safe with kernels running.
void set_isa(const std::string& name);
// Applies BNORM_ISA if set (ValueError when its value is not available); done lazily by the
// kernels too, which then fall back to the best set with one warning line on stderr.
void apply_isa_environment();

namespace detail {
// Called by every kernel entry point: applies BNORM_ISA once. Never throws.
void ensure_isa_selected() noexcept;
}  // namespace detail

}  // namespace bnorm
