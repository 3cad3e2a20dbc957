#include "router/server/call_end.h"

#include <gtest/gtest.h>

namespace caduceus::router {
namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;

TEST(ReasonForCancelTest, CancelNearOrPastTheDeadlineIsTheDeadline) {
  EXPECT_EQ(ReasonForCancel(system_clock::now() - milliseconds(5)), CancelReason::kDeadline);
  // The client's RST_STREAM may beat our own deadline by a few milliseconds.
  EXPECT_EQ(ReasonForCancel(system_clock::now() + milliseconds(20)), CancelReason::kDeadline);
}

TEST(ReasonForCancelTest, EarlyCancelOrNoDeadlineIsACancel) {
  EXPECT_EQ(ReasonForCancel(system_clock::now() + milliseconds(5000)), CancelReason::kCancelled);
  EXPECT_EQ(ReasonForCancel(system_clock::time_point::max()), CancelReason::kCancelled);
}

TEST(CancelStatusTest, CodesMatchTheReason) {
  EXPECT_EQ(CancelStatus(CancelReason::kDeadline).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(CancelStatus(CancelReason::kCancelled).error_code(), grpc::StatusCode::CANCELLED);
}

}  // namespace
}  // namespace caduceus::router
