// src/model/plan.hpp — a Model's graph flattened into steps (private to bnorm_model).
#pragma once

#include <memory>
#include <vector>

#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/layer.hpp"

namespace bnorm::detail {

// One layer call. Slots number the tensors of the flattened graph: the model's inputs first,
// then one per step output. Nested models are expanded in place.
struct Step {
  std::shared_ptr<Layer> layer;  // what runs: the layer, or a replica for a shared layer's
                                 // second and later calls (same weights, own buffers)
  Layer* primary = nullptr;      // the layer whose weights it uses (== layer.get() if no replica)
  std::vector<int> in;           // input slots
  int out = -1;                  // output slot
  // Fused away (an Activation absorbed by a BatchNormalization, or the Add of BN + Add + ReLU):
  // the output is slot `alias`, already computed by the fused layer. -1: runs.
  int alias = -1;
  bool from_logits = false;  // the loss differentiates through this softmax layer's logits
  // A BatchNormalization step and the fusion this plan chose for it. Layers can be shared by
  // several models (a nested model, a feature extractor built from another model's tensors),
  // so the flags are put on the layer each time this plan runs it, never left from planning.
  BatchNormalization* bn = nullptr;
  bool fused_relu = false, fused_add_relu = false;
  // Scratch for the layer interface, sized once.
  std::vector<const Tensor*> xs;
  std::unique_ptr<bool[]> need_dx;
  std::vector<const Tensor*> dxs;
  // Replica bookkeeping: (replica weight, primary weight) pairs.
  std::vector<std::pair<Variable*, Variable*>> synced;
};

struct Plan {
  int num_slots = 0;
  std::vector<int> input_slots;    // model input i -> slot
  std::vector<int> output_slots;   // model output i -> slot
  std::vector<int> output_steps;   // model output i -> the step that computes it (-1: none runs)
  std::vector<Shape> slot_shapes;  // per sample
  std::vector<Step> steps;         // in an order where every input precedes its use
  std::vector<int> uses;           // per slot: consumers + times it is a model output
  std::vector<bool> is_input;      // per slot
  // Run-time state, sized once.
  std::vector<const Tensor*> value;  // forward
  std::vector<const Tensor*> grad;   // backward
  std::vector<Tensor> accum;         // per slot with more than one use: the summed gradient
  std::vector<Tensor> loss_grad;     // per output
};

}  // namespace bnorm::detail
