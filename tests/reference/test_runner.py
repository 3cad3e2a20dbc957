"""The plain test loop of the reference's test scripts (no pytest on the CI machine's Python).

run_tests(functions) calls each function (with a fresh temporary directory when it takes one
argument), prints "ok   NAME (T s)" or "FAIL NAME" and the traceback, keeps going after a
failure, and ends with "N passed, M failed"; it returns the exit status (1 if anything failed).
"""

import sys
import tempfile
import time
import traceback


def run_tests(functions):
    passed = failed = 0
    for fn in functions:
        t0 = time.time()
        try:
            if fn.__code__.co_argcount:
                with tempfile.TemporaryDirectory() as tmp:
                    fn(tmp)
            else:
                fn()
            passed += 1
            print(f"ok   {fn.__name__} ({time.time() - t0:.2f} s)")
        except Exception:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print("FAIL", fn.__name__)
            traceback.print_exc(file=sys.stdout)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0
