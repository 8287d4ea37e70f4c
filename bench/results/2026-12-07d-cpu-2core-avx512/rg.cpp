// rg: the bench's host-regime probe (measure_host_regime, bench/common.cpp) on its own, as
// monitor4.sh and monitor5.sh ran it: prints "own_ns handoff_ns ratio". Built against the bench's
// object for common.cpp (from the repository root, after building med3d-bench):
//   g++ -O2 -std=c++20 -fopenmp -I bench -I kernels/include -I engine/include -I . -isystem /usr/include/eigen3 \
//       bench/results/2026-12-07d-cpu-2core-avx512/rg.cpp build/bench/CMakeFiles/med3d-bench.dir/common.cpp.o \
//       build/libmed3d.a -lz -lpng -o /tmp/gt/rg
#include <cstdio>

#include "common.h"

int main() {
  const med3d::bench::HostRegime r = med3d::bench::measure_host_regime(2, false);
  std::printf("%.2f %.2f %.1f\n", r.own_line_ns, r.handoff_line_ns, r.ratio());
}
