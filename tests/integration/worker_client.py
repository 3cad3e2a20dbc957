"""A minimal client of the worker API (caduceus.worker.v1.Worker) for tests: it plays the router's
part for a handful of sequences (contiguous block tables, whole-prompt prefill, batched decode)."""

import grpc

from caduceus.worker.v1 import worker_pb2, worker_pb2_grpc

BLOCK = 16


def stub(address):
    channel = grpc.insecure_channel(address, options=[
        ("grpc.max_receive_message_length", 256 << 20)])
    return worker_pb2_grpc.WorkerStub(channel)


def greedy_params():
    return worker_pb2.SamplingParams(temperature=0.0, top_p=1.0, repetition_penalty=1.0)


def generate(worker, prompts, max_new_tokens, return_first_logits=False, first_block=0,
             first_id=1000, timeout=120):
    """Greedy-generates for every prompt in one batch. Returns (tokens per prompt, first-step
    logits per prompt or None). Sequence ids start at first_id, blocks at first_block."""
    seqs = []
    block = first_block
    for i, prompt in enumerate(prompts):
        n_blocks = (len(prompt) + max_new_tokens + BLOCK - 1) // BLOCK
        seqs.append({"id": first_id + i, "prompt": list(prompt), "out": [],
                     "blocks": list(range(block, block + n_blocks)), "logits": None})
        block += n_blocks
    step = 0
    while any(len(s["out"]) < max_new_tokens for s in seqs):
        plan = worker_pb2.StepPlan(step_id=step)
        live = [s for s in seqs if len(s["out"]) < max_new_tokens]
        for s in live:
            first = not s["out"]
            sp = plan.sequences.add(sequence_id=s["id"], sample=True, prompt_len=len(s["prompt"]),
                                    block_table=s["blocks"])
            if first:
                sp.token_ids.extend(s["prompt"])
                sp.start_pos = 0
                sp.first_step = True
                sp.sampling.CopyFrom(greedy_params())
                sp.return_logits = return_first_logits
            else:
                sp.token_ids.append(s["out"][-1])
                sp.start_pos = len(s["prompt"]) + len(s["out"]) - 1
        result = worker.Step(plan, timeout=timeout)
        assert len(result.results) == len(live)
        for s, r in zip(live, result.results):
            assert r.sequence_id == s["id"] and r.sampled
            if not s["out"] and return_first_logits:
                s["logits"] = list(r.logits)
            s["out"].append(r.token_id)
        step += 1
    worker.Release(worker_pb2.ReleaseRequest(sequence_ids=[s["id"] for s in seqs]), timeout=30)
    return [s["out"] for s in seqs], [s["logits"] for s in seqs]


def relative_logit_difference(a, b):
    """max |a - b| over a logit row divided by max |b|; None when the rows differ in length or
    are empty."""
    if not a or len(a) != len(b):
        return None
    return max(abs(x - y) for x, y in zip(a, b)) / max(abs(x) for x in b)
