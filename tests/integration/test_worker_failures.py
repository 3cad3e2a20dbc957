#!/usr/bin/python3
"""Failure behaviour of a worker group (real processes on loopback, worker gRPC API):
  1. wrong inputs (unknown sequence, block id out of range, plan over the batch limits, position
     beyond the context) get INVALID_ARGUMENT and the group keeps serving;
  2. a follower started 10 s before its leader still joins (the leader configured only through
     CADUCEUS_* environment variables);
  3. killing one follower mid-run makes the leader answer UNAVAILABLE within the collective
     timeout; then every process exits on its own (leader 2, followers 3): no orphan, no hang;
  4. a follower that hangs (SIGSTOP) turns into UNAVAILABLE after the collective timeout.

usage: test_worker_failures.py MODEL_DIR"""

import signal
import sys
import time

import grpc

import cluster
import worker_client
from caduceus.worker.v1 import worker_pb2

TIMEOUT_S = 5  # --collective-timeout for these groups
PROMPT = [128000, 9906, 11, 1268, 527, 499, 30]


def expect_code(fn, code, words):
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code, "want %s, got %s: %s" % (code, e.code(), e.details())
        assert words in e.details(), "%r not in %r" % (words, e.details())
        print("  %s: %s" % (code.name, e.details()))
        return
    raise AssertionError("call succeeded, wanted %s" % code)


def plan_of(*seqs):
    p = worker_pb2.StepPlan()
    for s in seqs:
        p.sequences.add().CopyFrom(s)
    return p


def first(seq_id, tokens, blocks):
    return worker_pb2.SequencePlan(sequence_id=seq_id, token_ids=tokens, start_pos=0,
                                   block_table=blocks, sample=True, prompt_len=len(tokens),
                                   first_step=True, sampling=worker_client.greedy_params())


def pipelined_out_of_order(w):
    """A pipelined plan (previous_step_id) that reaches the worker before the step it follows
    waits for it, then runs right after it; one whose step never comes runs after the hold limit
    and gets the leader's verdict instead of hanging."""
    prefill = plan_of(first(20, [1, 2], [2]))
    prefill.step_id = 1000
    decode = plan_of(worker_pb2.SequencePlan(sequence_id=20, token_ids=[-1], start_pos=2,
                                             block_table=[2], sample=True, prompt_len=2))
    decode.step_id, decode.previous_step_id = 1001, 1000
    later = w.Step.future(decode, timeout=30)  # sent first
    time.sleep(0.3)
    assert not later.done(), "the plan ran before the step it follows"
    first_token = w.Step(prefill, timeout=30).results[0].token_id
    second = later.result()
    assert second.step_id == 1001 and second.results[0].sampled, second
    print("  pipelined plan sent before its predecessor waited and ran after it "
          "(tokens %d, %d)" % (first_token, second.results[0].token_id))
    orphan = plan_of(worker_pb2.SequencePlan(sequence_id=21, token_ids=[-1], start_pos=2,
                                             block_table=[3], sample=True, prompt_len=2))
    orphan.step_id, orphan.previous_step_id = 2001, 2000  # step 2000 never comes
    start = time.time()
    expect_code(lambda: w.Step(orphan, timeout=30), grpc.StatusCode.INVALID_ARGUMENT,
                "sampled-token placeholder")
    waited = time.time() - start
    assert 1.5 < waited < 10, "held %.1f s" % waited
    print("  a plan whose predecessor never came ran after %.1f s" % waited)
    w.Release(worker_pb2.ReleaseRequest(all=True), timeout=10)


def wrong_inputs(c, model):
    print("wrong inputs:")
    g = c.start_worker_group(model, 2, name="bad", extra=["--kv-cache-bytes", 8 << 20],
                             leader_extra=["--max-step-sequences", 4])
    cluster.wait_serving(g.address, processes=g.ranks)
    w = worker_client.stub(g.address)
    info = w.Info(worker_pb2.InfoRequest(), timeout=10)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    unknown = first(5, [1, 2], [0])
    unknown.first_step = False
    expect_code(lambda: w.Step(plan_of(unknown), timeout=30), invalid, "unknown sequence")
    expect_code(lambda: w.Step(plan_of(first(5, [1, 2], [info.num_kv_blocks])), timeout=30),
                invalid, "out of range")
    too_many = plan_of(*[first(i, [1], [i]) for i in range(5)])
    expect_code(lambda: w.Step(too_many, timeout=30), invalid, "at most 4")
    far = first(5, [1], [0])
    far.first_step = False
    expect_code(lambda: w.Step(plan_of(far), timeout=30), invalid, "unknown sequence")
    beyond = first(6, [1], [0])
    beyond.start_pos = info.max_context
    beyond.prefix_ids.extend([1] * info.max_context)
    expect_code(lambda: w.Step(plan_of(beyond), timeout=30), invalid, "exceed the model's context")
    # Release(all) (a restarted router connecting) forgets every sequence.
    w.Step(plan_of(first(9, [1, 2], [0])), timeout=30)
    assert w.Release(worker_pb2.ReleaseRequest(all=True), timeout=10).released == 1
    cont = worker_pb2.SequencePlan(sequence_id=9, token_ids=[3], start_pos=2, block_table=[0],
                                   sample=True, prompt_len=2)
    expect_code(lambda: w.Step(plan_of(cont), timeout=30), invalid, "unknown sequence")
    # A step plan's release_sequence_ids forget sequences before the step runs (the router's
    # way to release without a round trip): 10 continues, 11 is released in the same plan.
    w.Step(plan_of(first(10, [1, 2], [0]), first(11, [1, 2], [1])), timeout=30)
    cont10 = worker_pb2.SequencePlan(sequence_id=10, token_ids=[3], start_pos=2, block_table=[0],
                                     sample=True, prompt_len=2)
    released = plan_of(cont10)
    released.release_sequence_ids.append(11)
    assert w.Step(released, timeout=30).results[0].sampled
    cont11 = worker_pb2.SequencePlan(sequence_id=11, token_ids=[3], start_pos=2, block_table=[1],
                                     sample=True, prompt_len=2)
    expect_code(lambda: w.Step(plan_of(cont11), timeout=30), invalid, "unknown sequence")
    pipelined_out_of_order(w)
    # Still serving: a well-formed request completes on both ranks.
    tokens, _ = worker_client.generate(w, [PROMPT], 4)
    assert len(tokens[0]) == 4
    assert w.Health(worker_pb2.HealthRequest(), timeout=5).serving
    assert all(p.alive() for p in g.ranks)
    c.close()


def late_leader(c, model):
    print("follower 10 s before its leader:")
    g = c.start_worker_group(model, 2, name="late", extra=["--kv-cache-bytes", 8 << 20],
                             start_leader=False)
    time.sleep(10)
    assert g.ranks[0].alive(), g.ranks[0].tail()
    # The leader gets every flag from the environment (as Kubernetes sets them), none as args.
    env = {"CADUCEUS_MODEL": model, "CADUCEUS_TP_SIZE": "2", "CADUCEUS_RANK": "0",
           "CADUCEUS_RENDEZVOUS": "127.0.0.1:%d" % g.store_port, "CADUCEUS_DEVICE": "cpu",
           "CADUCEUS_KV_CACHE_BYTES": str(8 << 20), "CADUCEUS_LISTEN": g.address}
    leader = c.start("late-rank0", "caduceus-worker", [], env=env)
    cluster.wait_serving(g.address, processes=[leader, g.ranks[0]])
    tokens, _ = worker_client.generate(worker_client.stub(g.address), [PROMPT], 4)
    assert len(tokens[0]) == 4
    print("  joined and generated", tokens[0])
    c.close()


def expect_unavailable_within(w, first_id, low_s, high_s):
    """The next request to a group with a dead or hung rank fails with UNAVAILABLE, after
    between low_s and high_s seconds."""
    start = time.time()
    try:
        worker_client.generate(w, [PROMPT], 2, first_id=first_id, timeout=TIMEOUT_S * 4)
        raise AssertionError("step succeeded with a broken group")
    except grpc.RpcError as e:
        took = time.time() - start
        print("  leader answered %s after %.1f s: %s" % (e.code().name, took, e.details()))
        assert e.code() == grpc.StatusCode.UNAVAILABLE, e.code()
        assert low_s <= took <= high_s, took


def killed_follower(c, model):
    print("kill a follower mid-run:")
    g = c.start_worker_group(model, 4, name="kill",
                             extra=["--kv-cache-bytes", 8 << 20,
                                    "--collective-timeout", TIMEOUT_S])
    cluster.wait_serving(g.address, processes=g.ranks)
    w = worker_client.stub(g.address)
    worker_client.generate(w, [PROMPT], 3)
    victim = g.ranks[1]  # rank 2
    victim.signal(signal.SIGKILL)
    victim.wait(5)
    expect_unavailable_within(w, 50, 0, TIMEOUT_S + 5)
    leader = g.leader
    code = leader.wait(TIMEOUT_S + 10)
    assert code == 2, "leader exit code %s" % code
    for p in g.ranks[:-1]:
        if p is victim:
            continue
        code = p.wait(TIMEOUT_S * 3)
        assert code == 3, "%s exit code %s (want 3: lost its leader)" % (p.name, code)
    print("  every process exited: leader 2, surviving followers 3")
    c.close()


def hung_follower(c, model):
    print("a follower stops responding (SIGSTOP):")
    g = c.start_worker_group(model, 2, name="hang",
                             extra=["--kv-cache-bytes", 8 << 20,
                                    "--collective-timeout", TIMEOUT_S])
    cluster.wait_serving(g.address, processes=g.ranks)
    w = worker_client.stub(g.address)
    worker_client.generate(w, [PROMPT], 2)
    g.ranks[0].signal(signal.SIGSTOP)
    expect_unavailable_within(w, 60, TIMEOUT_S - 1, TIMEOUT_S + 5)
    assert g.leader.wait(10) == 2
    g.ranks[0].signal(signal.SIGKILL)
    c.close()


def main():
    model = sys.argv[1]
    c = cluster.Cluster()
    try:
        wrong_inputs(c, model)
        late_leader(c, model)
        killed_follower(c, model)
        hung_follower(c, model)
    except Exception:
        c.dump_logs()
        raise
    finally:
        c.close()
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
