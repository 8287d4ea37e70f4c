// Work shared out over the OpenMP threads (internal to the CPU kernels): when a team is worth
// waking, and items where each thread owns a run and takes from the others' runs when done.
#pragma once

#include <omp.h>

#include <atomic>
#include <cstdint>
#include <vector>

namespace med3d::kernels::cpu {

// Below this many multiply-adds one thread is faster than waking a team (the conv kernels'
// threshold for their parallel regions).
inline constexpr int64_t kParallelMacs = int64_t(1) << 20;

// body(item) for every item in [0, items), each exactly once, on one thread: across the threads
// where `parallel` (the caller's work is worth waking a team) and outside a parallel region, else
// in turn on the calling thread; body must not throw. For work where each thread should keep to a
// run of consecutive items (the line tiles' per-thread weight panels; the padded fprop's planes,
// each thread on the sample it padded and the output planes it wrote in the last call), item i
// costing cost(i) work units: each thread owns a run of about equal total cost (equal counts left
// one thread up to a fifth more work: layer1's panels of 24, 24 and 16 filters), its end rounded
// to the nearest multiple of `granule` items (a panel's: a run ending inside a panel had both
// threads pack it; rounded, layer3_d2 dgrad takes 0.97-0.985x the time, layer2 fprop 0.95-0.98x),
// and takes its items from the front; done, it takes the others' remaining items from their
// backs, so that a thread slowed by the host's other work does less (static runs left the other
// waiting).
template <class Cost, class Body>
void for_costed_items(int64_t items, int64_t granule, bool parallel, Cost&& cost, Body&& body) {
  const int threads = omp_get_max_threads();
  if (!parallel || omp_in_parallel() || threads == 1) {
    for (int64_t item = 0; item < items; ++item) body(item);
    return;
  }
  // Run t: its unclaimed items [front, back), packed in one word (front << 32 | back) so that
  // one compare-and-swap claims from either end.
  struct alignas(64) Run {
    std::atomic<uint64_t> bounds{0};
  };
  std::vector<Run> runs(static_cast<std::size_t>(threads));
  int64_t total = 0;
  for (int64_t item = 0; item < items; ++item) total += cost(item);
  for (int64_t item = 0, start = 0, first = 0, t = 0; t < threads; ++t) {
    for (; item < items && start < total * (t + 1) / threads; ++item) start += cost(item);
    const int64_t rounded = std::min(items, (item + granule / 2) / granule * granule);
    const int64_t end = t + 1 == threads ? items : std::max(first, rounded);
    runs[static_cast<std::size_t>(t)].bounds = static_cast<uint64_t>(first) << 32 | static_cast<uint64_t>(end);
    first = end;
  }
  // The item claimed from run r's front (or back), or -1 when it has none left.
  auto claim = [&](int r, bool front) -> int64_t {
    std::atomic<uint64_t>& bounds = runs[static_cast<std::size_t>(r)].bounds;
    uint64_t now = bounds.load();
    while (true) {
      const uint64_t lo = now >> 32, hi = now & 0xFFFFFFFFu;
      if (lo >= hi) return -1;
      const uint64_t next = front ? (lo + 1) << 32 | hi : lo << 32 | (hi - 1);
      if (bounds.compare_exchange_weak(now, next)) return static_cast<int64_t>(front ? lo : hi - 1);
    }
  };
#pragma omp parallel num_threads(threads)
  {
    const int id = omp_get_thread_num();
    for (int64_t item; (item = claim(id, true)) >= 0;) body(item);
    for (int other = 1; other < threads; ++other)
      for (int64_t item; (item = claim((id + other) % threads, false)) >= 0;) body(item);
  }
}

}  // namespace med3d::kernels::cpu
