// Test-only CUDA emulation: lets g++ compile a kernel .cuh file unchanged and run it on the CPU.
//
// What it adds: dim3/uint3, threadIdx/blockIdx/blockDim/gridDim, the CUDA qualifiers as no-ops,
// static __shared__ (a function-local static: blocks run one after another, so one copy serves
// each block in turn), dynamic shared memory through MED3D_EXTERN_SHARED(type, name) (fresh per
// block, filled with 0xFF bytes so a read before any write gives NaN), __syncthreads,
// __shfl_sync/__shfl_down_sync/__shfl_up_sync/__shfl_xor_sync (masks ignored, warps of 32 over
// the linearised thread index), __syncwarp, atomicAdd/atomicMax/atomicMin, and
// cuda_emu::launch(kernel, grid, block, shared_bytes, args...).
//
// How it runs: launch() runs the blocks one after another; the threads of a block are
// Boost.Context fibers. Warp by warp (in reverse order under ScopedReverseOrder, to expose
// missing barriers), the lanes of a warp are resumed round-robin, each until it reaches a
// shuffle, a __syncthreads or returns, until the whole warp waits at a __syncthreads or has
// exited; then the next warp runs. A barrier is released when every thread of the block (or
// of the warp, for shuffles) waits at it. A barrier that cannot be released (some threads
// exited, wait at another __syncthreads, or at a shuffle) throws cuda_emu::EmulationError
// naming the block, the threads and the source lines; it never hangs. Exceptions thrown inside
// a kernel are rethrown by launch(). Stack switches are annotated for AddressSanitizer.
//
// Not emulated: inline PTX, tensor cores, cooperative groups, memory fences between blocks
// (blocks never run concurrently here), streams. Single OS thread only.
#pragma once

#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>

#include <boost/context/fiber.hpp>
#include <boost/context/stack_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define CUDA_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDA_EMU_ASAN 1
#endif
#endif

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace cuda_emu {

class EmulationError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr int kWarpSize = 32;
#ifdef CUDA_EMU_ASAN
inline constexpr std::size_t kStackBytes = std::size_t(256) << 10;  // ASan's redzones
#else
inline constexpr std::size_t kStackBytes = std::size_t(64) << 10;
#endif
inline constexpr std::size_t kMaxSharedBytes = std::size_t(48) << 10;  // without opt-in

struct Block;

enum class State { Running, AtBarrier, AtWarpSync, Done };

struct Thread {
  uint3 thread_idx{};
  int linear = 0;
  State state = State::Running;
  const char* file = nullptr;  // where it waits
  int line = 0;
  Block* block = nullptr;
  boost::context::fiber fiber;      // the thread, while suspended
  boost::context::fiber scheduler;  // the scheduler, while the thread runs
  void* stack_bottom = nullptr;
  std::size_t stack_size = 0;
};

struct Block {
  uint3 block_idx{};
  dim3 block_dim, grid_dim;
  std::vector<unsigned char> dynamic_shared;
  std::vector<std::uint64_t> warp_slots;  // one exchange slot per thread, for shuffles
  std::vector<Thread> threads;
  std::exception_ptr error;
  bool cancelled = false;  // set when a launch fails: waiting threads unwind and exit
  const void* scheduler_stack_bottom = nullptr;
  std::size_t scheduler_stack_size = 0;
};

// The test-only global state: the running thread and the scheduling order.
inline Thread* g_current = nullptr;
// CUDA_EMU_REVERSE_ORDER=1 in the environment starts every launch of the process reversed
// (how the gpu suite runs a second time in EMULATE builds).
inline bool g_reverse_order = [] {
  const char* reverse = std::getenv("CUDA_EMU_REVERSE_ORDER");
  return reverse != nullptr && reverse[0] == '1';
}();

inline Thread& current() {
  if (!g_current) throw EmulationError("cuda_emu: a device function was called outside launch()");
  return *g_current;
}

// Runs every launch() in its scope with threads resumed in reverse order.
class ScopedReverseOrder {
 public:
  explicit ScopedReverseOrder(bool reverse = true) : saved_(g_reverse_order) {
    g_reverse_order = reverse;
  }
  ~ScopedReverseOrder() { g_reverse_order = saved_; }
  ScopedReverseOrder(const ScopedReverseOrder&) = delete;
  ScopedReverseOrder& operator=(const ScopedReverseOrder&) = delete;

 private:
  bool saved_;
};

inline std::string describe(const uint3& v) {
  std::ostringstream s;
  s << "(" << v.x << "," << v.y << "," << v.z << ")";
  return s.str();
}

// Thrown inside a waiting thread of a failed launch, so that its stack unwinds through the
// normal (sanitizer-annotated) switch rather than Boost.Context's forced unwind.
struct Cancelled {};

// Suspends the running thread in `state` and returns to the scheduler; ASan is told about both
// stack switches so that it does not report the fiber stacks as overflows.
inline void suspend(State state, const char* file, int line) {
  Thread& t = current();
  t.state = state, t.file = file, t.line = line;
#ifdef CUDA_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t.block->scheduler_stack_bottom,
                                 t.block->scheduler_stack_size);
#endif
  t.scheduler = std::move(t.scheduler).resume();
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  if (t.block->cancelled) throw Cancelled{};
}

// Fiber stacks are recycled across blocks and launches (allocating them per block costs more
// than the emulated kernels). The thread keeps its stack's bounds for the sanitizer.
struct StackPool {
  std::vector<void*> free;
  StackPool() = default;
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;
  ~StackPool() {
    for (void* p : free) std::free(p);
  }
};
inline StackPool g_stack_pool;

struct PooledStack {
  Thread* thread;
  boost::context::stack_context allocate() {
    void* p = nullptr;
    if (g_stack_pool.free.empty()) {
      p = std::malloc(kStackBytes);
      if (!p) throw std::bad_alloc();
    } else {
      p = g_stack_pool.free.back();
      g_stack_pool.free.pop_back();
#ifdef CUDA_EMU_ASAN
      // Frames left by the final switch out of a fiber keep their redzones: clear them.
      __asan_unpoison_memory_region(p, kStackBytes);
#endif
    }
    thread->stack_bottom = p;
    thread->stack_size = kStackBytes;
    boost::context::stack_context sc;
    sc.size = kStackBytes;
    sc.sp = static_cast<char*>(p) + kStackBytes;
    return sc;
  }
  void deallocate(boost::context::stack_context& sc) noexcept {
    void* p = static_cast<char*>(sc.sp) - sc.size;
    try {
      g_stack_pool.free.push_back(p);
    } catch (...) {
      std::free(p);
    }
  }
};

// True when threads [first, last) all wait in `state` at the same source line.
inline bool all_wait_at_same(const Block& b, int first, int last, State state) {
  for (int i = first; i < last; ++i) {
    const Thread& t = b.threads[i];
    if (t.state != state || t.line != b.threads[first].line ||
        std::strcmp(t.file, b.threads[first].file) != 0)
      return false;
  }
  return true;
}

// Releases the warp [first, last) from a shuffle when all its lanes wait at the same one.
inline bool release_warp(Block& b, int first, int last) {
  if (!all_wait_at_same(b, first, last, State::AtWarpSync)) return false;
  for (int i = first; i < last; ++i) b.threads[i].state = State::Running;
  return true;
}

// Releases the block from a __syncthreads when all its threads wait at the same one.
inline bool release_block(Block& b) {
  if (!all_wait_at_same(b, 0, static_cast<int>(b.threads.size()), State::AtBarrier)) return false;
  for (Thread& t : b.threads) t.state = State::Running;
  return true;
}

// The message for a block where nothing can run: who waits where, who has exited.
inline std::string stuck_message(const Block& b) {
  std::ostringstream s;
  s << "cuda_emu: divergent barrier in block " << describe(b.block_idx) << " (blockDim "
    << describe(uint3{b.block_dim.x, b.block_dim.y, b.block_dim.z})
    << "): not every thread reaches the same __syncthreads/shuffle.";
  int shown = 0;
  for (const Thread& t : b.threads) {
    if (shown == 8) {
      s << " ...";
      break;
    }
    // Report the threads that differ from thread 0 (and thread 0 itself).
    const Thread& t0 = b.threads[0];
    const bool differs = t.state != t0.state || t.line != t0.line;
    if (&t != &t0 && !differs) continue;
    s << " thread " << describe(t.thread_idx);
    if (t.state == State::Done)
      s << " has exited;";
    else
      s << (t.state == State::AtBarrier ? " waits at __syncthreads at " : " waits at a shuffle at ")
        << t.file << ":" << t.line << ";";
    ++shown;
  }
  return s.str();
}

// Runs thread t until it suspends or exits.
inline void resume(Thread& t) {
  g_current = &t;
#ifdef CUDA_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t.stack_bottom, t.stack_size);
#endif
  t.fiber = std::move(t.fiber).resume();
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  g_current = nullptr;
}

inline void run_block(Block& b, const std::function<void()>& body) {
  namespace ctx = boost::context;
  const int n = static_cast<int>(b.threads.size());
  for (int i = 0; i < n; ++i) {
    Thread& t = b.threads[i];
    t.fiber = ctx::fiber(std::allocator_arg, PooledStack{&t}, [&t, &b, &body](ctx::fiber&& sched) {
#ifdef CUDA_EMU_ASAN
      __sanitizer_finish_switch_fiber(nullptr, &b.scheduler_stack_bottom, &b.scheduler_stack_size);
#endif
      t.scheduler = std::move(sched);
      try {
        if (!b.cancelled) body();  // a thread that never ran does not start after a failure
      } catch (const Cancelled&) {
      } catch (...) {
        if (!b.error) b.error = std::current_exception();
      }
      t.state = State::Done;
#ifdef CUDA_EMU_ASAN
      __sanitizer_start_switch_fiber(nullptr, b.scheduler_stack_bottom, b.scheduler_stack_size);
#endif
      return std::move(t.scheduler);
    });
  }
  // Warp-serial: each warp runs (its lanes round-robin between shuffles) until it waits at a
  // __syncthreads or exits, before the next warp starts. One warp thus runs far ahead of the
  // others, which exposes a missing barrier in one of the two orders.
  const int warps = (n + kWarpSize - 1) / kWarpSize;
  try {
    for (;;) {
      bool ran = false;
      for (int wk = 0; wk < warps; ++wk) {
        const int w = g_reverse_order ? warps - 1 - wk : wk;
        const int first = w * kWarpSize, last = first + kWarpSize < n ? first + kWarpSize : n;
        do {
          for (int k = first; k < last; ++k) {
            Thread& t = b.threads[g_reverse_order ? first + last - 1 - k : k];
            if (t.state != State::Running) continue;
            ran = true;
            resume(t);
            if (b.error) std::rethrow_exception(b.error);
          }
        } while (release_warp(b, first, last));
      }
      bool done = true;
      for (const Thread& t : b.threads) done = done && t.state == State::Done;
      if (done) return;
      if (!ran && !release_block(b)) throw EmulationError(stuck_message(b));
    }
  } catch (...) {
    // Let every waiting thread unwind its stack and exit before the fibers are destroyed.
    b.cancelled = true;
    for (Thread& t : b.threads)
      if (t.state != State::Done && t.fiber) resume(t);
    throw;
  }
}

// Runs kernel<<<grid, block, shared_bytes>>>(args...) to completion.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes,
            Args&&... args) {
  const unsigned threads = block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64)
    throw EmulationError("cuda_emu: invalid block size (CUDA allows 1..1024 threads, z <= 64)");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
    throw EmulationError("cuda_emu: invalid grid size (y and z must be 1..65535)");
  if (shared_bytes > kMaxSharedBytes)
    throw EmulationError("cuda_emu: more than 48 KiB of dynamic shared memory needs an opt-in");
  // Arguments are converted to the kernel's parameter types once, as a launch copies them.
  const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block b;
        b.block_idx = {bx, by, bz};
        b.block_dim = block;
        b.grid_dim = grid;
        b.dynamic_shared.assign(shared_bytes, 0xFF);
        b.warp_slots.assign(threads, 0);
        b.threads.resize(threads);
        for (unsigned i = 0; i < threads; ++i) {
          Thread& t = b.threads[i];
          t.linear = static_cast<int>(i);
          t.thread_idx = {i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
          t.block = &b;
        }
        run_block(b, [&params, kernel] { std::apply(kernel, params); });
      }
}

inline unsigned char* dynamic_shared() { return current().block->dynamic_shared.data(); }

template <class T>
T shuffle(T value, int kind, int arg, int width, const char* file, int line) {
  static_assert(sizeof(T) <= sizeof(std::uint64_t), "cuda_emu: shuffles move at most 8 bytes");
  Thread& t = current();
  Block& b = *t.block;
  if (width <= 0 || width > kWarpSize || (width & (width - 1)) != 0)
    throw EmulationError("cuda_emu: shuffle width must be a power of 2 <= 32");
  std::memcpy(&b.warp_slots[t.linear], &value, sizeof(T));
  suspend(State::AtWarpSync, file, line);
  const int lane = t.linear % kWarpSize, warp0 = t.linear - lane;
  const int base = lane / width * width;
  int src = lane;
  if (kind == 0) src = base + (arg % width);                               // __shfl_sync
  if (kind == 1) src = lane + arg < base + width ? lane + arg : lane;      // __shfl_down_sync
  if (kind == 2) src = lane - arg >= base ? lane - arg : lane;             // __shfl_up_sync
  if (kind == 3) src = (lane ^ arg) < base + width ? (lane ^ arg) : lane;  // __shfl_xor_sync
  if (warp0 + src >= static_cast<int>(b.threads.size()))
    throw EmulationError("cuda_emu: shuffle reads a lane past the end of a partial warp");
  T result;
  std::memcpy(&result, &b.warp_slots[warp0 + src], sizeof(T));
  suspend(State::AtWarpSync, file, line);  // nobody overwrites a slot before all have read
  return result;
}

}  // namespace cuda_emu

// inline: a .cuh included by several test sources defines its kernels once.
#define __global__ inline
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define MED3D_EXTERN_SHARED(type, name) type* name = reinterpret_cast<type*>(::cuda_emu::dynamic_shared())

#define threadIdx (::cuda_emu::current().thread_idx)
#define blockIdx (::cuda_emu::current().block->block_idx)
#define blockDim (::cuda_emu::current().block->block_dim)
#define gridDim (::cuda_emu::current().block->grid_dim)
#define warpSize (::cuda_emu::kWarpSize)

#define __syncthreads() ::cuda_emu::suspend(::cuda_emu::State::AtBarrier, __FILE__, __LINE__)
#define __syncwarp(...) ::cuda_emu::shuffle(0, 0, 0, 32, __FILE__, __LINE__)
#define __shfl_sync(mask, v, lane, ...) \
  ::cuda_emu::shuffle((void(mask), (v)), 0, (lane), CUDA_EMU_WIDTH(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, d, ...) \
  ::cuda_emu::shuffle((void(mask), (v)), 1, (d), CUDA_EMU_WIDTH(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, d, ...) \
  ::cuda_emu::shuffle((void(mask), (v)), 2, (d), CUDA_EMU_WIDTH(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, m, ...) \
  ::cuda_emu::shuffle((void(mask), (v)), 3, (m), CUDA_EMU_WIDTH(__VA_ARGS__), __FILE__, __LINE__)
// The optional width argument (default 32).
#define CUDA_EMU_WIDTH(...) (::cuda_emu::kWarpSize __VA_OPT__(* 0 + (__VA_ARGS__)))

// Fibers switch only at barriers, so these read-modify-writes are atomic.
template <class T>
T atomicAdd(T* address, std::type_identity_t<T> value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <class T>
T atomicMax(T* address, std::type_identity_t<T> value) {
  const T old = *address;
  *address = old < value ? value : old;
  return old;
}
template <class T>
T atomicMin(T* address, std::type_identity_t<T> value) {
  const T old = *address;
  *address = value < old ? value : old;
  return old;
}
