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
