// Checkpoints in the safetensors format (https://huggingface.co/docs/safetensors):
// 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}
// plus optional "__metadata__" (string to string), padded with spaces to a multiple of 8,
// then the raw little-endian tensor data. dtypes: F32, F64, I32, I64, U8.
// Writes are atomic: a temp file beside the target is written, fsync'ed and renamed, so an
// existing checkpoint is never left half-written. Reads validate every field and name the
// tensor and byte offset of any inconsistency.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "med3d/context.h"
#include "med3d/tensor.h"

namespace med3d {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct Checkpoint {
  NamedTensors tensors;  // in file order (ascending data offset)
  std::map<std::string, std::string> metadata;

  // The tensor called `name`; throws listing close names if absent.
  const Tensor& at(const std::string& name) const;
  bool contains(const std::string& name) const;
};

// Writes tensors (any dtype; CUDA tensors through host copies) in the given order. Names must be
// unique and non-empty.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads every tensor onto the CPU with `context`.
Checkpoint load_safetensors(const Context& context, const std::string& path);

// Parses an in-memory file image; `source` names it in error messages.
Checkpoint parse_safetensors(const Context& context, const std::string& bytes,
                             const std::string& source);

}  // namespace med3d
