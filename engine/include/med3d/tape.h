// Tape: the Context's Wengert list. Each differentiable op appends one Node after computing
// its outputs; forward order is a topological order, so backward walks the list in reverse.
// backward(loss) accumulates (+=) into the `grad` of every leaf that requires grad, frees
// every node's saved tensors and clears the tape: a second backward over the same graph
// is an error (run the forward again).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "med3d/tensor.h"

namespace med3d {

// What a node's backward receives. `dy[i]` is the gradient of output i (zeros where nothing
// flowed); `needs_grad[j]` says whether input j wants a gradient.
struct BackwardArgs {
  const std::vector<Tensor>& dy;
  const std::vector<Tensor>& saved;
  const std::vector<bool>& needs_grad;
};
// Returns one gradient per input, undefined where `needs_grad` is false.
using BackwardFn = std::function<std::vector<Tensor>(const BackwardArgs&)>;

struct Node {
  struct Edge {
    uint64_t id = 0;
    bool needs_grad = false;
    std::shared_ptr<detail::TensorImpl> leaf;  // set only for leaves that require grad
  };
  std::string name;
  std::vector<Edge> inputs;
  std::vector<uint64_t> outputs;
  std::vector<Shape> output_shapes;
  std::vector<DType> output_dtypes;
  std::vector<Device> output_devices;
  std::vector<Tensor> saved;
  BackwardFn backward;
};

class Tape {
 public:
  std::size_t size() const { return nodes_.size(); }
  const std::vector<Node>& nodes() const { return nodes_; }
  void clear() { nodes_.clear(); }
  void push(Node node) { nodes_.push_back(std::move(node)); }
  std::vector<Node>& mutable_nodes() { return nodes_; }

 private:
  std::vector<Node> nodes_;
};

// Records an op if grad mode is on and any defined input requires grad; then marks the
// outputs as non-leaf tensors that require grad. Undefined inputs (absent bias) are skipped.
// Returns whether a node was recorded.
bool record(const std::string& name, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& outputs, std::vector<Tensor> saved, BackwardFn backward);

// Reverse-mode sweep from a one-element tensor (seed gradient 1).
void backward(const Tensor& loss);
// Reverse-mode sweep from any tensor with an explicit seed gradient of the same shape.
void backward(const Tensor& output, const Tensor& seed);

}  // namespace med3d
