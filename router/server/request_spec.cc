#include "router/server/request_spec.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "router/text/chat_encoder.h"
#include "router/text/tokenizer_utf8.h"

namespace caduceus::router {

namespace {

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status CheckVocabulary(const char* field, const google::protobuf::RepeatedField<int32_t>& ids,
                             const ModelTextContext& model) {
  for (int32_t id : ids) {
    if (id < 0 || id >= model.config->vocab_size) {
      return Invalid(absl::StrCat(field, ": ", id, " is outside the vocabulary [0, ",
                                  model.config->vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

uint64_t RandomSeed() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  return rng();
}

absl::Status FillParameters(const v1::GenerationParameters& p, int64_t prompt_len,
                            const ModelTextContext& model, const RequestLimits& limits,
                            RequestSpec* spec) {
  const model::ModelConfig& config = *model.config;
  const model::GenerationDefaults& defaults = config.generation;
  const v1::SamplingParameters& s = p.sampling();
  sampling::SamplingParams& out = spec->sampling;
  // generation_config.json's defaults apply only when the model samples by default.
  const bool model_samples = defaults.do_sample.value_or(true);
  if (s.temperature_set_case() == v1::SamplingParameters::kTemperature) {
    out.temperature = s.temperature();
  } else {
    out.temperature = model_samples ? static_cast<float>(defaults.temperature.value_or(1.0)) : 0.f;
  }
  if (s.top_p_set_case() == v1::SamplingParameters::kTopP) {
    out.top_p = s.top_p();
  } else {
    out.top_p = static_cast<float>(defaults.top_p.value_or(1.0));
  }
  out.top_k = s.top_k() != 0 ? s.top_k() : defaults.top_k.value_or(0);
  out.min_p = s.min_p();
  out.repetition_penalty =
      s.repetition_penalty_set_case() == v1::SamplingParameters::kRepetitionPenalty
          ? s.repetition_penalty()
          : 1.0f;
  out.frequency_penalty = s.frequency_penalty();
  out.presence_penalty = s.presence_penalty();
  out.seed = s.seed_set_case() == v1::SamplingParameters::kSeed ? s.seed() : RandomSeed();
  out.top_logprobs = s.top_logprobs();
  for (const auto& [token, bias] : s.logit_bias()) {
    if (token < 0 || token >= config.vocab_size) {
      return Invalid(absl::StrCat("params.sampling.logit_bias: token ", token,
                                  " is outside the vocabulary [0, ", config.vocab_size, ")"));
    }
    out.logit_bias.emplace_back(token, bias);
  }
  // Map order is unspecified; sorted, the plan (and the audit record) do not depend on it.
  std::sort(out.logit_bias.begin(), out.logit_bias.end());
  if (absl::Status st = out.Validate(); !st.ok()) {
    return Invalid(absl::StrCat("params.sampling: ", st.message()));
  }

  spec->max_new_tokens = p.max_new_tokens() == 0 ? limits.default_max_new_tokens
                                                 : static_cast<int32_t>(std::min<uint32_t>(p.max_new_tokens(), 1u << 30));
  spec->max_new_tokens_defaulted = p.max_new_tokens() == 0;
  const int64_t context = config.max_position_embeddings;
  if (prompt_len + spec->max_new_tokens > context) {
    if (p.max_new_tokens() == 0 && prompt_len < context) {
      spec->max_new_tokens = static_cast<int32_t>(context - prompt_len);  // default shrinks to fit
    } else {
      return Invalid(absl::StrCat("prompt (", prompt_len, " tokens) + max_new_tokens (",
                                  p.max_new_tokens(), ") exceeds the model's context of ",
                                  context, " tokens; shorten the prompt or lower max_new_tokens"));
    }
  }
  if (p.stop_size() > limits.max_stop_sequences) {
    return Invalid(absl::StrCat("params.stop: ", p.stop_size(), " stop sequences; at most ",
                                limits.max_stop_sequences));
  }
  for (const std::string& stop : p.stop()) {
    if (stop.empty()) return Invalid("params.stop: empty stop sequence");
    if (static_cast<int64_t>(stop.size()) > limits.max_stop_bytes) {
      return Invalid(absl::StrCat("params.stop: a stop sequence of ", stop.size(),
                                  " bytes; at most ", limits.max_stop_bytes));
    }
    if (!IsValidUtf8(stop)) return Invalid("params.stop: not valid UTF-8");
    spec->stop.push_back(stop);
  }
  for (int32_t id : p.stop_token_ids()) {
    if (id < 0 || id >= config.vocab_size) {
      return Invalid(absl::StrCat("params.stop_token_ids: ", id, " is outside the vocabulary [0, ",
                                  config.vocab_size, ")"));
    }
    spec->stop_token_ids.push_back(id);
  }
  spec->ignore_eos = p.ignore_eos();
  spec->priority = p.priority();
  spec->logprobs = p.logprobs() || out.top_logprobs > 0;
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckRequestId(const std::string& id) {
  // Echoed in every streamed message and logged: a bounded, printable label, not a payload.
  if (id.size() > kMaxRequestIdBytes) {
    return Invalid(absl::StrCat("request_id: ", id.size(), " bytes; at most ", kMaxRequestIdBytes));
  }
  if (!IsValidUtf8(id)) return Invalid("request_id: not valid UTF-8");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> EncodeMessages(
    const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages,
    const ModelTextContext& model) {
  if (model.chat_template == nullptr) {
    return absl::FailedPreconditionError(
        "this model has no chat template (tokenizer_config.json chat_template); use Generate");
  }
  if (messages.empty()) return Invalid("messages: at least one message is needed");
  std::vector<text::ChatMessage> list;
  for (int i = 0; i < messages.size(); ++i) {
    const v1::ChatMessage& m = messages[i];
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant") {
      return Invalid(absl::StrCat("messages[", i, "].role: '", m.role(),
                                  "' is not one of system, user, assistant"));
    }
    if (!IsValidUtf8(m.content())) {
      return Invalid(absl::StrCat("messages[", i, "].content: not valid UTF-8"));
    }
    list.push_back({m.role(), m.content()});
  }
  auto ids = text::EncodeChat(*model.tokenizer, *model.chat_template, list,
                              /*add_generation_prompt=*/true);
  if (!ids.ok()) return Invalid(absl::StrCat("messages: ", ids.status().message()));
  return ids;
}

absl::StatusOr<RequestSpec> SpecFromGenerate(const v1::GenerateRequest& request,
                                             const ModelTextContext& model,
                                             const RequestLimits& limits) {
  RequestSpec spec;
  RETURN_IF_ERROR(CheckRequestId(request.request_id()));
  spec.request_id = request.request_id();
  const bool has_text = !request.prompt().empty();
  const bool has_ids = request.prompt_ids_size() > 0;
  if (has_text == has_ids) {
    return Invalid(has_text ? "give either prompt or prompt_ids, not both"
                            : "empty prompt: give prompt (text) or prompt_ids");
  }
  if (has_text) {
    if (static_cast<int64_t>(request.prompt().size()) > limits.max_prompt_bytes) {
      return Invalid(absl::StrCat("prompt: ", request.prompt().size(), " bytes; at most ",
                                  limits.max_prompt_bytes));
    }
    if (!IsValidUtf8(request.prompt())) return Invalid("prompt: not valid UTF-8");
    spec.prompt_ids.push_back(model.config->bos_token_id);
    // Plain text: a prompt containing "<|eot_id|>" gets those characters, not the control token.
    std::vector<int32_t> ids = model.tokenizer->Encode(request.prompt(), /*allow_special=*/false);
    spec.prompt_ids.insert(spec.prompt_ids.end(), ids.begin(), ids.end());
  } else {
    RETURN_IF_ERROR(CheckVocabulary("prompt_ids", request.prompt_ids(), model));
    spec.prompt_ids.assign(request.prompt_ids().begin(), request.prompt_ids().end());
  }
  RETURN_IF_ERROR(FillParameters(request.params(), static_cast<int64_t>(spec.prompt_ids.size()),
                                 model, limits, &spec));
  return spec;
}


absl::StatusOr<RequestSpec> SpecFromScore(const v1::ScoreRequest& request,
                                          const ModelTextContext& model,
                                          const RequestLimits& limits) {
  RequestSpec spec;
  RETURN_IF_ERROR(CheckRequestId(request.request_id()));
  spec.request_id = request.request_id();
  const bool has_text = !request.context().empty() || !request.continuation().empty();
  const bool has_ids = request.context_ids_size() > 0 || request.continuation_ids_size() > 0;
  if (has_text && has_ids) {
    return Invalid("give context and continuation as text or as ids (context_ids, "
                   "continuation_ids), not both");
  }
  std::vector<int32_t> context, continuation;
  if (has_ids) {
    if (request.context_ids_size() == 0) {
      return Invalid("context_ids: empty; give at least the BOS id (<|begin_of_text|>)");
    }
    if (request.continuation_ids_size() == 0) {
      return Invalid("continuation_ids: empty; give the ids to score");
    }
    RETURN_IF_ERROR(CheckVocabulary("context_ids", request.context_ids(), model));
    RETURN_IF_ERROR(CheckVocabulary("continuation_ids", request.continuation_ids(), model));
    context.assign(request.context_ids().begin(), request.context_ids().end());
    continuation.assign(request.continuation_ids().begin(), request.continuation_ids().end());
  } else {
    if (request.continuation().empty()) {
      return Invalid("continuation: empty; give the text to score (or continuation_ids)");
    }
    const int64_t bytes = static_cast<int64_t>(request.context().size() + request.continuation().size());
    if (bytes > limits.max_prompt_bytes) {
      return Invalid(absl::StrCat("context + continuation: ", bytes, " bytes; at most ",
                                  limits.max_prompt_bytes));
    }
    if (!IsValidUtf8(request.context())) return Invalid("context: not valid UTF-8");
    if (!IsValidUtf8(request.continuation())) return Invalid("continuation: not valid UTF-8");
    // lm-eval-harness: the context's trailing whitespace belongs to the continuation (" B" is
    // one token, "A:" + " B" scores " B"), and the continuation is what the whole text encodes
    // to after the context's own encoding.
    std::string ctx = request.context();
    const size_t kept = ctx.find_last_not_of(" \t\n\r\f\v");
    const size_t cut = kept == std::string::npos ? 0 : kept + 1;
    const std::string cont = ctx.substr(cut) + request.continuation();
    ctx.resize(cut);
    context.push_back(model.config->bos_token_id);
    std::vector<int32_t> ctx_ids = model.tokenizer->Encode(ctx, /*allow_special=*/false);
    context.insert(context.end(), ctx_ids.begin(), ctx_ids.end());
    std::vector<int32_t> whole = model.tokenizer->Encode(ctx + cont, /*allow_special=*/false);
    whole.insert(whole.begin(), model.config->bos_token_id);
    if (whole.size() <= context.size()) {
      return Invalid("continuation: encodes to no token after the context");
    }
    continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(context.size()), whole.end());
  }
  spec.prompt_ids = context;
  spec.prompt_ids.insert(spec.prompt_ids.end(), continuation.begin(), continuation.end());
  spec.score_from = static_cast<int32_t>(context.size());
  // One generated position: the scheduler runs a sequence until it samples a token.
  if (static_cast<int64_t>(spec.prompt_ids.size()) + 1 > model.config->max_position_embeddings) {
    return Invalid(absl::StrCat("context + continuation (", spec.prompt_ids.size(),
                                " tokens) exceeds the model's context of ",
                                model.config->max_position_embeddings, " tokens minus one"));
  }
  spec.max_new_tokens = 1;
  spec.priority = request.priority();
  spec.sampling.temperature = 0;
  spec.ignore_eos = true;
  return spec;
}

absl::StatusOr<RequestSpec> SpecFromChat(const v1::ChatRequest& request,
                                         const ModelTextContext& model,
                                         const RequestLimits& limits) {
  RequestSpec spec;
  RETURN_IF_ERROR(CheckRequestId(request.request_id()));
  spec.request_id = request.request_id();
  int64_t bytes = 0;
  for (const v1::ChatMessage& m : request.messages()) bytes += static_cast<int64_t>(m.content().size());
  if (bytes > limits.max_prompt_bytes) {
    return Invalid(absl::StrCat("messages: ", bytes, " bytes of content; at most ",
                                limits.max_prompt_bytes));
  }
  ASSIGN_OR_RETURN(spec.prompt_ids, EncodeMessages(request.messages(), model));
  RETURN_IF_ERROR(FillParameters(request.params(), static_cast<int64_t>(spec.prompt_ids.size()),
                                 model, limits, &spec));
  return spec;
}

}  // namespace caduceus::router
