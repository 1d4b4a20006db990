// bnorm/core/error.hpp — one exception hierarchy; every message names the argument, the
// expected and the received value ("... expected 64; received 32").
#pragma once

#include <stdexcept>
#include <string>

namespace bnorm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// A tensor's rank or dimensions do not fit what the operation needs.
class ShapeError : public Error {
 public:
  using Error::Error;
};
// An argument's value is out of its domain (negative epsilon, momentum outside [0, 1], ...).
class ValueError : public Error {
 public:
  using Error::Error;
};
// Data met NaN/Inf where a finite value is required (a batch, a loss).
class NonFiniteError : public ValueError {
 public:
  using ValueError::ValueError;
};
// A file could not be read or written, or its contents are malformed.
class IoError : public Error {
 public:
  using Error::Error;
};
// The processes of a distributed run disagree (data sizes, weights that should be identical), or
// a communicator cannot be used as asked.
class DistError : public Error {
 public:
  using Error::Error;
};

}  // namespace bnorm
