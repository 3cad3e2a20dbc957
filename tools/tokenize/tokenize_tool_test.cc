// End-to-end test of the caduceus-tokenize executable: runs it through the shell on small inputs
// and checks the output against ids from the reference fixture (not from the code under test).
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  EXPECT_NE(v, nullptr) << name << " is not set (run through ctest)";
  return v != nullptr ? v : "";
}

struct Result {
  int exit_code;
  std::string out;
  std::string err;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs the tool with `args`, feeding `input` on stdin.
Result RunTool(const std::string& args, const std::string& input) {
  const std::string dir = ::testing::TempDir();
  const std::string in_path = dir + "/tok_in", out_path = dir + "/tok_out", err_path = dir + "/tok_err";
  std::ofstream(in_path, std::ios::binary) << input;
  const std::string cmd = "'" + Env("CADUCEUS_BIN_DIR") + "/caduceus-tokenize' " + args + " < '" + in_path +
                          "' > '" + out_path + "' 2> '" + err_path + "'";
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadFile(out_path), ReadFile(err_path)};
}

std::string ModelArg() { return "--model '" + Env("CADUCEUS_TOKENIZER_DIR") + "'"; }

TEST(TokenizeToolTest, EncodesStdinAsOneText) {
  const Result r = RunTool(ModelArg(), "<|eot_id|>");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[27,91,68,354,851,91,29]\n");
  const Result s = RunTool(ModelArg() + " --allow-special", "<|eot_id|>");
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(s.out, "[128009]\n");
}

TEST(TokenizeToolTest, JsonlMatchesReferenceIds) {
  const nlohmann::json expected =
      nlohmann::json::parse(ReadFile(Env("CADUCEUS_FIXTURES_DIR") + "/tokenizer/expected_ids.json"));
  std::string input, want;
  // A handful of cases, including special-token text (plain in --jsonl) and newlines inside strings.
  for (size_t i = 0; i < expected["plain"].size(); i += 37) {
    input += expected["plain"][i]["text"].dump() + "\n";
    want += expected["plain"][i]["ids"].dump() + "\n";
  }
  input += nlohmann::json("<|begin_of_text|>a\n<|eot_id|>").dump() + "\n";
  want += nlohmann::json(std::vector<int>{27, 91, 7413, 3659, 4424, 91, 29, 64, 198, 27, 91, 68, 354, 851, 91, 29})
              .dump() + "\n";
  const Result r = RunTool(ModelArg() + " --jsonl", input);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, want);

  const Result s = RunTool(ModelArg() + " --jsonl --allow-special", "\"<|begin_of_text|>a\\n<|eot_id|>\"\n");
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(s.out, "[128000,64,198,128009]\n");
}

TEST(TokenizeToolTest, DecodePrintsText) {
  const Result r = RunTool(ModelArg() + " --decode", "[128000, 6151, 128009]");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<|begin_of_text|>hi<|eot_id|>");
  const Result s = RunTool(ModelArg() + " --decode --skip-special", "[128000, 6151, 128009]");
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(s.out, "hi");
}

TEST(TokenizeToolTest, ErrorsAndUsage) {
  EXPECT_EQ(RunTool("--bogus", "").exit_code, 2);
  EXPECT_EQ(RunTool("--model", "").exit_code, 2);
  EXPECT_EQ(RunTool(ModelArg() + " --decode --jsonl", "").exit_code, 2);
  const Result help = RunTool("--help", "");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag : {"--model", "--allow-special", "--jsonl", "--decode", "--skip-special"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  }
  const Result bad_ids = RunTool(ModelArg() + " --decode", "[1, 999999]");
  EXPECT_EQ(bad_ids.exit_code, 1);
  EXPECT_NE(bad_ids.err.find("999999"), std::string::npos) << bad_ids.err;
  EXPECT_EQ(RunTool(ModelArg() + " --decode", "not json").exit_code, 1);
  EXPECT_EQ(RunTool(ModelArg() + " --jsonl", "plain line\n").exit_code, 1);
  const Result no_model = RunTool("--model /nonexistent", "x");
  EXPECT_EQ(no_model.exit_code, 1);
  EXPECT_NE(no_model.err.find("/nonexistent/tokenizer.json"), std::string::npos) << no_model.err;
}

}  // namespace
