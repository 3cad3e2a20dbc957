"""Speculative decoding end to end: a router with --speculative-tokens and one without, each with
its own worker, answer the same requests identically.

- Greedy: the 12 oracle prompts' 32 tokens equal the independent oracle's ids (llama.cpp and a
  float64 reference), alone and all at once, streamed and unary.
- Sampled, seeded, penalized, with logprobs and top logprobs: token ids, texts and every logprob
  equal the non-speculative router's (the CPU kernels are batch-invariant and a guess is only
  kept when the seeded draw at its row equals it, so even the floats are the same).
- Stops inside a step's accepted guesses (stop strings, stop token ids, the length limit) end
  the request exactly where the non-speculative router does, streamed and unary.
- The guesses did happen and were mostly right where outputs repeat
  (caduceus_speculative_{draft,accepted}_tokens_total), and the step count fell.
Usage: test_speculative.py MODEL_DIR ORACLE_JSON (CTest: router_speculative).
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import cluster
import router_client as rc
from caduceus.v1 import generation_pb2 as g


class Env:
    pass


def metric(addr, name):
    return cluster.metric_value(cluster.scrape(addr), name) or 0.0


def sampled_params(seed, max_new, **kw):
    sp = g.SamplingParameters(temperature=0.8, top_p=0.95, top_k=50, seed=seed,
                              frequency_penalty=0.3, presence_penalty=0.2,
                              repetition_penalty=1.1, top_logprobs=3)
    return g.GenerationParameters(max_new_tokens=max_new, ignore_eos=True, logprobs=True,
                                  sampling=sp, **kw)


def as_tuple(resp):
    lps = [(lp.token_id, lp.logprob, tuple((t.token_id, t.logprob) for t in lp.top_logprobs))
           for lp in resp.logprobs]
    return (list(resp.token_ids), resp.text, resp.finish_reason, resp.usage.generated_tokens, lps)


def stream_tuple(stub, req):
    text, ids, lps, last = "", [], [], None
    for m in stub.GenerateStream(req, timeout=120):
        text += m.text_delta
        ids.extend(m.token_ids)
        lps.extend((lp.token_id, lp.logprob) for lp in m.logprobs)
        last = m
    return ids, text, last.finish_reason, last.usage.generated_tokens, lps


def check_greedy_matches_oracle(env):
    prompts = env.oracle["prompts"]
    drafted_before = metric(env.spec_metrics, "caduceus_speculative_draft_tokens_total")

    def run(p):
        req = rc.ids_request(p["prompt_ids"], 32)
        return list(env.spec.Generate(req, timeout=120).token_ids)

    alone = [run(p) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(run, prompts))
    streamed = [stream_tuple(env.spec, rc.ids_request(p["prompt_ids"], 32))[0] for p in prompts[:4]]
    for i, p in enumerate(prompts):
        assert alone[i] == p["gen_ids"], "prompt %d alone: %s != oracle %s" % (i, alone[i], p["gen_ids"])
        assert together[i] == p["gen_ids"], "prompt %d batched differs from the oracle" % i
    for i, ids in enumerate(streamed):
        assert ids == prompts[i]["gen_ids"], "prompt %d streamed differs from the oracle" % i
    drafted = metric(env.spec_metrics, "caduceus_speculative_draft_tokens_total") - drafted_before
    assert drafted > 0, "no guesses were made"
    print("    12 prompts x 32 tokens = oracle, alone, batched and streamed; %d guesses" % drafted)


def check_sampled_equals_plain_router(env):
    # Seeds 1..8 on three prompts, 48 tokens: both routers, unary and streamed.
    prompts = env.oracle["prompts"][:3]
    reqs = [g.GenerateRequest(prompt_ids=p["prompt_ids"], params=sampled_params(seed, 48))
            for p in prompts for seed in range(1, 9)]
    with ThreadPoolExecutor(8) as pool:
        spec = list(pool.map(lambda r: as_tuple(env.spec.Generate(r, timeout=120)), reqs))
        plain = list(pool.map(lambda r: as_tuple(env.plain.Generate(r, timeout=120)), reqs))
    for i, (a, b) in enumerate(zip(spec, plain)):
        assert a == b, "request %d: speculative %s != plain %s" % (i, a[:2], b[:2])
    for r in reqs[:4]:
        a, b = stream_tuple(env.spec, r), stream_tuple(env.plain, r)
        assert a == b, "streamed: %s != %s" % (a[:2], b[:2])
    print("    %d sampled requests (penalties, top-k/p, 3 top logprobs): ids, text, logprobs equal"
          % len(reqs))


def check_stops_inside_guesses(env):
    # Prompt 6 loops "11945 14653 97979": guesses run through it, and stops land inside them.
    p = env.oracle["prompts"][6]
    gen = p["gen_ids"]
    text = env.plain.Generate(rc.ids_request(p["prompt_ids"], 32), timeout=60).text
    cases = [
        ("length", dict(max_new_tokens=13)),
        ("stop token", dict(max_new_tokens=32, stop_token_ids=[gen[17]])),
        ("stop string", dict(max_new_tokens=32, stop=[text[len(text) // 2: len(text) // 2 + 3]])),
    ]
    for name, kw in cases:
        params = g.GenerationParameters(ignore_eos=True, sampling=g.SamplingParameters(temperature=0),
                                        **kw)
        req = g.GenerateRequest(prompt_ids=p["prompt_ids"], params=params)
        a, b = as_tuple(env.spec.Generate(req, timeout=60)), as_tuple(env.plain.Generate(req, timeout=60))
        assert a == b, "%s: speculative %s != plain %s" % (name, a[:3], b[:3])
        sa, sb = stream_tuple(env.spec, req), stream_tuple(env.plain, req)
        assert sa == sb, "%s streamed: %s != %s" % (name, sa[:3], sb[:3])
        print("    %s: %d tokens, finish %s, both routers" % (name, len(a[0]), g.FinishReason.Name(a[2])))


def check_guesses_paid_off(env):
    drafted = metric(env.spec_metrics, "caduceus_speculative_draft_tokens_total")
    accepted = metric(env.spec_metrics, "caduceus_speculative_accepted_tokens_total")
    assert 0 < accepted <= drafted, (accepted, drafted)
    assert metric(env.plain_metrics, "caduceus_speculative_draft_tokens_total") == 0
    # A looping prompt alone: fewer steps than tokens.
    p = env.oracle["prompts"][6]
    steps_before = metric(env.spec_metrics, "caduceus_step_duration_seconds_count")
    accepted_before = metric(env.spec_metrics, "caduceus_speculative_accepted_tokens_total")
    env.spec.Generate(rc.ids_request(p["prompt_ids"], 200), timeout=120)
    steps = metric(env.spec_metrics, "caduceus_step_duration_seconds_count") - steps_before
    gained = metric(env.spec_metrics, "caduceus_speculative_accepted_tokens_total") - accepted_before
    # Each step yields one token plus its accepted guesses (the prefill step yields the first).
    assert steps + gained == 200, (steps, gained)
    assert gained > 0, "the looping prompt accepted no guesses"
    print("    overall %d of %d guesses accepted; 200 tokens of a looping output in %d steps"
          % (accepted, drafted, steps))


CHECKS = [check_greedy_matches_oracle, check_sampled_equals_plain_router,
          check_stops_inside_guesses, check_guesses_paid_off]


def main():
    model, oracle_path = sys.argv[1], sys.argv[2]
    env = Env()
    with open(oracle_path) as f:
        env.oracle = json.load(f)
    c = cluster.Cluster()
    failures = []
    try:
        routers = []
        for name, extra in (("spec", ["--speculative-tokens", 4, "--speculative-ngram-min", 1]),
                            ("plain", [])):
            grp = c.start_worker_group(model, 1, name=name, extra=cluster.WORKER_KV)
            routers.append(c.start_router(name, grp, extra) + (grp,))
        for addr, _, proc, grp in routers:
            cluster.wait_serving(addr, processes=[proc] + grp.ranks)
        env.spec, env.plain = rc.stub(routers[0][0]), rc.stub(routers[1][0])
        env.spec_metrics, env.plain_metrics = routers[0][1], routers[1][1]
        for stub in (env.spec, env.plain):
            cluster.wait_until("replica up", lambda: rc.info_if(stub, 1), timeout=120)
        failures = cluster.run_checks(CHECKS, env, c)
    finally:
        c.close()
    sys.exit(cluster.report(failures))


if __name__ == "__main__":
    main()
