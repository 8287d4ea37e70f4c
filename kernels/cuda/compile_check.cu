// Compiles every kernel .cuh with nvcc (sm_80, sm_90) so that CI catches nvcc-only errors in
// code that the CPU build runs only under emulation. Defines nothing else.
#include "batch_norm.cuh"
#include "conv3d_direct.cuh"
#include "conv3d_tiled.cuh"
