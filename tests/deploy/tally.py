"""The pass/fail tally every deploy check script prints: "ok: NAME" / "FAIL: NAME" lines, then
"N passed, M failed" and an exit status (1 when anything failed)."""

passed = 0
failed = 0


def check(ok, name, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {name}")
    else:
        failed += 1
        print(f"FAIL: {name}\n  " + detail.strip().replace("\n", "\n  "))
    return ok


def summary():
    """Prints the totals; returns the exit status."""
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0
