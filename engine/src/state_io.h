// Reading and writing the state of optimisers and schedules (optim.h, lr_schedule.h): named
// scalars and tensors under a prefix in a Checkpoint, name lists as JSON arrays in metadata,
// with errors that name the missing or mismatched entry. Not installed.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "engine/src/op_util.h"
#include "med3d/optim.h"
#include "med3d/serialize.h"

namespace med3d::detail {

// State shares a checkpoint with the model, so it lives under a non-empty prefix of its own.
inline void check_prefix(const std::string& who, const std::string& prefix) {
  MED3D_CHECK(!prefix.empty(), who, ": the prefix must not be empty; the state shares the ",
              "checkpoint with the model's tensors (use e.g. \"optimizer.\")");
}

// The Context of the first parameter: state scalars are made with it.
inline Context state_context(const std::vector<ParamGroup>& groups) {
  for (const ParamGroup& group : groups)
    if (!group.params.empty()) return group.params.front().second.context();
  throw_error("optimiser state: the optimiser has no parameters");
}

inline Tensor scalar_f64(const Context& context, double value) {
  Tensor t = context.empty({}, DType::f64, Device::cpu());
  *t.data<double>() = value;
  return t;
}

inline Tensor scalar_i64(const Context& context, int64_t value) {
  Tensor t = context.empty({}, DType::i64, Device::cpu());
  *t.data<int64_t>() = value;
  return t;
}

inline std::string json_list(const std::vector<std::string>& names) {
  return nlohmann::json(names).dump();
}

inline std::string quoted_list(const std::vector<std::string>& names) {
  std::string out = "[";
  for (std::size_t i = 0; i < names.size(); ++i) out += (i ? ", '" : "'") + names[i] + "'";
  return out + "]";
}

// Reads entries called prefix + key and remembers which tensors were read, so that entries
// under the prefix that nobody asked for (state of another model or optimiser) are reported.
class StateReader {
 public:
  StateReader(const Checkpoint& checkpoint, std::string prefix, std::string who)
      : checkpoint_(checkpoint), prefix_(std::move(prefix)), who_(std::move(who)) {
    check_prefix(who_, prefix_);
  }

  bool has(const std::string& key) const { return checkpoint_.contains(prefix_ + key); }

  const Tensor& tensor(const std::string& key) {
    const std::string name = prefix_ + key;
    MED3D_CHECK(checkpoint_.contains(name), who_, ": the checkpoint has no tensor '", name,
                "'; was this state saved by save_state with prefix '", prefix_, "'?");
    used_.insert(name);
    return checkpoint_.at(name);
  }

  // A tensor that must match `like` in dtype and shape (a parameter's state buffer).
  const Tensor& tensor_like(const std::string& key, const Tensor& like, const std::string& param) {
    const Tensor& t = tensor(key);
    MED3D_CHECK(t.dtype() == like.dtype() && t.shape() == like.shape(), who_, ": '", prefix_, key,
                "' is ", dtype_name(t.dtype()), " ", t.shape().str(), " but parameter '", param,
                "' is ", dtype_name(like.dtype()), " ", like.shape().str(),
                "; the checkpoint belongs to a different model");
    return t;
  }

  double f64(const std::string& key) {
    const Tensor& t = tensor(key);
    MED3D_CHECK(t.dtype() == DType::f64 && t.rank() == 0, who_, ": '", prefix_, key,
                "' must be an f64 scalar, got ", t.str());
    return *t.data<double>();
  }

  int64_t i64(const std::string& key) {
    const Tensor& t = tensor(key);
    MED3D_CHECK(t.dtype() == DType::i64 && t.rank() == 0, who_, ": '", prefix_, key,
                "' must be an i64 scalar, got ", t.str());
    return *t.data<int64_t>();
  }

  const std::string& meta(const std::string& key) const {
    const auto it = checkpoint_.metadata.find(prefix_ + key);
    MED3D_CHECK(it != checkpoint_.metadata.end(), who_, ": the checkpoint has no metadata '",
                prefix_, key, "'; was this state saved by save_state with prefix '", prefix_, "'?");
    return it->second;
  }

  std::vector<std::string> names(const std::string& key) const {
    const std::string& text = meta(key);
    const nlohmann::json list = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    MED3D_CHECK(list.is_array() && std::all_of(list.begin(), list.end(),
                                               [](const auto& e) { return e.is_string(); }),
                who_, ": metadata '", prefix_, key, "' must be a JSON array of names, got ", text);
    return list.get<std::vector<std::string>>();
  }

  // Throws when the checkpoint holds tensors under the prefix that were not read.
  void check_all_used(const std::string& what) const {
    std::vector<std::string> unused;
    for (const auto& entry : checkpoint_.tensors)
      if (entry.first.starts_with(prefix_) && !used_.count(entry.first)) unused.push_back(entry.first);
    MED3D_CHECK(unused.empty(), who_, ": the checkpoint holds ", what, " state this one lacks: ",
                quoted_list(unused), "; it was saved from a differently configured ", what);
  }

 private:
  const Checkpoint& checkpoint_;
  std::string prefix_;
  std::string who_;
  std::set<std::string> used_;
};

}  // namespace med3d::detail
