// Instruction-set choice for Highway's dynamic dispatch (see bnorm/core/isa.hpp).
// Compiled with the same HWY_COMPILE_ALL_ATTAINABLE as kernels/batch_norm_simd.cpp, so
// HWY_TARGETS here is exactly the set of instruction sets the kernels were built for.
#include "bnorm/core/isa.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "bnorm/core/error.hpp"
#include "hwy/highway.h"
#include "hwy/targets.h"

namespace bnorm {

namespace {

const char* isa_name(std::int64_t target) {
  switch (target) {
    case HWY_AVX3_DL:
    case HWY_AVX3:
      return "avx512";
    case HWY_AVX2:
      return "avx2";
    case HWY_SSE4:
      return "sse4";
    case HWY_SSSE3:
      return "ssse3";
    case HWY_EMU128:
    case HWY_SCALAR:
      return "scalar";
    default:
      return hwy::TargetName(target);
  }
}

// Compiled-in targets the CPU supports, best first (lower bit = better in Highway).
std::vector<std::int64_t> targets() {
  hwy::SetSupportedTargetsForTest(0);  // the real CPU, not a previous choice
  std::vector<std::int64_t> out = hwy::SupportedAndGeneratedTargets();
  return out;
}

std::int64_t g_forced = 0;  // 0: the best supported target

void choose(std::int64_t target) {
  g_forced = target;
  hwy::SetSupportedTargetsForTest(target);
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
}

void choose_best() {
  g_forced = 0;
  hwy::SetSupportedTargetsForTest(0);
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

std::once_flag g_env_once;

}  // namespace

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (const std::int64_t t : targets()) {
    const std::string n = isa_name(t);
    if (names.empty() || names.back() != n) names.push_back(n);
  }
  // targets() cleared any forced choice to enumerate: restore what the kernels use.
  g_forced ? choose(g_forced) : choose_best();
  return names;
}

std::string active_isa() {
  detail::ensure_isa_selected();
  if (g_forced) return isa_name(g_forced);
  const std::vector<std::int64_t> ts = targets();
  return ts.empty() ? "scalar" : isa_name(ts.front());
}

void set_isa(const std::string& name) {
  std::call_once(g_env_once, [] {});  // an explicit choice wins over BNORM_ISA from now on
  const std::vector<std::int64_t> ts = targets();
  const std::int64_t previous = g_forced;
  if (name == "best") return choose_best();
  for (const std::int64_t t : ts) {
    if (name == isa_name(t)) return choose(t);
  }
  previous ? choose(previous) : choose_best();
  std::vector<std::string> names;
  for (const std::int64_t t : ts) names.emplace_back(isa_name(t));
  throw ValueError("instruction set '" + name + "' is not available here; choose one of: best, " +
                   joined(names));
}

void apply_isa_environment() {
  const char* env = std::getenv("BNORM_ISA");
  if (env == nullptr || *env == '\0') return;
  try {
    set_isa(env);
  } catch (const ValueError& e) {
    throw ValueError(std::string("BNORM_ISA: ") + e.what());
  }
}

namespace detail {
void ensure_isa_selected() noexcept {
  std::call_once(g_env_once, [] {
    const char* env = std::getenv("BNORM_ISA");
    if (env == nullptr || *env == '\0') return;
    const std::vector<std::int64_t> ts = targets();
    for (const std::int64_t t : ts) {
      if (std::string(env) == isa_name(t)) return choose(t);
    }
    choose_best();
    std::fprintf(stderr, "bnorm: BNORM_ISA=%s is not available here; using %s\n", env,
                 ts.empty() ? "scalar" : isa_name(ts.front()));
  });
}
}  // namespace detail

}  // namespace bnorm
