// Run-time choice between the AVX-512 and the portable kernels, made once per process.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/linear_internal.h"

namespace caduceus::kernels::cpu {
namespace internal {

bool CpuHasAvx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}

int32_t DynamicChunk(int32_t tiles) {
  const int32_t threads = std::max(1, omp_get_max_threads());
  return std::max<int32_t>(1, tiles / (threads * 32));
}

}  // namespace internal

namespace {
bool UseAvx512() {
  static const bool use = [] {
    const char* forced = std::getenv("CADUCEUS_CPU_ISA");
    if (forced != nullptr && std::strcmp(forced, "generic") == 0) return false;
    return internal::CpuHasAvx512();
  }();
  return use;
}
}  // namespace

const char* ActiveIsa() { return UseAvx512() ? "avx512" : "generic"; }

void Linear(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, float* y, Stream) {
  if (m <= 0 || n <= 0) return;
  if (UseAvx512()) {
    internal::LinearAvx512(x, m, k, w, n, y);
  } else {
    internal::LinearGeneric(x, m, k, w, n, y);
  }
}

void LinearFp8(const float* x, int32_t m, int32_t k, const uint8_t* w, const float* scale,
               int32_t n, float* y, Stream) {
  if (m <= 0 || n <= 0) return;
  if (UseAvx512()) {
    internal::LinearFp8Avx512(x, m, k, w, scale, n, y);
  } else {
    internal::LinearFp8Generic(x, m, k, w, scale, n, y);
  }
}

void LinearArgmax(const float* x, int32_t m, int32_t k, const bf16* w, int32_t n, int32_t* index,
                  float* value, Stream) {
  if (m <= 0) return;
  if (n <= 0) {
    std::fill_n(index, m, -1);
    std::fill_n(value, m, -std::numeric_limits<float>::infinity());
    return;
  }
  if (UseAvx512()) {
    internal::LinearArgmaxAvx512(x, m, k, w, n, index, value);
  } else {
    internal::LinearArgmaxGeneric(x, m, k, w, n, index, value);
  }
}

}  // namespace caduceus::kernels::cpu
