// StepGraphs' decisions (step_graphs.h) against a recording stand-in for the CUDA graph calls:
// which steps run eagerly, are captured or replayed, how pieces follow the collectives, when a
// graph is dropped (stamp, workspace generation, capacity) and that a failed capture still runs
// the step's work exactly once. The real capture path runs on the CUDA emulation
// (step_graphs_emulated_test.cc).
#include "worker/model/step_graphs.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace caduceus::model {
namespace {

// The stand-in device: work runs (is appended to `ran`) unless a capture is open, in which case
// it is recorded into the graph being captured; launching a graph runs what it recorded.
struct FakeDevice {
  std::vector<std::string> ran;
  std::vector<std::string>* capture = nullptr;
  std::vector<std::vector<std::string>*> graphs_alive;
  uint64_t generation = 0;
  bool fail_end_capture = false;
  bool fail_launch = false;
  int destroyed = 0;

  void Work(const std::string& what) {
    if (capture != nullptr) {
      capture->push_back(what);
    } else {
      ran.push_back(what);
    }
  }
};
FakeDevice* device = nullptr;

backend::KernelTable FakeTable() {
  backend::KernelTable table;
  table.name = "fake";
  table.memory = backend::HostMemoryOps();
  backend::GraphOps& g = table.graphs;
  g.create_stream = [](int) -> void* { return reinterpret_cast<void*>(0x5); };
  g.destroy_stream = [](void*, int) {};
  g.begin_capture = [](void*) {
    device->capture = new std::vector<std::string>;
    return absl::OkStatus();
  };
  g.end_capture = [](void*, size_t* nodes) -> absl::StatusOr<void*> {
    std::vector<std::string>* graph = device->capture;
    device->capture = nullptr;
    if (device->fail_end_capture) {
      delete graph;
      return absl::InternalError("capture invalidated");
    }
    *nodes = graph->size();
    return static_cast<void*>(graph);
  };
  g.launch = [](void* graph, void*) {
    if (device->fail_launch) return absl::InternalError("launch failed");
    for (const std::string& w : *static_cast<std::vector<std::string>*>(graph)) {
      device->ran.push_back(w);
    }
    return absl::OkStatus();
  };
  g.destroy = [](void* graph) {
    ++device->destroyed;
    delete static_cast<std::vector<std::string>*>(graph);
  };
  g.workspace_generation = []() { return device->generation; };
  return table;
}

class StepGraphsTest : public ::testing::Test {
 protected:
  StepGraphsTest() : table_(FakeTable()) { device = &device_; }
  ~StepGraphsTest() override { device = nullptr; }

  // A two-piece step as the model runs one under tensor parallelism: piece, collective, piece.
  absl::Status RunStep(StepGraphs& graphs, const GraphShape* shape, StepGraphs::Stamp stamp,
                       const std::string& tag) {
    StepGraphs::Step step = graphs.Begin(shape, std::move(stamp));
    step.Run([tag] { device->Work(tag + ".a1"); });
    step.Run([tag] { device->Work(tag + ".a2"); });
    if (absl::Status cut = step.Cut(); !cut.ok()) return cut;
    device_.ran.push_back(tag + ".collective");
    step.Run([tag] { device->Work(tag + ".b"); });
    return step.Finish();
  }
  std::vector<std::string> Expected(const std::string& tag) {
    return {tag + ".a1", tag + ".a2", tag + ".collective", tag + ".b"};
  }
  // What the step ran since the last call.
  std::vector<std::string> Ran() {
    std::vector<std::string> ran;
    ran.swap(device_.ran);
    return ran;
  }

  FakeDevice device_;
  backend::KernelTable table_;
};

TEST_F(StepGraphsTest, ShapesBucketBatchAndWidth) {
  StepGraphs graphs(&table_, StepGraphOptions{true, 256, 64});
  const auto shape = [&](int32_t seqs, int32_t width, int32_t max_width) {
    const std::optional<GraphShape> s = graphs.ShapeFor(seqs, width, max_width);
    return s.has_value() ? std::to_string(s->batch) + "x" + std::to_string(s->width) : "eager";
  };
  EXPECT_EQ(shape(1, 1, 8192), "1x1");
  EXPECT_EQ(shape(3, 5, 8192), "4x8");
  EXPECT_EQ(shape(9, 64, 8192), "16x64");
  EXPECT_EQ(shape(200, 3000, 8192), "256x4096");
  EXPECT_EQ(shape(2, 200, 256), "2x256");  // capped at the model's context in blocks
  EXPECT_EQ(shape(2, 300, 256), "2x300");  // but never below what the step has
  EXPECT_EQ(shape(257, 1, 8192), "eager");
  EXPECT_EQ(shape(0, 1, 8192), "eager");
  StepGraphs capped(&table_, StepGraphOptions{true, 20, 64});
  EXPECT_EQ(capped.ShapeFor(17, 1, 64)->batch, 20);
  StepGraphs off(&table_, StepGraphOptions{false, 256, 64});
  EXPECT_FALSE(off.ShapeFor(1, 1, 64).has_value());
  backend::KernelTable cpu = table_;
  cpu.graphs = backend::GraphOps{};
  StepGraphs none(&cpu, StepGraphOptions{});
  EXPECT_FALSE(none.ShapeFor(1, 1, 64).has_value());
  EXPECT_EQ(none.stream().handle, nullptr);
}

TEST_F(StepGraphsTest, EagerThenCaptureThenReplayInPiecesAroundTheCollective) {
  StepGraphs graphs(&table_, StepGraphOptions{});
  const GraphShape shape{4, 8};
  const StepGraphs::Stamp stamp = {&device_};
  for (int step = 0; step < 4; ++step) {
    const std::string tag = "s" + std::to_string(step);
    ASSERT_TRUE(RunStep(graphs, &shape, stamp, tag).ok());
    // Every mode runs the same work in the same order, each piece before the collective after it.
    // Replays run what was captured: the capture step's tags.
    std::vector<std::string> want = Expected(step >= 2 ? "s1" : tag);
    want[2] = tag + ".collective";
    EXPECT_EQ(Ran(), want) << "step " << step;
  }
  const StepGraphStats stats = graphs.stats();
  EXPECT_EQ(stats.captures, 1);
  EXPECT_EQ(stats.replays, 2);
  EXPECT_EQ(stats.failures, 0);
  EXPECT_EQ(stats.graphs, 2);  // two pieces
  EXPECT_EQ(stats.nodes, 3);
  // No shape: always eager.
  ASSERT_TRUE(RunStep(graphs, nullptr, {}, "x").ok());
  EXPECT_EQ(Ran(), Expected("x"));
}

TEST_F(StepGraphsTest, AMovedBufferOrGrownWorkspaceMeansEagerThenCaptureAgain) {
  StepGraphs graphs(&table_, StepGraphOptions{});
  const GraphShape shape{1, 1};
  int a = 0, b = 0;
  for (const std::string tag : {"e", "c", "r"}) {
    ASSERT_TRUE(RunStep(graphs, &shape, {&a}, tag).ok());
  }
  EXPECT_EQ(Ran().back(), "c.b");  // replayed the capture
  // The stamp changed (an activation buffer was reallocated): eager at the new address, then a
  // new capture; the old graphs are gone.
  ASSERT_TRUE(RunStep(graphs, &shape, {&b}, "e2").ok());
  EXPECT_EQ(Ran(), Expected("e2"));
  EXPECT_EQ(device_.destroyed, 2);
  ASSERT_TRUE(RunStep(graphs, &shape, {&b}, "c2").ok());
  ASSERT_TRUE(RunStep(graphs, &shape, {&b}, "r2").ok());
  EXPECT_EQ(Ran(), (std::vector<std::string>{"c2.a1", "c2.a2", "c2.collective", "c2.b", "c2.a1",
                                             "c2.a2", "r2.collective", "c2.b"}));
  // A kernel workspace was reallocated: the same.
  ++device_.generation;
  ASSERT_TRUE(RunStep(graphs, &shape, {&b}, "e3").ok());
  EXPECT_EQ(Ran(), Expected("e3"));
  EXPECT_EQ(graphs.stats().captures, 2);
  EXPECT_EQ(graphs.stats().graphs, 0);
}

TEST_F(StepGraphsTest, AFailedCaptureRunsTheWorkOnceAndLeavesTheShapeEager) {
  StepGraphs graphs(&table_, StepGraphOptions{});
  const GraphShape shape{2, 4};
  ASSERT_TRUE(RunStep(graphs, &shape, {}, "e").ok());
  Ran();
  device_.fail_end_capture = true;
  ASSERT_TRUE(RunStep(graphs, &shape, {}, "c").ok());
  EXPECT_EQ(Ran(), Expected("c"));  // every piece exactly once, in order
  device_.fail_end_capture = false;
  ASSERT_TRUE(RunStep(graphs, &shape, {}, "later").ok());
  EXPECT_EQ(Ran(), Expected("later"));
  EXPECT_EQ(graphs.stats().failures, 1);
  EXPECT_EQ(graphs.stats().captures, 0);
}

TEST_F(StepGraphsTest, AFailedLaunchRunsThePieceEagerly) {
  StepGraphs graphs(&table_, StepGraphOptions{});
  const GraphShape shape{2, 4};
  for (const std::string tag : {"e", "c"}) ASSERT_TRUE(RunStep(graphs, &shape, {}, tag).ok());
  Ran();
  device_.fail_launch = true;
  ASSERT_TRUE(RunStep(graphs, &shape, {}, "r").ok());
  EXPECT_EQ(Ran(), Expected("r"));
  EXPECT_EQ(graphs.stats().failures, 1);
  EXPECT_EQ(graphs.stats().graphs, 0);
}

TEST_F(StepGraphsTest, HoldsAtMostMaxGraphsShapesDroppingTheLeastRecentlyUsed) {
  StepGraphs graphs(&table_, StepGraphOptions{true, 256, 2});
  const GraphShape shapes[] = {{1, 1}, {2, 1}, {4, 1}};
  for (const GraphShape& shape : shapes) {
    ASSERT_TRUE(RunStep(graphs, &shape, {}, "e").ok());
    ASSERT_TRUE(RunStep(graphs, &shape, {}, "c").ok());
  }
  EXPECT_EQ(graphs.stats().captures, 3);
  EXPECT_EQ(graphs.stats().graphs, 4);  // two shapes of two pieces
  Ran();
  // {1, 1} was dropped: eager again; {4, 1} still replays.
  ASSERT_TRUE(RunStep(graphs, &shapes[0], {}, "again").ok());
  EXPECT_EQ(Ran(), Expected("again"));
  ASSERT_TRUE(RunStep(graphs, &shapes[2], {}, "r").ok());
  EXPECT_EQ(Ran().back(), "c.b");
}

}  // namespace
}  // namespace caduceus::model
