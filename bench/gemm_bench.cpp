// med3d-bench gemm: our f32 GEMM (kernels/cpu/gemm.cpp) against Eigen's on square and conv-like
// shapes, with 1 thread and with --threads threads.
#include <Eigen/Core>
#include <algorithm>
#include <cstdio>
#include <omp.h>
#include <vector>

#include "commands.h"
#include "med3d/kernels/cpu/gemm.h"

namespace med3d::bench {

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// C[m, n] = op(A)[m, k] op(B)[k, n]; a transposed operand is stored as the row-major transpose,
// as conv dgrad stores W and wgrad the column matrix.
struct GemmShape {
  const char* name;
  const char* role;
  int64_t m, n, k;
  bool ta, tb;
};

const GemmShape kShapes[] = {
    {"square256", "square", 256, 256, 256, false, false},
    {"square512", "square", 512, 512, 512, false, false},
    {"square1024", "square", 1024, 1024, 1024, false, false},
    {"fprop_l1", "W[64,1728] col[1728,2048]", 64, 2048, 1728, false, false},
    {"fprop_l4", "W[256,2304] col[2304,256]", 256, 256, 2304, false, false},
    {"dgrad_l1", "W^T[1728,64] dy[64,2048]", 1728, 2048, 64, true, false},
    {"wgrad_l1", "dy[64,2048] col^T[2048,1728]", 64, 1728, 2048, false, true},
};

}  // namespace

int run_gemm(const CommonOptions& options) {
  check_only(options, kShapes, "shape");
  std::printf("gemm: ours (%s) vs Eigen %d.%d.%d, median and best of %d runs (alternating) after %d warm-up; load average %s\n\n",
              kernels::cpu::gemm_f32_kernel(), EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION,
              options.runs, options.warmup, load_average().c_str());
  Report report({{"shape"},
                 {"operands"},
                 {"threads", 0},
                 {"ours_ms", 3},
                 {"ours_gflops", 1},
                 {"ours_best_gflops", 1},
                 {"eigen_ms", 3},
                 {"eigen_gflops", 1},
                 {"eigen_best_gflops", 1},
                 {"speed_vs_eigen", 2}});
  std::vector<int> thread_counts{1};
  if (options.threads > 1) thread_counts.push_back(options.threads);
  for (const GemmShape& s : kShapes) {
    if (!selected(options, s.name)) continue;
    const int64_t scale = options.quick ? 2 : 1;
    const int64_t m = std::max<int64_t>(s.m / scale, 1), n = std::max<int64_t>(s.n / scale, 1),
                  k = std::max<int64_t>(s.k / scale, 1);
    const RowMajor a = RowMajor::Random(s.ta ? k : m, s.ta ? m : k);
    const RowMajor b = RowMajor::Random(s.tb ? n : k, s.tb ? k : n);
    RowMajor c(m, n), c_eigen(m, n);
    const kernels::cpu::GemmView av = s.ta ? kernels::cpu::gemm_transposed(a.data(), m)
                                           : kernels::cpu::gemm_rows(a.data(), k);
    const kernels::cpu::GemmView bv = s.tb ? kernels::cpu::gemm_transposed(b.data(), k)
                                           : kernels::cpu::gemm_rows(b.data(), n);
    const double flops = 2.0 * static_cast<double>(m * n * k);
    for (int threads : thread_counts) {
      omp_set_num_threads(threads);
      const auto [ours, eigen, eigen_over_ours] = time_alternating(
          [&] { kernels::cpu::gemm_f32(av, bv, c.data(), n, m, n, k, false); },
          [&] {
            if (s.ta)
              c_eigen.noalias() = a.transpose() * b;
            else if (s.tb)
              c_eigen.noalias() = a * b.transpose();
            else
              c_eigen.noalias() = a * b;
          },
          options.warmup, options.runs);
      report.add({std::string(s.name), std::string(s.role), double(threads), 1e3 * ours.median_s,
                  flops / ours.median_s / 1e9, flops / ours.min_s / 1e9, 1e3 * eigen.median_s,
                  flops / eigen.median_s / 1e9, flops / eigen.min_s / 1e9,
                  eigen_over_ours});
    }
    omp_set_num_threads(options.threads);
  }
  emit(report, options, {{"bench", "gemm"}, {"kernel", kernels::cpu::gemm_f32_kernel()}, {"runs", options.runs},
                         {"warmup", options.warmup}, {"load_average", load_average()}},
       "our sgemm vs Eigen (Eigen time / our time)", "speed_vs_eigen", {"shape", "threads"});
  return 0;
}

}  // namespace med3d::bench
