"""Helpers for the router end-to-end tests: public-API stubs and small request builders."""

import grpc

from caduceus.v1 import generation_pb2 as g
from caduceus.v1 import generation_pb2_grpc as gg


def stub(address):
    return gg.GenerationStub(grpc.insecure_channel(address))


def greedy(max_new_tokens, ignore_eos=True, stop=(), **sampling):
    sp = g.SamplingParameters(temperature=0.0, **sampling)
    return g.GenerationParameters(max_new_tokens=max_new_tokens, ignore_eos=ignore_eos,
                                  stop=list(stop), sampling=sp)


def ids_request(prompt_ids, max_new_tokens, **kw):
    return g.GenerateRequest(prompt_ids=prompt_ids, params=greedy(max_new_tokens, **kw))


def text_request(prompt, max_new_tokens, **kw):
    return g.GenerateRequest(prompt=prompt, params=greedy(max_new_tokens, **kw))


def chat_request(messages, max_new_tokens, **kw):
    return g.ChatRequest(messages=[g.ChatMessage(role=r, content=c) for r, c in messages],
                         params=greedy(max_new_tokens, **kw))


def collect_stream(responses):
    """Joins a stream: (text, token ids, last message)."""
    text, ids, last = "", [], None
    for m in responses:
        text += m.text_delta
        ids.extend(m.token_ids)
        last = m
    return text, ids, last


def expect_error(fn, code, words=""):
    """Runs fn; it must fail with `code` and a message containing `words`."""
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code, "want %s, got %s: %s" % (code, e.code(), e.details())
        assert words in (e.details() or ""), "%r not in %r" % (words, e.details())
        print("    %s: %s" % (e.code().name, e.details()))
        return
    raise AssertionError("call succeeded; wanted %s" % code)


def info_if(stub, replicas):
    """The router's ModelInfo once at least `replicas` are up, else None (for wait_until)."""
    try:
        info = stub.GetModelInfo(g.GetModelInfoRequest(), timeout=5)
        return info if info.replicas_up >= replicas else None
    except grpc.RpcError:
        return None
