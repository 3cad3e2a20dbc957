#include "router/server/generation_service.h"

#include <algorithm>
#include <chrono>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "proto/status_conversion.h"
#include "router/server/active_request.h"
#include "router/server/call_end.h"
#include "router/server/stream_reactor.h"
#include "router/text/tokenizer_utf8.h"

namespace caduceus::router {

namespace {

std::string CodeName(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

}  // namespace

grpc::Status GenerationService::Admit(const grpc::ServerContextBase* context,
                                      const ApiCaller** caller) const {
  if (options_.callers.required()) {
    const ApiCaller* found = options_.callers.Find(*context);
    if (found == nullptr) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "missing or wrong bearer token (metadata 'authorization: Bearer ...')");
    }
    if (caller != nullptr) *caller = found;
  }
  if (draining_) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "router is draining (shutting down); retry on another router");
  }
  return grpc::Status::OK;
}

absl::StatusOr<RequestSpec> GenerationService::ForCaller(absl::StatusOr<RequestSpec> spec,
                                                         const ApiCaller* caller) {
  if (spec.ok() && caller != nullptr) spec->priority = std::max(spec->priority, caller->min_priority);
  return spec;
}

grpc::Status GenerationService::Refuse(const absl::Status& status) {
  metrics_->RequestFinished(CodeName(status.code()));
  return ToGrpcStatus(status);
}

std::shared_ptr<ActiveRequest> GenerationService::NewRequest(RequestSpec spec) {
  if (spec.max_new_tokens_defaulted) {
    // An unset length is "as long as it takes", as OpenAI's chat default: like the context
    // limit, the smallest replica's KV cache shortens it instead of refusing the request (a
    // large --default-max-new-tokens would otherwise fail every request on small caches).
    const int64_t room = replicas_->MinKvTokens() - static_cast<int64_t>(spec.prompt_ids.size());
    if (room >= 1 && room < spec.max_new_tokens) spec.max_new_tokens = static_cast<int32_t>(room);
  }
  const uint64_t seq = next_seq_++;
  if (spec.request_id.empty()) spec.request_id = absl::StrCat("req-", seq);
  return std::make_shared<ActiveRequest>(std::move(spec), model_->tokenizer, seq, absl::Now());
}

void GenerationService::Audit(const grpc::ServerContextBase& context, const char* method,
                              const ActiveRequest* request, const CallOutcome& outcome) const {
  if (options_.audit == nullptr && !options_.callers.required()) return;
  CallRequest call;
  call.method = method;
  if (request != nullptr) {
    call.spec = &request->spec();
    call.prompt_ids = &request->spec().prompt_ids;
    call.replica = request->replica();
    std::tie(call.model_id, call.revision) = request->model();
    call.arrival = request->arrival();
  }
  Audit(context, call, outcome);
}

void GenerationService::Audit(const grpc::ServerContextBase& context, const CallRequest& call,
                              const CallOutcome& outcome) const {
  const ApiCaller* caller =
      options_.callers.required() && outcome.status.error_code() != grpc::StatusCode::UNAUTHENTICATED
          ? options_.callers.Find(context)
          : nullptr;
  // Usage per caller, for calls that reached the model (not Tokenize, not refused ones).
  if (caller != nullptr && call.spec != nullptr) {
    const int64_t generated = outcome.response != nullptr ? outcome.response->token_ids_size() : 0;
    metrics_->CallerFinished(caller->name, CodeName(static_cast<absl::StatusCode>(outcome.status.error_code())),
                             static_cast<int64_t>(call.prompt_ids->size()), generated);
  }
  if (options_.audit != nullptr) options_.audit->Record(context, call, outcome, caller);
}

grpc::Status GenerationService::RunUnary(grpc::ServerContext* context, const char* method,
                                         absl::StatusOr<RequestSpec> spec,
                                         v1::GenerateResponse* response) {
  std::shared_ptr<ActiveRequest> request;
  const grpc::Status status = RunUnaryToEnd(context, std::move(spec), response, &request);
  Audit(*context, method, request.get(), CallOutcome{status, response});
  return status;
}

grpc::Status GenerationService::RunUnaryToEnd(grpc::ServerContext* context,
                                              absl::StatusOr<RequestSpec> spec,
                                              v1::GenerateResponse* response,
                                              std::shared_ptr<ActiveRequest>* out) {
  if (!spec.ok()) return Refuse(spec.status());
  std::shared_ptr<ActiveRequest> request = NewRequest(*std::move(spec));
  *out = request;
  in_flight_++;
  struct Done {
    std::atomic<int64_t>& n;
    ~Done() { n--; }
  } done{in_flight_};
  absl::StatusOr<std::string> replica = replicas_->Submit(request);
  if (!replica.ok()) return Refuse(replica.status());

  while (true) {
    // Woken by each message, and at least every 50 ms to notice a cancel or deadline.
    for (const v1::GenerateStreamResponse& message : request->PopAll(absl::Milliseconds(50))) {
      FoldMessage(message, response);
      if (message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
        response->set_replica(request->replica());
        if (options_.log_payloads) {
          LogInfo(absl::StrCat("request ", request->spec().request_id, " output: ", response->text()));
        }
        return grpc::Status::OK;
      }
    }
    if (request->done()) return ToGrpcStatus(request->error());
    const bool deadline_passed = context->deadline() < std::chrono::system_clock::now();
    if (deadline_passed || context->IsCancelled()) {
      const CancelReason reason =
          ReasonForCancel(context->deadline(), absl::ToChronoTime(request->arrival()));
      request->RequestCancel(reason);
      return CancelStatus(reason);
    }
  }
}

namespace {

// A stream refused before it started (auth, drain, validation).
class RefusedStream final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  explicit RefusedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

namespace {

// A raw stream request as `Message`; INVALID_ARGUMENT (as the unary calls answer, through
// proto/request_parse_status.h) when it does not parse.
template <typename Message>
absl::StatusOr<Message> ParseStreamRequest(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  Message message;
  std::string bytes;
  if (buffer.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    if (message.ParseFromString(bytes)) return message;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("the message does not parse as ", message.GetTypeName(),
                   ": a string field holds invalid UTF-8, or the bytes are not that message"));
}

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerationService::RefuseStream(
    grpc::CallbackServerContext* context, const char* method, const grpc::Status& status) {
  Audit(*context, method, nullptr, CallOutcome{status, nullptr});
  return new RefusedStream(status);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerationService::StartStream(
    grpc::CallbackServerContext* context, const char* method, absl::StatusOr<RequestSpec> spec) {
  if (!spec.ok()) return RefuseStream(context, method, Refuse(spec.status()));
  std::shared_ptr<ActiveRequest> request = NewRequest(*std::move(spec));
  in_flight_++;
  const bool fold_text = options_.audit != nullptr && options_.audit->payloads();
  auto* reactor = new StreamReactor(
      context, request, fold_text,
      [this, context, method, request](const grpc::Status& status, const v1::GenerateResponse& sent) {
        Audit(*context, method, request.get(), CallOutcome{status, &sent});
        in_flight_--;
      });
  absl::StatusOr<std::string> replica = replicas_->Submit(request);
  if (!replica.ok()) {
    reactor->Abort(Refuse(replica.status()));
  } else {
    reactor->Start();
  }
  return reactor;
}

grpc::Status GenerationService::Generate(grpc::ServerContext* context,
                                         const v1::GenerateRequest* request,
                                         v1::GenerateResponse* response) {
  const ApiCaller* caller = nullptr;
  if (grpc::Status s = Admit(context, &caller); !s.ok()) {
    Audit(*context, "Generate", nullptr, CallOutcome{s, nullptr});
    return s;
  }
  return RunUnary(context, "Generate", ForCaller(SpecFromGenerate(*request, *model_, options_.limits), caller),
                  response);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerationService::GenerateStream(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  const ApiCaller* caller = nullptr;
  if (grpc::Status s = Admit(context, &caller); !s.ok()) return RefuseStream(context, "GenerateStream", s);
  absl::StatusOr<v1::GenerateRequest> request = ParseStreamRequest<v1::GenerateRequest>(*raw);
  if (!request.ok()) return RefuseStream(context, "GenerateStream", Refuse(request.status()));
  return StartStream(context, "GenerateStream",
                     ForCaller(SpecFromGenerate(*request, *model_, options_.limits), caller));
}

grpc::Status GenerationService::Chat(grpc::ServerContext* context, const v1::ChatRequest* request,
                                     v1::GenerateResponse* response) {
  const ApiCaller* caller = nullptr;
  if (grpc::Status s = Admit(context, &caller); !s.ok()) {
    Audit(*context, "Chat", nullptr, CallOutcome{s, nullptr});
    return s;
  }
  return RunUnary(context, "Chat", ForCaller(SpecFromChat(*request, *model_, options_.limits), caller),
                  response);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerationService::ChatStream(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  const ApiCaller* caller = nullptr;
  if (grpc::Status s = Admit(context, &caller); !s.ok()) return RefuseStream(context, "ChatStream", s);
  absl::StatusOr<v1::ChatRequest> request = ParseStreamRequest<v1::ChatRequest>(*raw);
  if (!request.ok()) return RefuseStream(context, "ChatStream", Refuse(request.status()));
  return StartStream(context, "ChatStream",
                     ForCaller(SpecFromChat(*request, *model_, options_.limits), caller));
}

grpc::Status GenerationService::Tokenize(grpc::ServerContext* context,
                                         const v1::TokenizeRequest* request,
                                         v1::TokenizeResponse* response) {
  const absl::Time arrival = absl::Now();
  const grpc::Status status = TokenizeUnaudited(context, request, response);
  if (options_.audit != nullptr) {
    // Its text is as sensitive as a prompt: who sent what is recorded like a generation's.
    const std::vector<int32_t> ids(response->token_ids().begin(), response->token_ids().end());
    CallRequest call;
    call.method = "Tokenize";
    call.prompt_ids = status.ok() ? &ids : nullptr;
    call.arrival = arrival;
    Audit(*context, call, CallOutcome{status, nullptr});
  }
  return status;
}

grpc::Status GenerationService::TokenizeUnaudited(grpc::ServerContext* context,
                                                  const v1::TokenizeRequest* request,
                                                  v1::TokenizeResponse* response) const {
  if (grpc::Status s = Admit(context); !s.ok()) return s;
  std::vector<int32_t> ids;
  if (request->messages_size() > 0) {
    if (!request->text().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "give either text or messages, not both");
    }
    absl::StatusOr<std::vector<int32_t>> encoded = EncodeMessages(request->messages(), *model_);
    if (!encoded.ok()) return ToGrpcStatus(encoded.status());
    ids = *std::move(encoded);
  } else {
    if (static_cast<int64_t>(request->text().size()) > options_.limits.max_prompt_bytes) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("text: ", request->text().size(), " bytes; at most ",
                                       options_.limits.max_prompt_bytes));
    }
    if (!IsValidUtf8(request->text())) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "text: not valid UTF-8");
    }
    if (request->add_bos()) ids.push_back(model_->config->bos_token_id);
    std::vector<int32_t> text_ids = model_->tokenizer->Encode(request->text(), request->allow_special());
    ids.insert(ids.end(), text_ids.begin(), text_ids.end());
  }
  for (int32_t id : ids) {
    response->add_token_ids(id);
    absl::StatusOr<std::string> piece = model_->tokenizer->Decode(std::span<const int32_t>(&id, 1));
    const std::string bytes = piece.ok() ? *std::move(piece) : std::string();
    response->add_tokens(text::SanitizeUtf8(bytes));
    response->add_token_bytes(bytes);
  }
  return grpc::Status::OK;
}

grpc::Status GenerationService::Score(grpc::ServerContext* context, const v1::ScoreRequest* request,
                                      v1::ScoreResponse* response) {
  const ApiCaller* caller = nullptr;
  if (grpc::Status s = Admit(context, &caller); !s.ok()) {
    Audit(*context, "Score", nullptr, CallOutcome{s, nullptr});
    return s;
  }
  // A generation of one greedy token whose prefill scores the continuation (RequestSpec).
  v1::GenerateResponse generated;
  std::shared_ptr<ActiveRequest> active;
  grpc::Status status =
      RunUnaryToEnd(context, ForCaller(SpecFromScore(*request, *model_, options_.limits), caller),
                    &generated, &active);
  if (status.ok()) status = FillScore(*active, generated, response);
  // The token generated on the way is nobody's output.
  generated.clear_token_ids();
  generated.clear_text();
  Audit(*context, "Score", active.get(), CallOutcome{status, &generated});
  return status;
}

grpc::Status GenerationService::FillScore(ActiveRequest& request,
                                          const v1::GenerateResponse& generated,
                                          v1::ScoreResponse* response) const {
  const RequestSpec& spec = request.spec();
  const ActiveRequest::Progress& p = request.progress();  // complete: the request has finished
  const size_t n = spec.prompt_ids.size() - static_cast<size_t>(spec.score_from);
  if (p.score_logprobs.size() != n ||
      std::find(p.score_greedy.begin(), p.score_greedy.end(), -1) != p.score_greedy.end()) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        "the worker returned no score for some continuation tokens (a worker "
                        "older than the router?)");
  }
  response->set_request_id(spec.request_id);
  response->mutable_context_token_ids()->Add(spec.prompt_ids.begin(),
                                             spec.prompt_ids.begin() + spec.score_from);
  double sum = 0;
  bool greedy = true;
  for (size_t k = 0; k < n; ++k) {
    const int32_t id = spec.prompt_ids[static_cast<size_t>(spec.score_from) + k];
    v1::ScoredToken* t = response->add_tokens();
    t->set_token_id(id);
    absl::StatusOr<std::string> piece = model_->tokenizer->Decode(std::span<const int32_t>(&id, 1));
    t->set_text(text::SanitizeUtf8(piece.ok() ? *piece : std::string()));
    t->set_logprob(p.score_logprobs[k]);
    t->set_greedy_token_id(p.score_greedy[k]);
    t->set_is_greedy(p.score_greedy[k] == id);
    sum += p.score_logprobs[k];
    greedy = greedy && t->is_greedy();
  }
  response->set_logprob(sum);
  response->set_is_greedy(greedy);
  v1::Usage* usage = response->mutable_usage();
  usage->set_prompt_tokens(static_cast<uint32_t>(spec.prompt_ids.size()));
  usage->set_cached_prompt_tokens(generated.usage().cached_prompt_tokens());
  response->set_replica(generated.replica());
  return grpc::Status::OK;
}

grpc::Status GenerationService::GetModelInfo(grpc::ServerContext* context,
                                             const v1::GetModelInfoRequest*,
                                             v1::ModelInfo* response) {
  if (grpc::Status s = Admit(context); !s.ok()) return s;
  const ReplicaSet::Summary summary = replicas_->Summarize();
  if (summary.up == 0) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no worker replica is up yet");
  }
  const model::ModelConfig& config = *model_->config;
  const worker::v1::InfoResponse& info = *summary.first_info;
  response->set_model_id(info.model_id());
  response->set_revision(info.revision());
  response->set_max_context(config.max_position_embeddings);
  response->set_vocab_size(config.vocab_size);
  for (int id : config.eos_token_ids) response->add_eos_token_ids(id);
  response->set_bos_token_id(config.bos_token_id);
  response->set_has_chat_template(model_->chat_template != nullptr);
  response->set_replicas_up(static_cast<uint32_t>(summary.up));
  response->set_kv_block_size(info.block_size());
  response->set_kv_blocks_total(static_cast<uint64_t>(summary.kv_blocks_total));
  response->set_tp_size(info.tp_size());
  response->set_quantization(info.quantization().empty() ? "none" : info.quantization());
  return grpc::Status::OK;
}

grpc::Status RegistryService::Authorize(const grpc::ServerContext* context) const {
  if (workers_.required() && workers_.Find(*context) == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "worker registry: missing or wrong bearer token (give the worker the "
                        "router's --registry-token-file)");
  }
  return grpc::Status::OK;
}

grpc::Status RegistryService::Register(grpc::ServerContext* context,
                                       const worker::v1::RegisterRequest* request,
                                       worker::v1::RegisterResponse* response) {
  if (grpc::Status s = Authorize(context); !s.ok()) return s;
  if (request->address().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "address is required");
  }
  absl::StatusOr<std::string> id = replicas_->Register(request->address());
  if (!id.ok()) return ToGrpcStatus(id.status());
  response->set_replica_id(*id);
  response->set_heartbeat_interval_seconds(1.0);
  return grpc::Status::OK;
}

grpc::Status RegistryService::Heartbeat(grpc::ServerContext* context,
                                        const worker::v1::HeartbeatRequest* request,
                                        worker::v1::HeartbeatResponse* response) {
  if (grpc::Status s = Authorize(context); !s.ok()) return s;
  response->set_known(replicas_->Heartbeat(request->replica_id(), request->serving()));
  return grpc::Status::OK;
}

grpc::Status RegistryService::Deregister(grpc::ServerContext* context,
                                         const worker::v1::DeregisterRequest* request,
                                         worker::v1::DeregisterResponse* response) {
  if (grpc::Status s = Authorize(context); !s.ok()) return s;
  response->set_known(replicas_->Deregister(request->address()));
  return grpc::Status::OK;
}

}  // namespace caduceus::router
