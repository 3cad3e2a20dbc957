// Abseil's Mutex runs a deadlock detector on every lock unless Abseil itself was compiled with
// NDEBUG, and Debian's package is not: each lock of an absl::Mutex (gRPC locks them on every call
// and every message) then looks the mutex up in a global graph. That lookup was ~3% of the
// router's CPU at concurrency 32 (perf: GraphCycles::GetId and the graph's own lock). Our
// servers and load generator call this at start: it turns the detector off in our optimized
// builds (NDEBUG) and leaves it on in debug builds, where it belongs.
#pragma once

namespace caduceus {

void DisableMutexDeadlockDetection();

}  // namespace caduceus
