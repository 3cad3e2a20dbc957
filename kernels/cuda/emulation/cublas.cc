// The subset of cuBLAS that kernels/cuda calls (handles, stream and workspace binding,
// cublasGemmEx with bf16/fp32 operands and fp32 compute), on the emulated device of cudart.cc.
// Every operand must lie inside emulated device memory. The GEMM accumulates in fp32 like the
// tensor cores, but in its own fixed order (not cuBLAS's, which varies by kernel choice), so tests
// compare a cuBLAS result with the CPU only within tolerances, which is also all they may assume
// on a GPU.
#include <cublas_api.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "kernels/cuda/emulation/device_runtime.h"

namespace caduceus::cuda_emulation {
namespace {

struct Handle {
  cudaStream_t stream = nullptr;
};

size_t ElementBytes(cudaDataType t) {
  switch (t) {
    case CUDA_R_32F:
      return 4;
    case CUDA_R_16BF:
      return 2;
    default:
      return 0;
  }
}

float Load(const void* base, cudaDataType t, size_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(base)[i];
  uint16_t bits;
  std::memcpy(&bits, static_cast<const char*>(base) + 2 * i, 2);
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, 4);
  return f;
}

void Store(void* base, cudaDataType t, size_t i, float v) {
  if (t == CUDA_R_32F) {
    static_cast<float*>(base)[i] = v;
  } else {
    const __nv_bfloat16 b = __float2bfloat16_rn(v);
    std::memcpy(static_cast<char*>(base) + 2 * i, &b, 2);
  }
}

float Widen(float v) { return v; }
float Widen(uint16_t bf16_bits) {
  const uint32_t wide = static_cast<uint32_t>(bf16_bits) << 16;
  float f;
  std::memcpy(&f, &wide, 4);
  return f;
}

// sum_p x[p * xs] * y[p * ys] in fp32 (as the tensor cores accumulate), 8 interleaved partial
// sums (a fixed order) so the contiguous case vectorizes.
template <typename X, typename Y>
float DotOf(const X* x, size_t xs, const Y* y, size_t ys, int k) {
  float partial[8] = {};
  int p = 0;
  if (xs == 1 && ys == 1) {
    for (; p + 8 <= k; p += 8) {
      for (int l = 0; l < 8; ++l) partial[l] += Widen(x[p + l]) * Widen(y[p + l]);
    }
  }
  for (; p < k; ++p) partial[p % 8] += Widen(x[p * xs]) * Widen(y[p * ys]);
  float sum = 0.0f;
  for (int l = 0; l < 8; ++l) sum += partial[l];
  return sum;
}

float Dot(const void* x, cudaDataType xt, size_t x0, size_t xs, const void* y, cudaDataType yt,
          size_t y0, size_t ys, int k) {
  const auto* xf = static_cast<const float*>(x) + x0;
  const auto* xb = static_cast<const uint16_t*>(x) + x0;
  const auto* yf = static_cast<const float*>(y) + y0;
  const auto* yb = static_cast<const uint16_t*>(y) + y0;
  if (xt == CUDA_R_32F)
    return yt == CUDA_R_32F ? DotOf(xf, xs, yf, ys, k) : DotOf(xf, xs, yb, ys, k);
  return yt == CUDA_R_32F ? DotOf(xb, xs, yf, ys, k) : DotOf(xb, xs, yb, ys, k);
}

// Elements spanned by a column-major rows x cols matrix with leading dimension ld.
size_t Extent(int rows, int cols, int ld) {
  return static_cast<size_t>(cols - 1) * static_cast<size_t>(ld) + static_cast<size_t>(rows);
}

bool Operand(const char* name, const void* p, cudaDataType t, int rows, int cols, int ld) {
  if (rows <= 0 || cols <= 0) return true;
  if (ld < rows) {
    std::fprintf(stderr, "CUDA emulation: cublasGemmEx %s: ld %d < rows %d\n", name, ld, rows);
    return false;
  }
  if (!IsDeviceRange(p, Extent(rows, cols, ld) * ElementBytes(t))) {
    std::fprintf(stderr,
                 "CUDA emulation: cublasGemmEx %s (%p, %dx%d, ld %d) is not inside one device "
                 "allocation\n",
                 name, p, rows, cols, ld);
    return false;
  }
  return true;
}

}  // namespace
}  // namespace caduceus::cuda_emulation

namespace emu = caduceus::cuda_emulation;

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = reinterpret_cast<cublasHandle_t>(new emu::Handle);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  delete reinterpret_cast<emu::Handle*>(handle);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  reinterpret_cast<emu::Handle*>(handle)->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes > 0 && !emu::IsDeviceRange(workspace, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "CUBLAS_STATUS (emulation: unknown)";
  }
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t /*algo*/) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (emu::ElementBytes(Atype) == 0 || emu::ElementBytes(Btype) == 0 ||
      emu::ElementBytes(Ctype) == 0 || transa == CUBLAS_OP_C || transb == CUBLAS_OP_C ||
      (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_FAST_16BF)) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
  // op(A) is m x k, op(B) is k x n; stored, A is (ta ? k x m : m x k), B (tb ? n x k : k x n).
  if (!emu::Operand("A", A, Atype, ta ? k : m, ta ? m : k, lda) ||
      !emu::Operand("B", B, Btype, tb ? n : k, tb ? k : n, ldb) ||
      !emu::Operand("C", C, Ctype, m, n, ldc)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  // Host scalars are read now (CUBLAS_POINTER_MODE_HOST); the product runs in stream order.
  const float a = *static_cast<const float*>(alpha);
  const float b = *static_cast<const float*>(beta);
  emu::Enqueue(reinterpret_cast<emu::Handle*>(handle)->stream, [=] {
    // Element (i, p) of op(A) and (p, j) of op(B), read in place (no widened copies: the lm_head
    // operand alone is vocab x hidden). Strides along i or j, and along the summed p:
    const size_t a_row = ta ? lda : 1, a_sum = ta ? 1 : lda;
    const size_t b_col = tb ? 1 : ldb, b_sum = tb ? ldb : 1;
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n; ++j) {
      for (int i = 0; i < m; ++i) {
        const size_t a0 = static_cast<size_t>(i) * a_row, b0 = static_cast<size_t>(j) * b_col;
        const float sum = emu::Dot(A, Atype, a0, a_sum, B, Btype, b0, b_sum, k);
        const size_t at = static_cast<size_t>(j) * ldc + i;
        float v = a * sum;
        if (b != 0.0f) v += b * emu::Load(C, Ctype, at);
        emu::Store(C, Ctype, at, v);
      }
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
