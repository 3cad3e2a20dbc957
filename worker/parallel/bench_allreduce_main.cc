// caduceus-bench-allreduce: latency of GlooCommunicator::AllReduceSum per call.
//
//   caduceus-bench-allreduce [--world 2]                      forks all ranks on loopback
//   caduceus-bench-allreduce --rank R --world W --store H:P   one rank per process/pod
//                            [--hostname ADDR]                (rank 0 hosts the store on P)
// Rank 0 prints one JSON line: per buffer size, mean / p50 / min / max microseconds per call.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/cli_flags.h"
#include "nlohmann/json.hpp"
#include "worker/parallel/gloo_communicator.h"

ABSL_FLAG(int32_t, world, 2, "group size");
ABSL_FLAG(int32_t, rank, -1, "this process's rank; -1 forks all ranks on loopback");
ABSL_FLAG(std::string, store, "", "host:port of the store (rank 0 hosts it); default loopback");
ABSL_FLAG(std::string, hostname, "127.0.0.1", "this rank's address for the Gloo transport");
ABSL_FLAG(int32_t, iters, 30, "timed calls per size (after 3 warm-up calls)");

namespace caduceus::parallel {
namespace {

int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

int RunRank(int rank, int world, const std::string& store, const std::string& hostname,
            int iters) {
  GlooOptions o;
  o.rank = rank;
  o.size = world;
  o.store_address = store;
  o.hostname = hostname;
  o.prefix = "bench-allreduce";
  o.host_store = rank == 0;
  auto comm = GlooCommunicator::Create(o);
  if (!comm.ok()) {
    std::fprintf(stderr, "%s\n", comm.status().ToString().c_str());
    return 1;
  }
  nlohmann::json results = nlohmann::json::array();
  for (size_t bytes : {size_t{16} << 10, size_t{1} << 20, size_t{16} << 20}) {
    std::vector<float> data(bytes / sizeof(float), 1.0f);
    std::vector<double> us;
    if (!(*comm)->Barrier().ok()) return 1;
    for (int i = 0; i < iters + 3; ++i) {
      const absl::Time start = absl::Now();
      absl::Status st = (*comm)->AllReduceSum(data.data(), data.size());
      const double t = absl::ToDoubleMicroseconds(absl::Now() - start);
      if (!st.ok()) {
        std::fprintf(stderr, "%s\n", st.ToString().c_str());
        return 1;
      }
      if (i >= 3) us.push_back(t);
    }
    std::sort(us.begin(), us.end());
    double sum = 0;
    for (double t : us) sum += t;
    const double mean = sum / us.size();
    results.push_back({{"bytes", bytes},
                       {"mean_us", mean},
                       {"p50_us", us[us.size() / 2]},
                       {"min_us", us.front()},
                       {"max_us", us.back()},
                       {"algbw_gbps", bytes / mean / 1e3}});
  }
  if (!(*comm)->Barrier().ok()) return 1;
  if (rank == 0) {
    nlohmann::json out = {{"bench", "allreduce"},       {"backend", "gloo-tcp"},
                          {"world", world},              {"hostname", hostname},
                          {"iters", iters},              {"results", results}};
    std::printf("%s\n", out.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace caduceus::parallel

int main(int argc, char** argv) {
  caduceus::ParseFlags(argc, argv,
                       "caduceus-bench-allreduce [--world N] [--rank R --store HOST:PORT]");
  const int world = absl::GetFlag(FLAGS_world);
  const int rank = absl::GetFlag(FLAGS_rank);
  const int iters = std::max(1, absl::GetFlag(FLAGS_iters));
  const std::string hostname = absl::GetFlag(FLAGS_hostname);
  std::string store = absl::GetFlag(FLAGS_store);
  if (rank >= 0) {
    if (store.empty()) {
      std::fprintf(stderr, "--store is required with --rank\n");
      return 2;
    }
    return caduceus::parallel::RunRank(rank, world, store, hostname, iters);
  }
  if (store.empty()) {
    store = absl::StrCat("127.0.0.1:", caduceus::parallel::FreeLoopbackPort());
  }
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) _exit(caduceus::parallel::RunRank(r, world, store, hostname, iters));
    pids.push_back(pid);
  }
  int failed = 0;
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  return failed == 0 ? 0 : 1;
}
