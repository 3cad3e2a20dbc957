#include "router/server/call_end.h"

#include <gtest/gtest.h>

namespace caduceus::router {
namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;

TEST(ReasonForCancelTest, CancelNearOrPastTheDeadlineIsTheDeadline) {
  const auto now = system_clock::now();
  EXPECT_EQ(ReasonForCancel(now - milliseconds(5), now - milliseconds(500)), CancelReason::kDeadline);
  // The client's RST_STREAM may beat our own deadline by a few milliseconds.
  EXPECT_EQ(ReasonForCancel(now + milliseconds(20), now - milliseconds(500)), CancelReason::kDeadline);
  // A 105 s call: gRPC's rounded-up timeout may put our deadline a second after the client's.
  EXPECT_EQ(ReasonForCancel(now + milliseconds(1500), now - milliseconds(103500)),
            CancelReason::kDeadline);
}

TEST(ReasonForCancelTest, EarlyCancelOrNoDeadlineIsACancel) {
  const auto now = system_clock::now();
  EXPECT_EQ(ReasonForCancel(now + milliseconds(5000), now - milliseconds(500)),
            CancelReason::kCancelled);
  // 1.5 s before the end of a 3 s call is a cancel, and so is half-way through a long one.
  EXPECT_EQ(ReasonForCancel(now + milliseconds(1500), now - milliseconds(1500)),
            CancelReason::kCancelled);
  EXPECT_EQ(ReasonForCancel(now + milliseconds(50000), now - milliseconds(50000)),
            CancelReason::kCancelled);
  EXPECT_EQ(ReasonForCancel(system_clock::time_point::max(), now), CancelReason::kCancelled);
}

TEST(CancelStatusTest, CodesMatchTheReason) {
  EXPECT_EQ(CancelStatus(CancelReason::kDeadline).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(CancelStatus(CancelReason::kCancelled).error_code(), grpc::StatusCode::CANCELLED);
}

}  // namespace
}  // namespace caduceus::router
