// MED3D_HD marks per-element functors shared by the CPU kernels (g++) and the CUDA
// launchers (nvcc): one source of truth for the arithmetic of every op.
#pragma once

#if defined(__CUDACC__)
#define MED3D_HD __host__ __device__
#else
#define MED3D_HD
#endif
