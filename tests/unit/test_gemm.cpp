#include <omp.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "med3d/kernels/cpu/gemm.h"
#include "test_util.h"

using med3d::kernels::cpu::gemm_f32;
using med3d::kernels::cpu::GemmView;

namespace {

// An operand stored so that the view has the given layout: transposed (row stride 1) or
// not, with `spread` > 1 putting the elements that many floats apart along the contiguous axis.
struct Operand {
  std::vector<float> storage;
  GemmView view;
};

Operand make_operand(int64_t rows, int64_t cols, bool transposed, int64_t spread, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Operand op;
  const int64_t inner = transposed ? rows : cols, outer = transposed ? cols : rows;
  const int64_t ld = inner * spread + 3;  // padded rows: leading dimension > extent
  op.storage.resize(static_cast<std::size_t>(std::max<int64_t>(outer * ld, 1)));
  for (float& v : op.storage) v = dist(rng);
  op.view = transposed ? GemmView{op.storage.data(), spread, ld} : GemmView{op.storage.data(), ld, spread};
  return op;
}

float at(const GemmView& v, int64_t i, int64_t j) { return v.data[i * v.row_stride + j * v.col_stride]; }

struct Case {
  int64_t m, n, k;
  bool ta, tb, accumulate;
  int64_t spread = 1;
};

// Runs one case with `threads` threads; checks against a double-accumulated reference with a
// normwise bound relative to |A||B| (+ |C0|), and that the padding columns of C are untouched.
std::vector<float> run_case(const Case& cs, int threads) {
  std::mt19937 rng(static_cast<unsigned>(cs.m * 7919 + cs.n * 104729 + cs.k * 31 + cs.ta * 2 + cs.tb));
  const Operand a = make_operand(cs.m, cs.k, cs.ta, cs.spread, rng);
  const Operand b = make_operand(cs.k, cs.n, cs.tb, cs.spread, rng);
  const int64_t ldc = cs.n + 5;
  std::vector<float> c(static_cast<std::size_t>(cs.m * ldc));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& v : c) v = dist(rng);
  const std::vector<float> c0 = c;
  const int previous = omp_get_max_threads();
  omp_set_num_threads(threads);
  gemm_f32(a.view, b.view, c.data(), ldc, cs.m, cs.n, cs.k, cs.accumulate);
  omp_set_num_threads(previous);
  double err2 = 0, scale2 = 0;
  bool padding_kept = true;
  for (int64_t i = 0; i < cs.m; ++i) {
    for (int64_t j = 0; j < cs.n; ++j) {
      double ref = cs.accumulate ? c0[i * ldc + j] : 0.0, mag = cs.accumulate ? std::abs(ref) : 0.0;
      for (int64_t p = 0; p < cs.k; ++p) {
        const double prod = double(at(a.view, i, p)) * double(at(b.view, p, j));
        ref += prod;
        mag += std::abs(prod);
      }
      err2 += (c[i * ldc + j] - ref) * (c[i * ldc + j] - ref);
      scale2 += mag * mag;
    }
    for (int64_t j = cs.n; j < ldc; ++j) padding_kept = padding_kept && c[i * ldc + j] == c0[i * ldc + j];
  }
  INFO("m " << cs.m << " n " << cs.n << " k " << cs.k << " ta " << cs.ta << " tb " << cs.tb << " acc "
            << cs.accumulate << " spread " << cs.spread << " threads " << threads);
  CHECK(padding_kept);
  CHECK(std::sqrt(err2) <= 1e-5 * std::sqrt(double(std::max<int64_t>(cs.k, 1))) * std::sqrt(scale2) + 1e-30);
  return c;
}

}  // namespace

TEST_CASE("gemm_f32: matches a double reference for edge shapes and all transposes", "[gemm]") {
  const int64_t sizes[] = {1, 2, 13, 14, 15, 31, 32, 33, 100, 257};
  for (int64_t m : sizes)
    for (int64_t n : sizes)
      for (int64_t k : {int64_t(1), int64_t(15), int64_t(33), int64_t(257)}) {
        const bool ta = (m + n + k) % 2 == 1, tb = (m * 3 + n + k) % 4 >= 2;
        run_case({m, n, k, ta, tb, (m + n) % 3 == 0}, 1);
      }
  for (int combo = 0; combo < 4; ++combo)
    for (bool accumulate : {false, true})
      for (int64_t k : {int64_t(0), int64_t(2), int64_t(14), int64_t(100), int64_t(600)})
        run_case({33, 31, k, combo % 2 == 1, combo / 2 == 1, accumulate}, 1);
}

TEST_CASE("gemm_f32: k = 0 zeroes C or leaves it and keeps its padding", "[gemm]") {
  std::vector<float> c(3 * 6, 5.0f);
  const float one = 1.0f;
  gemm_f32({&one, 1, 1}, {&one, 1, 1}, c.data(), 6, 3, 4, 0, true);
  CHECK(c == std::vector<float>(3 * 6, 5.0f));
  gemm_f32({&one, 1, 1}, {&one, 1, 1}, c.data(), 6, 3, 4, 0, false);
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 6; ++j) CHECK(c[i * 6 + j] == (j < 4 ? 0.0f : 5.0f));
}

TEST_CASE("gemm_f32: general strides, several cache blocks", "[gemm]") {
  // spread 2: neither stride is 1; m > MC, n > NC and k > KC cross every blocking boundary.
  run_case({40, 37, 70, false, true, true, 2}, 1);
  run_case({41, 30, 19, true, false, false, 3}, 1);
  run_case({1100, 40, 300, false, false, true}, 1);
  run_case({3, 4200, 5, true, true, false}, 1);
}

TEST_CASE("gemm_f32: transposed B in panels narrower than 64 columns", "[gemm]") {
  // Packed by 16 x 16 register transposes up to the last multiple of 16 columns and rows,
  // element by element after (a 1x1x1 conv's wgrad with few input channels: x^T).
  for (int64_t n : {int64_t(16), int64_t(32), int64_t(48), int64_t(50), int64_t(79)})
    for (int64_t k : {int64_t(16), int64_t(40), int64_t(300)}) run_case({7, n, k, false, true, false}, 1);
}

TEST_CASE("gemm_f32: bitwise identical results with 1 and 2 threads", "[gemm]") {
  // Wide (split along n), tall (split along m) and conv-like transposed shapes.
  for (const Case& cs : {Case{257, 257, 100, false, false, false}, Case{257, 33, 300, true, false, true},
                         Case{1100, 45, 64, false, true, false}, Case{64, 700, 513, false, true, true}}) {
    const std::vector<float> one = run_case(cs, 1), two = run_case(cs, 2);
    CHECK(one == two);
  }
}

TEST_CASE("gemm_f32_sum: the bits of gemm_f32 term by term, on 1 and 2 threads", "[gemm]") {
  // Shapes through each of gemm_f32's paths: wide (columns split, A packed once per term), tall
  // (rows split), few rows (B streamed), one thread's worth; 1 to 3 terms, accumulating or not.
  using med3d::kernels::cpu::gemm_f32_sum;
  const Case shapes[] = {Case{256, 1024, 256, false, true, false}, Case{300, 40, 70, false, false, true},
                         Case{3, 200, 50, false, false, false}, Case{9, 9, 9, true, true, true}};
  for (const Case& cs : shapes)
    for (const int64_t terms : {1, 2, 3})
      for (const int threads : {1, 2}) {
        INFO("m " << cs.m << " n " << cs.n << " k " << cs.k << ", " << terms << " terms, " << threads << " threads");
        std::mt19937 rng(static_cast<unsigned>(cs.m + terms));
        std::vector<Operand> as, bs;
        std::vector<GemmView> a_views, b_views;
        for (int64_t t = 0; t < terms; ++t) {  // (a view stays valid as its Operand moves: the floats do not)
          as.push_back(make_operand(cs.m, cs.k, cs.ta, 1, rng));
          bs.push_back(make_operand(cs.k, cs.n, cs.tb, 1, rng));
          a_views.push_back(as.back().view);
          b_views.push_back(bs.back().view);
        }
        const int64_t ldc = cs.n + 5;
        std::vector<float> start(static_cast<std::size_t>(cs.m * ldc));
        std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
        for (float& v : start) v = dist(rng);
        std::vector<float> expected = start, summed = start;
        const int previous = omp_get_max_threads();
        omp_set_num_threads(threads);
        for (int64_t t = 0; t < terms; ++t)
          gemm_f32(a_views[static_cast<std::size_t>(t)], b_views[static_cast<std::size_t>(t)], expected.data(), ldc,
                   cs.m, cs.n, cs.k, cs.accumulate || t > 0);
        gemm_f32_sum(a_views, b_views, summed.data(), ldc, cs.m, cs.n, cs.k, cs.accumulate);
        omp_set_num_threads(previous);
        const bool same_bits = summed == expected;  // (a bool: Catch would print every element)
        CHECK(same_bits);
        // Not a copy of one term: the last term's products are in it.
        const float first = summed[0];
        gemm_f32(a_views.back(), b_views.back(), summed.data(), ldc, cs.m, cs.n, cs.k, false);
        CHECK((terms == 1 && !cs.accumulate ? first == summed[0] : first != summed[0]));
      }
  float c[4] = {};
  const float one = 1.0f;
  const std::vector<GemmView> a_one = {{&one, 1, 1}}, none;
  CHECK_THROWS_WITH(gemm_f32_sum(a_one, none, c, 1, 1, 1, 1, false),
                    Catch::Contains("as many B terms as A terms (at least one), got 1 A and 0 B"));
}

TEST_CASE("gemm_f32: rejects negative sizes and a short ldc", "[gemm]") {
  float c[4] = {};
  const float one = 1.0f;
  CHECK_THROWS_AS(gemm_f32({&one, 1, 1}, {&one, 1, 1}, c, 1, 1, 2, 1, false), med3d::Error);
  CHECK_THROWS_AS(gemm_f32({&one, 1, 1}, {&one, 1, 1}, c, 1, -1, 1, 1, false), med3d::Error);
}

TEST_CASE("gemm_f32: a B source and a packed A give the bits of the stored matrices", "[gemm]") {
  // The implicit conv GEMMs rely on this: a source fills the same panels the stored matrix
  // would be packed into (transposed through the tile for wgrad), and a packed A holds the
  // panels every GEMM would pack. Sizes cross the MC (510), KC (256) and NC (4096) blocks and
  // leave partial panels; both thread counts.
  using med3d::kernels::cpu::GemmPackedA;
  using med3d::kernels::cpu::GemmSource;
  struct Shape {
    int64_t m, n, k;
  };
  // m <= 4 or k <= 4 with a stored B runs the few-rows streaming path: its bits must match the panels' too.
  // A packed A reads a row-major A's whole panels in place (a transposed A's are all packed).
  // Few columns (12 x 60 x 600) run a packed A in blocks deeper than KC: still the same bits.
  for (const Shape s : {Shape{7, 5, 3}, Shape{64, 130, 300}, Shape{515, 70, 520}, Shape{13, 4100, 17},
                        Shape{2, 300, 40}, Shape{3, 70, 520}, Shape{1, 517, 9}, Shape{9, 300, 3}, Shape{33, 40, 1},
                        Shape{12, 60, 600}}) {
    for (const bool transposed : {false, true}) {
      std::mt19937 rng(static_cast<unsigned>(s.m * 31 + s.n * 7 + s.k + transposed));
      const Operand a = make_operand(s.m, s.k, transposed, 1, rng);
      // The stored matrix M: B itself, or B^T for a transposed source.
      const Operand b = make_operand(s.k, s.n, transposed, 1, rng);
      int fills = 0;
      const GemmSource source{[&](int64_t row0, int64_t rows, int64_t col0, int64_t cols, float* dst, int64_t ld) {
                                // M(i, j) = B(i, j), or B(j, i) when transposed.
                                for (int64_t i = 0; i < rows; ++i)
                                  for (int64_t j = 0; j < cols; ++j)
                                    dst[i * ld + j] = transposed ? at(b.view, col0 + j, row0 + i)
                                                                 : at(b.view, row0 + i, col0 + j);
#pragma omp atomic
                                ++fills;
                              },
                              transposed};
      for (const int threads : {1, 2}) {
        const int previous = omp_get_max_threads();
        omp_set_num_threads(threads);
        std::vector<float> stored(static_cast<std::size_t>(s.m * s.n)), sourced = stored, packed = stored;
        std::vector<float> packed_stored = stored;
        gemm_f32(a.view, b.view, stored.data(), s.n, s.m, s.n, s.k, false);
        gemm_f32(a.view, source, sourced.data(), s.n, s.m, s.n, s.k, false);
        const GemmPackedA pa(a.view, s.m, s.k);
        gemm_f32(pa, source, packed.data(), s.n, s.n, false);
        gemm_f32(pa, b.view, packed_stored.data(), s.n, s.n, false);
        // Packed in advance, read through a view, and in bands of rows (panel-aligned starts) from it.
        std::vector<float> ahead(static_cast<std::size_t>(GemmPackedA::packed_elements(s.m, s.k)));
        GemmPackedA::pack(a.view, s.m, s.k, ahead.data());
        std::vector<float> viewed = stored, banded(stored.size(), -1.0f);
        gemm_f32(GemmPackedA::view(ahead.data(), s.m, s.k), b.view, viewed.data(), s.n, s.n, false);
        const int64_t panel = med3d::kernels::cpu::gemm_f32_panel_rows();
        for (int64_t i0 = 0; i0 < s.m; i0 += 3 * panel) {
          const int64_t i1 = std::min(s.m, i0 + 3 * panel);
          gemm_f32(GemmPackedA::view(ahead.data(), s.m, s.k).rows(i0, i1), b.view, banded.data() + i0 * s.n, s.n, s.n,
                   false);
        }
        omp_set_num_threads(previous);
        INFO("m " << s.m << " n " << s.n << " k " << s.k << " transposed (A, the source) " << transposed << " threads " << threads);
        CHECK(sourced == stored);
        CHECK(packed == stored);
        CHECK(packed_stored == stored);
        CHECK(viewed == stored);
        CHECK(banded == stored);
      }
      CHECK(fills > 0);
    }
  }
  // Bands must start on a panel.
  std::vector<float> ahead(static_cast<std::size_t>(GemmPackedA::packed_elements(20, 5)));
  REQUIRE_THROWS_WITH(GemmPackedA::view(ahead.data(), 20, 5).rows(1, 20), Catch::Contains("a multiple of"));
}
