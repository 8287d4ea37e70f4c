// The CUDA runtime calls med3d makes: device discovery, one stream per Context, stream-ordered
// memory (cudaMallocAsync/cudaFreeAsync), copies and the launch check. Every call is checked:
// a failure throws med3d::Error naming the call, the device and CUDA's message.
// Plain C++: callers need no CUDA header. Defined in kernels/cuda/runtime.cu, built by nvcc, or,
// with MED3D_CUDA=EMULATE (tests only), by g++ over tests/cuda_emu/, where host memory plays
// device memory and kernels run as fibers.
#pragma once

#include <cstddef>
#include <string>

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace med3d::kernels::cuda {

using Stream = CUstream_st*;

// Number of usable devices; 0 when the driver or runtime reports any error (no GPU, no
// driver, a container without device nodes): discovery never throws.
int device_count() noexcept;
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)"
std::string device_description(int device);

// Makes `device` current for this host thread; every launcher calls it first.
void set_device(int device);
// A non-blocking stream on `device`; destroy_stream waits for its work first.
Stream create_stream(int device);
void destroy_stream(int device, Stream stream) noexcept;

// Stream-ordered allocation: usable by work queued on `stream` after this call; `bytes` = 0
// gives nullptr. release() queues the free behind the stream's work.
void* allocate(std::size_t bytes, int device, Stream stream);
void release(void* pointer, int device, Stream stream) noexcept;
// Returns the pool's unused memory to the driver (after the stream's queued work). The pool
// otherwise keeps freed blocks for reuse: create_stream sets its release threshold to "never".
void trim_pool(int device, Stream stream);

// Host -> device: returns once `host` may be reused. Device -> host: returns when the bytes
// are on the host (waits for the stream). Device -> device: queued on the stream.
void copy_to_device(void* device_dst, const void* host_src, std::size_t bytes, Stream stream);
void copy_to_host(void* host_dst, const void* device_src, std::size_t bytes, Stream stream);
void copy_on_device(void* dst, const void* src, std::size_t bytes, Stream stream);
void fill_zero(void* device_dst, std::size_t bytes, Stream stream);
void synchronize(Stream stream);

// Throws when the last launch on this thread failed (bad configuration, missing image for this
// GPU's architecture, an earlier asynchronous fault).
void check_launch(const char* kernel);

}  // namespace med3d::kernels::cuda
