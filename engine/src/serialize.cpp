#include "med3d/serialize.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "engine/src/op_util.h"

namespace med3d {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; add byte swapping for big-endian hosts");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's limit
constexpr uint64_t kMaxBytes = std::numeric_limits<int64_t>::max();

std::string safetensors_dtype(DType dtype) {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
  }
  detail::throw_error("safetensors: unknown dtype");
}

DType parse_dtype(const std::string& name, const std::string& tensor, const std::string& source) {
  if (name == "F32") return DType::f32;
  if (name == "F64") return DType::f64;
  if (name == "I32") return DType::i32;
  if (name == "I64") return DType::i64;
  if (name == "U8") return DType::u8;
  detail::throw_error(source, ": tensor '", tensor, "' has dtype ", name,
                      ", expected one of F32, F64, I32, I64, U8; convert it before saving");
}

}  // namespace

const Tensor& Checkpoint::at(const std::string& name) const {
  for (const auto& [key, tensor] : tensors)
    if (key == name) return tensor;
  std::ostringstream names;
  std::size_t shown = 0;
  for (const auto& entry : tensors) {
    if (shown++ == 8) { names << ", ..."; break; }
    names << (shown > 1 ? ", " : "") << entry.first;
  }
  detail::throw_error("checkpoint has no tensor '", name, "'; it holds ", tensors.size(),
                      " tensors: ", names.str());
}

bool Checkpoint::contains(const std::string& name) const {
  return std::any_of(tensors.begin(), tensors.end(), [&](const auto& e) { return e.first == name; });
}

void save_safetensors(const std::string& path, const NamedTensors& given,
                      const std::map<std::string, std::string>& metadata) {
  // Device tensors are written from host copies (one wait for the device per file).
  NamedTensors tensors = given;
  for (auto& [name, tensor] : tensors)
    if (tensor.defined() && tensor.device().is_cuda()) {
      NoGrad no_grad(tensor.context());
      tensor = tensor.detach().to(Device::cpu());
    }
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    MED3D_CHECK(!name.empty() && name != "__metadata__", "save_safetensors(", path,
                "): invalid tensor name '", name, "'");
    MED3D_CHECK(names.insert(name).second, "save_safetensors(", path, "): duplicate tensor name '",
                name, "'");
    MED3D_CHECK(tensor.defined(), "save_safetensors(", path, "): tensor '", name, "' is undefined");
    const uint64_t bytes = tensor.nbytes();
    header[name] = {{"dtype", safetensors_dtype(tensor.dtype())},
                    {"shape", std::vector<int64_t>(tensor.shape().begin(), tensor.shape().end())},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json;
  try {
    json = header.dump();
  } catch (const nlohmann::json::exception& e) {
    detail::throw_error("save_safetensors(", path, "): tensor names and metadata must be valid "
                        "UTF-8: ", e.what());
  }
  json.append((8 - json.size() % 8) % 8, ' ');
  const uint64_t header_size = json.size();

  // Unique per process and thread, so concurrent saves of one path do not share a temp file.
  const std::string temp = path + ".tmp." + std::to_string(::getpid()) + "." +
                           std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id()));
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  MED3D_CHECK(fd >= 0, "save_safetensors: cannot create ", temp, ": ", std::strerror(errno),
              "; check that the folder exists and is writable");
  auto write_all = [&](const void* data, std::size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd, p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const std::string reason = std::strerror(errno);
        ::close(fd);
        ::unlink(temp.c_str());
        detail::throw_error("save_safetensors: writing ", temp, " failed: ", reason,
                            "; the previous ", path, " is untouched");
      }
      p += n;
      size -= static_cast<std::size_t>(n);
    }
  };
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header_size >> (8 * i));
  write_all(length, 8);
  write_all(json.data(), json.size());
  for (const auto& entry : tensors) write_all(entry.second.raw_data(), entry.second.nbytes());
  const bool synced = ::fsync(fd) == 0;
  const bool closed = ::close(fd) == 0;
  if (!synced || !closed || std::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(temp.c_str());
    detail::throw_error("save_safetensors: could not commit ", path, ": ", reason);
  }
  // The rename is durable only once the folder's entry is on disk (best effort: some file
  // systems refuse to fsync a folder, and the data itself is already safe).
  std::error_code ignored;
  const std::filesystem::path folder = std::filesystem::absolute(path, ignored).parent_path();
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
}

Checkpoint parse_safetensors(const Context& context, const std::string& bytes,
                             const std::string& source) {
  MED3D_CHECK(bytes.size() >= 8, source, ": file is ", bytes.size(),
              " bytes, a safetensors file has at least the 8-byte header length (truncated?)");
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i)
    header_size |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  MED3D_CHECK(header_size <= kMaxHeaderBytes, source, ": header length ", header_size,
              " exceeds the ", kMaxHeaderBytes, "-byte limit; this is not a safetensors file");
  MED3D_CHECK(header_size <= bytes.size() - 8, source, ": header length ", header_size,
              " runs past the end of the ", bytes.size(), "-byte file (truncated?)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_size));
  } catch (const nlohmann::json::exception& e) {
    detail::throw_error(source, ": header (bytes 8..", 8 + header_size, ") is not valid JSON: ", e.what());
  }
  MED3D_CHECK(header.is_object(), source, ": header must be a JSON object");

  const uint64_t data_start = 8 + header_size;
  const uint64_t data_size = bytes.size() - data_start;
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  Checkpoint checkpoint;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& info = it.value();
    if (name == "__metadata__") {
      MED3D_CHECK(info.is_object(), source, ": __metadata__ must be an object of strings");
      for (auto m = info.begin(); m != info.end(); ++m) {
        MED3D_CHECK(m.value().is_string(), source, ": __metadata__ value for '", m.key(),
                    "' must be a string");
        checkpoint.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    MED3D_CHECK(info.is_object() && info.contains("dtype") && info.contains("shape") &&
                    info.contains("data_offsets"),
                source, ": tensor '", name, "' needs dtype, shape and data_offsets");
    MED3D_CHECK(info["dtype"].is_string(), source, ": tensor '", name, "': dtype must be a string");
    Entry entry;
    entry.name = name;
    entry.dtype = parse_dtype(info["dtype"].get<std::string>(), name, source);
    const nlohmann::json& shape = info["shape"];
    MED3D_CHECK(shape.is_array() && shape.size() <= static_cast<std::size_t>(Shape::kMaxRank), source,
                ": tensor '", name, "': shape must be an array of at most ", Shape::kMaxRank,
                " extents, got ", shape.dump());
    // The byte count is computed with overflow checks before any Shape exists: extents past
    // int64 or products past 2^63 must not wrap into a small, "valid" size.
    std::vector<int64_t> extents;
    uint64_t expected = dtype_size(entry.dtype);
    bool overflow = false;
    for (const auto& e : shape) {
      MED3D_CHECK(e.is_number_unsigned() || (e.is_number_integer() && e.get<int64_t>() >= 0), source,
                  ": tensor '", name, "': extents must be non-negative integers, got ", shape.dump());
      const uint64_t extent = e.get<uint64_t>();
      MED3D_CHECK(extent <= kMaxBytes, source, ": tensor '", name, "': extent ", extent,
                  " does not fit in int64");
      overflow = __builtin_mul_overflow(expected, extent, &expected) || overflow;
      extents.push_back(static_cast<int64_t>(extent));
    }
    MED3D_CHECK(!overflow && expected <= kMaxBytes, source, ": tensor '", name, "': shape ",
                shape.dump(), " has more elements than any file can hold");
    entry.shape = Shape(std::span<const int64_t>(extents));
    const nlohmann::json& offsets = info["data_offsets"];
    MED3D_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                    offsets[1].is_number_unsigned(),
                source, ": tensor '", name, "': data_offsets must be two non-negative integers");
    entry.begin = offsets[0].get<uint64_t>();
    entry.end = offsets[1].get<uint64_t>();
    MED3D_CHECK(entry.end >= entry.begin && entry.end - entry.begin == expected, source, ": tensor '",
                name, "': data_offsets [", entry.begin, ", ", entry.end, ") hold ",
                entry.end - entry.begin, " bytes, expected ", expected, " for ",
                dtype_name(entry.dtype), " ", entry.shape.str());
    MED3D_CHECK(entry.end <= data_size, source, ": tensor '", name, "' needs file bytes [",
                data_start + entry.begin, ", ", data_start + entry.end, ") but the file ends at byte ",
                bytes.size(), " (truncated?)");
    entries.push_back(std::move(entry));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const Entry& entry : entries) {
    MED3D_CHECK(entry.begin == cursor, source, ": tensor '", entry.name, "' starts at data offset ",
                entry.begin, ", expected ", cursor, " (tensors must tile the data section without ",
                "gaps or overlaps)");
    cursor = entry.end;
    Tensor tensor = context.empty(entry.shape, entry.dtype, Device::cpu());
    if (entry.end > entry.begin)
      std::memcpy(tensor.raw_data(), bytes.data() + data_start + entry.begin, entry.end - entry.begin);
    checkpoint.tensors.emplace_back(entry.name, std::move(tensor));
  }
  MED3D_CHECK(cursor == data_size, source, ": the data section has ", data_size,
              " bytes but the tensors cover ", cursor, " (trailing bytes: not a valid file)");
  return checkpoint;
}

Checkpoint load_safetensors(const Context& context, const std::string& path) {
  std::error_code error;
  MED3D_CHECK(!std::filesystem::is_directory(path, error), "load_safetensors: ", path,
              " is a folder; pass the path of a .safetensors file");
  std::ifstream in(path, std::ios::binary);
  MED3D_CHECK(in.good(), "load_safetensors: cannot open ", path, ": ", std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return parse_safetensors(context, buffer.str(), path);
}

}  // namespace med3d
