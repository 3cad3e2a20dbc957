#include "router/server/api_callers.h"

#include <gtest/gtest.h>

namespace caduceus::router {
namespace {

TEST(ApiCallersTest, ASingleTokenIsOneDefaultCallerWithoutFloor) {
  auto callers = ApiCallers::Parse("  s3cret-token\n", "--api-token-file f");
  ASSERT_TRUE(callers.ok()) << callers.status();
  ASSERT_EQ(callers->size(), 1u);
  const ApiCaller* c = callers->FindByAuthorization("Bearer s3cret-token");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->name, "default");
  EXPECT_EQ(c->min_priority, std::numeric_limits<int32_t>::min());
}

TEST(ApiCallersTest, NamedCallersWithPriorityFloors) {
  auto callers = ApiCallers::Parse(
      "# name token [min_priority]\n"
      "clinic-chat   tok-AAAAAAAA\n"
      "\n"
      "batch-summaries\ttok-BBBBBBBB 10\n"
      "triage tok-CCCCCCCC -5\n",
      "--api-token-file f");
  ASSERT_TRUE(callers.ok()) << callers.status();
  EXPECT_TRUE(callers->required());
  EXPECT_EQ(callers->size(), 3u);
  const ApiCaller* batch = callers->FindByAuthorization("bearer tok-BBBBBBBB");  // any case
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->name, "batch-summaries");
  EXPECT_EQ(batch->min_priority, 10);
  EXPECT_EQ(callers->FindByAuthorization("BEARER tok-CCCCCCCC")->min_priority, -5);
  EXPECT_EQ(callers->FindByAuthorization("Bearer tok-AAAAAAAA")->name, "clinic-chat");
  // Wrong, partial, longer, other schemes, and the name instead of the token.
  for (const char* bad : {"Bearer tok-AAAAAAAB", "Bearer tok-AAAAAAA", "Bearer tok-AAAAAAAAA",
                          "Basic tok-AAAAAAAA", "tok-AAAAAAAA", "Bearer clinic-chat", "", "Bearer "}) {
    EXPECT_EQ(callers->FindByAuthorization(bad), nullptr) << bad;
  }
}

TEST(ApiCallersTest, MalformedFilesNameTheLine) {
  auto message = [](const char* text) {
    auto c = ApiCallers::Parse(text, "--api-token-file f");
    EXPECT_FALSE(c.ok()) << text;
    return c.ok() ? std::string() : std::string(c.status().message());
  };
  EXPECT_EQ(message(""), "--api-token-file f holds no token");
  EXPECT_EQ(message("# only a comment\n"), "--api-token-file f holds no token");
  EXPECT_EQ(message("a tok1\nb tok2 10 extra\n"),
            "--api-token-file f line 2: expected NAME TOKEN [MIN_PRIORITY] (a file with several "
            "callers names each)");
  EXPECT_EQ(message("a tok1\nlonely\n"),
            "--api-token-file f line 2: expected NAME TOKEN [MIN_PRIORITY] (a file with several "
            "callers names each)");
  EXPECT_EQ(message("a tok1 high\n"), "--api-token-file f line 1: MIN_PRIORITY 'high' is not an integer");
  EXPECT_EQ(message("a tok1\na tok2\n"), "--api-token-file f line 2: caller 'a' appears twice");
  EXPECT_EQ(message("a tok1\nb tok1\n"),
            "--api-token-file f line 2: caller 'b' has the token of another caller");
}

TEST(ApiCallersTest, ASingleTokenIsTakenAsItIs) {
  ApiCallers one = ApiCallers::Single("registry token with spaces");
  EXPECT_TRUE(one.required());
  EXPECT_NE(one.FindByAuthorization("Bearer registry token with spaces"), nullptr);
  EXPECT_EQ(one.FindByAuthorization("Bearer registry"), nullptr);
}

TEST(ApiCallersTest, NoCallersMeansNoTokenRequired) {
  ApiCallers none;
  EXPECT_FALSE(none.required());
  EXPECT_EQ(none.FindByAuthorization("Bearer x"), nullptr);
}

}  // namespace
}  // namespace caduceus::router
