// bnorm/model/spec.hpp — compact model specs: "dense64-relu,bn,dense10-softmax".
//
// Grammar: layers separated by commas; each is a token, optionally followed by
// ":key=value" options.
//   dense<units>[-<activation>]   Dense; options use_bias=0|1
//   bn | batchnorm                BatchNormalization; options axis, momentum, epsilon,
//                                 center=0|1, scale=0|1
//   conv<filters>-<k>[x<k>][-same|-valid][-<activation>]
//                                 Conv2D, e.g. conv32-3x3-same or conv64-3-relu; options
//                                 strides=S|SxS, padding, dilation_rate=D|DxD,
//                                 data_format=channels_last|channels_first, use_bias=0|1,
//                                 activation
//   maxpool<k>[x<k>][-same|-valid], avgpool<k>...
//                                 MaxPooling2D / AveragePooling2D (strides default to the pool
//                                 size); options strides, padding, data_format
//   gap                           GlobalAveragePooling2D; options data_format, keepdims=0|1
//   dropout<rate>                 Dropout, e.g. dropout0.2
//   flatten                       Flatten; option data_format (channels_first flattens in
//                                 channels_last order, as Keras)
//   relu | sigmoid | tanh | softmax | linear   Activation
// Example: "flatten,dense128-relu,bn:momentum=0.9,dropout0.2,dense10-softmax".
#pragma once

#include <string>

#include "bnorm/model/sequential.hpp"

namespace bnorm {

// The named models of the CLI.
inline constexpr const char* kSeedSpec = "dense64-relu,bn,dense10-softmax";
inline constexpr const char* kSeedNoBnSpec = "dense64-relu,dense10-softmax";
// The CNN of issue 5 (input (28, 28, 1)): conv without activation, then BN, then ReLU, so that
// Sequential fuses BN+ReLU into one kernel; Dropout(0.25) after each pooling and Dropout(0.3)
// before the classifier; and the same network without BatchNormalization. Trained with
// --lr-schedule cosine, 15 epochs, batch 64 (docs/performance.md has the curves).
inline constexpr const char* kCnnSpec =
    "conv32-3x3-same,bn,relu,maxpool2,dropout0.25,conv64-3x3-same,bn,relu,maxpool2,dropout0.25,"
    "flatten,dense128,bn,relu,dropout0.3,dense10-softmax";
inline constexpr const char* kCnnNoBnSpec =
    "conv32-3x3-same-relu,maxpool2,dropout0.25,conv64-3x3-same-relu,maxpool2,dropout0.25,flatten,"
    "dense128-relu,dropout0.3,dense10-softmax";

// Appends the layers a spec describes to `model`. ValueError naming the bad token and the
// known layers for anything it cannot parse (nothing is added then).
void add_layers_from_spec(Sequential& model, const std::string& spec);

}  // namespace bnorm
