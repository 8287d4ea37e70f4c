// safetensors checkpoints: round trips, the byte layout, the Python-written fixture, malformed
// and truncated files, and atomic writes. (The C++ -> Python direction is the ctest
// safetensors_python_reads_cpp_file.)
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numbers>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "test_util.h"

using namespace med3d;
namespace fs = std::filesystem;

namespace {

// A fresh folder under the system temp folder, removed with everything in it at the end.
using TempDir = med3d::test::ScratchDir;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

uint64_t header_length(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  return n;
}

std::string length_prefix(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out;
}

// A file image from a header text and a data section, with the header's true length.
std::string file_image(const std::string& header, const std::string& data = "") {
  return length_prefix(header.size()) + header + data;
}

Checkpoint parse(const std::string& bytes) {
  Context context;
  return parse_safetensors(context, bytes, "test.safetensors");
}

// Distinct values of every dtype: element i of tensor `seed` is a function of both.
Tensor pattern(const Context& context, const Shape& shape, DType dtype, int seed) {
  std::vector<double> values(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < values.size(); ++i)
    values[i] = is_floating(dtype) ? (static_cast<double>(i) - 3.5) / (seed + 3.0)
                                   : static_cast<double>((i * 7 + static_cast<std::size_t>(seed)) % 200);
  return context.from_vector<double>(shape, values).to(dtype);
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         (a.nbytes() == 0 || std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0);
}

}  // namespace

TEST_CASE("serialize: every dtype and rank 0..5 round-trips with metadata", "[serialize]") {
  Context context;
  TempDir dir;
  const std::vector<DType> dtypes = {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8};
  const std::vector<Shape> shapes = {{}, {5}, {2, 3}, {2, 1, 3}, {1, 2, 3, 2}, {2, 1, 3, 1, 2}, {2, 0, 3}};
  NamedTensors tensors;
  int seed = 0;
  for (DType dtype : dtypes)
    for (const Shape& shape : shapes)
      tensors.emplace_back(dtype_name(dtype) + "_rank" + std::to_string(shape.rank()) +
                               (shape.numel() == 0 ? "_empty" : ""),
                           pattern(context, shape, dtype, seed++));
  const std::map<std::string, std::string> metadata = {
      {"epoch", "12"}, {"empty", ""}, {"text", "quote \" backslash \\ newline \n \xc2\xb5m"}};
  const std::string path = dir.file("all.safetensors");
  save_safetensors(path, tensors, metadata);

  Context reader;
  const Checkpoint loaded = load_safetensors(reader, path);
  REQUIRE(loaded.metadata == metadata);
  REQUIRE(loaded.tensors.size() == tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    INFO(tensors[i].first);
    REQUIRE(loaded.tensors[i].first == tensors[i].first);  // file order is the saved order
    REQUIRE(same_bytes(loaded.tensors[i].second, tensors[i].second));
    REQUIRE(loaded.tensors[i].second.device().is_cpu());
  }
  REQUIRE(loaded.contains("f64_rank0"));
  REQUIRE(loaded.at("f64_rank0").rank() == 0);
  REQUIRE(dir.listing() == std::set<std::string>{"all.safetensors"});

  // A file with nothing in it round-trips too.
  save_safetensors(dir.file("nothing.safetensors"), {});
  const Checkpoint nothing = load_safetensors(reader, dir.file("nothing.safetensors"));
  REQUIRE(nothing.tensors.empty());
  REQUIRE(nothing.metadata.empty());
}

TEST_CASE("serialize: the header is JSON padded with spaces to a multiple of 8 bytes", "[serialize]") {
  Context context;
  TempDir dir;
  std::set<uint64_t> paddings;
  for (int name_length = 1; name_length <= 8; ++name_length) {
    const std::string name(static_cast<std::size_t>(name_length), 'w');
    const Tensor weights = context.from_vector<float>({2}, {1.5f, -2.0f});
    const Tensor labels = context.from_vector<int32_t>({1}, {0x01020304});
    const std::string path = dir.file("padding.safetensors");
    save_safetensors(path, {{name, weights}, {"labels", labels}});
    const std::string bytes = read_bytes(path);
    const uint64_t n = header_length(bytes);
    INFO("name length " << name_length << ", header length " << n);
    REQUIRE(n % 8 == 0);
    REQUIRE(bytes.size() == 8 + n + 8 + 4);
    const std::string header = bytes.substr(8, n);
    const std::size_t end = header.find_last_of('}');
    REQUIRE(end != std::string::npos);
    REQUIRE(header.size() - end - 1 < 8);
    REQUIRE(header.find_first_not_of(' ', end + 1) == std::string::npos);
    paddings.insert(header.size() - end - 1);
    const auto json = nlohmann::json::parse(header);
    REQUIRE(json[name]["dtype"] == "F32");
    REQUIRE(json[name]["shape"] == nlohmann::json::array({2}));
    REQUIRE(json[name]["data_offsets"] == nlohmann::json::array({0, 8}));
    REQUIRE(json["labels"]["data_offsets"] == nlohmann::json::array({8, 12}));
    REQUIRE_FALSE(json.contains("__metadata__"));  // none given, none written
    // Raw little-endian data right after the header.
    const std::string data = bytes.substr(8 + n);
    float w0 = 0;
    std::memcpy(&w0, data.data(), 4);
    REQUIRE(w0 == 1.5f);
    REQUIRE(data.substr(8) == std::string("\x04\x03\x02\x01", 4));
  }
  REQUIRE(paddings.size() > 1);  // several padding amounts were exercised
}

TEST_CASE("serialize: reads the file written by the Python implementation exactly", "[serialize]") {
  Context context;
  const Checkpoint file = test::load_golden(context, "python_written");
  REQUIRE(file.metadata.at("generator") == "tests/golden/gen_safetensors.py");
  REQUIRE(file.metadata.at("quoted") == "say \"hi\" \\ then\nnew line\ttab");
  REQUIRE(file.metadata.at("unicode") == "spacing in \xc2\xb5m \xe2\x80\x93 ok");
  REQUIRE(file.metadata.size() == 3);

  std::vector<std::string> names;
  for (const auto& entry : file.tensors) names.push_back(entry.first);
  REQUIRE(names == std::vector<std::string>{"f32_special", "f64_pi", "f32_rank4", "f64_rank5",
                                            "i32_matrix", "i64_extremes", "u8_rank3", "empty_f32",
                                            "labels_\xc2\xb5"});

  const Tensor& special = file.at("f32_special");
  REQUIRE(special.dtype() == DType::f32);
  REQUIRE(special.shape() == Shape{10});
  const std::vector<float> s = special.to_vector<float>();
  REQUIRE(s[0] == 0.0f);
  REQUIRE_FALSE(std::signbit(s[0]));
  REQUIRE(s[1] == 0.0f);
  REQUIRE(std::signbit(s[1]));
  REQUIRE(s[2] == 1.5f);
  REQUIRE(s[3] == -2.25f);
  REQUIRE(s[4] == std::numeric_limits<float>::infinity());
  REQUIRE(s[5] == -std::numeric_limits<float>::infinity());
  REQUIRE(std::isnan(s[6]));
  REQUIRE(s[7] == std::numeric_limits<float>::denorm_min());
  REQUIRE(s[8] == std::numeric_limits<float>::max());
  REQUIRE(s[9] == static_cast<float>(1.0 / 3.0));

  REQUIRE(file.at("f64_pi").to_vector<double>() == std::vector<double>{std::numbers::pi});
  REQUIRE(file.at("f32_rank4").shape() == Shape{1, 2, 1, 2});
  REQUIRE(file.at("f32_rank4").to_vector<float>() == std::vector<float>{-1.0f, 0.5f, 0.25f, 1e30f});

  const Tensor& rank5 = file.at("f64_rank5");
  REQUIRE(rank5.dtype() == DType::f64);
  REQUIRE(rank5.shape() == Shape{2, 1, 3, 2, 1});
  const std::vector<double> r = rank5.to_vector<double>();
  for (std::size_t i = 0; i < r.size(); ++i) REQUIRE(r[i] == static_cast<double>(i) / 3.0 - 1.5);

  const Tensor& i32 = file.at("i32_matrix");
  REQUIRE(i32.dtype() == DType::i32);
  REQUIRE(i32.shape() == Shape{2, 3});
  REQUIRE(i32.to_vector<int32_t>() == std::vector<int32_t>{std::numeric_limits<int32_t>::min(),
                                                           std::numeric_limits<int32_t>::max(), 0, 1,
                                                           -1, 123456789});
  const Tensor& i64 = file.at("i64_extremes");
  REQUIRE(i64.dtype() == DType::i64);
  REQUIRE(i64.to_vector<int64_t>() == std::vector<int64_t>{std::numeric_limits<int64_t>::min(),
                                                           std::numeric_limits<int64_t>::max(),
                                                           (int64_t{1} << 53) + 1, -5});
  const Tensor& u8 = file.at("u8_rank3");
  REQUIRE(u8.dtype() == DType::u8);
  REQUIRE(u8.shape() == Shape{2, 3, 4});
  const std::vector<uint8_t> u = u8.to_vector<uint8_t>();
  for (std::size_t i = 0; i < u.size(); ++i) REQUIRE(u[i] == static_cast<uint8_t>(i * 11));

  REQUIRE(file.at("empty_f32").shape() == Shape{2, 0, 3});
  REQUIRE(file.at("empty_f32").numel() == 0);
  REQUIRE(file.at("labels_\xc2\xb5").to_vector<uint8_t>() == std::vector<uint8_t>{255, 0, 7});
}

TEST_CASE("serialize: a file truncated anywhere gives an error naming where", "[serialize]") {
  Context context;
  TempDir dir;
  const std::string path = dir.file("full.safetensors");
  save_safetensors(path, {{"alpha", context.from_vector<float>({3}, {1, 2, 3})},
                          {"beta", context.from_vector<double>({2, 2}, {4, 5, 6, 7})}},
                   {{"note", "truncation"}});
  const std::string bytes = read_bytes(path);
  const uint64_t data_start = 8 + header_length(bytes);
  REQUIRE(bytes.size() == data_start + 12 + 32);
  REQUIRE_NOTHROW(parse(bytes));

  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    INFO("truncated to " << cut << " of " << bytes.size() << " bytes");
    std::string message;
    try {
      parse(bytes.substr(0, cut));
    } catch (const Error& e) {
      message = e.what();
    }
    INFO(message);
    REQUIRE_FALSE(message.empty());
    REQUIRE(message.find("test.safetensors") != std::string::npos);
    if (cut < 8) {
      REQUIRE(message.find("at least the 8-byte header length") != std::string::npos);
    } else if (cut < data_start) {
      REQUIRE(message.find("runs past the end of the " + std::to_string(cut) + "-byte file") !=
              std::string::npos);
    } else {
      // Inside the data: the first tensor that does not fit is named with its byte range.
      const bool in_alpha = cut < data_start + 12;
      const std::string range = in_alpha ? "[" + std::to_string(data_start) + ", " +
                                               std::to_string(data_start + 12) + ")"
                                         : "[" + std::to_string(data_start + 12) + ", " +
                                               std::to_string(data_start + 44) + ")";
      REQUIRE(message.find(in_alpha ? "tensor 'alpha'" : "tensor 'beta'") != std::string::npos);
      REQUIRE(message.find("needs file bytes " + range) != std::string::npos);
      REQUIRE(message.find("file ends at byte " + std::to_string(cut)) != std::string::npos);
    }
  }
}

TEST_CASE("serialize: malformed headers give errors naming the problem", "[serialize]") {
  const std::string f32x3 = R"("dtype":"F32","shape":[3],"data_offsets":[0,12])";
  const std::string data12(12, '\0');
  struct Case {
    const char* what;
    std::string bytes;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"corrupt JSON", file_image(R"({"a":{"dtype":"F32",)", data12), "is not valid JSON"},
      {"JSON that is not an object", file_image("[1, 2]"), "header must be a JSON object"},
      {"empty header", file_image(""), "is not valid JSON"},
      {"header length past the end", length_prefix(64) + "{}", "header length 64 runs past the end"},
      {"huge header length", length_prefix(~uint64_t{0}) + "{}", "exceeds the 104857600-byte limit"},
      {"unknown dtype BF16",
       file_image(R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})", "abcd"),
       "tensor 'a' has dtype BF16, expected one of F32, F64, I32, I64, U8"},
      {"dtype not a string", file_image(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "abcd"),
       "tensor 'a': dtype must be a string"},
      {"missing data_offsets", file_image(R"({"a":{"dtype":"F32","shape":[3]}})", data12),
       "tensor 'a' needs dtype, shape and data_offsets"},
      {"tensor entry not an object", file_image(R"({"a":5})"), "tensor 'a' needs dtype, shape"},
      {"data_offsets not matching dtype and shape",
       file_image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data12.substr(0, 8)),
       "data_offsets [0, 8) hold 8 bytes, expected 12 for f32 [3]"},
      {"reversed data_offsets",
       file_image(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,0]}})", "abcd"),
       "tensor 'a': data_offsets [4, 0)"},
      {"negative data_offsets",
       file_image(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[-4,0]}})", "abcd"),
       "data_offsets must be two non-negative integers"},
      {"three data_offsets",
       file_image(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4,8]}})", "abcd"),
       "data_offsets must be two non-negative integers"},
      {"overlapping tensors",
       file_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                  data12),
       "tensor 'b' starts at data offset 4, expected 8"},
      {"a gap between tensors",
       file_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                  data12),
       "tensor 'b' starts at data offset 8, expected 4"},
      {"trailing bytes", file_image("{" + std::string(R"("a":{)") + f32x3 + "}}", data12 + "xyz"),
       "the data section has 15 bytes but the tensors cover 12"},
      {"negative extent",
       file_image(R"({"a":{"dtype":"F32","shape":[-3],"data_offsets":[0,12]}})", data12),
       "tensor 'a': extents must be non-negative integers, got [-3]"},
      {"fractional extent",
       file_image(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,12]}})", data12),
       "extents must be non-negative integers"},
      {"shape not an array", file_image(R"({"a":{"dtype":"F32","shape":3,"data_offsets":[0,12]}})", data12),
       "tensor 'a': shape must be an array of at most 5 extents"},
      {"rank 6", file_image(R"({"a":{"dtype":"U8","shape":[1,1,1,1,1,1],"data_offsets":[0,1]}})", "x"),
       "shape must be an array of at most 5 extents, got [1,1,1,1,1,1]"},
      {"extent past int64",
       file_image(R"({"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]}})"),
       "tensor 'a': extent 18446744073709551615 does not fit in int64"},
      {"element count that wraps to zero bytes",  // 2^61 f64 elements = 2^64 bytes = 0 mod 2^64
       file_image(R"({"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}})"),
       "tensor 'a': shape [2305843009213693952] has more elements than any file can hold"},
      {"element count past int64",
       file_image(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})"),
       "has more elements than any file can hold"},
      {"metadata not an object", file_image(R"({"__metadata__":[1]})"), "__metadata__ must be an object"},
      {"metadata value not a string", file_image(R"({"__metadata__":{"epoch":3}})"),
       "__metadata__ value for 'epoch' must be a string"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    REQUIRE_THROWS_AS(parse(c.bytes), Error);
    REQUIRE_THROWS_WITH(parse(c.bytes), Catch::Contains(c.message) && Catch::Contains("test.safetensors"));
  }
  // A tensor whose data lies past the end of the file names its byte range.
  REQUIRE_THROWS_WITH(
      parse(file_image(R"({"big":{"dtype":"F64","shape":[1000,1000],"data_offsets":[0,8000000]}})", "x")),
      Catch::Contains("tensor 'big' needs file bytes [78, 8000078) but the file ends at byte 79"));
  // Empty tensors may share an offset; the header may be padded with spaces.
  const Checkpoint ok = parse(file_image(
      R"({"e1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
      R"("e2":{"dtype":"I64","shape":[2,0],"data_offsets":[0,0]},)"
      R"("x":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}   )",
      "\x07"));
  REQUIRE(ok.tensors.size() == 3);
  REQUIRE(ok.at("x").item<int>() == 7);
  REQUIRE(ok.at("e2").shape() == Shape{2, 0});
}

TEST_CASE("serialize: random corruption gives med3d::Error or a valid file, never a crash",
          "[serialize]") {
  Context context;
  TempDir dir;
  const std::string path = dir.file("fuzz.safetensors");
  save_safetensors(path, {{"w", context.from_vector<float>({2, 2}, {1, 2, 3, 4})},
                          {"n", context.from_vector<int64_t>({1}, {9})}},
                   {{"k", "v"}});
  const std::string bytes = read_bytes(path);
  const std::size_t header_end = 8 + header_length(bytes);
  std::mt19937 random(1234);
  int errors = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    std::string mutated = bytes;
    const int flips = 1 + static_cast<int>(random() % 4);
    for (int f = 0; f < flips; ++f) {
      // Mostly inside the length and header, where corruption changes the meaning.
      const std::size_t at = random() % 8 == 0 ? random() % mutated.size() : random() % header_end;
      mutated[at] = static_cast<char>(random() % 256);
    }
    if (trial % 5 == 0) mutated.resize(random() % (mutated.size() + 1));
    try {
      const Checkpoint c = parse(mutated);
      for (const auto& entry : c.tensors) REQUIRE(entry.second.defined());
    } catch (const Error&) {
      ++errors;
    } catch (const std::exception& e) {
      FAIL("trial " << trial << " threw a non-med3d exception: " << e.what());
    }
  }
  REQUIRE(errors > 1000);

  // Deeply nested JSON is rejected without exhausting the stack.
  const std::string nested = R"({"a":)" + std::string(100000, '[') + std::string(100000, ']') + "}";
  REQUIRE_THROWS_AS(parse(file_image(nested)), Error);
}

TEST_CASE("serialize: a failed save leaves the existing file intact and no temp file",
          "[serialize]") {
  Context context;
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const Tensor w = context.from_vector<float>({3}, {1, 2, 3});
  save_safetensors(path, {{"w", w}}, {{"epoch", "1"}});
  const std::string original = read_bytes(path);

  struct Case {
    const char* what;
    NamedTensors tensors;
    std::map<std::string, std::string> metadata;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"undefined tensor", {{"w", w}, {"bias", Tensor()}}, {}, "tensor 'bias' is undefined"},
      {"duplicate name", {{"w", w}, {"w", w}}, {}, "duplicate tensor name 'w'"},
      {"empty name", {{"", w}}, {}, "invalid tensor name ''"},
      {"reserved name", {{"__metadata__", w}}, {}, "invalid tensor name '__metadata__'"},
      {"invalid UTF-8 name", {{"w\xff", w}}, {}, "must be valid UTF-8"},
      {"invalid UTF-8 metadata", {{"w", w}}, {{"note", "\xc3\x28"}}, "must be valid UTF-8"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    REQUIRE_THROWS_WITH(save_safetensors(path, c.tensors, c.metadata),
                        Catch::Contains(c.message) && Catch::Contains(path));
    REQUIRE(read_bytes(path) == original);
    REQUIRE(dir.listing() == std::set<std::string>{"model.safetensors"});
  }

  // Failing after the data is written (the target is a folder, so the rename fails).
  fs::create_directory(dir.file("folder.safetensors"));
  REQUIRE_THROWS_WITH(save_safetensors(dir.file("folder.safetensors"), {{"w", w}}),
                      Catch::Contains("could not commit"));
  REQUIRE(dir.listing() == std::set<std::string>{"model.safetensors", "folder.safetensors"});
  REQUIRE_THROWS_WITH(load_safetensors(context, dir.file("folder.safetensors")),
                      Catch::Contains("is a folder"));

  REQUIRE_THROWS_WITH(save_safetensors(dir.file("missing/model.safetensors"), {{"w", w}}),
                      Catch::Contains("cannot create") && Catch::Contains("folder exists"));
  REQUIRE_THROWS_WITH(load_safetensors(context, dir.file("absent.safetensors")),
                      Catch::Contains("cannot open") && Catch::Contains("absent.safetensors"));

  // A successful save replaces the file completely.
  save_safetensors(path, {{"v", context.from_vector<int32_t>({2}, {5, 6})}});
  const Checkpoint replaced = load_safetensors(context, path);
  REQUIRE(replaced.tensors.size() == 1);
  REQUIRE(replaced.at("v").to_vector<int32_t>() == std::vector<int32_t>{5, 6});
  REQUIRE(replaced.metadata.empty());
  REQUIRE(dir.listing() == std::set<std::string>{"model.safetensors", "folder.safetensors"});
}

TEST_CASE("serialize: Checkpoint lookup names what it holds", "[serialize]") {
  Context context;
  Checkpoint checkpoint;
  for (int i = 0; i < 10; ++i)
    checkpoint.tensors.emplace_back("layer" + std::to_string(i), context.zeros({1}));
  REQUIRE(checkpoint.contains("layer3"));
  REQUIRE_FALSE(checkpoint.contains("layer10"));
  REQUIRE(&checkpoint.at("layer3") == &checkpoint.tensors[3].second);
  REQUIRE_THROWS_WITH(checkpoint.at("conv1.weight"),
                      Catch::Contains("no tensor 'conv1.weight'") && Catch::Contains("holds 10 tensors") &&
                          Catch::Contains("layer0, layer1") && Catch::Contains("..."));
}
