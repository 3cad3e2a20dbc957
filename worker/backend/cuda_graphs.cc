// CUDA graphs for the model's decode steps (graph_ops.h), in the CUDA backend module. Capture is
// thread-local (cudaStreamCaptureModeThreadLocal): other threads of the worker (metrics, RPCs)
// may keep calling the runtime while a step is captured.
#include <cuda_runtime.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_kernels.h"
#include "worker/backend/graph_ops.h"

namespace caduceus::backend {
namespace {

// The message of `e`, clearing it so that the next unrelated check does not see it again.
std::string Why(cudaError_t e) {
  cudaGetLastError();
  return cudaGetErrorString(e);
}

void* CreateStream(int device) {
  if (cudaSetDevice(device) != cudaSuccess) return nullptr;
  cudaStream_t stream = nullptr;
  if (cudaStreamCreate(&stream) != cudaSuccess) {  // default flags: a blocking stream
    cudaGetLastError();
    return nullptr;
  }
  return stream;
}

void DestroyStream(void* stream, int device) {
  cudaSetDevice(device);
  cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
  kernels::cuda::ReleaseStream(kernels::Stream{stream});
  cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

absl::Status BeginCapture(void* stream) {
  const cudaError_t e =
      cudaStreamBeginCapture(static_cast<cudaStream_t>(stream), cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) {
    return absl::InternalError(absl::StrCat("cudaStreamBeginCapture: ", Why(e)));
  }
  // From here a failing kernel call spoils the capture instead of aborting (EndCapture).
  kernels::cuda::BeginThreadCapture();
  return absl::OkStatus();
}

absl::StatusOr<void*> EndCapture(void* stream, size_t* nodes) {
  const std::string spoilt = kernels::cuda::EndThreadCapture();
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(static_cast<cudaStream_t>(stream), &graph);
  if (e != cudaSuccess) {
    return absl::InternalError(absl::StrCat("cudaStreamEndCapture: ", Why(e),
                                            spoilt.empty() ? "" : "; first failure: ", spoilt));
  }
  if (!spoilt.empty()) {  // ended cleanly, but a kernel call failed while it was recorded
    cudaGraphDestroy(graph);
    return absl::InternalError(absl::StrCat("during the capture: ", spoilt));
  }
  *nodes = 0;
  cudaGraphGetNodes(graph, nullptr, nodes);
  cudaGraphExec_t exec = nullptr;
  e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);  // the executable graph is a copy
  if (e != cudaSuccess) return absl::InternalError(absl::StrCat("cudaGraphInstantiate: ", Why(e)));
  return static_cast<void*>(exec);
}

absl::Status Launch(void* graph, void* stream) {
  const cudaError_t e =
      cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), static_cast<cudaStream_t>(stream));
  if (e != cudaSuccess) return absl::InternalError(absl::StrCat("cudaGraphLaunch: ", Why(e)));
  return absl::OkStatus();
}

void Destroy(void* graph) { cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph)); }

uint64_t WorkspaceGeneration() { return kernels::cuda::WorkspaceGeneration(); }

}  // namespace

GraphOps CudaGraphOps() {
  return GraphOps{&CreateStream, &DestroyStream, &BeginCapture, &EndCapture,
                  &Launch,       &Destroy,       &WorkspaceGeneration};
}

}  // namespace caduceus::backend
