// Real multi-process tests on loopback: each rank is a forked child with its own Gloo
// communicator; rank 0 also hosts the TcpStoreServer. Children report through their exit code
// (and print why to stderr), and every child runs under alarm() while the parent enforces its own
// deadline, so a hang fails the test instead of blocking CI.
#include "worker/parallel/gloo_communicator.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "worker/parallel/tcp_store.h"

namespace caduceus::parallel {
namespace {

// Child-side check: prints and makes the child exit non-zero.
#define CHILD_CHECK(cond, ...)                                                       \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "rank check failed at line %d: %s %s\n", __LINE__, #cond, \
                   absl::StrCat(__VA_ARGS__).c_str());                               \
      return 1;                                                                      \
    }                                                                                \
  } while (0)

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// One rank's environment inside a child.
struct Rank {
  int rank;
  int world;
  int port;
  std::unique_ptr<TcpStoreServer> server;  // rank 0 only

  absl::StatusOr<std::unique_ptr<GlooCommunicator>> Connect(
      absl::Duration timeout = absl::Seconds(10),
      absl::Duration connect_timeout = absl::Seconds(15)) {
    if (rank == 0 && server == nullptr) {
      auto s = TcpStoreServer::Create("127.0.0.1", port);
      if (!s.ok()) return s.status();
      server = *std::move(s);
    }
    GlooOptions o;
    o.rank = rank;
    o.size = world;
    o.store_address = absl::StrCat("127.0.0.1:", port);
    o.hostname = "127.0.0.1";
    o.timeout = timeout;
    o.connect_timeout = connect_timeout;
    o.prefix = absl::StrCat("test/", world);
    return GlooCommunicator::Create(o);
  }
};

// Forks `world` children running body(rank); returns each child's exit code, or 128 + signal.
// Children still running at `deadline` are killed (and report 128 + SIGKILL).
std::vector<int> RunRanks(int world, const std::function<int(Rank&)>& body,
                          absl::Duration deadline = absl::Seconds(25)) {
  const int port = FreePort();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::alarm(static_cast<unsigned>(absl::ToInt64Seconds(deadline)));
      Rank rank{r, world, port, nullptr};
      int code = body(rank);
      std::fflush(nullptr);
      ::_exit(code);  // skip gtest's and static destructors in the child
    }
    pids.push_back(pid);
  }
  std::vector<int> codes(world, -1);
  const absl::Time end = absl::Now() + deadline + absl::Seconds(2);
  int left = world;
  while (left > 0) {
    for (int r = 0; r < world; ++r) {
      if (codes[r] != -1) continue;
      int status = 0;
      if (::waitpid(pids[r], &status, WNOHANG) == pids[r]) {
        codes[r] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        --left;
      }
    }
    if (left > 0 && absl::Now() > end) {
      for (int r = 0; r < world; ++r) {
        if (codes[r] == -1) ::kill(pids[r], SIGKILL);
      }
    }
    if (left > 0) absl::SleepFor(absl::Milliseconds(20));
  }
  return codes;
}

int AllReduceBody(Rank& r) {
  auto comm = r.Connect();
  CHILD_CHECK(comm.ok(), comm.status().ToString());
  for (size_t n : {size_t{1}, size_t{1000}, size_t{1} << 20}) {
    std::vector<float> data(n);
    for (size_t i = 0; i < n; ++i) data[i] = static_cast<float>((r.rank + 1) * (i % 13 + 1));
    absl::Status st = (*comm)->AllReduceSum(data.data(), n);
    CHILD_CHECK(st.ok(), st.ToString());
    const int rank_sum = r.world * (r.world + 1) / 2;
    for (size_t i = 0; i < n; ++i) {
      const float want = static_cast<float>(rank_sum * (i % 13 + 1));
      CHILD_CHECK(data[i] == want, "n=", n, " i=", i, " got ", data[i], " want ", want);
    }
  }
  CHILD_CHECK((*comm)->Barrier().ok());
  return 0;
}

TEST(GlooCommunicatorTest, AllReduceSumWorld2) {
  EXPECT_EQ(RunRanks(2, AllReduceBody), std::vector<int>({0, 0}));
}

TEST(GlooCommunicatorTest, AllReduceSumWorld4) {
  EXPECT_EQ(RunRanks(4, AllReduceBody), std::vector<int>({0, 0, 0, 0}));
}

TEST(GlooCommunicatorTest, AllGatherOrderAndBroadcastFromNonZeroRoot) {
  auto codes = RunRanks(3, [](Rank& r) {
    auto comm = r.Connect();
    CHILD_CHECK(comm.ok(), comm.status().ToString());
    CHILD_CHECK((*comm)->rank() == r.rank && (*comm)->size() == 3);
    constexpr size_t kCount = 5;
    std::vector<float> in(kCount), out(3 * kCount, -1.0f);
    for (size_t j = 0; j < kCount; ++j) in[j] = static_cast<float>(r.rank * 100 + j);
    absl::Status st = (*comm)->AllGather(in.data(), kCount, out.data());
    CHILD_CHECK(st.ok(), st.ToString());
    for (int src = 0; src < 3; ++src) {
      for (size_t j = 0; j < kCount; ++j) {
        CHILD_CHECK(out[src * kCount + j] == static_cast<float>(src * 100 + j), "src ", src);
      }
    }
    std::vector<unsigned char> bytes(1001, 0);
    if (r.rank == 2) {
      for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 7 + 3);
    }
    st = (*comm)->Broadcast(bytes.data(), bytes.size(), 2);
    CHILD_CHECK(st.ok(), st.ToString());
    for (size_t i = 0; i < bytes.size(); ++i) {
      CHILD_CHECK(bytes[i] == static_cast<unsigned char>(i * 7 + 3), "byte ", i);
    }
    CHILD_CHECK((*comm)->Broadcast(bytes.data(), 1, 3).code() ==
                absl::StatusCode::kInvalidArgument);
    CHILD_CHECK((*comm)->Barrier().ok());
    return 0;
  });
  EXPECT_EQ(codes, std::vector<int>({0, 0, 0}));
}

TEST(GlooCommunicatorTest, FollowerStartedBeforeLeaderJoins) {
  auto codes = RunRanks(2, [](Rank& r) {
    if (r.rank == 0) absl::SleepFor(absl::Seconds(2));  // the leader (store host) is late
    // Here the leader's communicator hosts the store itself (GlooOptions::host_store).
    GlooOptions o;
    o.rank = r.rank;
    o.size = r.world;
    o.store_address = absl::StrCat("127.0.0.1:", r.port);
    o.hostname = "127.0.0.1";
    o.host_store = r.rank == 0;
    auto comm = GlooCommunicator::Create(o);
    CHILD_CHECK(comm.ok(), comm.status().ToString());
    float x = 1.0f;
    absl::Status st = (*comm)->AllReduceSum(&x, 1);
    CHILD_CHECK(st.ok(), st.ToString());
    CHILD_CHECK(x == 2.0f);
    CHILD_CHECK((*comm)->Barrier().ok());
    return 0;
  });
  EXPECT_EQ(codes, std::vector<int>({0, 0}));
}

TEST(GlooCommunicatorTest, KilledRankFailsOthersWithinTimeout) {
  constexpr int kVictim = 2;
  auto codes = RunRanks(3, [](Rank& r) {
    auto comm = r.Connect(/*timeout=*/absl::Seconds(3));
    CHILD_CHECK(comm.ok(), comm.status().ToString());
    std::vector<float> data(1000, 1.0f);
    absl::Status st = (*comm)->AllReduceSum(data.data(), data.size());
    CHILD_CHECK(st.ok(), st.ToString());
    if (r.rank == kVictim) ::raise(SIGKILL);
    const absl::Time start = absl::Now();
    st = (*comm)->AllReduceSum(data.data(), data.size());
    const absl::Duration took = absl::Now() - start;
    std::fprintf(stderr, "rank %d: collective after peer death took %s: %s\n", r.rank,
                 absl::FormatDuration(took).c_str(), st.ToString().c_str());
    CHILD_CHECK(st.code() == absl::StatusCode::kUnavailable ||
                    st.code() == absl::StatusCode::kDeadlineExceeded,
                st.ToString());
    CHILD_CHECK(st.message().find("rank " + std::to_string(r.rank)) != std::string::npos,
                st.ToString());
    CHILD_CHECK(took < absl::Seconds(5), absl::FormatDuration(took));
    CHILD_CHECK(!(*comm)->usable());
    const absl::Time again = absl::Now();
    CHILD_CHECK((*comm)->Broadcast(data.data(), 4, 0).code() == absl::StatusCode::kUnavailable);
    CHILD_CHECK(absl::Now() - again < absl::Milliseconds(100));
    return 0;
  });
  EXPECT_EQ(codes, std::vector<int>({0, 0, 128 + SIGKILL}));
}

// A peer that is alive but stops participating (stuck, paused) cannot be detected by a broken
// connection: the collective timeout must end the wait.
TEST(GlooCommunicatorTest, StuckRankTimesOutOthers) {
  constexpr int kStuck = 1;
  auto codes = RunRanks(3, [](Rank& r) {
    auto comm = r.Connect(/*timeout=*/absl::Seconds(3));
    CHILD_CHECK(comm.ok(), comm.status().ToString());
    float x = 1.0f;
    CHILD_CHECK((*comm)->AllReduceSum(&x, 1).ok());
    if (r.rank == kStuck) {
      absl::SleepFor(absl::Seconds(4));  // keeps its sockets open, never joins the collective
      return 0;
    }
    const absl::Time start = absl::Now();
    absl::Status st = (*comm)->AllReduceSum(&x, 1);
    const absl::Duration took = absl::Now() - start;
    std::fprintf(stderr, "rank %d: collective with a stuck peer took %s: %s\n", r.rank,
                 absl::FormatDuration(took).c_str(), st.ToString().c_str());
    CHILD_CHECK(st.code() == absl::StatusCode::kDeadlineExceeded ||
                    st.code() == absl::StatusCode::kUnavailable,
                st.ToString());
    CHILD_CHECK(took < absl::Seconds(4), absl::FormatDuration(took));
    CHILD_CHECK(!(*comm)->usable());
    return 0;
  });
  EXPECT_EQ(codes, std::vector<int>({0, 0, 0}));
}

TEST(GlooCommunicatorTest, SingleRankGroupIsIdentity) {
  auto codes = RunRanks(1, [](Rank& r) {
    auto comm = r.Connect();
    CHILD_CHECK(comm.ok(), comm.status().ToString());
    std::vector<float> x = {1, 2, 3}, out(3);
    CHILD_CHECK((*comm)->AllReduceSum(x.data(), 3).ok());
    CHILD_CHECK((*comm)->AllGather(x.data(), 3, out.data()).ok());
    CHILD_CHECK(out == x && x == std::vector<float>({1, 2, 3}));
    CHILD_CHECK((*comm)->Broadcast(x.data(), 12, 0).ok());
    CHILD_CHECK((*comm)->Barrier().ok());
    return 0;
  });
  EXPECT_EQ(codes, std::vector<int>({0}));
}

TEST(GlooCommunicatorTest, MissingPeerFailsRendezvousAfterConnectTimeout) {
  auto codes = RunRanks(1, [](Rank& r) {
    GlooOptions o;
    o.rank = 0;
    o.size = 2;  // rank 1 never comes
    o.store_address = absl::StrCat("127.0.0.1:", r.port);
    o.hostname = "127.0.0.1";
    o.host_store = true;
    o.connect_timeout = absl::Seconds(1);
    const absl::Time start = absl::Now();
    auto comm = GlooCommunicator::Create(o);
    const absl::Duration took = absl::Now() - start;
    std::fprintf(stderr, "rendezvous without peer took %s: %s\n",
                 absl::FormatDuration(took).c_str(), comm.status().ToString().c_str());
    CHILD_CHECK(comm.status().code() == absl::StatusCode::kDeadlineExceeded ||
                    comm.status().code() == absl::StatusCode::kUnavailable,
                comm.status().ToString());
    CHILD_CHECK(took < absl::Seconds(4), absl::FormatDuration(took));
    return 0;
  });
  EXPECT_EQ(codes, std::vector<int>({0}));
}

TEST(GlooCommunicatorTest, RejectsBadOptions) {
  GlooOptions o;
  o.rank = 2;
  o.size = 2;
  o.store_address = "127.0.0.1:1";
  EXPECT_EQ(GlooCommunicator::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.rank = 0;
  o.store_address = "no-port";
  EXPECT_EQ(GlooCommunicator::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GlooCommunicatorTest, UnreachableStoreFailsAfterConnectTimeout) {
  GlooOptions o;
  o.rank = 1;
  o.size = 2;
  o.store_address = absl::StrCat("127.0.0.1:", FreePort());
  o.connect_timeout = absl::Milliseconds(400);
  EXPECT_EQ(GlooCommunicator::Create(o).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace caduceus::parallel
