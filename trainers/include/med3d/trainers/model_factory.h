// Builds any segmentation network of the model zoo from a ModelSpec (what the CLI's --arch,
// --shortcut, --head and the label sets name), and stores the spec in a checkpoint's metadata
// so `med3d predict` rebuilds the same network from the file alone.
//
// Heads: "med3d" (Med3DNet: shared encoder, one 1x1x1 branch per domain), "medicalnet"
// (MedicalNet's conv_seg decoder), "coarse" (CoarseLiverNet, 2 classes), "denseaspp"
// (DenseASPP-3D), "lung" (Med3D's lung decoder). Every segmentation head's SegModel::logits
// returns logits at the input's spatial size [N, classes, D, H, W] (upsampled or cropped where
// the head's output differs), so losses and inference need not know the head.
// "classifier" (ResNetClassifier: global average pooling + fc, med3d train --task cls) is the
// one non-segmentation head: its logits are [N, classes] (see classify.h).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "med3d/models/module.h"
#include "med3d/models/resnet3d.h"

namespace med3d::trainers {

struct ModelSpec {
  std::string arch = "resnet18";        // resnet10, 18, 34, 50, 101, 152, 200
  std::optional<ShortcutType> shortcut;  // none: MedicalNet's default for the depth
  std::string head = "medicalnet";
  std::vector<int64_t> classes{2};       // per domain; one entry unless head == "med3d"
  int64_t in_channels = 1;

  int depth() const;  // from arch; throws on an unknown name
  std::map<std::string, std::string> to_metadata() const;  // keys "model.*"
  static ModelSpec from_metadata(const std::map<std::string, std::string>& metadata,
                                 const std::string& path);
};

struct SegModel {
  ModelSpec spec;
  std::shared_ptr<Module> module;
  std::shared_ptr<ResNet3d> encoder;  // the module's encoder (feature extraction, transfer)
  std::function<Tensor(const Tensor& x, int64_t domain)> logits;
  Device device = Device::cpu();  // where the weights live and logits come out

  // Moves the weights to `target`; logits() then copies inputs from any device to `target`.
  void to(Device target);
};

// Throws med3d::Error naming the unknown arch/head or a bad class count, before any allocation.
SegModel make_seg_model(Context context, const ModelSpec& spec);

ShortcutType parse_shortcut(const std::string& text);  // "A" or "B"

}  // namespace med3d::trainers
