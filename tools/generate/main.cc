// caduceus-generate: run one prompt through a model on this machine and stream the answer.
//
//   caduceus-generate --model DIR (--prompt TEXT | --chat FILE.json | --prompt-ids 1,2,3)
//       [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--seed N]
//       [--repetition-penalty R] [--frequency-penalty F] [--presence-penalty P] [--stop STR]...
//       [--logprobs N] [--ignore-eos] [--json] [--report-top-logits K]
//
// --prompt-ids are used exactly as given (no BOS added). --prompt text gets the model's BOS
// unless --no-bos. --chat reads [{"role": ..., "content": ...}, ...] and renders the model's chat
// template. With --json the last stdout line is one JSON object (prompt_ids, generated_ids, text,
// finish_reason, usage, timings, and logprobs / first_step_top_logits when asked for).
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "common/cli_flags.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "router/text/chat_encoder.h"
#include "router/text/detokenizer.h"
#include "router/text/stop_matcher.h"
#include "worker/engine/local_engine.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (config.json, safetensors, tokenizer)");
ABSL_FLAG(std::string, prompt, "", "prompt text (tokenized; BOS added unless --no-bos)");
ABSL_FLAG(std::string, chat, "", "JSON file with a list of {role, content} messages");
ABSL_FLAG(std::string, prompt_ids, "", "comma-separated token ids, used exactly as given");
ABSL_FLAG(bool, no_bos, false, "do not prepend the BOS token to --prompt text");
ABSL_FLAG(bool, allow_special, false, "parse special-token text (e.g. <|eot_id|>) in --prompt");
ABSL_FLAG(int32_t, max_new_tokens, 128, "maximum number of generated tokens");
ABSL_FLAG(double, temperature, 1.0, "sampling temperature; 0 = greedy (argmax, ties to lowest id)");
ABSL_FLAG(int32_t, top_k, 0, "keep the k most likely tokens (0 = off)");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling mass (0, 1]");
ABSL_FLAG(double, min_p, 0.0, "drop tokens below min_p * p(top token)");
ABSL_FLAG(double, repetition_penalty, 1.0, "HF repetition penalty (> 0; 1 = off)");
ABSL_FLAG(double, frequency_penalty, 0.0, "frequency penalty [-2, 2]");
ABSL_FLAG(double, presence_penalty, 0.0, "presence penalty [-2, 2]");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed (same seed, same output)");
ABSL_FLAG(int32_t, logprobs, 0, "report the top-N logprobs of each generated token (0-20)");
ABSL_FLAG(std::vector<std::string>, stop, {}, "stop sequences (comma-separated; never emitted)");
ABSL_FLAG(bool, ignore_eos, false, "do not stop at the model's end-of-sequence tokens");
ABSL_FLAG(bool, json, false, "print one JSON object as the last stdout line (no streaming)");
ABSL_FLAG(int32_t, report_top_logits, 0, "with --json: the first step's top-K [id, logit] pairs");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda[:K] (emulated-device: tests)");
ABSL_FLAG(bool, cuda_graphs, true, "cuda devices: run decode steps from CUDA graphs");
ABSL_FLAG(std::string, quantization, "none",
          "none, or fp8: quantize bf16 projection weights to FP8 at load time (as the worker)");
ABSL_FLAG(std::string, kv_cache_dtype, "auto",
          "float32, bfloat16, or auto (bfloat16 on GPUs, float32 on CPUs)");

namespace caduceus {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "caduceus-generate: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& csv) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(csv, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError("--prompt-ids: '" + std::string(part) + "' is not an integer");
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--prompt-ids is empty");
  return ids;
}

absl::StatusOr<std::vector<text::ChatMessage>> ReadChat(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("--chat: cannot open " + path);
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (doc.is_object() && doc.contains("messages")) doc = doc["messages"];
  if (!doc.is_array() || doc.empty()) {
    return absl::InvalidArgumentError("--chat: " + path + " must hold a non-empty JSON list of messages");
  }
  std::vector<text::ChatMessage> messages;
  for (const auto& m : doc) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string()) {
      return absl::InvalidArgumentError("--chat: each message needs string 'role' and 'content'");
    }
    messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return messages;
}

int Main() {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) return Fail(absl::InvalidArgumentError("--model is required"));
  const int sources = !absl::GetFlag(FLAGS_prompt).empty() + !absl::GetFlag(FLAGS_chat).empty() +
                      !absl::GetFlag(FLAGS_prompt_ids).empty();
  if (sources != 1) {
    return Fail(absl::InvalidArgumentError("give exactly one of --prompt, --chat, --prompt-ids"));
  }
  auto tokenizer = text::Tokenizer::FromModelDir(model_dir);
  if (!tokenizer.ok()) return Fail(tokenizer.status());

  model::LoadOptions load;
  load.device = absl::GetFlag(FLAGS_device);
  auto kv_dtype = model::KvCache::ParseDtype(absl::GetFlag(FLAGS_kv_cache_dtype), load.device);
  if (!kv_dtype.ok()) return Fail(kv_dtype.status());
  load.kv_dtype = *kv_dtype;
  load.graphs.enabled = absl::GetFlag(FLAGS_cuda_graphs);
  auto quantization = model::ParseQuantizationFlag(absl::GetFlag(FLAGS_quantization));
  if (!quantization.ok()) return Fail(quantization.status());
  load.quantize_fp8 = *quantization == model::Quantization::kFp8;
  auto model = model::LlamaModel::Load(model_dir, load);
  if (!model.ok()) return Fail(model.status());

  engine::GenerationRequest request;
  if (!absl::GetFlag(FLAGS_prompt_ids).empty()) {
    auto ids = ParseIds(absl::GetFlag(FLAGS_prompt_ids));
    if (!ids.ok()) return Fail(ids.status());
    request.prompt_ids = *ids;
  } else if (!absl::GetFlag(FLAGS_chat).empty()) {
    auto messages = ReadChat(absl::GetFlag(FLAGS_chat));
    if (!messages.ok()) return Fail(messages.status());
    auto tmpl = text::ChatTemplate::FromTokenizerConfig(model_dir + "/tokenizer_config.json");
    if (!tmpl.ok()) return Fail(tmpl.status());
    auto ids = text::EncodeChat(**tokenizer, **tmpl, *messages, /*add_generation_prompt=*/true);
    if (!ids.ok()) return Fail(ids.status());
    request.prompt_ids = *ids;
  } else {
    if (!absl::GetFlag(FLAGS_no_bos)) request.prompt_ids.push_back((*model)->config().bos_token_id);
    auto ids = (*tokenizer)->Encode(absl::GetFlag(FLAGS_prompt), absl::GetFlag(FLAGS_allow_special));
    request.prompt_ids.insert(request.prompt_ids.end(), ids.begin(), ids.end());
  }
  sampling::SamplingParams& sp = request.sampling;
  sp.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  sp.top_k = absl::GetFlag(FLAGS_top_k);
  sp.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  sp.min_p = static_cast<float>(absl::GetFlag(FLAGS_min_p));
  sp.repetition_penalty = static_cast<float>(absl::GetFlag(FLAGS_repetition_penalty));
  sp.frequency_penalty = static_cast<float>(absl::GetFlag(FLAGS_frequency_penalty));
  sp.presence_penalty = static_cast<float>(absl::GetFlag(FLAGS_presence_penalty));
  sp.seed = absl::GetFlag(FLAGS_seed);
  sp.top_logprobs = absl::GetFlag(FLAGS_logprobs);
  request.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  request.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);

  const bool json = absl::GetFlag(FLAGS_json);
  const int32_t top_logits = absl::GetFlag(FLAGS_report_top_logits);
  text::IncrementalDetokenizer detok(tokenizer->get(), /*skip_special=*/true);
  text::StopMatcher stops(absl::GetFlag(FLAGS_stop));
  std::string text_out;
  absl::Status stream_error;
  auto emit = [&](const std::string& piece) {
    text_out += piece;
    if (!json && !piece.empty()) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
  };
  bool first_token = true;
  double ttft_s = 0;
  const auto start = std::chrono::steady_clock::now();
  auto on_token = [&](size_t, const sampling::SampleResult& s) {
    if (first_token) {
      ttft_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      first_token = false;
    }
    auto piece = detok.Push(s.token);
    if (!piece.ok()) {
      stream_error = piece.status();
      return false;
    }
    auto r = stops.Push(*piece);
    emit(r.emit);
    return !r.stopped;
  };

  engine::LocalEngine engine(model->get(), engine::EngineOptions{0, 512, top_logits > 0});
  auto results = engine.Run({request}, on_token);
  if (!results.ok()) return Fail(results.status());
  if (!stream_error.ok()) return Fail(stream_error);
  const engine::GenerationResult& result = (*results)[0];
  if (result.finish_reason != engine::FinishReason::kStopSequence) emit(stops.Push(detok.Flush()).emit + stops.Flush());
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!json) {
    std::fputc('\n', stdout);
    return 0;
  }
  nlohmann::json out;
  out["prompt_ids"] = request.prompt_ids;
  out["generated_ids"] = result.generated_ids;
  out["text"] = text_out;  // invalid UTF-8 (never produced by the detokenizer) would be replaced
  out["finish_reason"] = engine::FinishReasonName(result.finish_reason);
  out["usage"] = {{"prompt_tokens", request.prompt_ids.size()},
                  {"generated_tokens", result.generated_ids.size()}};
  const double decode_s = total_s - ttft_s;
  out["timings"] = {{"time_to_first_token_s", ttft_s}, {"total_s", total_s},
                    {"decode_tokens_per_s", result.generated_ids.size() > 1 && decode_s > 0
                                                ? (result.generated_ids.size() - 1) / decode_s
                                                : 0.0}};
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  out["peak_rss_bytes"] = int64_t{usage.ru_maxrss} * 1024;
  const model::StepGraphStats graphs = (*model)->graph_stats();
  out["cuda_graphs"] = {{"captures", graphs.captures}, {"replays", graphs.replays},
                        {"failures", graphs.failures}, {"graphs", graphs.graphs},
                        {"nodes", graphs.nodes}};
  if (sp.top_logprobs > 0) {
    nlohmann::json lp = nlohmann::json::array();
    for (const auto& s : result.samples) {
      nlohmann::json top = nlohmann::json::array();
      for (const auto& t : s.top_logprobs) top.push_back({t.token, t.logprob});
      lp.push_back({{"id", s.token}, {"logprob", s.logprob}, {"top", top}});
    }
    out["logprobs"] = lp;
  }
  if (top_logits > 0) {
    const auto& logits = result.first_step_logits;
    std::vector<int32_t> order(logits.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
    const size_t k = std::min<size_t>(top_logits, order.size());
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    nlohmann::json top = nlohmann::json::array();
    for (size_t i = 0; i < k; ++i) top.push_back({order[i], logits[order[i]]});
    out["first_step_top_logits"] = top;
  }
  std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  return 0;
}

}  // namespace
}  // namespace caduceus

int main(int argc, char** argv) {
  caduceus::ParseFlags(argc, argv, "caduceus-generate --model DIR (--prompt TEXT | --chat FILE.json | --prompt-ids 1,2,3) [flags]");
  return caduceus::Main();
}
