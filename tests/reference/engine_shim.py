#!/usr/bin/python3
"""Stand-in for caduceus-generate backed by the float64 reference, to test the comparison script.

Accepts the engine's CLI contract (--model --prompt-ids --max-new-tokens --temperature 0
--ignore-eos --json --report-top-logits K) and prints the engine's JSON as its last stdout line.
Faults to check that the comparison notices them:
  --corrupt-step S   replace the greedy token at step S (and what follows is then garbage)
  --logit-offset X   add X to the first reported top logit
  --exit-code C      print nothing useful and exit with C
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_reference import LlamaReference, parse_ids  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--ignore-eos", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--report-top-logits", type=int, default=0)
    ap.add_argument("--corrupt-step", type=int)
    ap.add_argument("--logit-offset", type=float, default=0.0)
    ap.add_argument("--exit-code", type=int)
    args = ap.parse_args(argv)
    if args.exit_code is not None:
        print("shim: failing on purpose", file=sys.stderr)
        return args.exit_code
    if args.temperature != 0.0 or not args.ignore_eos or not args.json:
        print("shim: only greedy --ignore-eos --json is implemented", file=sys.stderr)
        return 2
    res = LlamaReference(args.model).generate([parse_ids(args.prompt_ids)], args.max_new_tokens,
                                              max(1, args.report_top_logits))[0]
    ids = res["generated_ids"]
    if args.corrupt_step is not None:
        ids[args.corrupt_step] = (ids[args.corrupt_step] + 1) % 7
    top = res["first_step_top_logits"][:args.report_top_logits]
    if top:
        top[0][1] += args.logit_offset
    print("shim: generation done")  # the contract only promises the last line is JSON
    print(json.dumps({"prompt_ids": res["prompt_ids"], "generated_ids": ids, "text": "",
                      "finish_reason": "length", "first_step_top_logits": top}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
