#!/usr/bin/python3
"""What the OpenAI-compatible HTTP API costs over the gRPC API, through one running router
(started with --http-listen): the same greedy requests both ways.

- unary: REQUESTS completions of MAX_TOKENS tokens each, one at a time (latency p50/p99): the
  HTTP path adds JSON parsing, an in-process gRPC call and JSON building.
- stream: one STREAM_TOKENS-token stream each way, time to first token and tokens/s as the
  client receives them (the HTTP path adds one protobuf and one JSON serialization per message).

The prompt is token ids, so both paths do the same tokenization work (none). The last stdout
line is one JSON object.

usage: http_vs_grpc.py --router HOST:PORT --http HOST:PORT [--requests 200] [--max-tokens 4]
                       [--stream-tokens 512]
Needs PYTHONPATH=<build>/proto_py and Debian's python3-grpcio."""

import argparse
import http.client
import json
import time

import grpc

from caduceus.v1 import generation_pb2 as g
from caduceus.v1 import generation_pb2_grpc as gg

PROMPT = [128000, 791, 8893, 18911, 449]


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def grpc_request(n):
    return g.GenerateRequest(prompt_ids=PROMPT, params=g.GenerationParameters(
        max_new_tokens=n, ignore_eos=True, sampling=g.SamplingParameters(temperature=0.0)))


def http_body(n, stream=False):
    return json.dumps({"prompt": PROMPT, "max_tokens": n, "temperature": 0, "ignore_eos": True,
                       "stream": stream})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--router", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--stream-tokens", type=int, default=512)
    a = ap.parse_args()
    stub = gg.GenerationStub(grpc.insecure_channel(a.router))
    host, port = a.http.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=300)  # kept alive, as SDKs do
    headers = {"Content-Type": "application/json"}

    def grpc_unary():
        stub.Generate(grpc_request(a.max_tokens), timeout=120)

    def http_unary():
        conn.request("POST", "/v1/completions", body=http_body(a.max_tokens), headers=headers)
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, body

    result = {"requests": a.requests, "max_tokens": a.max_tokens}
    for name, call in (("grpc", grpc_unary), ("http", http_unary)):
        for _ in range(10):  # warm-up (connections, prefix cache)
            call()
        lat = []
        for _ in range(a.requests):
            t0 = time.perf_counter()
            call()
            lat.append(time.perf_counter() - t0)
        result[name + "_unary_p50_ms"] = round(1000 * percentile(lat, 50), 2)
        result[name + "_unary_p99_ms"] = round(1000 * percentile(lat, 99), 2)

    # Streams.
    t0 = time.perf_counter()
    first, n = None, 0
    for m in stub.GenerateStream(grpc_request(a.stream_tokens), timeout=600):
        if m.token_ids and first is None:
            first = time.perf_counter() - t0
        n += len(m.token_ids)
    total = time.perf_counter() - t0
    result["grpc_stream_ttft_ms"] = round(1000 * first, 2)
    result["grpc_stream_tokens_per_s"] = round(n / total, 1)

    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body=http_body(a.stream_tokens, True), headers=headers)
    r = conn.getresponse()
    first, chunks = None, 0
    while True:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data: {") and b'"choices":[{' in line:
            if first is None:
                first = time.perf_counter() - t0
            chunks += 1
    total = time.perf_counter() - t0
    result["http_stream_ttft_ms"] = round(1000 * first, 2)
    result["http_stream_chunks"] = chunks
    result["http_stream_tokens_per_s"] = round(a.stream_tokens / total, 1)

    for k, v in result.items():
        print("%-28s %s" % (k, v))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
