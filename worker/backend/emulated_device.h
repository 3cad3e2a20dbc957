// "emulated-device": the CPU kernels behind the device-memory code path, for machines without a
// GPU. MemoryOps say `host = false`, so the model takes every step a GPU backend takes (weights
// uploaded through WeightPlacement, step metadata copied up, logits and greedy tokens copied
// back, KV-cache sizing from free/total device bytes), while the arithmetic stays the CPU's:
// results must be bit-identical to `--device cpu`.
//
// What it catches that a real GPU would turn into a crash or garbage:
//   - a kernel given a pointer outside emulated device memory (a host vector passed where the
//     device copy belongs), and copies in the wrong direction: the process aborts with the
//     kernel and argument named;
//   - reads of device memory nobody wrote: every allocation starts filled with 0xFF bytes (NaN
//     floats and bf16, -1 ints), which shows up in the results;
//   - running out of device memory: the emulated device has a capacity (environment variable
//     CADUCEUS_EMULATED_DEVICE_BYTES, default 4 GiB), allocations beyond it fail like cudaMalloc.
#pragma once

#include "worker/backend/kernel_table.h"

namespace caduceus::backend {

inline constexpr char kEmulatedDevice[] = "emulated-device";

KernelTable EmulatedDeviceTable();

// For tests: bytes currently allocated on the emulated device, and the most ever allocated at
// once since the process started.
int64_t EmulatedDeviceAllocatedBytes();
int64_t EmulatedDevicePeakBytes();
// For tests: bytes the calling thread has copied from the emulated device to the host (to_host
// and to_host_2d), so a test running ranks as threads can tell what each rank read back.
int64_t EmulatedDeviceBytesToHostOnThisThread();

}  // namespace caduceus::backend
