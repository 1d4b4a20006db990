// tests/support/replaced_operator_new.hpp — replaces the global operator new/delete (every form)
// for one test executable, so the test can watch or refuse the C++ allocations the code under
// test makes. Include it in exactly one source file of the executable, after defining
//
//   namespace bnorm::testing { bool allow_allocation(std::size_t size); }
//
// which is called before every operator new: true allocates (malloc / posix_memalign), false
// refuses (std::bad_alloc, or nullptr for the nothrow forms) without allocating anything.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace bnorm::testing {
bool allow_allocation(std::size_t size);

namespace replaced_new {
inline void* allocate(std::size_t size, std::size_t alignment) {
  if (!allow_allocation(size)) return nullptr;
  if (size == 0) size = 1;
  void* p = nullptr;
  if (alignment <= alignof(std::max_align_t)) return std::malloc(size);
  if (posix_memalign(&p, alignment, size) != 0) return nullptr;
  return p;
}
// Not inlined: GCC would otherwise pair the free with an inlined operator new and warn
// (-Wmismatched-new-delete) although both sides are this file's malloc/free.
[[gnu::noinline]] inline void release(void* p) noexcept { std::free(p); }
}  // namespace replaced_new
}  // namespace bnorm::testing

void* operator new(std::size_t n) {
  if (void* p = bnorm::testing::replaced_new::allocate(n, 0)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = bnorm::testing::replaced_new::allocate(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return bnorm::testing::replaced_new::allocate(n, 0);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return bnorm::testing::replaced_new::allocate(n, 0);
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return bnorm::testing::replaced_new::allocate(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return bnorm::testing::replaced_new::allocate(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { bnorm::testing::replaced_new::release(p); }
void operator delete[](void* p) noexcept { bnorm::testing::replaced_new::release(p); }
void operator delete(void* p, std::size_t) noexcept { bnorm::testing::replaced_new::release(p); }
void operator delete[](void* p, std::size_t) noexcept { bnorm::testing::replaced_new::release(p); }
void operator delete(void* p, std::align_val_t) noexcept {
  bnorm::testing::replaced_new::release(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  bnorm::testing::replaced_new::release(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  bnorm::testing::replaced_new::release(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  bnorm::testing::replaced_new::release(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  bnorm::testing::replaced_new::release(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  bnorm::testing::replaced_new::release(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  bnorm::testing::replaced_new::release(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  bnorm::testing::replaced_new::release(p);
}
