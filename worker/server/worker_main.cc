// caduceus-worker: one rank of a tensor-parallel worker group (one model replica).
//
//   caduceus-worker --model DIR --tp-size N --rank R --rendezvous HOST:PORT --device cpu
//                   [--listen HOST:PORT --metrics-listen HOST:PORT]   (rank 0)
//
// Rank 0 (the leader) hosts the rendezvous store on --rendezvous's port, serves the worker gRPC
// API (caduceus.worker.v1.Worker + grpc.health.v1) on --listen, and forwards every step to the
// followers. Every flag can also be set as CADUCEUS_<FLAG> in the environment (CADUCEUS_TP_SIZE).
//
// Exit codes: 0 after SIGTERM/SIGINT or a shutdown from the leader; 1 bad flags or load failure;
// 2 the leader's group broke (a rank died); 3 a follower lost its leader.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/cli_flags.h"
#include "common/log.h"
#include "common/read_file.h"
#include "common/mutex_debug.h"
#include "worker/model/llama_model.h"
#include "worker/parallel/gloo_communicator.h"
#include "worker/parallel/timed_communicator.h"
#include "worker/backend/emulated_device.h"
#include "worker/server/gpu_communicator.h"
#include "worker/server/model_identity.h"
#include "worker/server/router_registration.h"
#include "worker/server/tp_group.h"
#include "worker/server/worker_metrics.h"
#include "worker/server/step_server.h"
#include "worker/server/worker_service.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (config.json + safetensors)");
ABSL_FLAG(int32_t, tp_size, 1, "ranks in this tensor-parallel group");
ABSL_FLAG(int32_t, rank, 0, "this process's rank; 0 is the leader");
ABSL_FLAG(std::string, rendezvous, "",
          "HOST:PORT of the leader's rendezvous store (rank 0 listens on PORT); needed when "
          "--tp-size > 1");
ABSL_FLAG(std::string, device, "cpu",
          "cpu, or cuda[:K]; emulated-device runs the CPU kernels behind the device-memory path "
          "(tests)");
ABSL_FLAG(std::string, listen, "", "rank 0: HOST:PORT for the worker gRPC API");
ABSL_FLAG(std::string, metrics_listen, "", "HOST:PORT for Prometheus /metrics (any rank)");
ABSL_FLAG(int64_t, kv_cache_bytes, int64_t{1} << 30,
          "KV-cache memory per rank in bytes; 0: a fraction of the memory available after "
          "loading (--kv-cache-memory-fraction on CPUs, --gpu-memory-utilization on GPUs)");
ABSL_FLAG(std::string, kv_cache_dtype, "auto",
          "KV-cache element type: float32, bfloat16 (half the memory per token; keys and values "
          "rounded to bf16), or auto = bfloat16 on GPUs, float32 on CPUs");
ABSL_FLAG(double, kv_cache_memory_fraction, 0.5,
          "CPUs, with --kv-cache-bytes 0: fraction of MemAvailable (after loading the weights) "
          "for this rank's KV cache; ranks sharing a host should split it");
ABSL_FLAG(double, gpu_memory_utilization, 0.9,
          "GPUs, with --kv-cache-bytes 0: fraction of the device's memory for weights + "
          "activations (measured by a warm-up step at --max-step-tokens) + KV cache");
ABSL_FLAG(std::string, router, "",
          "rank 0: HOST:PORT of a router to register with (and heartbeat to)");
ABSL_FLAG(std::string, registry_token_file, "",
          "rank 0, with --router: file holding the router's --registry-token-file token");
ABSL_FLAG(std::string, advertise_address, "",
          "rank 0: HOST:PORT the router should dial (default: --listen)");
ABSL_FLAG(double, collective_timeout, 30,
          "seconds before a collective with a dead rank fails (leader answers UNAVAILABLE)");
ABSL_FLAG(double, connect_timeout, 120,
          "seconds to wait for the leader's store and for all ranks to join");
ABSL_FLAG(std::string, gloo_hostname, "",
          "this rank's address for Gloo (default: 127.0.0.1 when the rendezvous is on loopback, "
          "else the pod hostname)");
ABSL_FLAG(std::string, gloo_iface, "", "network interface for Gloo instead of --gloo-hostname");
ABSL_FLAG(int32_t, max_step_tokens, 8192, "largest number of new tokens in one step");
ABSL_FLAG(int32_t, max_step_sequences, 256, "largest number of sequences in one step");
ABSL_FLAG(double, drain_timeout, 30,
          "rank 0, on SIGTERM: seconds to keep running the sequences the router already sent "
          "(new ones go to other replicas) before the group stops");
ABSL_FLAG(std::string, quantization, "none",
          "none: serve the checkpoint's weights as stored (bf16, or FP8 when the checkpoint is "
          "FP8); fp8: quantize bf16 projection weights to FP8 E4M3 at load time (per-channel "
          "scales; half the weight memory and decode traffic)");
ABSL_FLAG(bool, resident_weights, true,
          "copy hot weights out of the mapped files into anonymous memory (faster decode)");
ABSL_FLAG(bool, cuda_graphs, true,
          "cuda devices: run decode steps from CUDA graphs, one per batch and context bucket "
          "(false: launch every kernel eagerly)");
ABSL_FLAG(int32_t, cuda_graph_max_batch, 256,
          "cuda devices: decode steps of more sequences than this run eagerly");

namespace caduceus::worker {
namespace {

constexpr const char kUsage[] =
    "caduceus-worker --model DIR --tp-size N --rank R --rendezvous HOST:PORT --device cpu "
    "[--listen HOST:PORT] [--metrics-listen HOST:PORT]\n"
    "One rank of a tensor-parallel worker group. Every flag may also be given as an environment "
    "variable CADUCEUS_<FLAG>, e.g. CADUCEUS_TP_SIZE=2.";

int Fail(const absl::Status& status) {
  LogError(status.ToString());
  return 1;
}

bool IsLoopback(const std::string& address) {
  return address.rfind("127.", 0) == 0 || address.rfind("localhost", 0) == 0 ||
         address.rfind("[::1]", 0) == 0;
}

// Blocks SIGTERM/SIGINT in every thread; WaitForSignal picks them up synchronously.
sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

// MemAvailable from /proc/meminfo, in bytes (0 if unknown).
int64_t MemAvailableBytes() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return 0;
  char line[256];
  int64_t kib = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "MemAvailable: %ld kB", &kib) == 1) break;
  }
  std::fclose(f);
  return kib * 1024;
}

// All ranks must agree on the number of KV blocks (the router's block tables index every rank's
// cache): the smallest budget wins.
absl::StatusOr<int32_t> AgreeOnBlocks(int32_t mine, parallel::Communicator* comm) {
  if (comm == nullptr) return mine;
  std::vector<float> all(comm->size());
  const float value = static_cast<float>(mine);
  if (absl::Status s = comm->AllGather(&value, 1, all.data()); !s.ok()) return s;
  float least = value;
  for (float v : all) least = std::min(least, v);
  return static_cast<int32_t>(least);
}

int Main(int argc, char** argv) {
  const sigset_t stop_signals = BlockStopSignals();
  ParseFlagsWithEnv(argc, argv, kUsage, "CADUCEUS_");
  DisableMutexDeadlockDetection();
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  const int tp_size = absl::GetFlag(FLAGS_tp_size);
  const int rank = absl::GetFlag(FLAGS_rank);
  const std::string device = absl::GetFlag(FLAGS_device);
  const std::string rendezvous = absl::GetFlag(FLAGS_rendezvous);
  const std::string listen = absl::GetFlag(FLAGS_listen);
  if (model_dir.empty()) return Fail(absl::InvalidArgumentError("--model is required"));
  if (tp_size < 1 || rank < 0 || rank >= tp_size) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--rank ", rank, " must be in [0, --tp-size ", tp_size, ")")));
  }
  if (tp_size > 1 && rendezvous.empty()) {
    return Fail(absl::InvalidArgumentError("--rendezvous HOST:PORT is required with --tp-size > 1"));
  }
  if (rank == 0 && listen.empty()) {
    return Fail(absl::InvalidArgumentError("rank 0 needs --listen HOST:PORT for the worker API"));
  }
  const bool gpu = device.rfind("cuda", 0) == 0;
  // Device memory (a GPU, or the emulated device tests use): warm-up and KV sizing from it.
  const bool device_memory = gpu || device == backend::kEmulatedDevice;
  if (device != "cpu" && !device_memory) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--device ", device, ": expected cpu, cuda or cuda:K")));
  }
  int gpu_ordinal = 0;
  if (gpu && device.size() > 4 &&
      (device[4] != ':' || !absl::SimpleAtoi(device.substr(5), &gpu_ordinal) || gpu_ordinal < 0)) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--device ", device, ": expected cuda:K")));
  }
  const std::string where = absl::StrCat("rank ", rank, "/", tp_size);

  auto identity = IdentifyModel(model_dir);
  if (!identity.ok()) return Fail(identity.status());
  auto quantization = model::ParseQuantizationFlag(absl::GetFlag(FLAGS_quantization));
  if (!quantization.ok()) return Fail(quantization.status());
  auto checkpoint = model::ModelConfig::LoadFromDir(model_dir);
  if (!checkpoint.ok()) return Fail(checkpoint.status());
  // What the projections will be (LlamaWeights::quantization), for the metrics' info labels.
  const char* weights = checkpoint->quantization == model::Quantization::kFp8 ? "fp8"
                        : *quantization == model::Quantization::kFp8        ? "fp8-online"
                                                                            : "none";
  auto metrics = WorkerMetrics::Create({identity->id, device, tp_size, rank, weights},
                                       absl::GetFlag(FLAGS_metrics_listen));
  if (!metrics.ok()) return Fail(metrics.status());

  // The group: Gloo over TCP; rank 0 hosts the rendezvous store.
  std::unique_ptr<parallel::GlooCommunicator> gloo;
  std::unique_ptr<parallel::Communicator> data_plane;  // NCCL on GPUs; null: Gloo carries data too
  std::optional<parallel::TimedCommunicator> timed;
  if (tp_size > 1) {
    parallel::GlooOptions o;
    o.rank = rank;
    o.size = tp_size;
    o.store_address = rendezvous;
    o.host_store = rank == 0;
    o.hostname = absl::GetFlag(FLAGS_gloo_hostname);
    o.iface = absl::GetFlag(FLAGS_gloo_iface);
    if (o.hostname.empty() && o.iface.empty() && IsLoopback(rendezvous)) o.hostname = "127.0.0.1";
    o.timeout = absl::Seconds(absl::GetFlag(FLAGS_collective_timeout));
    o.connect_timeout = absl::Seconds(absl::GetFlag(FLAGS_connect_timeout));
    LogInfo(absl::StrCat(where, ": joining the group at ", rendezvous));
    auto created = parallel::GlooCommunicator::Create(o);
    if (!created.ok()) return Fail(created.status());
    gloo = std::move(*created);
    LogInfo(absl::StrCat(where, ": group formed"));
    if (gpu) {
      // Data plane over NCCL (unique id broadcast through Gloo); the control plane stays on Gloo.
      auto nccl = MakeGpuCommunicator(*gloo, gpu_ordinal,
                                      absl::Seconds(absl::GetFlag(FLAGS_collective_timeout)));
      if (!nccl.ok()) return Fail(nccl.status());
      data_plane = std::move(*nccl);
      LogInfo(absl::StrCat(where, ": NCCL communicator up on cuda:", gpu_ordinal));
    }
    timed.emplace(data_plane ? data_plane.get() : gloo.get());
  }

  model::LoadOptions load;
  load.device = device;
  load.resident_weights = absl::GetFlag(FLAGS_resident_weights);
  load.quantize_fp8 = *quantization == model::Quantization::kFp8;
  load.graphs.enabled = absl::GetFlag(FLAGS_cuda_graphs);
  load.graphs.max_batch = absl::GetFlag(FLAGS_cuda_graph_max_batch);
  auto kv_dtype = model::KvCache::ParseDtype(absl::GetFlag(FLAGS_kv_cache_dtype), device);
  if (!kv_dtype.ok()) return Fail(kv_dtype.status());
  load.kv_dtype = *kv_dtype;
  load.shard = model::ShardSpec{rank, tp_size};
  const auto load_start = std::chrono::steady_clock::now();
  auto model = model::LlamaModel::Load(model_dir, load, timed ? &*timed : nullptr);
  if (!model.ok()) return Fail(model.status());
  const model::ModelConfig& config = (*model)->config();
  const int64_t block_bytes = (*model)->KvCacheBytesPerBlock();
  int64_t kv_bytes = absl::GetFlag(FLAGS_kv_cache_bytes);
  const backend::MemoryOps& memory = (*model)->kernels().memory;
  int64_t activation_bytes = 0, device_bytes = 0;
  if (device_memory) {
    // The largest step the leader accepts, once, before the KV cache takes the rest: every
    // activation buffer and GEMM workspace reaches its final size now, and a step later never
    // runs the device out of memory. A collective under TP: every rank runs it here.
    const int64_t free_before = memory.free_bytes(memory.device);
    const absl::Status warm = (*model)->WarmUp(absl::GetFlag(FLAGS_max_step_tokens),
                                               absl::GetFlag(FLAGS_max_step_sequences));
    if (!warm.ok()) {
      return Fail(absl::Status(warm.code(), absl::StrCat("warm-up at the largest step (",
                                                         absl::GetFlag(FLAGS_max_step_tokens),
                                                         " tokens): ", warm.message())));
    }
    device_bytes = memory.total_bytes(memory.device);
    activation_bytes = free_before - memory.free_bytes(memory.device);
    LogInfo(absl::StrCat(where, ": warm-up step done; activations and workspaces take ",
                         activation_bytes, " bytes of ", device_bytes));
  }
  if (kv_bytes == 0 && device_memory) {
    // --gpu-memory-utilization of the device, less the weights and the warm-up's activations.
    const double utilization = absl::GetFlag(FLAGS_gpu_memory_utilization);
    auto budget = model::KvCache::DeviceBudget(utilization, device_bytes,
                                               memory.free_bytes(memory.device));
    if (!budget.ok()) return Fail(budget.status());
    kv_bytes = *budget;
    LogInfo(absl::StrCat(where, ": KV cache gets ", kv_bytes, " bytes (", utilization,
                         " of the device's ", device_bytes, " bytes, less weights and activations)"));
  } else if (kv_bytes == 0) {
    const double fraction = absl::GetFlag(FLAGS_kv_cache_memory_fraction);
    if (!(fraction > 0 && fraction <= 0.95)) {
      return Fail(absl::InvalidArgumentError("--kv-cache-memory-fraction must be in (0, 0.95]"));
    }
    kv_bytes = static_cast<int64_t>(fraction * static_cast<double>(MemAvailableBytes()));
    LogInfo(absl::StrCat(where, ": KV cache gets ", fraction, " of the available memory: ",
                         kv_bytes, " bytes"));
  }
  if (kv_bytes < block_bytes) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--kv-cache-bytes ", kv_bytes, " is less than one KV block (", block_bytes, " bytes)")));
  }
  auto blocks = AgreeOnBlocks(static_cast<int32_t>(std::min<int64_t>(kv_bytes / block_bytes, 1 << 30)),
                              gloo.get());
  if (!blocks.ok()) return Fail(blocks.status());
  auto cache = (*model)->CreateKvCache(*blocks);
  if (!cache.ok()) return Fail(cache.status());
  (*metrics)->SetKvBlocks(0, *blocks);
  (*metrics)->SetMemory({(*model)->PlacedWeightBytes(), *blocks * block_bytes, activation_bytes,
                         device_bytes, device_memory});
  LogInfo(absl::StrCat(where, ": loaded ", identity->id, " (revision ", identity->revision, ") in ",
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count(),
                       " s; ", *blocks, " KV blocks of ", model::KvCache::kDefaultBlockSize,
                       " tokens (", *blocks * block_bytes, " bytes, ",
                       model::KvCache::DtypeName((*model)->kv_dtype()), "); projection weights ",
                       std::string((*model)->quantization()) == "none" ? "bf16"
                                                                       : (*model)->quantization()));

  GroupParts parts{model->get(), cache->get(), gloo.get(), timed ? &*timed : nullptr, metrics->get()};

  if (rank != 0) {
    // Followers: SIGTERM ends the process at once (the leader notices the missing rank).
    std::thread([stop_signals] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      LogInfo(absl::StrCat("signal ", sig, ": follower exiting"));
      std::_Exit(0);
    }).detach();
    absl::Status done = RunFollower(parts);
    if (done.ok()) {
      LogInfo(absl::StrCat(where, ": leader shut the group down; exiting"));
      return 0;
    }
    LogError(absl::StrCat(where, ": lost the group (", done.message(), "); exiting"));
    return 3;
  }

  StepLimits limits;
  limits.max_step_tokens = absl::GetFlag(FLAGS_max_step_tokens);
  limits.max_step_sequences = absl::GetFlag(FLAGS_max_step_sequences);
  limits.num_kv_blocks = *blocks;
  limits.block_size = model::KvCache::kDefaultBlockSize;
  limits.max_context = config.max_position_embeddings;
  limits.vocab_size = config.vocab_size;
  // Heartbeats at a quarter of the timeout: a follower hears from its leader several times
  // before it would give up on it.
  const absl::Duration heartbeat =
      std::min(absl::Seconds(5), absl::Seconds(absl::GetFlag(FLAGS_collective_timeout)) / 4);
  GroupLeader leader(parts, limits, heartbeat);

  v1::InfoResponse info;
  info.set_model_id(identity->id);
  info.set_quantization((*model)->quantization());
  // Load-time quantization changes the outputs: such a replica is another revision (failover
  // pins a started request to its revision; replica_set.h).
  info.set_revision(std::string((*model)->quantization()) == "fp8-online"
                        ? identity->revision + "-fp8"
                        : identity->revision);
  info.set_tp_size(tp_size);
  info.set_dtype(config.torch_dtype.empty() ? "bfloat16" : config.torch_dtype);
  info.set_device(device);
  info.set_block_size(model::KvCache::kDefaultBlockSize);
  info.set_num_kv_blocks(*blocks);
  info.set_max_context(config.max_position_embeddings);
  info.set_vocab_size(config.vocab_size);
  info.set_kv_cache_bytes(*blocks * block_bytes);
  info.set_kv_cache_dtype(model::KvCache::DtypeName((*model)->kv_dtype()));
  for (const char* feature : {"draft_tokens", "logit_bias"}) info.add_features(feature);
  info.set_max_step_tokens(limits.max_step_tokens);
  info.set_max_step_sequences(limits.max_step_sequences);
  for (int id : config.eos_token_ids) info.add_eos_token_ids(id);
  info.set_weight_bytes_per_rank((*model)->WeightBytesPerToken());
  info.set_rank_count_healthy(tp_size);
  info.set_activation_bytes(activation_bytes);
  info.set_device_memory_bytes(device_bytes);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  WorkerService service(&leader, info);
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &bound_port);
  builder.SetMaxReceiveMessageSize(256 << 20);
  builder.SetMaxSendMessageSize(256 << 20);
  builder.RegisterService(&service);
  StepServer step_server(&service, &leader, builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    leader.Shutdown();
    return Fail(absl::UnavailableError(absl::StrCat("cannot serve the worker API on ", listen)));
  }
  step_server.Start();
  server->GetHealthCheckService()->SetServingStatus(true);

  // Exit when the group breaks (so that the orchestrator restarts the whole group) or on a signal.
  std::atomic<bool> broken{false};
  leader.OnBroken([&](const absl::Status&) {
    broken = true;
    server->GetHealthCheckService()->SetServingStatus(false);
    kill(getpid(), SIGTERM);  // wakes the sigwait below
  });
  std::optional<RouterRegistration> registration;
  const std::string advertise = absl::GetFlag(FLAGS_advertise_address).empty()
                                    ? listen
                                    : absl::GetFlag(FLAGS_advertise_address);
  std::string registry_token;
  if (!absl::GetFlag(FLAGS_router).empty()) {
    auto token = ReadTokenFile(absl::GetFlag(FLAGS_registry_token_file), "--registry-token-file");
    if (!token.ok()) return Fail(token.status());
    registry_token = *std::move(token);
    registration.emplace(absl::GetFlag(FLAGS_router), advertise, info,
                         [&leader] { return leader.health().ok(); }, registry_token);
  }
  LogInfo(absl::StrCat(where, ": serving the worker API on ", listen));

  int sig = 0;
  sigwait(&stop_signals, &sig);
  server->GetHealthCheckService()->SetServingStatus(false);
  registration.reset();
  if (broken) {
    // Let the failed step's UNAVAILABLE reach the router before the process goes.
    step_server.ShutdownServer(*server, std::chrono::system_clock::now() + std::chrono::seconds(2));
    step_server.Stop();
    leader.Shutdown();
    LogError(absl::StrCat(where, ": exiting because the group broke"));
    return 2;
  }
  // Graceful: keep running what the router already sent until it has released everything (it
  // routes new requests elsewhere once a result or health check says "draining").
  leader.StartDraining();
  const auto drain_deadline = std::chrono::steady_clock::now() +
                              std::chrono::duration<double>(absl::GetFlag(FLAGS_drain_timeout));
  LogInfo(absl::StrCat("signal ", sig, ": draining ", leader.live_sequences(),
                       " sequences (up to ", absl::GetFlag(FLAGS_drain_timeout), " s)"));
  while (leader.live_sequences() > 0 && !broken && std::chrono::steady_clock::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (leader.live_sequences() > 0) {
    LogWarning(absl::StrCat(leader.live_sequences(), " sequences still live at the drain timeout"));
  }
  if (!absl::GetFlag(FLAGS_router).empty()) {
    // Leaving for good: the router drops the replica now instead of counting it down.
    RouterRegistration::Deregister(absl::GetFlag(FLAGS_router), advertise, registry_token);
  }
  LogInfo("stopping the group");
  step_server.ShutdownServer(*server, std::chrono::system_clock::now() + std::chrono::seconds(5));
  step_server.Stop();
  leader.Shutdown();
  return 0;
}

}  // namespace
}  // namespace caduceus::worker

int main(int argc, char** argv) { return caduceus::worker::Main(argc, argv); }
