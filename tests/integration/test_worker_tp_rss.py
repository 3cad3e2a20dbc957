#!/usr/bin/python3
"""Each rank of a TP=2 group of real caduceus-worker processes holds only its shard: peak resident
memory (VmHWM) of each rank, after serving a request, stays under 0.6x the model's safetensors
files (the whole model would be ~1.0x: weights are copied out of the page cache once).

usage: test_worker_tp_rss.py MODEL_DIR (the small preset)"""

import glob
import os
import sys

import cluster
import worker_client

LIMIT = 0.6


def vm_hwm_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM for pid %d" % pid)


def main():
    model = sys.argv[1]
    weights = sum(os.path.getsize(p) for p in glob.glob(os.path.join(model, "*.safetensors")))
    c = cluster.Cluster()
    try:
        g = c.start_worker_group(model, 2, name="rss", extra=["--kv-cache-bytes", 64 << 20])
        cluster.wait_serving(g.address, timeout=600, processes=g.ranks)
        tokens, _ = worker_client.generate(worker_client.stub(g.address), [[128000, 9906, 11]], 4)
        assert len(tokens[0]) == 4
        failures = 0
        for p in g.ranks:
            rss = vm_hwm_bytes(p.popen.pid)
            ratio = rss / weights
            print("%s: peak RSS %.2f GB = %.3fx the weight files (%.2f GB)" %
                  (p.name, rss / 1e9, ratio, weights / 1e9))
            if ratio >= LIMIT:
                failures += 1
        return 1 if failures else 0
    except Exception:
        c.dump_logs()
        raise
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
