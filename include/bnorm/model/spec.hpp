// bnorm/model/spec.hpp — compact model specs: "dense64-relu,bn,dense10-softmax".
//
// Grammar: layers separated by commas; each is a token, optionally followed by
// ":key=value" options.
//   dense<units>[-<activation>]   Dense; options use_bias=0|1
//   bn | batchnorm                BatchNormalization; options axis, momentum, epsilon,
//                                 center=0|1, scale=0|1
//   dropout<rate>                 Dropout, e.g. dropout0.2
//   flatten                       Flatten
//   relu | sigmoid | tanh | softmax | linear   Activation
// Example: "flatten,dense128-relu,bn:momentum=0.9,dropout0.2,dense10-softmax".
#pragma once

#include <string>

#include "bnorm/model/sequential.hpp"

namespace bnorm {

// The named models of the CLI.
inline constexpr const char* kSeedSpec = "dense64-relu,bn,dense10-softmax";
inline constexpr const char* kSeedNoBnSpec = "dense64-relu,dense10-softmax";

// Appends the layers a spec describes to `model`. ValueError naming the bad token and the
// known layers for anything it cannot parse (nothing is added then).
void add_layers_from_spec(Sequential& model, const std::string& spec);

}  // namespace bnorm
