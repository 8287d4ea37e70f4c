#include "med3d/tape.h"

#include <unordered_map>

#include "engine/src/internal.h"
#include "engine/src/op_util.h"

namespace med3d {

namespace {

// A gradient no other tensor, view or saved value shares: it can be kept or summed into in place
// (its copy was a third of the step's serial memory traffic: every weight gradient, once).
bool sole_owner(const Tensor& t) {
  const auto& impl = t.impl();
  return impl.use_count() == 1 && impl->storage.use_count() == 1 && impl->storage->data.use_count() == 1;
}

}  // namespace

bool record(const std::string& name, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& outputs, std::vector<Tensor> saved, BackwardFn backward) {
  MED3D_CHECK(!outputs.empty() && outputs[0].defined(), "record(", name, "): no outputs");
  bool any_requires = false;
  for (const Tensor& input : inputs) any_requires |= input.requires_grad();
  if (!any_requires) return false;
  Context context = outputs[0].context();
  if (!context.grad_enabled()) return false;

  Node node;
  node.name = name;
  node.inputs.reserve(inputs.size());
  for (const Tensor& input : inputs) {
    Node::Edge edge;
    if (input.defined()) {
      MED3D_CHECK(input.impl()->context.lock() == context.state(), name,
                  ": inputs come from different Contexts; build a graph with one Context");
      edge.id = input.id();
      edge.needs_grad = input.requires_grad();
      if (edge.needs_grad && input.is_leaf()) edge.leaf = input.impl();
    }
    node.inputs.push_back(std::move(edge));
  }
  for (const Tensor& output : outputs) {
    output.impl()->requires_grad = true;
    output.impl()->is_leaf = false;
    node.outputs.push_back(output.id());
    node.output_shapes.push_back(output.shape());
    node.output_dtypes.push_back(output.dtype());
    node.output_devices.push_back(output.device());
  }
  node.saved = std::move(saved);
  node.backward = std::move(backward);
  context.tape().push(std::move(node));
  return true;
}

namespace {

void run_backward(const Tensor& output, Tensor seed) {
  MED3D_CHECK(output.defined(), "backward: the tensor is undefined");
  MED3D_CHECK(output.requires_grad(),
              "backward: the tensor does not require grad: no input of the ops that made it "
              "requires grad, or it was computed under NoGrad; call set_requires_grad(true) on "
              "the parameters first");
  Context context = output.context();
  std::vector<Node>& nodes = context.tape().mutable_nodes();
  std::size_t start = nodes.size();
  for (std::size_t i = nodes.size(); i-- > 0 && start == nodes.size();)
    for (uint64_t id : nodes[i].outputs)
      if (id == output.id()) start = i;
  MED3D_CHECK(start != nodes.size(),
              "backward: no recorded op on this Context's tape produced the tensor: backward "
              "already ran for this graph (the tape is freed after each backward), or the tensor "
              "is a leaf; run the forward pass again before calling backward");

  NoGrad no_grad(context);
  std::unordered_map<uint64_t, Tensor> grads;
  grads.emplace(output.id(), std::move(seed));
  for (std::size_t i = start + 1; i-- > 0;) {
    Node& node = nodes[i];
    std::vector<Tensor> dy(node.outputs.size());
    bool any = false;
    for (std::size_t k = 0; k < node.outputs.size(); ++k) {
      auto it = grads.find(node.outputs[k]);
      if (it != grads.end()) {
        dy[k] = std::move(it->second);
        grads.erase(it);
        any = true;
      }
    }
    if (any) {
      for (std::size_t k = 0; k < dy.size(); ++k)
        if (!dy[k].defined()) {
          dy[k] = context.empty(node.output_shapes[k], node.output_dtypes[k], node.output_devices[k]);
          detail::fill_zero(dy[k]);
        }
      std::vector<bool> needs(node.inputs.size());
      for (std::size_t j = 0; j < node.inputs.size(); ++j) needs[j] = node.inputs[j].needs_grad;
      std::vector<Tensor> dx = node.backward(BackwardArgs{dy, node.saved, needs});
      MED3D_CHECK(dx.size() == node.inputs.size(), "backward of ", node.name, " returned ",
                  dx.size(), " gradients for ", node.inputs.size(), " inputs");
      for (std::size_t j = 0; j < dx.size(); ++j) {
        const Node::Edge& edge = node.inputs[j];
        if (!edge.needs_grad || !dx[j].defined()) continue;
        if (edge.leaf) {
          Tensor& leaf_grad = edge.leaf->grad;
          MED3D_CHECK(dx[j].shape() == edge.leaf->shape, "backward of ", node.name,
                      ": gradient shape ", dx[j].shape().str(), " for an input of shape ",
                      edge.leaf->shape.str());
          // Copy on first arrival: dx may alias a tensor the graph still uses.
          if (!leaf_grad.defined()) leaf_grad = sole_owner(dx[j]) ? std::move(dx[j]) : dx[j].clone();
          else detail::accumulate_into(leaf_grad, dx[j]);
        } else {
          auto [it, inserted] = grads.try_emplace(edge.id, dx[j]);
          if (!inserted) {
            // The stored gradient may alias another tensor (e.g. dy passed through): copy first.
            if (!sole_owner(it->second)) it->second = it->second.clone();
            detail::accumulate_into(it->second, dx[j]);
          }
        }
      }
    }
    node.saved.clear();
    node.backward = nullptr;
  }
  context.tape().clear();
}

}  // namespace

void backward(const Tensor& loss) {
  MED3D_CHECK(loss.defined(), "backward: the loss tensor is undefined");
  MED3D_CHECK(loss.numel() == 1, "backward: expected a one-element loss, got shape ",
              loss.shape().str(), "; reduce it with sum() or mean(), or pass a seed gradient");
  Tensor seed = detail::empty_like(loss);
  seed.fill(1.0);
  run_backward(loss, seed);
}

void backward(const Tensor& output, const Tensor& seed) {
  MED3D_CHECK(output.defined() && seed.defined(), "backward: undefined tensor");
  MED3D_CHECK(seed.shape() == output.shape() && seed.dtype() == output.dtype(),
              "backward: the seed gradient must match the output, expected ", output.str(),
              ", got ", seed.str());
  run_backward(output, seed);
}

}  // namespace med3d
