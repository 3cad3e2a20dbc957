// Built with CUDA only. Without a GPU it checks that the library links and skips; with one GPU
// it runs a one-rank group (bootstrapped through a one-rank GlooCommunicator) end to end.
#include "worker/parallel/nccl_communicator.h"

#include <cuda_runtime.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "worker/parallel/gloo_communicator.h"
#include "worker/parallel/tcp_store.h"

namespace caduceus::parallel {
namespace {

class NcclCommunicatorTest : public ::testing::TestWithParam<bool> {};

// Param: deferred completion (collectives return once enqueued; Flush waits). The results are
// read back with a plain cudaMemcpy, which runs after them on the legacy default stream.
TEST_P(NcclCommunicatorTest, SingleRankCollectives) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    GTEST_SKIP() << "no CUDA device";
  }
  NcclOptions options;
  options.deferred_completion = GetParam();
  auto server = TcpStoreServer::Create("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  GlooOptions g;
  g.store_address = absl::StrCat("127.0.0.1:", (*server)->port());
  g.hostname = "127.0.0.1";
  auto gloo = GlooCommunicator::Create(g);
  ASSERT_TRUE(gloo.ok()) << gloo.status();
  auto nccl = NcclCommunicator::Create(**gloo, options);
  ASSERT_TRUE(nccl.ok()) << nccl.status();

  std::vector<float> host = {1, 2, 3, 4};
  float* dev = nullptr;
  float* gathered = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, host.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&gathered, host.size() * sizeof(float)), cudaSuccess);
  cudaMemcpy(dev, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
  EXPECT_TRUE((*nccl)->AllReduceSum(dev, host.size()).ok());
  EXPECT_TRUE((*nccl)->AllGather(dev, host.size(), gathered).ok());
  EXPECT_TRUE((*nccl)->Broadcast(dev, host.size() * sizeof(float), 0).ok());
  EXPECT_TRUE((*nccl)->Flush().ok());
  std::vector<float> back(host.size());
  cudaMemcpy(back.data(), gathered, back.size() * sizeof(float), cudaMemcpyDeviceToHost);
  EXPECT_EQ(back, host);
  EXPECT_EQ((*nccl)->Broadcast(dev, 4, 1).code(), absl::StatusCode::kInvalidArgument);
  cudaFree(dev);
  cudaFree(gathered);
}

INSTANTIATE_TEST_SUITE_P(Completion, NcclCommunicatorTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Deferred" : "PerCall"; });

}  // namespace
}  // namespace caduceus::parallel
