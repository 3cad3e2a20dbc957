#include "common/mutex_debug.h"

#include "absl/synchronization/mutex.h"

namespace caduceus {

void DisableMutexDeadlockDetection() {
#ifdef NDEBUG
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
}

}  // namespace caduceus
