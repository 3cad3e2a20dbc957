// CUDA graphs for decode steps (docs/cuda.md, "CUDA graphs for decode steps"). A decode step of
// the 8B model is about 320 kernel launches of a few microseconds each; replaying them as one
// graph takes the host's launch cost and most of the device's gaps out of the step.
//
// How a step uses it (LlamaModel::Forward): decode-only steps are padded to a shape (a batch
// bucket and a block-table width bucket, ShapeFor) whose metadata lives at a fixed device address
// (Metadata); the step's device work is passed to Step::Run, and Step::Cut ends a piece where
// a collective comes (tensor parallelism: the collectives stay outside the graphs, on the legacy
// default stream; a group of one has one piece per step). Per shape: the first step runs eagerly
// (it sizes the kernels' workspaces), the second is captured, later ones replay, as long as the
// stamp (the activation and cache pointers the graph holds) and the kernels' workspace generation
// are what they were at capture; otherwise the shape is captured again. A capture or launch that
// fails runs the same work eagerly and leaves that shape eager for good, with a warning: graphs
// are an optimization and never fail a step.
//
// Backends without graphs (the CPU) get an eager Step for every shape, and the default stream.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "kernels/kernels.h"
#include "worker/backend/kernel_table.h"

namespace caduceus::model {

struct StepGraphOptions {
  bool enabled = true;
  int32_t max_batch = 256;  // decode batches up to this run from graphs (bucketed)
  int32_t max_graphs = 64;  // shapes held at once; the least recently used one is dropped
};

// Counters since load (LlamaModel::graph_stats).
struct StepGraphStats {
  int64_t captures = 0;  // shapes captured (again after an invalidation)
  int64_t replays = 0;   // steps run from graphs
  int64_t failures = 0;  // captures or launches that failed and ran eagerly instead
  int64_t graphs = 0;    // executable graphs held now (pieces of all shapes)
  int64_t nodes = 0;     // their nodes
};

// The padded shape of a decode step that may run from a graph.
struct GraphShape {
  int32_t batch = 0;  // sequences, one token each, padding included
  int32_t width = 0;  // block-table entries per sequence
  bool operator<(const GraphShape& o) const {
    return batch != o.batch ? batch < o.batch : width < o.width;
  }
};

class StepGraphs {
 public:
  // What a captured graph holds besides its shape: the device pointers baked into it.
  using Stamp = std::vector<const void*>;
  class Step;

  // Makes the compute stream when the backend has graphs (even with options.enabled false: the
  // model runs on it either way).
  StepGraphs(const backend::KernelTable* kernels, StepGraphOptions options);
  ~StepGraphs();
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // The stream every kernel of the model runs on ({}: the default stream).
  kernels::Stream stream() const { return {stream_}; }

  // The shape a decode-only step of `seqs` sequences whose block tables have up to `width`
  // entries runs at (widths round up to a power of two, capped at `max_width`), or nullopt: run
  // eagerly and unpadded (graphs off or unavailable, or a batch over max_batch).
  std::optional<GraphShape> ShapeFor(int32_t seqs, int32_t width, int32_t max_width) const;

  // `count` ints of device memory for the metadata of `shape`'s steps, at one address for the
  // life of the shape's graphs. Null when the device is out of memory (the step then runs
  // eagerly, unpadded).
  int32_t* Metadata(const GraphShape& shape, size_t count);

  // Starts a step of `shape` (null: eager, no graphs) whose device work holds `stamp`.
  Step Begin(const GraphShape* shape, Stamp stamp);

  StepGraphStats stats() const;

 private:
  struct Entry;
  enum class Mode { kEager, kCapture, kReplay };
  void DestroyPieces(Entry& entry);
  void MakeRoomForOneMore(const Entry& keep);
  void ForgetOldShapes(const GraphShape& keep);
  uint64_t Generation() const;

  const backend::KernelTable* kernels_;
  StepGraphOptions options_;
  void* stream_ = nullptr;
  std::map<GraphShape, Entry> entries_;
  uint64_t clock_ = 0;
  StepGraphStats stats_;
};

// One step's device work, in pieces between collectives. Run and Cut return before the work has
// run on the device (it is ordered on the compute stream).
class StepGraphs::Step {
 public:
  // Enqueues `enqueue`'s kernels now (eager), records them (capture), or has them in the graph
  // already (replay; kept to run eagerly should the launch fail).
  void Run(std::function<void()> enqueue);
  // Ends the current piece, before a collective: a captured piece is instantiated and launched,
  // a replayed one launched.
  absl::Status Cut();
  // Ends the step's last piece.
  absl::Status Finish();

 private:
  friend class StepGraphs;
  Step(StepGraphs* owner, Entry* entry, Mode mode) : owner_(owner), entry_(entry), mode_(mode) {}
  // The graph path failed: run the current piece eagerly, leave the shape eager.
  void FallBack(const absl::Status& why);

  StepGraphs* owner_;
  Entry* entry_;
  Mode mode_;
  std::vector<std::function<void()>> piece_;  // the current piece's work (graph modes)
  bool capturing_ = false;
  size_t next_piece_ = 0;  // replay: the next graph to launch
};

}  // namespace caduceus::model
