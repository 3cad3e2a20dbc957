// caduceus-tokenize: command-line access to the Llama-3 tokenizer, for scripts and debugging.
//
//   caduceus-tokenize [--model DIR] [--allow-special] < text         -> [id, ...]
//   caduceus-tokenize [--model DIR] --jsonl [--allow-special] < lines -> one [id, ...] per line
//   caduceus-tokenize [--model DIR] --decode [--skip-special] < ids  -> text
//
// Exit codes: 0 ok, 1 failure (bad input, unloadable tokenizer), 2 usage error.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"
#include "router/text/tokenizer.h"

namespace {

constexpr char kUsage[] =
    "usage: caduceus-tokenize [--model DIR] [--allow-special] [--jsonl | --decode [--skip-special]]\n"
    "\n"
    "Reads stdin and writes stdout.\n"
    "  (default)        encode all of stdin as one text; print one JSON array of ids\n"
    "  --jsonl          each input line is a JSON string; print one JSON array of ids per line\n"
    "  --decode         stdin is a JSON array of ids; print the decoded text\n"
    "  --model DIR      directory holding tokenizer.json (default: " CADUCEUS_DEFAULT_TOKENIZER_DIR ")\n"
    "  --allow-special  parse special-token text such as <|eot_id|> into its id (default: plain text)\n"
    "  --skip-special   with --decode, drop special tokens from the output\n"
    "  --help           show this message\n";

int Usage(const std::string& error) {
  std::cerr << "caduceus-tokenize: " << error << "\n" << kUsage;
  return 2;
}

int Fail(const std::string& error) {
  std::cerr << "caduceus-tokenize: " << error << "\n";
  return 1;
}

std::string ReadAll(std::istream& in) {
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

int Decode(const caduceus::text::Tokenizer& tok, bool skip_special) {
  const nlohmann::json ids = nlohmann::json::parse(ReadAll(std::cin), nullptr, false);
  if (ids.is_discarded() || !ids.is_array()) return Fail("--decode expects a JSON array of ids on stdin");
  std::vector<int32_t> v;
  for (const auto& id : ids) {
    if (!id.is_number_integer()) return Fail("--decode: not an integer id: " + id.dump());
    const int64_t x = id.get<int64_t>();
    if (x < INT32_MIN || x > INT32_MAX) return Fail("--decode: id out of range: " + id.dump());
    v.push_back(static_cast<int32_t>(x));
  }
  auto text = tok.Decode(v, skip_special);
  if (!text.ok()) return Fail(std::string(text.status().message()));
  std::cout << *text;
  return std::cout.flush() ? 0 : 1;
}

int EncodeJsonl(const caduceus::text::Tokenizer& tok, bool allow_special) {
  std::string line;
  for (int line_no = 1; std::getline(std::cin, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const nlohmann::json text = nlohmann::json::parse(line, nullptr, false);
    if (text.is_discarded() || !text.is_string()) {
      return Fail("--jsonl: line " + std::to_string(line_no) + " is not a JSON string");
    }
    std::cout << nlohmann::json(tok.Encode(text.get<std::string>(), allow_special)).dump() << "\n";
  }
  return std::cout.flush() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir = CADUCEUS_DEFAULT_TOKENIZER_DIR;
  bool allow_special = false, skip_special = false, decode = false, jsonl = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (arg == "--model") {
      if (++i >= argc) return Usage("--model needs a directory");
      model_dir = argv[i];
    } else if (arg.starts_with("--model=")) {
      model_dir = std::string(arg.substr(8));
    } else if (arg == "--allow-special") {
      allow_special = true;
    } else if (arg == "--skip-special") {
      skip_special = true;
    } else if (arg == "--decode") {
      decode = true;
    } else if (arg == "--jsonl") {
      jsonl = true;
    } else {
      return Usage("unknown argument '" + std::string(arg) + "'");
    }
  }
  if (decode && jsonl) return Usage("--decode and --jsonl are exclusive");
  if (decode && allow_special) return Usage("--allow-special applies to encoding, not --decode");
  if (skip_special && !decode) return Usage("--skip-special applies to --decode only");

  auto tok = caduceus::text::Tokenizer::FromModelDir(model_dir);
  if (!tok.ok()) return Fail(tok.status().ToString());
  std::ios::sync_with_stdio(false);
  if (decode) return Decode(**tok, skip_special);
  if (jsonl) return EncodeJsonl(**tok, allow_special);
  std::cout << nlohmann::json((*tok)->Encode(ReadAll(std::cin), allow_special)).dump() << "\n";
  return std::cout.flush() ? 0 : 1;
}
