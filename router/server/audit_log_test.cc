// The audit record: what each kind of call leaves, and that text appears only with payloads.
#include "router/server/audit_log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace caduceus::router {
namespace {

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("CADUCEUS_TESTDATA_DIR");
    ASSERT_NE(dir, nullptr);
    auto tok = text::Tokenizer::FromModelDir(std::string(dir) + "/tiny-seed1");
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = std::move(*tok);
    path_ = ::testing::TempDir() + "/audit-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".jsonl";
    std::remove(path_.c_str());
    prompt_ids_ = tokenizer_->Encode("Patient Jane Roe, MRN 0042", /*allow_special=*/false);
    spec_.request_id = "r-1";
    spec_.prompt_ids = prompt_ids_;
    spec_.max_new_tokens = 7;
    response_.set_text("take aspirin");
    response_.add_token_ids(1);
    response_.add_token_ids(2);
    response_.set_finish_reason(v1::FINISH_REASON_LENGTH);
  }
  void TearDown() override { std::remove(path_.c_str()); }

  // Records one call with a fresh log and returns the line it wrote.
  nlohmann::json RecordOne(bool payloads, const CallRequest& call, const CallOutcome& outcome) {
    auto log = AuditLog::Open(path_, payloads, tokenizer_.get());
    EXPECT_TRUE(log.ok()) << log.status();
    if (!log.ok()) return {};
    grpc::ServerContext context;  // no call: empty peer and metadata
    (*log)->Record(context, call, outcome, caller_);
    log->reset();
    std::ifstream in(path_);
    std::string line, last;
    while (std::getline(in, line)) last = line;
    return nlohmann::json::parse(last);
  }

  CallRequest Generation() {
    CallRequest call;
    call.method = "Generate";
    call.spec = &spec_;
    call.prompt_ids = &spec_.prompt_ids;
    return call;
  }

  std::unique_ptr<text::Tokenizer> tokenizer_;
  const ApiCaller* caller_ = nullptr;  // the caller RecordOne records
  std::string path_;
  std::vector<int32_t> prompt_ids_;
  RequestSpec spec_;
  v1::GenerateResponse response_;
};

TEST_F(AuditLogTest, AGenerationRecordsItsParametersAndCountsButNoText) {
  const nlohmann::json j = RecordOne(false, Generation(), CallOutcome{grpc::Status::OK, &response_});
  EXPECT_EQ(j["method"], "Generate");
  EXPECT_EQ(j["request_id"], "r-1");
  EXPECT_EQ(j["status"], "OK");
  EXPECT_EQ(j["params"]["max_new_tokens"], 7);
  EXPECT_EQ(j["prompt_tokens"], prompt_ids_.size());
  EXPECT_EQ(j["generated_tokens"], 2);
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_FALSE(j.contains("prompt"));
  EXPECT_FALSE(j.contains("output"));
  EXPECT_EQ(j.dump().find("Jane"), std::string::npos);
}

TEST_F(AuditLogTest, ANamedCallerIsRecorded) {
  const ApiCaller caller{"discharge-summaries", "t0k3n", 10};
  caller_ = &caller;
  const nlohmann::json j = RecordOne(false, Generation(), CallOutcome{grpc::Status::OK, &response_});
  EXPECT_EQ(j["caller"]["name"], "discharge-summaries");
  EXPECT_EQ(j["caller"]["api_token_checked"], true);
  EXPECT_EQ(j["caller"]["api"], "grpc");
  EXPECT_EQ(j.dump().find("t0k3n"), std::string::npos) << "the token itself is never written";
}

TEST_F(AuditLogTest, PayloadsAddThePromptAndTheOutput) {
  const nlohmann::json j = RecordOne(true, Generation(), CallOutcome{grpc::Status::OK, &response_});
  EXPECT_EQ(j["prompt"], "Patient Jane Roe, MRN 0042");
  EXPECT_EQ(j["output"], "take aspirin");
}

TEST_F(AuditLogTest, ATokenizeCallRecordsItsTokenCountAndWithPayloadsItsText) {
  CallRequest call;
  call.method = "Tokenize";
  call.prompt_ids = &prompt_ids_;
  const nlohmann::json plain = RecordOne(false, call, CallOutcome{grpc::Status::OK, nullptr});
  EXPECT_EQ(plain["method"], "Tokenize");
  EXPECT_EQ(plain["prompt_tokens"], prompt_ids_.size());
  EXPECT_FALSE(plain.contains("params"));
  EXPECT_FALSE(plain.contains("prompt"));
  const nlohmann::json with_text = RecordOne(true, call, CallOutcome{grpc::Status::OK, nullptr});
  EXPECT_EQ(with_text["prompt"], "Patient Jane Roe, MRN 0042");
  EXPECT_FALSE(with_text.contains("output"));  // it generates nothing
}

TEST_F(AuditLogTest, ARefusedCallRecordsTheErrorOnly) {
  CallRequest call;
  call.method = "Chat";
  const grpc::Status refused(grpc::StatusCode::INVALID_ARGUMENT, "messages: empty");
  const nlohmann::json j = RecordOne(true, call, CallOutcome{refused, nullptr});
  EXPECT_EQ(j["status"], "INVALID_ARGUMENT");
  EXPECT_EQ(j["error"], "messages: empty");
  EXPECT_FALSE(j.contains("params"));
  EXPECT_FALSE(j.contains("prompt_tokens"));
  EXPECT_FALSE(j.contains("prompt"));
}

TEST_F(AuditLogTest, TheFileIsReadableByItsOwnerOnlyAndAppendedTo) {
  RecordOne(false, Generation(), CallOutcome{grpc::Status::OK, &response_});
  RecordOne(false, Generation(), CallOutcome{grpc::Status::OK, &response_});
  struct stat st {};
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  std::ifstream in(path_);
  int lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  EXPECT_EQ(lines, 2);
}

}  // namespace
}  // namespace caduceus::router
