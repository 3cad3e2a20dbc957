#include "worker/parallel/tcp_store.h"

#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "gloo/common/error.h"
#include "gtest/gtest.h"

namespace caduceus::parallel {
namespace {

std::vector<char> Bytes(const std::string& s) { return std::vector<char>(s.begin(), s.end()); }

class TcpStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    alarm(30);  // a hang fails the test instead of blocking CI
    auto server = TcpStoreServer::Create("127.0.0.1", 0);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
  }
  void TearDown() override { alarm(0); }

  std::unique_ptr<TcpStoreClient> Client(absl::Duration connect_timeout = absl::Seconds(5)) {
    TcpStoreClientOptions o;
    o.host = "127.0.0.1";
    o.port = server_->port();
    o.connect_timeout = connect_timeout;
    o.op_timeout = absl::Milliseconds(300);
    auto c = TcpStoreClient::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  std::unique_ptr<TcpStoreServer> server_;
};

TEST(ParseHostPortTest, Forms) {
  auto a = ParseHostPort("leader-0.svc:29500");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "leader-0.svc");
  EXPECT_EQ(a->port, 29500);
  auto b = ParseHostPort("[::1]:80");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->port, 80);
  EXPECT_FALSE(ParseHostPort("nohost").ok());
  EXPECT_FALSE(ParseHostPort("h:99999").ok());
  EXPECT_FALSE(ParseHostPort("h:x").ok());
}

TEST_F(TcpStoreTest, SetGetCheckAcrossClients) {
  auto a = Client();
  auto b = Client();
  ASSERT_TRUE(a && b);
  auto missing = b->Check({"k"});
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(*missing);
  ASSERT_TRUE(a->Set("k", Bytes(std::string("value\0with nul", 14))).ok());
  std::vector<char> big(3 << 20, 'x');
  ASSERT_TRUE(a->Set("big", big).ok());
  auto v = b->Get("k", absl::Seconds(1));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, Bytes(std::string("value\0with nul", 14)));
  auto v2 = b->Get("big", absl::Seconds(1));
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(*v2, big);
  auto both = b->Check({"k", "big"});
  ASSERT_TRUE(both.ok());
  EXPECT_TRUE(*both);
  // Empty value and overwrite.
  ASSERT_TRUE(a->Set("k", {}).ok());
  EXPECT_TRUE(b->Get("k", absl::Seconds(1))->empty());
}

TEST_F(TcpStoreTest, GetBlocksUntilSet) {
  auto a = Client();
  auto b = Client();
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(200));
    ASSERT_TRUE(a->Set("later", Bytes("v")).ok());
  });
  const absl::Time start = absl::Now();
  auto v = b->Get("later", absl::Seconds(5));
  setter.join();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, Bytes("v"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_TRUE(b->Wait({"later"}, absl::Seconds(1)).ok());
}

TEST_F(TcpStoreTest, MissingKeyTimesOut) {
  auto c = Client();
  const absl::Time start = absl::Now();
  auto v = c->Get("never", absl::Milliseconds(300));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kDeadlineExceeded) << v.status();
  EXPECT_NE(v.status().message().find("never"), std::string::npos) << v.status();
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(250));
  EXPECT_LT(took, absl::Seconds(3));
  EXPECT_EQ(c->Wait({"never", "nor"}, absl::Milliseconds(100)).code(),
            absl::StatusCode::kDeadlineExceeded);
  // The connection stays usable after a timeout.
  EXPECT_TRUE(c->Set("after", Bytes("1")).ok());
  // Gloo's interface throws instead.
  EXPECT_THROW(c->get("never"), gloo::IoException);
  EXPECT_THROW(c->wait({"never"}, std::chrono::milliseconds(50)), gloo::IoException);
}

TEST_F(TcpStoreTest, ShutdownWakesWaitersAndFailsLaterCalls) {
  auto c = Client();
  std::thread stopper([&] {
    absl::SleepFor(absl::Milliseconds(200));
    server_->Shutdown();
  });
  const absl::Time start = absl::Now();
  auto v = c->Get("never", absl::Seconds(20));
  stopper.join();
  EXPECT_FALSE(v.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(c->Set("x", Bytes("y")).code(), absl::StatusCode::kUnavailable);
}

TEST(TcpStoreClientTest, RetriesUntilServerStarts) {
  alarm(30);
  // Reserve a free port, release it, and start the server on it only after the client began.
  int port = 0;
  {
    auto probe = TcpStoreServer::Create("127.0.0.1", 0);
    ASSERT_TRUE(probe.ok());
    port = (*probe)->port();
  }
  std::unique_ptr<TcpStoreServer> server;
  std::thread starter([&] {
    absl::SleepFor(absl::Milliseconds(700));
    auto s = TcpStoreServer::Create("127.0.0.1", port);
    ASSERT_TRUE(s.ok()) << s.status();
    server = *std::move(s);
  });
  TcpStoreClientOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.connect_timeout = absl::Seconds(10);
  auto c = TcpStoreClient::Connect(o);
  starter.join();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*c)->Set("a", Bytes("b")).ok());
  alarm(0);
}

TEST(TcpStoreClientTest, ConnectGivesUpAfterTimeout) {
  alarm(30);
  int port = 0;
  {
    auto probe = TcpStoreServer::Create("127.0.0.1", 0);
    ASSERT_TRUE(probe.ok());
    port = (*probe)->port();
  }
  TcpStoreClientOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.connect_timeout = absl::Milliseconds(500);
  const absl::Time start = absl::Now();
  auto c = TcpStoreClient::Connect(o);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  alarm(0);
}

}  // namespace
}  // namespace caduceus::parallel
