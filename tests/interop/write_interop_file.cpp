// Writes the safetensors file that tests/golden/check_cpp_written.py reads with the
// independent Python implementation (ctest safetensors_python_reads_cpp_file). The values
// follow simple formulas that the Python side recomputes; keep the two files in sync.
#include <cstdint>
#include <exception>
#include <iostream>
#include <limits>
#include <numeric>
#include <vector>

#include "med3d/med3d.h"

using namespace med3d;

namespace {

template <class T, class Fn>
Tensor make(const Context& context, const Shape& shape, Fn value) {
  std::vector<T> values(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = value(static_cast<int64_t>(i));
  return context.from_vector<T>(shape, values);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: write_interop_file OUTPUT.safetensors\n";
    return 2;
  }
  try {
    Context context;
    const NamedTensors tensors = {
        {"scalar_f64", make<double>(context, {}, [](int64_t) { return 0.1; })},
        {"f32_rank1", make<float>(context, {7}, [](int64_t i) { return static_cast<float>(i) * 0.25f - 3.0f; })},
        {"f64_rank5", make<double>(context, {2, 1, 3, 2, 2}, [](int64_t i) { return static_cast<double>(i) / 3.0; })},
        {"i32_rank2", make<int32_t>(context, {3, 4}, [](int64_t i) { return static_cast<int32_t>(i * 1000003 - 6000000); })},
        {"i64_rank3", make<int64_t>(context, {2, 2, 2}, [](int64_t i) { return (i - 4) * (int64_t{1} << 40) + i; })},
        {"i64_extremes", context.from_vector<int64_t>({2}, {std::numeric_limits<int64_t>::min(),
                                                            std::numeric_limits<int64_t>::max()})},
        {"u8_rank4", make<uint8_t>(context, {2, 2, 2, 2}, [](int64_t i) { return static_cast<uint8_t>((i * 37) % 256); })},
        {"empty_i32", context.empty({3, 0}, DType::i32)},
        {"labels_\xc2\xb5", context.from_vector<uint8_t>({3}, {255, 0, 7})},
    };
    save_safetensors(argv[1], tensors,
                     {{"format", "med3d"},
                      {"quoted", "say \"hi\" \\ then\nnew line\ttab"},
                      {"unicode", "spacing in \xc2\xb5m \xe2\x80\x93 ok"}});
  } catch (const std::exception& e) {
    std::cerr << "write_interop_file: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
