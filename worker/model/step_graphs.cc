#include "worker/model/step_graphs.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace caduceus::model {
namespace {

// Decode batch sizes with a graph of their own; a step pads up to the next one. Dense where
// batches are common and padding would waste the most.
constexpr int32_t kBatchBuckets[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256};

}  // namespace

struct StepGraphs::Entry {
  explicit Entry(const backend::MemoryOps* memory) : meta(memory) {}
  std::vector<void*> pieces;  // executable graphs, in step order
  Stamp stamp;
  uint64_t generation = 0;  // kernel workspace generation at capture
  bool captured = false;    // pieces hold a complete step
  bool broken = false;      // a capture or launch failed: eager for good
  bool seen = false;        // one eager step has sized the workspaces for this shape
  uint64_t last_used = 0;
  size_t nodes = 0;
  backend::DeviceArray<int32_t> meta;
};

StepGraphs::StepGraphs(const backend::KernelTable* kernels, StepGraphOptions options)
    : kernels_(kernels), options_(options) {
  if (kernels_->graphs.available()) {
    stream_ = kernels_->graphs.create_stream(kernels_->memory.device);
    if (stream_ == nullptr) {
      LogWarning("no CUDA stream for the model: steps run on the default stream, without graphs");
    }
  }
}

StepGraphs::~StepGraphs() {
  for (auto& [shape, entry] : entries_) DestroyPieces(entry);
  if (stream_ != nullptr) kernels_->graphs.destroy_stream(stream_, kernels_->memory.device);
}

uint64_t StepGraphs::Generation() const { return kernels_->graphs.workspace_generation(); }

std::optional<GraphShape> StepGraphs::ShapeFor(int32_t seqs, int32_t width,
                                               int32_t max_width) const {
  if (!options_.enabled || stream_ == nullptr || seqs <= 0 || seqs > options_.max_batch) {
    return std::nullopt;
  }
  GraphShape shape;
  for (int32_t b : kBatchBuckets) {
    if (b >= seqs) {
      shape.batch = std::min(b, options_.max_batch);
      break;
    }
  }
  if (shape.batch == 0) shape.batch = seqs;  // above the last bucket, up to max_batch: exact
  shape.width = 1;
  while (shape.width < width) shape.width *= 2;
  shape.width = std::max(std::min(shape.width, max_width), width);
  return shape;
}

int32_t* StepGraphs::Metadata(const GraphShape& shape, size_t count) {
  auto [it, added] = entries_.try_emplace(shape, &kernels_->memory);
  if (added) ForgetOldShapes(it->first);
  Entry& entry = it->second;
  // The size only grows before the first capture: a shape's metadata has one size.
  if (count > entry.meta.capacity() && !entry.pieces.empty()) DestroyPieces(entry);
  return entry.meta.Reserve(count) ? entry.meta.data() : nullptr;
}

void StepGraphs::DestroyPieces(Entry& entry) {
  for (void* g : entry.pieces) kernels_->graphs.destroy(g);
  stats_.graphs -= static_cast<int64_t>(entry.pieces.size());
  stats_.nodes -= static_cast<int64_t>(entry.nodes);
  entry.pieces.clear();
  entry.nodes = 0;
  entry.captured = false;
  entry.seen = false;  // a shape captured again first runs eagerly at the current addresses
}

// Shapes seen but not held as graphs keep only their metadata buffer; past twice the graph
// limit the least recently used of them go, so a long-running worker that meets many shapes does
// not accumulate device memory (allocated after the KV cache took its share).
void StepGraphs::ForgetOldShapes(const GraphShape& keep) {
  while (entries_.size() > 2 * static_cast<size_t>(std::max(options_.max_graphs, 1))) {
    auto oldest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      const bool is_keep = it->first.batch == keep.batch && it->first.width == keep.width;
      if (it->second.captured || is_keep) continue;
      if (oldest == entries_.end() || it->second.last_used < oldest->second.last_used) oldest = it;
    }
    if (oldest == entries_.end()) return;
    DestroyPieces(oldest->second);
    entries_.erase(oldest);
  }
}

void StepGraphs::MakeRoomForOneMore(const Entry& keep) {
  int32_t held = 0;
  Entry* oldest = nullptr;
  for (auto& [shape, entry] : entries_) {
    if (!entry.captured) continue;
    ++held;
    if (&entry != &keep && (oldest == nullptr || entry.last_used < oldest->last_used)) {
      oldest = &entry;
    }
  }
  if (held >= options_.max_graphs && oldest != nullptr) DestroyPieces(*oldest);
}

StepGraphs::Step StepGraphs::Begin(const GraphShape* shape, Stamp stamp) {
  if (shape == nullptr || stream_ == nullptr) return Step(this, nullptr, Mode::kEager);
  Entry& entry = entries_.try_emplace(*shape, &kernels_->memory).first->second;
  entry.last_used = ++clock_;
  if (entry.broken) return Step(this, &entry, Mode::kEager);
  if (entry.captured) {
    if (entry.stamp == stamp && entry.generation == Generation()) {
      return Step(this, &entry, Mode::kReplay);
    }
    // A buffer the graph holds moved: capture again, after an eager step at the new addresses.
    DestroyPieces(entry);
  }
  if (!entry.seen) {
    entry.seen = true;
    return Step(this, &entry, Mode::kEager);
  }
  MakeRoomForOneMore(entry);
  entry.stamp = std::move(stamp);
  entry.generation = Generation();
  return Step(this, &entry, Mode::kCapture);
}

StepGraphStats StepGraphs::stats() const { return stats_; }

void StepGraphs::Step::Run(std::function<void()> enqueue) {
  switch (mode_) {
    case Mode::kEager:
      enqueue();
      return;
    case Mode::kCapture:
      if (!capturing_) {
        const absl::Status begun = owner_->kernels_->graphs.begin_capture(owner_->stream_);
        if (!begun.ok()) {
          FallBack(begun);
          enqueue();
          return;
        }
        capturing_ = true;
      }
      enqueue();  // recorded, not run
      piece_.push_back(std::move(enqueue));
      return;
    case Mode::kReplay:
      piece_.push_back(std::move(enqueue));
      return;
  }
}

absl::Status StepGraphs::Step::Cut() {
  if (mode_ == Mode::kEager || piece_.empty()) return absl::OkStatus();
  const backend::GraphOps& g = owner_->kernels_->graphs;
  void* graph = nullptr;
  if (mode_ == Mode::kCapture) {
    capturing_ = false;
    size_t nodes = 0;
    absl::StatusOr<void*> made = g.end_capture(owner_->stream_, &nodes);
    if (!made.ok()) {
      FallBack(made.status());
      return absl::OkStatus();
    }
    graph = *made;
    entry_->pieces.push_back(graph);
    entry_->nodes += nodes;
    ++owner_->stats_.graphs;
    owner_->stats_.nodes += static_cast<int64_t>(nodes);
  } else {
    if (next_piece_ >= entry_->pieces.size()) {
      FallBack(absl::InternalError("the step has more pieces than its graphs"));
      return absl::OkStatus();
    }
    graph = entry_->pieces[next_piece_++];
  }
  const absl::Status launched = g.launch(graph, owner_->stream_);
  if (!launched.ok()) {
    FallBack(launched);
    return absl::OkStatus();
  }
  piece_.clear();
  return absl::OkStatus();
}

absl::Status StepGraphs::Step::Finish() {
  const Mode mode = mode_;
  absl::Status cut = Cut();
  if (!cut.ok()) return cut;
  if (mode_ != mode) return absl::OkStatus();  // fell back on the way
  if (mode_ == Mode::kCapture) {
    if (entry_->generation != owner_->Generation()) {
      // A workspace grew while capturing: what the graph holds is gone. Capture again later.
      owner_->DestroyPieces(*entry_);
      return absl::OkStatus();
    }
    entry_->captured = true;
    ++owner_->stats_.captures;
  } else if (mode_ == Mode::kReplay) {
    if (next_piece_ != entry_->pieces.size()) {
      entry_->broken = true;  // the step had fewer pieces than its graphs: never again
      ++owner_->stats_.failures;
      LogWarning("a CUDA graph replay launched fewer pieces than were captured; that step shape "
                 "runs without graphs from now on");
    }
    ++owner_->stats_.replays;
  }
  return absl::OkStatus();
}

void StepGraphs::Step::FallBack(const absl::Status& why) {
  ++owner_->stats_.failures;
  LogWarning(absl::StrCat("CUDA graph ", mode_ == Mode::kCapture ? "capture" : "replay",
                          " failed (", why.message(),
                          "); this step shape runs without graphs from now on"));
  if (capturing_) {
    // End the capture (its work never ran) before running the piece eagerly.
    size_t nodes = 0;
    absl::StatusOr<void*> made = owner_->kernels_->graphs.end_capture(owner_->stream_, &nodes);
    if (made.ok()) owner_->kernels_->graphs.destroy(*made);
    capturing_ = false;
  }
  for (const auto& enqueue : piece_) enqueue();
  piece_.clear();
  owner_->DestroyPieces(*entry_);
  entry_->broken = true;
  mode_ = Mode::kEager;
}

}  // namespace caduceus::model
