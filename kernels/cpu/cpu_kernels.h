// CPU implementations of the shared kernel signatures (host memory). AVX-512 paths are chosen at
// run time when the CPU has them; a portable path runs everywhere else.
#pragma once

#include "kernels/kernels.h"

namespace caduceus::kernels::cpu {
#include "kernels/kernel_signatures.inc"

// Which instruction set the dispatching kernels use ("avx512" or "generic"). The environment
// variable CADUCEUS_CPU_ISA=generic forces the portable path (tests use it to cover both).
const char* ActiveIsa();
}  // namespace caduceus::kernels::cpu
