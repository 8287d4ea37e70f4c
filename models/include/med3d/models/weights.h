// Checkpoints of whole networks and encoder transfer. A state dict is stored as safetensors
// (the engine's checkpoint format, serialize.h), keys in Module::state_dict order; a leading
// "module." (nn.DataParallel, MedicalNet's released .pth converted by
// tools/convert_medicalnet.py) is stripped on load. Loading copies values INTO the module's
// existing tensors (converted to the module's dtype), so optimisers holding them stay valid.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "med3d/models/module.h"

namespace med3d {

// What load_encoder / inflate_into did with each key (file keys without "module.").
struct TransferReport {
  std::vector<std::string> taken;     // copied into the model
  std::vector<std::string> skipped;   // in the file, not taken: "name (reason)"
  std::vector<std::string> left_new;  // in the model, not in the file or not taken: keep their init
  std::string summary() const;        // "taken 102, skipped 2 (...), left new 12 (...)"
};

// Writes module.state_dict() (parameters and buffers, any dtype) atomically to `path`.
void save_state_dict(const std::string& path, const Module& module,
                     const std::map<std::string, std::string>& metadata = {});

// Reads `path` and calls module.load_state_dict(strict). Throws med3d::Error naming the file
// when it cannot be read or (strict) does not match the module.
LoadReport load_state_dict(Module& module, const std::string& path, bool strict = true);

// The encoder keys of a ResNet3d-based network: conv1., bn1., layer1. .. layer4. at the top level.
bool is_encoder_key(const std::string& name);

// Transfer learning: takes the encoder keys of the file whose shapes match the model's and
// leaves every other model key at its initial value. Head keys (conv_seg., fc., ...) and
// shape mismatches are reported as skipped; nothing is loaded when the file is unreadable.
TransferReport load_encoder(Module& model, const std::string& path);
TransferReport load_encoder(Module& model, const NamedTensors& state);

}  // namespace med3d
