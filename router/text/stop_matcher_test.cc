#include "router/text/stop_matcher.h"

#include "gtest/gtest.h"

namespace caduceus::text {
namespace {

std::string Feed(StopMatcher& m, const std::vector<std::string>& pieces, bool* stopped) {
  std::string out;
  *stopped = false;
  for (const auto& p : pieces) {
    auto r = m.Push(p);
    out += r.emit;
    if (r.stopped) {
      *stopped = true;
      return out;
    }
  }
  return out + m.Flush();
}

TEST(StopMatcherTest, StopSplitAcrossPiecesIsNeverEmitted) {
  StopMatcher m({"###", "\nPatient:"});
  bool stopped;
  EXPECT_EQ(Feed(m, {"Dose: 5 mg", "\nPat", "ient:", " more"}, &stopped), "Dose: 5 mg");
  EXPECT_TRUE(stopped);
}

TEST(StopMatcherTest, HeldBackPrefixReleasedWhenItCannotMatch) {
  StopMatcher m({"###"});
  auto r = m.Push("a ##");
  EXPECT_EQ(r.emit, "a ");
  EXPECT_FALSE(r.stopped);
  r = m.Push("b");
  EXPECT_EQ(r.emit, "##b");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcherTest, EarliestStopWinsAndFlushReleasesTail) {
  StopMatcher m({"END", "N"});
  bool stopped;
  EXPECT_EQ(Feed(m, {"xxENDyy"}, &stopped), "xx");
  StopMatcher none({});
  EXPECT_EQ(Feed(none, {"a", "b"}, &stopped), "ab");
  EXPECT_FALSE(stopped);
  StopMatcher tail({"STOP"});
  EXPECT_EQ(Feed(tail, {"ok ST"}, &stopped), "ok ST");
  EXPECT_FALSE(stopped);
}

TEST(StopMatcherTest, NothingAfterStop) {
  StopMatcher m({"x"});
  EXPECT_TRUE(m.Push("ax").stopped);
  EXPECT_EQ(m.Push("more").emit, "");
  EXPECT_EQ(m.Flush(), "");
}

}  // namespace
}  // namespace caduceus::text
