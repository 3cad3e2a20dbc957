// CUDA graphs on the emulated device, made only by stream capture: a graph is the list of work
// (kernel launches, async copies and memsets, cuBLAS calls, event records) its stream received
// during the capture (device_runtime.h, BeginCapture), and launching it queues that list again on
// the launch stream. Each replayed kernel checks its pointer arguments when it runs, so a graph
// that kept a pointer to memory freed since aborts with the argument's index, where a GPU would
// fault or silently read garbage. What the emulation does not model: graph memory nodes
// (allocation during capture invalidates it), graph updates, and node handles.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "kernels/cuda/emulation/device_runtime.h"

namespace caduceus::cuda_emulation {
namespace {

struct Graph {
  std::vector<std::function<void()>> nodes;
};

struct Graphs {
  std::mutex mu;
  std::set<const Graph*> graphs, execs;  // live handles (an exec is an instantiated copy)
};

Graphs& Registry() {
  static Graphs* registry = new Graphs;
  return *registry;
}

Graph* Register(std::set<const Graph*> Graphs::*set, Graph* g) {
  std::lock_guard<std::mutex> lock(Registry().mu);
  (Registry().*set).insert(g);
  return g;
}

bool Live(std::set<const Graph*> Graphs::*set, const Graph* g) {
  std::lock_guard<std::mutex> lock(Registry().mu);
  return (Registry().*set).count(g) > 0;
}

cudaError_t Destroy(std::set<const Graph*> Graphs::*set, const Graph* g) {
  {
    std::lock_guard<std::mutex> lock(Registry().mu);
    if ((Registry().*set).erase(g) == 0) return SetLastError(cudaErrorInvalidValue);
  }
  delete g;
  return cudaSuccess;
}

Graph* FromHandle(cudaGraph_t g) { return reinterpret_cast<Graph*>(g); }
Graph* FromHandle(cudaGraphExec_t g) { return reinterpret_cast<Graph*>(g); }

}  // namespace
}  // namespace caduceus::cuda_emulation

namespace emu = caduceus::cuda_emulation;

extern "C" {

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode /*mode*/) {
  if (emu::CheckStreamHandle(stream) != cudaSuccess) return cudaErrorInvalidResourceHandle;
  return emu::SetLastError(emu::BeginCapture(stream));
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* pGraph) {
  if (pGraph == nullptr) return emu::SetLastError(cudaErrorInvalidValue);
  *pGraph = nullptr;
  auto* graph = new emu::Graph;
  std::string why;
  const cudaError_t ended = emu::EndCapture(stream, &graph->nodes, &why);
  if (ended != cudaSuccess) {
    delete graph;
    if (!why.empty()) {
      std::fprintf(stderr, "CUDA emulation: capture invalidated: %s\n", why.c_str());
    }
    return emu::SetLastError(ended);
  }
  *pGraph = reinterpret_cast<cudaGraph_t>(emu::Register(&emu::Graphs::graphs, graph));
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream,
                                  enum cudaStreamCaptureStatus* pCaptureStatus) {
  if (pCaptureStatus == nullptr) return emu::SetLastError(cudaErrorInvalidValue);
  if (emu::CheckStreamHandle(stream) != cudaSuccess) return cudaErrorInvalidResourceHandle;
  *pCaptureStatus =
      emu::IsCapturing(stream) ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* pGraphExec, cudaGraph_t graph,
                                 unsigned long long /*flags*/) {
  if (pGraphExec == nullptr || !emu::Live(&emu::Graphs::graphs, emu::FromHandle(graph))) {
    return emu::SetLastError(cudaErrorInvalidValue);
  }
  auto* exec = new emu::Graph(*emu::FromHandle(graph));
  *pGraphExec = reinterpret_cast<cudaGraphExec_t>(emu::Register(&emu::Graphs::execs, exec));
  return cudaSuccess;
}

// Only the count: the emulation has no node handles to hand out.
cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* numNodes) {
  if (numNodes == nullptr || !emu::Live(&emu::Graphs::graphs, emu::FromHandle(graph))) {
    return emu::SetLastError(cudaErrorInvalidValue);
  }
  if (nodes != nullptr) return emu::SetLastError(cudaErrorNotSupported);
  *numNodes = emu::FromHandle(graph)->nodes.size();
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t graphExec, cudaStream_t stream) {
  if (!emu::Live(&emu::Graphs::execs, emu::FromHandle(graphExec))) {
    return emu::SetLastError(cudaErrorInvalidValue);
  }
  if (emu::CheckStreamHandle(stream) != cudaSuccess) return cudaErrorInvalidResourceHandle;
  for (const auto& node : emu::FromHandle(graphExec)->nodes) emu::Enqueue(stream, node);
  return cudaSuccess;
}

// CUDA lets a graph be destroyed while launches of its instantiation are in flight; the queued
// copies of the nodes keep this one valid too.
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t graphExec) {
  return emu::Destroy(&emu::Graphs::execs, emu::FromHandle(graphExec));
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  return emu::Destroy(&emu::Graphs::graphs, emu::FromHandle(graph));
}

}  // extern "C"
