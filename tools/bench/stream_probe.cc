#include "tools/bench/stream_probe.h"

#include "tools/cli/grpc_status.h"

namespace caduceus::tools {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Owns itself from Start to OnDone (gRPC's callback API reports the end exactly once).
class StreamProbe final : public grpc::ClientReadReactor<caduceus::v1::GenerateStreamResponse> {
 public:
  explicit StreamProbe(std::function<void(RequestResult)> done) : done_(std::move(done)) {}

  void Start(caduceus::v1::Generation::Stub& stub, const RouterConnection& connection,
             const caduceus::v1::GenerateRequest& request, std::chrono::duration<double> timeout) {
    connection.Configure(context_, timeout);
    sent_ = previous_ = Clock::now();
    stub.async()->GenerateStream(&context_, &request, this);
    StartRead(&message_);
    StartCall();
  }

 private:
  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows with the status
    const int n = message_.token_ids_size();
    if (n > 0) {  // a final message may carry only finish_reason and usage
      const Clock::time_point now = Clock::now();
      if (!result_.got_token) {
        result_.got_token = true;
        result_.ttft_s = Seconds(now - sent_);
      } else {
        // A message may carry several tokens (the router batches what a step produced, or the
        // detokenizer held bytes back); spread the gap over them so each token counts once.
        const double per_token = Seconds(now - previous_) / n;
        result_.itl_s.insert(result_.itl_s.end(), static_cast<size_t>(n), per_token);
      }
      previous_ = now;
      result_.output_tokens += n;
    }
    StartRead(&message_);
  }

  void OnDone(const grpc::Status& status) override {
    result_.status = FromGrpcStatus(status);
    result_.latency_s = Seconds(Clock::now() - sent_);
    std::function<void(RequestResult)> done = std::move(done_);
    RequestResult result = std::move(result_);
    delete this;
    done(std::move(result));
  }

  std::function<void(RequestResult)> done_;
  grpc::ClientContext context_;
  caduceus::v1::GenerateStreamResponse message_;
  Clock::time_point sent_, previous_;
  RequestResult result_;
};

}  // namespace

void StartStreamingRequest(caduceus::v1::Generation::Stub& stub, const RouterConnection& connection,
                           const caduceus::v1::GenerateRequest& request,
                           std::chrono::duration<double> timeout,
                           std::function<void(RequestResult)> done) {
  (new StreamProbe(std::move(done)))->Start(stub, connection, request, timeout);
}

}  // namespace caduceus::tools
