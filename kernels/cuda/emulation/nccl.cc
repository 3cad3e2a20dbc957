// The subset of NCCL that worker/parallel/nccl_communicator.cc calls, for ranks on the emulated
// CUDA device (cudart.cc): every rank is a process (or a thread) on this machine, and the
// collectives go through one POSIX shared-memory segment named by the unique id. Each call
// completes before it returns (the emulated streams are synchronous), with a fixed reduction
// order (rank 0 + rank 1 + ...: the same bits on every rank, as NCCL's ring also guarantees).
// A collective first lets the work queued before it run (device_runtime.h), as the stream would.
// A peer that does not arrive within CADUCEUS_NCCL_EMULATION_TIMEOUT_S (default 60) fails the
// collective with ncclSystemError; ncclCommAbort wakes the peers with an error.
#include <fcntl.h>
#include <nccl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>

#include "kernels/cuda/emulation/device_runtime.h"

struct ncclComm {
  int rank = 0;
  int nranks = 0;
  std::string name;
  void* mapping = nullptr;
  size_t mapping_bytes = 0;
  ncclResult_t async_error = ncclSuccess;
};

namespace caduceus::cuda_emulation {
namespace {

// Bytes each rank can stage per step of a collective; larger ones go in chunks.
constexpr size_t kSlotBytes = size_t{8} << 20;

struct Header {
  std::atomic<uint32_t> joined;
  std::atomic<uint32_t> arrived;
  std::atomic<uint32_t> generation;
  std::atomic<uint32_t> aborted;
};
static_assert(std::atomic<uint32_t>::is_always_lock_free, "shared-memory atomics");
constexpr size_t kHeaderBytes = 4096;

Header* HeaderOf(ncclComm* c) { return static_cast<Header*>(c->mapping); }
char* Slot(ncclComm* c, int rank) {
  return static_cast<char*>(c->mapping) + kHeaderBytes + static_cast<size_t>(rank) * kSlotBytes;
}

std::chrono::seconds Timeout() {
  const char* v = std::getenv("CADUCEUS_NCCL_EMULATION_TIMEOUT_S");
  return std::chrono::seconds(v != nullptr ? std::atoi(v) : 60);
}

// Waits for `ready`, checking for an abort and the timeout.
template <typename Ready>
ncclResult_t WaitFor(ncclComm* c, Ready ready, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + Timeout();
  for (int spins = 0; !ready(); ++spins) {
    if (HeaderOf(c)->aborted.load() != 0) {
      std::fprintf(stderr, "NCCL emulation: rank %d: %s: a peer aborted\n", c->rank, what);
      return c->async_error = ncclRemoteError;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "NCCL emulation: rank %d: %s: peers missing after the timeout\n",
                   c->rank, what);
      return c->async_error = ncclSystemError;
    }
    if (spins < 1000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  return ncclSuccess;
}

ncclResult_t Barrier(ncclComm* c) {
  Header* h = HeaderOf(c);
  const uint32_t generation = h->generation.load();
  if (h->arrived.fetch_add(1) + 1 == static_cast<uint32_t>(c->nranks)) {
    h->arrived.store(0);
    h->generation.fetch_add(1);
    return ncclSuccess;
  }
  return WaitFor(
      c, [&] { return h->generation.load() != generation; }, "barrier");
}

size_t ElementBytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8:
      return 1;
    case ncclFloat16:
    case ncclBfloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
      return 8;
    default:
      return 0;
  }
}

ncclResult_t Usable(ncclComm* c) {
  if (c == nullptr || c->mapping == nullptr) return ncclInvalidArgument;
  return c->async_error;
}

}  // namespace
}  // namespace caduceus::cuda_emulation

namespace emu = caduceus::cuda_emulation;

extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId) {
  if (uniqueId == nullptr) return ncclInvalidArgument;
  std::memset(uniqueId, 0, sizeof(*uniqueId));
  std::random_device device;
  std::snprintf(uniqueId->internal, sizeof(uniqueId->internal), "/caduceus-nccl-emu-%d-%08x%08x",
                static_cast<int>(getpid()), device(), device());
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank,
                                    ncclConfig_t* /*config*/) {
  if (comm == nullptr || nranks < 1 || rank < 0 || rank >= nranks || commId.internal[0] != '/') {
    return ncclInvalidArgument;
  }
  auto* c = new ncclComm;
  c->rank = rank;
  c->nranks = nranks;
  c->name.assign(commId.internal, strnlen(commId.internal, sizeof(commId.internal)));
  c->mapping_bytes = emu::kHeaderBytes + static_cast<size_t>(nranks) * emu::kSlotBytes;
  const int fd = shm_open(c->name.c_str(), O_CREAT | O_RDWR, 0600);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(c->mapping_bytes)) != 0) {
    std::perror("NCCL emulation: shared memory");
    if (fd >= 0) close(fd);
    delete c;
    return ncclSystemError;
  }
  void* mapping = mmap(nullptr, c->mapping_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (mapping == MAP_FAILED) {
    delete c;
    return ncclSystemError;
  }
  c->mapping = mapping;
  *comm = c;
  emu::Header* h = emu::HeaderOf(c);
  h->joined.fetch_add(1);
  const ncclResult_t r = emu::WaitFor(
      c, [&] { return h->joined.load() >= static_cast<uint32_t>(nranks); }, "init");
  // Everyone has it mapped: the name is no longer needed (the mappings stay valid).
  if (r == ncclSuccess && rank == 0) shm_unlink(c->name.c_str());
  return r;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) {
  if (comm == nullptr || asyncError == nullptr) return ncclInvalidArgument;
  *asyncError = comm->async_error;
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) { return emu::Usable(comm); }

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm == nullptr) return ncclInvalidArgument;
  if (comm->mapping != nullptr) munmap(comm->mapping, comm->mapping_bytes);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (comm == nullptr) return ncclSuccess;
  if (comm->mapping != nullptr) {
    emu::HeaderOf(comm)->aborted.store(1);
    if (comm->rank == 0) shm_unlink(comm->name.c_str());  // in case init never completed
  }
  return ncclCommDestroy(comm);
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "no error";
    case ncclSystemError:
      return "unhandled system error (NCCL emulation: a peer is missing)";
    case ncclInternalError:
      return "internal error";
    case ncclInvalidArgument:
      return "invalid argument";
    case ncclInvalidUsage:
      return "invalid usage";
    case ncclRemoteError:
      return "remote process exited or there was a network error";
    case ncclInProgress:
      return "NCCL operation in progress";
    default:
      return "unknown result (NCCL emulation)";
  }
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t /*stream*/) {
  if (ncclResult_t u = emu::Usable(comm); u != ncclSuccess) return u;
  emu::Drain();  // the stream work issued before the collective
  if (datatype != ncclFloat32 || op != ncclSum) return ncclInvalidArgument;
  const size_t per_step = emu::kSlotBytes / sizeof(float);
  for (size_t done = 0; done < count; done += per_step) {
    const size_t n = std::min(per_step, count - done);
    std::memcpy(emu::Slot(comm, comm->rank), static_cast<const float*>(sendbuff) + done,
                n * sizeof(float));
    if (ncclResult_t r = emu::Barrier(comm); r != ncclSuccess) return r;
    float* out = static_cast<float*>(recvbuff) + done;
    for (size_t i = 0; i < n; ++i) {
      float sum = reinterpret_cast<const float*>(emu::Slot(comm, 0))[i];
      for (int r = 1; r < comm->nranks; ++r) {
        sum += reinterpret_cast<const float*>(emu::Slot(comm, r))[i];
      }
      out[i] = sum;
    }
    if (ncclResult_t r = emu::Barrier(comm); r != ncclSuccess) return r;
  }
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t /*stream*/) {
  if (ncclResult_t u = emu::Usable(comm); u != ncclSuccess) return u;
  emu::Drain();  // the stream work issued before the collective
  const size_t bytes = sendcount * emu::ElementBytes(datatype);
  if (emu::ElementBytes(datatype) == 0) return ncclInvalidArgument;
  for (size_t done = 0; done < bytes; done += emu::kSlotBytes) {
    const size_t n = std::min(emu::kSlotBytes, bytes - done);
    std::memcpy(emu::Slot(comm, comm->rank), static_cast<const char*>(sendbuff) + done, n);
    if (ncclResult_t r = emu::Barrier(comm); r != ncclSuccess) return r;
    for (int r = 0; r < comm->nranks; ++r) {
      std::memcpy(static_cast<char*>(recvbuff) + static_cast<size_t>(r) * bytes + done,
                  emu::Slot(comm, r), n);
    }
    if (ncclResult_t r = emu::Barrier(comm); r != ncclSuccess) return r;
  }
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t /*stream*/) {
  if (ncclResult_t u = emu::Usable(comm); u != ncclSuccess) return u;
  emu::Drain();  // the stream work issued before the collective
  if (root < 0 || root >= comm->nranks || emu::ElementBytes(datatype) == 0) {
    return ncclInvalidArgument;
  }
  const size_t bytes = count * emu::ElementBytes(datatype);
  for (size_t done = 0; done < bytes; done += emu::kSlotBytes) {
    const size_t n = std::min(emu::kSlotBytes, bytes - done);
    if (comm->rank == root) {
      std::memcpy(emu::Slot(comm, root), static_cast<const char*>(sendbuff) + done, n);
    }
    if (ncclResult_t r = emu::Barrier(comm); r != ncclSuccess) return r;
    std::memmove(static_cast<char*>(recvbuff) + done, emu::Slot(comm, root), n);
    if (ncclResult_t r = emu::Barrier(comm); r != ncclSuccess) return r;
  }
  return ncclSuccess;
}

}  // extern "C"
