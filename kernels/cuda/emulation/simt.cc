#include "kernels/cuda/emulation/simt.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define CADUCEUS_FIBER_ASAN 1
#endif

// Switching threads is the emulation's inner loop (a warp reduction is 5 switches per lane), so
// it is a bare stack switch of the callee-saved registers (System V x86-64) rather than
// swapcontext, which also saves the signal mask with two system calls per switch.
#if !defined(__x86_64__)
#error "the CUDA emulation's fiber switch is written for x86-64"
#endif
extern "C" void caduceus_emulation_switch(void** save_sp, void* resume_sp);
asm(R"(
  .text
  .globl caduceus_emulation_switch
  .type caduceus_emulation_switch, @function
caduceus_emulation_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size caduceus_emulation_switch, .-caduceus_emulation_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");

namespace caduceus::cuda_emulation {

namespace {
const ThreadIndex outside_kernels{};
}  // namespace
const ThreadIndex* current_index = &outside_kernels;

namespace {

constexpr int kWarpSize = 32;
// Kernels use little stack; AddressSanitizer's redzones need more.
#if defined(CADUCEUS_FIBER_ASAN)
constexpr size_t kStackBytes = size_t{512} << 10;
#else
constexpr size_t kStackBytes = size_t{128} << 10;
#endif

enum class State { kRunnable, kAtBarrier, kAtShuffle, kDone };

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while switched out
  char* stack = nullptr;  // kStackBytes after a guard page (overflow faults instead of corrupting)
  State state = State::kRunnable;
  ThreadIndex index;
  const char* file = nullptr;  // the barrier or shuffle it waits at
  int line = 0;
  uint32_t member_mask = 0, bits = 0, result = 0;
  int lane_mask = 0, width = 0;
  void* asan_fake_stack = nullptr;
  size_t top_offset;

  // `color` staggers the stack tops: stacks all aligned alike would map the live top of every
  // stack to the same cache sets, and a block switches among up to 1024 of them.
  explicit Fiber(size_t color) : top_offset((color * 320) % 16384) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* mem = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
      std::perror("CUDA emulation: fiber stack");
      std::abort();
    }
    mprotect(mem, page, PROT_NONE);
    stack = static_cast<char*>(mem) + page;
  }
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
  ~Fiber() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    munmap(stack - page, kStackBytes + page);
  }
};

struct Emulator {
  std::mutex grid_mutex;  // one grid at a time: __shared__ arrays are static storage
  void* scheduler_sp = nullptr;
  Fiber* current = nullptr;
  const std::function<void()>* body = nullptr;
  std::vector<std::unique_ptr<Fiber>> fibers;  // reused by every block and grid
  ThreadOrder order = ThreadOrder::kForward;
  // AddressSanitizer's view of the scheduler's (the host thread's) stack.
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
  void* scheduler_fake_stack = nullptr;
};

Emulator& State_() {
  static Emulator* emulator = [] {
    auto* e = new Emulator;  // never destroyed: kernels may run during static destruction
    const char* order = std::getenv("CADUCEUS_CUDA_EMULATION_ORDER");
    if (order != nullptr && std::strcmp(order, "reverse") == 0) e->order = ThreadOrder::kReverse;
    return e;
  }();
  return *emulator;
}

std::string Describe(const Dim3& d) {
  char buffer[48];
  std::snprintf(buffer, sizeof(buffer), "(%u,%u,%u)", d.x, d.y, d.z);
  return buffer;
}

[[noreturn]] void Fatal(const char* format, ...) {
  Emulator& e = State_();
  std::fprintf(stderr, "CUDA emulation: ");
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  if (!e.fibers.empty()) {
    const ThreadIndex& i = e.fibers[0]->index;
    std::fprintf(stderr, " [block %s of grid %s, %s threads per block]",
                 Describe(i.block_idx).c_str(), Describe(i.grid_dim).c_str(),
                 Describe(i.block_dim).c_str());
  }
  std::fprintf(stderr, "\n");
  std::abort();
}

const char* StateName(const Fiber& f) {
  switch (f.state) {
    case State::kRunnable:
      return "running";
    case State::kAtBarrier:
      return "at __syncthreads";
    case State::kAtShuffle:
      return "at a warp shuffle";
    case State::kDone:
      return "exited";
  }
  return "?";
}

std::string Where(const Fiber& f) {
  if (f.state != State::kAtBarrier && f.state != State::kAtShuffle) return StateName(f);
  char buffer[512];
  std::snprintf(buffer, sizeof(buffer), "%s (%s:%d)", StateName(f), f.file, f.line);
  return buffer;
}

bool SameSite(const Fiber& a, const Fiber& b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

void FiberEntry();

// Scheduler -> fiber, until the fiber waits or exits.
void Resume(Emulator& e, Fiber& f) {
  e.current = &f;
  current_index = &f.index;
#if defined(CADUCEUS_FIBER_ASAN)
  __sanitizer_start_switch_fiber(&e.scheduler_fake_stack, f.stack, kStackBytes - f.top_offset);
#endif
  caduceus_emulation_switch(&e.scheduler_sp, f.sp);
#if defined(CADUCEUS_FIBER_ASAN)
  __sanitizer_finish_switch_fiber(e.scheduler_fake_stack, nullptr, nullptr);
#endif
  e.current = nullptr;
  current_index = &outside_kernels;
}

// Fiber -> scheduler. An exiting fiber is never resumed (its stack is reset for the next block).
void Suspend(Emulator& e, bool exiting) {
  Fiber& f = *e.current;
#if defined(CADUCEUS_FIBER_ASAN)
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f.asan_fake_stack, e.scheduler_stack_bottom,
                                 e.scheduler_stack_size);
#else
  (void)exiting;
#endif
  caduceus_emulation_switch(&f.sp, e.scheduler_sp);
#if defined(CADUCEUS_FIBER_ASAN)
  __sanitizer_finish_switch_fiber(f.asan_fake_stack, &e.scheduler_stack_bottom,
                                  &e.scheduler_stack_size);
#endif
}

void FiberEntry() {
  Emulator& e = State_();
#if defined(CADUCEUS_FIBER_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &e.scheduler_stack_bottom, &e.scheduler_stack_size);
#endif
  (*e.body)();
  e.current->state = State::kDone;
  Suspend(e, /*exiting=*/true);
  Fatal("an exited thread was resumed");
}

// Releases warp `first / 32` when all its lanes wait at the same shuffle (false when none waits
// at one: they wait at the barrier or exited). Lanes split between a shuffle and anything else are
// fatal: on a GPU that shuffle reads undefined values or hangs.
bool ResolveShuffle(Emulator& e, int first, int lanes) {
  int waiting = 0;
  for (int l = 0; l < lanes; ++l) waiting += e.fibers[first + l]->state == State::kAtShuffle;
  if (waiting == 0) return false;
  const Fiber& lead = *e.fibers[first];
  const uint32_t present = lanes == kWarpSize ? 0xffffffffu : ((1u << lanes) - 1);
  for (int l = 0; l < lanes; ++l) {
    const Fiber& f = *e.fibers[first + l];
    if (f.state != State::kAtShuffle || !SameSite(f, lead)) {
      const Fiber& at = lead.state == State::kAtShuffle ? lead : f;
      Fatal("warp %d: lane 0 is %s but lane %d is %s; a shuffle needs every lane of its mask at "
            "the same shuffle (%s:%d)",
            first / kWarpSize, Where(lead).c_str(), l, Where(f).c_str(), at.file, at.line);
    }
    if (f.member_mask != present) {
      Fatal("%s:%d: shuffle member mask 0x%08x, but the warp's lanes are 0x%08x", f.file, f.line,
            f.member_mask, present);
    }
    if (f.width != kWarpSize) {
      Fatal("%s:%d: shuffle width %d is not emulated", f.file, f.line, f.width);
    }
  }
  for (int l = 0; l < lanes; ++l) {
    Fiber& f = *e.fibers[first + l];
    const int src = l ^ f.lane_mask;
    f.result = (src >= 0 && src < lanes) ? e.fibers[first + src]->bits : f.bits;
  }
  for (int l = 0; l < lanes; ++l) e.fibers[first + l]->state = State::kRunnable;
  return true;
}

// Releases the block's barrier when every thread waits at the same __syncthreads.
bool ResolveBarrier(Emulator& e, int n) {
  const Fiber* first_waiting = nullptr;
  for (int i = 0; i < n; ++i) {
    if (e.fibers[i]->state == State::kAtBarrier) {
      first_waiting = e.fibers[i].get();
      break;
    }
  }
  if (first_waiting == nullptr) return false;
  for (int i = 0; i < n; ++i) {
    const Fiber& f = *e.fibers[i];
    if (f.state != State::kAtBarrier || !SameSite(f, *first_waiting)) {
      Fatal("__syncthreads at %s:%d is not reached by every thread of the block: thread %s is %s",
            first_waiting->file, first_waiting->line, Describe(f.index.thread_idx).c_str(),
            Where(f).c_str());
    }
  }
  for (int i = 0; i < n; ++i) e.fibers[i]->state = State::kRunnable;
  return true;
}

void RunBlock(Emulator& e, Dim3 grid, Dim3 block, Dim3 block_idx) {
  const int n = static_cast<int>(block.x * block.y * block.z);
  for (int i = 0; i < n; ++i) {
    Fiber& f = *e.fibers[i];
    f.state = State::kRunnable;
    f.index.thread_idx = {static_cast<uint32_t>(i) % block.x,
                          (static_cast<uint32_t>(i) / block.x) % block.y,
                          static_cast<uint32_t>(i) / (block.x * block.y)};
    f.index.block_idx = block_idx;
    f.index.block_dim = block;
    f.index.grid_dim = grid;
    f.asan_fake_stack = nullptr;
    // A fresh stack as caduceus_emulation_switch leaves it: six zeroed registers, then
    // FiberEntry as the return address, entered with rsp = 8 mod 16 as after a call.
    auto* top = reinterpret_cast<uintptr_t*>(f.stack + kStackBytes - f.top_offset);
    top[-1] = 0;  // FiberEntry's (never used) return address
    top[-2] = reinterpret_cast<uintptr_t>(&FiberEntry);
    for (int r = 3; r <= 8; ++r) top[-r] = 0;
    f.sp = top - 8;
  }
  // Warp by warp, each as far as it can go (its shuffles resolve as soon as its lanes are
  // there) before the next one starts: between two barriers one warp runs ahead of the others,
  // the largest skew a GPU allows, so a read of shared memory that another warp writes after it
  // (a missing barrier) sees stale data in one order or the other.
  const bool reverse = e.order == ThreadOrder::kReverse;
  const int warps = (n + kWarpSize - 1) / kWarpSize;
  for (;;) {
    for (int k = 0; k < warps; ++k) {
      const int first = (reverse ? warps - 1 - k : k) * kWarpSize;
      const int lanes = std::min(kWarpSize, n - first);
      do {
        for (int j = 0; j < lanes; ++j) {
          Fiber& f = *e.fibers[first + (reverse ? lanes - 1 - j : j)];
          if (f.state == State::kRunnable) Resume(e, f);
        }
      } while (ResolveShuffle(e, first, lanes));
    }
    bool all_done = true;
    for (int i = 0; i < n && all_done; ++i) all_done = e.fibers[i]->state == State::kDone;
    if (all_done) return;
    if (!ResolveBarrier(e, n)) Fatal("deadlock: no thread can run");  // unreachable
  }
}

}  // namespace

void RunGrid(Dim3 grid, Dim3 block, const std::function<void()>& thread_body) {
  Emulator& e = State_();
  std::lock_guard<std::mutex> lock(e.grid_mutex);
  const size_t n = static_cast<size_t>(block.x) * block.y * block.z;
  while (e.fibers.size() < n) e.fibers.push_back(std::make_unique<Fiber>(e.fibers.size()));
  e.body = &thread_body;
  const uint64_t blocks = static_cast<uint64_t>(grid.x) * grid.y * grid.z;
  const bool reverse = e.order == ThreadOrder::kReverse;
  for (uint64_t k = 0; k < blocks; ++k) {
    const uint64_t b = reverse ? blocks - 1 - k : k;
    const Dim3 block_idx{static_cast<uint32_t>(b % grid.x),
                         static_cast<uint32_t>((b / grid.x) % grid.y),
                         static_cast<uint32_t>(b / (static_cast<uint64_t>(grid.x) * grid.y))};
    RunBlock(e, grid, block, block_idx);
  }
  e.body = nullptr;
}

// Marks the running thread as waiting in `state` at file:line; the caller fills in what the
// wait needs, then suspends.
Fiber& StartWaiting(Emulator& e, State state, const char* what, const char* file, int line) {
  if (e.current == nullptr) Fatal("%s:%d: %s outside a kernel", file, line, what);
  Fiber& f = *e.current;
  f.state = state;
  f.file = file;
  f.line = line;
  return f;
}

void SyncThreads(const char* file, int line) {
  Emulator& e = State_();
  StartWaiting(e, State::kAtBarrier, "__syncthreads", file, line);
  Suspend(e, /*exiting=*/false);
}

uint32_t ShuffleXor(const char* file, int line, uint32_t member_mask, uint32_t bits, int lane_mask,
                    int width) {
  Emulator& e = State_();
  Fiber& f = StartWaiting(e, State::kAtShuffle, "warp shuffle", file, line);
  f.member_mask = member_mask;
  f.bits = bits;
  f.lane_mask = lane_mask;
  f.width = width;
  Suspend(e, /*exiting=*/false);
  return f.result;
}

void SetThreadOrder(ThreadOrder order) {
  Emulator& e = State_();
  std::lock_guard<std::mutex> lock(e.grid_mutex);
  e.order = order;
}

ThreadOrder GetThreadOrder() { return State_().order; }

}  // namespace caduceus::cuda_emulation
