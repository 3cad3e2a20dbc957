#include "tools/bench/stream_probe.h"

#include "tools/cli/grpc_status.h"

namespace caduceus::tools {

RequestResult RunStreamingRequest(caduceus::v1::Generation::Stub& stub,
                                  const RouterConnection& connection,
                                  const caduceus::v1::GenerateRequest& request,
                                  std::chrono::duration<double> timeout) {
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
  RequestResult result;
  grpc::ClientContext context;
  connection.Configure(context, timeout);
  const Clock::time_point sent = Clock::now();
  auto reader = stub.GenerateStream(&context, request);
  caduceus::v1::GenerateStreamResponse message;
  Clock::time_point previous = sent;
  while (reader->Read(&message)) {
    const int n = message.token_ids_size();
    if (n == 0) continue;  // e.g. a final message with only finish_reason and usage
    const Clock::time_point now = Clock::now();
    if (!result.got_token) {
      result.got_token = true;
      result.ttft_s = seconds(now - sent);
    } else {
      // A message may carry several tokens (the router batches what a step produced, or the
      // detokenizer held bytes back); spread the gap over them so each token counts once.
      const double per_token = seconds(now - previous) / n;
      result.itl_s.insert(result.itl_s.end(), static_cast<size_t>(n), per_token);
    }
    previous = now;
    result.output_tokens += n;
  }
  result.status = FromGrpcStatus(reader->Finish());
  result.latency_s = seconds(Clock::now() - sent);
  return result;
}

}  // namespace caduceus::tools
