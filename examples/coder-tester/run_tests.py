"""The `tester` step: run the acceptance tests against the coder's module.

stdin:  {"step": "tester", "state": {"patch": {"code": ..., "summary": ...}, "test_log": [...]}}
stdout: {"test_report": {...}, "test_log": "attempt N: ..."}

A failure is classified for the error analyser:
- logic:  the code runs but gives a wrong answer (AssertionError, or a crash inside the code);
- design: the code does not fit the interface the tests expect (TypeError, AttributeError,
          NameError, ImportError when calling it), so the fix is a design decision.
"""

import json
import sys
import traceback

DESIGN_ERRORS = (TypeError, AttributeError, NameError, ImportError)


def test_allows_up_to_limit(m):
    rl = m["RateLimiter"](limit=3, window=10)
    assert [rl.allow("ada", t) for t in (0, 1, 2)] == [True, True, True]
    assert rl.allow("ada", 3) is False, "the 4th request inside the window must be refused"


def test_window_slides(m):
    rl = m["RateLimiter"](limit=3, window=10)
    for t in (0, 1, 2):
        rl.allow("ada", t)
    assert rl.allow("ada", 10) is True, "at t=10 the request from t=0 has left the 10 s window"


def test_users_are_independent(m):
    rl = m["RateLimiter"](limit=3, window=10)
    for t in (0, 1, 2):
        rl.allow("ada", t)
    assert rl.allow("bob", 3) is True, "bob must not be limited by ada's requests"


TESTS = [test_allows_up_to_limit, test_window_slides, test_users_are_independent]


def run(test, module):
    """Run one test; return its failure, if any, as a one-item list."""
    try:
        test(module)
        return []
    except AssertionError as e:
        error, kind = f"AssertionError: {e}", "logic"
    except DESIGN_ERRORS as e:
        error, kind = f"{type(e).__name__}: {e}", "design"
    except Exception as e:  # a crash inside the module's own logic
        error, kind = traceback.format_exception_only(type(e), e)[-1].strip(), "logic"
    return [{"test": test.__name__, "error": error, "kind": kind}]


def main():
    state = json.load(sys.stdin)["state"]
    attempt = len(state.get("test_log") or []) + 1
    failures = []
    module = {}
    try:
        exec(compile(state["patch"]["code"], "rate_limiter.py", "exec"), module)
    except SyntaxError as e:
        failures.append({"test": "import", "error": f"SyntaxError: {e}", "kind": "logic"})
        passed = 0
    else:
        for test in TESTS:
            failures += run(test, module)
        passed = len(TESTS) - len(failures)

    kinds = {f["kind"] for f in failures}
    error_kind = "design" if "design" in kinds else "logic" if kinds else "none"
    summary = f"{passed}/{len(TESTS)} tests passed" + (f" ({error_kind} error)" if failures else "")
    print(json.dumps({
        "test_report": {
            "passed": not failures,
            "error_kind": error_kind,
            "failures": failures,
            "summary": summary,
        },
        "test_log": f"attempt {attempt}: {summary}",
    }))


main()
