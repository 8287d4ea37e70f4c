// Checkpoints of whole networks, encoder transfer and MedicalNet checkpoints converted by
// tools/convert_medicalnet.py (tiny committed fixture; the full ResNet-10 conversion runs as
// the ctest medicalnet_convert_* when the configuring machine's python3 has torch).
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "med3d/models/heads.h"
#include "med3d/models/weights.h"
#include "test_util.h"

using namespace med3d;
namespace fs = std::filesystem;

namespace {

using TempDir = med3d::test::ScratchDir;

// tests/golden/gen_weights.py's pattern(): exact binary fractions from the key and the index.
int64_t key_hash(const std::string& name) {
  int64_t h = 0;
  for (std::size_t j = 0; j < name.size(); ++j) h += static_cast<unsigned char>(name[j]) * static_cast<int64_t>(j + 1);
  return h % 1000;
}

void require_pattern(const std::string& name, const Tensor& tensor) {
  INFO("key " << name);
  const int64_t h = key_hash(name);
  if (tensor.dtype() == DType::i64) {
    REQUIRE(tensor.numel() == 1);
    REQUIRE(tensor.data<int64_t>()[0] == h);
    return;
  }
  REQUIRE(tensor.dtype() == DType::f32);
  const float* v = tensor.data<float>();
  for (int64_t i = 0; i < tensor.numel(); ++i)
    if (v[i] != static_cast<float>(((h + i) % 1999 - 999) / 1024.0)) FAIL("element " << i << " is " << v[i]);
}

Tensor find(const Module& module, const std::string& name) {
  for (const auto& [key, tensor] : module.state_dict())
    if (key == name) return tensor;
  FAIL("missing key " << name);
  return {};
}

std::size_t count_prefix(const std::vector<std::string>& names, const std::string& prefix) {
  std::size_t n = 0;
  for (const auto& name : names) n += name.rfind(prefix, 0) == 0;
  return n;
}

}  // namespace

TEST_CASE("weights: save_state_dict / load_state_dict round trip every value and dtype", "[weights]") {
  Context context(Device::cpu(), 11);
  TempDir dir;
  MedicalNetSegmentation a(context, 10, 3);
  find(a, "layer1.0.bn1.running_mean").fill(0.25);
  find(a, "bn1.num_batches_tracked").data<int64_t>()[0] = 17;
  save_state_dict(dir.file("a.safetensors"), a, {{"epoch", "4"}});
  REQUIRE(load_safetensors(context, dir.file("a.safetensors")).metadata.at("epoch") == "4");

  MedicalNetSegmentation b(context, 10, 3);
  LoadReport report = load_state_dict(b, dir.file("a.safetensors"));
  REQUIRE(report.complete());
  REQUIRE(report.loaded.size() == a.state_dict().size());
  const NamedTensors sa = a.state_dict(), sb = b.state_dict();
  for (std::size_t i = 0; i < sa.size(); ++i) {
    INFO(sa[i].first);
    REQUIRE(sb[i].second.dtype() == sa[i].second.dtype());
    REQUIRE(sb[i].second.to(DType::f64).to_vector<double>() == sa[i].second.to(DType::f64).to_vector<double>());
  }
  REQUIRE(find(b, "bn1.num_batches_tracked").dtype() == DType::i64);
  REQUIRE(find(b, "bn1.num_batches_tracked").data<int64_t>()[0] == 17);
}

TEST_CASE("weights: a DataParallel 'module.' prefix is stripped on load", "[weights]") {
  Context context(Device::cpu(), 12);
  TempDir dir;
  ResNet3d a(context, 10);
  NamedTensors prefixed;
  for (const auto& [name, tensor] : a.state_dict()) prefixed.emplace_back("module." + name, tensor);
  save_safetensors(dir.file("dp.safetensors"), prefixed);
  ResNet3d b(context, 10);
  REQUIRE(load_state_dict(b, dir.file("dp.safetensors")).complete());
  REQUIRE(find(b, "layer4.0.conv2.weight").to_vector<float>() == find(a, "layer4.0.conv2.weight").to_vector<float>());
}

TEST_CASE("weights: load_encoder takes the encoder keys and reports head and mismatched keys", "[weights]") {
  Context context(Device::cpu(), 13);
  TempDir dir;
  MedicalNetSegmentation pretrained(context, 10, 2);
  save_state_dict(dir.file("pretrained.safetensors"), pretrained);

  MedicalNetSegmentation model(context, 10, 5);  // another class count: the head must stay new
  const std::vector<double> head_before = find(model, "conv_seg.6.weight").to_vector<double>();
  TransferReport report = load_encoder(model, dir.file("pretrained.safetensors"));
  const std::size_t encoder_keys = ResNet3d(context, 10).state_dict().size();
  const std::size_t head_keys = model.state_dict().size() - encoder_keys;
  REQUIRE(report.taken.size() == encoder_keys);
  REQUIRE(report.skipped.size() == head_keys);  // conv_seg.* of the file: not encoder keys
  REQUIRE(count_prefix(report.skipped, "conv_seg.") == head_keys);
  REQUIRE(report.left_new.size() == head_keys);
  REQUIRE(count_prefix(report.left_new, "conv_seg.") == head_keys);
  REQUIRE(find(model, "layer3.0.conv1.weight").to_vector<float>() ==
          find(pretrained, "layer3.0.conv1.weight").to_vector<float>());
  REQUIRE(find(model, "conv_seg.6.weight").to_vector<double>() == head_before);
  REQUIRE(report.summary().find("taken " + std::to_string(encoder_keys)) == 0);

  // A 2-channel stem cannot take the 1-channel conv1.weight: skipped with its shapes, left new.
  ResNet3d two_channels(context, 10, std::nullopt, 2);
  TransferReport mismatch = load_encoder(two_channels, dir.file("pretrained.safetensors"));
  REQUIRE(mismatch.taken.size() == encoder_keys - 1);
  REQUIRE(mismatch.left_new == std::vector<std::string>{"conv1.weight"});
  REQUIRE(count_prefix(mismatch.skipped, "conv1.weight (shape [64, 1, 7, 7, 7] vs model [64, 2, 7, 7, 7])") == 1);
}

TEST_CASE("weights: a MedicalNet checkpoint converted by tools/convert_medicalnet.py loads", "[weights]") {
  // Written by gen_weights.py: MedicalNet's keys with 'module.' prefixes for the stem and the
  // classifier, through the converter. Values are pattern() so every element is checked.
  Context context;
  const std::string path = std::string(MED3D_GOLDEN_DIR) + "/medicalnet_tiny_converted.safetensors";
  Checkpoint file = load_safetensors(context, path);
  REQUIRE(file.metadata.at("converter") == "tools/convert_medicalnet.py");
  for (const auto& [name, tensor] : file.tensors) {
    REQUIRE(name.rfind("module.", 0) == std::string::npos);
    require_pattern(name, tensor);
  }
  REQUIRE(file.at("bn1.num_batches_tracked").dtype() == DType::i64);

  MedicalNetSegmentation model(context, 10, 2);
  TransferReport report = load_encoder(model, path);
  REQUIRE(report.taken == std::vector<std::string>{"conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                                   "bn1.running_var", "bn1.num_batches_tracked"});
  REQUIRE(report.skipped == std::vector<std::string>{"conv_seg.6.weight (not an encoder key)"});
  for (const std::string& name : report.taken) require_pattern(name, find(model, name));

  LoadReport partial = load_state_dict(model, path, /*strict=*/false);
  REQUIRE(partial.loaded.size() == 7);
  require_pattern("conv_seg.6.weight", find(model, "conv_seg.6.weight"));
  REQUIRE_THROWS_WITH(load_state_dict(model, path, /*strict=*/true),
                      Catch::Contains("medicalnet_tiny_converted.safetensors") && Catch::Contains("missing"));
}

TEST_CASE("weights: full ResNet-10 conversion loads strictly (run by the medicalnet_convert ctest)", "[weights][medicalnet_full]") {
  const char* path = std::getenv("MED3D_MEDICALNET_CONVERTED");
  if (path == nullptr) {
    WARN("skipped: MED3D_MEDICALNET_CONVERTED is unset (ctest sets it after converting with torch)");
    return;
  }
  Context context;
  MedicalNetSegmentation model(context, 10, 2);
  LoadReport report = load_state_dict(model, path, /*strict=*/true);
  REQUIRE(report.loaded.size() == model.state_dict().size());
  for (const auto& [name, tensor] : model.state_dict()) require_pattern(name, tensor);
}

TEST_CASE("weights: clear errors for unreadable files and strict mismatches", "[weights]") {
  Context context;
  TempDir dir;
  ResNet3d model(context, 10);
  REQUIRE_THROWS_WITH(load_state_dict(model, dir.file("absent.safetensors")),
                      Catch::Contains("load_state_dict: cannot read checkpoint") && Catch::Contains("absent.safetensors"));
  REQUIRE_THROWS_WITH(load_encoder(model, dir.file("absent.safetensors")),
                      Catch::Contains("load_encoder: cannot read checkpoint"));
  {
    std::ofstream out(dir.file("resnet_10.pth"), std::ios::binary);
    out << "PK\x03\x04 a zip-based torch file, not safetensors";
  }
  REQUIRE_THROWS_WITH(load_state_dict(model, dir.file("resnet_10.pth")),
                      Catch::Contains("resnet_10.pth") && Catch::Contains("convert_medicalnet.py"));
  MedicalNetSegmentation other(context, 10, 2);
  save_state_dict(dir.file("seg.safetensors"), other);
  REQUIRE_THROWS_WITH(load_state_dict(model, dir.file("seg.safetensors")),
                      Catch::Contains("unexpected") && Catch::Contains("conv_seg"));
  // Nothing was loaded by the failed strict call.
  REQUIRE(find(model, "conv1.weight").to_vector<double>() != find(other, "conv1.weight").to_vector<double>());
  REQUIRE(load_state_dict(model, dir.file("seg.safetensors"), false).unexpected.size() ==
          other.state_dict().size() - model.state_dict().size());
}
