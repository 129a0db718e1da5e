"""make -C python-examples test: the Python example's behaviour, checked.

Exact counters and error codes from each part of example.py, the
resume-vs-cancel race 2,000 times, the binding's constants and structs
against include/coframe.h, the example run as a program, and the one thing
that cannot work (suspend_in_python.py) seen not to.
"""

import ctypes
import os
import re
import resource
import subprocess
import sys
import unittest

import coframe as cf
import example

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.environ.get("COFRAME_HEADER") or os.path.join(HERE, "..", "include", "coframe.h")


def run_script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs a script of this directory with this Python, no core dump."""
    return subprocess.run(
        [sys.executable, *args], cwd=HERE, capture_output=True, text=True, timeout=timeout,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))


class Binding(unittest.TestCase):
    """coframe.py's copies of the header's constants and structs."""

    def test_constants_match_the_header(self) -> None:
        with open(HEADER) as f:
            defines = dict(re.findall(r"^#define (CORO_\w+) (-?\d+)$", f.read(), re.M))
        self.assertGreaterEqual(len(defines), 15)
        for name, value in defines.items():
            if name.startswith(("CORO_E", "CORO_OK", "CORO_PENDING", "CORO_SPAWN_")):
                self.assertEqual(getattr(cf, name, None), int(value), name)

    def test_structs_match_the_c_compiler(self) -> None:
        for which, struct in enumerate((cf.coro_config, cf.coro_promise, cf.coro_token)):
            self.assertEqual(ctypes.sizeof(struct), example.Bodies().dll.bodies_sizeof(which), struct.__name__)


class ExampleParts(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.bodies = example.Bodies()
        cls.rt = cf.Runtime(workers=2)
        cls.ex = example.Example(cls.bodies, cls.rt, verbose=False)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.rt.shutdown()
        cls.ex.tokens.free()

    def setUp(self) -> None:
        self.ex.failures.clear()

    def tearDown(self) -> None:
        # Each part ends with its frames freed, and said nothing unexpected.
        self.assertTrue(example.wait_for(lambda: cf.live_frames() == 0), cf.live_frames())
        self.assertEqual(self.ex.failures, [])

    def test_await_from_python_threads(self) -> None:
        f = self.ex.await_from_threads(n=16, threads=4)
        self.assertEqual(f["results"], f["expected"])
        self.assertEqual((f["started"], f["defers"], f["drops"], f["errdefers"]), (16, 16, 16, 0))

    def test_cancel_from_python_threads(self) -> None:
        f = self.ex.cancel_from_threads(n=8, threads=4)
        self.assertEqual((f["started"], f["defers"], f["errdefers"], f["drops"]), (8, 8, 8, 8))
        self.assertTrue(f["freed"])
        self.assertEqual(f["sleep_result"], 7)
        self.assertGreaterEqual(f["sleep_ms"], 20)

    def test_two_references(self) -> None:
        f = self.ex.two_refs()
        self.assertEqual(f["live_suspended"], 1)  # one frame, promise and token
        self.assertEqual(f["live_cancelled"], 1)  # the token keeps it
        self.assertEqual(f["live_resumed"], 0)  # the late resume freed it
        self.assertEqual((f["defers"], f["errdefers"], f["drops"], f["continued"]), (1, 1, 1, 0))
        self.assertEqual(f["resume"], "returned 0")
        self.assertEqual(f["second_resume"], "CORO_ESTALE")

    def test_stale_handles_raise(self) -> None:
        f = self.ex.stale()
        self.assertEqual(f["first_await"], 55)
        self.assertEqual(f["second_await"], "CORO_ESTALE")
        self.assertIn(cf.strerror(cf.CORO_ESTALE), f["second_await_text"])
        self.assertEqual(f["cancel_after_await"], "CORO_ESTALE")
        self.assertEqual(f["zeroed_token"], "CORO_EINVAL")
        with self.assertRaises(cf.CoroError) as e:
            cf.await_(cf.coro_promise(0))
        self.assertEqual((e.exception.code, e.exception.call), (cf.CORO_EINVAL, "coro_await"))

    def test_python_callbacks_that_do_not_suspend(self) -> None:
        f = self.ex.python_callbacks(n=64)
        self.assertEqual((f["results_ok"], f["ids_ok"], f["defers"], f["drops"]), (True, True, 64, 64))
        self.assertEqual(f["parked_results"], list(range(8)))

    def test_resume_vs_cancel_race(self) -> None:
        f = self.ex.race(rounds=2000)
        self.assertEqual(f["rounds"], 2000)
        self.assertEqual(f["bad_rc"], 0)  # every resume and every cancel returned 0
        self.assertEqual((f["defers"], f["drops"], f["started"]), (2000, 2000, 2000))
        self.assertEqual(f["lost"], 0)
        self.assertEqual(f["live_after"], 0)
        # Each body went on (resume first) or ran its errdefer (cancelled
        # before it finished), or both (cancelled while it went on).
        self.assertGreaterEqual(f["errdefers"] + f["continued"], 2000)
        self.assertLessEqual(f["errdefers"], 2000)


class Programs(unittest.TestCase):
    def test_shutdown_with_a_token_held(self) -> None:
        bodies = example.Bodies()
        ex = example.Example(bodies, cf.Runtime(workers=1), verbose=False)
        f = ex.shutdown_with_token()
        ex.tokens.free()
        self.assertEqual((f["live_before"], f["live_after"]), (1, 0))
        self.assertEqual(f["resume_after"], "CORO_ESTALE")
        self.assertEqual(f["spawn_after"], "CORO_ESHUTDOWN")
        self.assertEqual(ex.failures, [])

    def test_example_runs(self) -> None:
        r = run_script("example.py", "200")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("the resume-vs-cancel race, 200 times", r.stdout)
        self.assertTrue(r.stdout.rstrip().endswith("everything happened as described"), r.stdout)

    def test_a_python_body_that_suspends_does_not_work(self) -> None:
        try:
            r = run_script("suspend_in_python.py", "3", timeout=20)
        except subprocess.TimeoutExpired as e:  # a hang does not get through either
            out = (e.stdout or b"").decode(errors="replace")
            self.assertIn("first body returned 440", out)
            return
        out = r.stdout + r.stderr
        self.assertIn("first body returned 440", out)  # it got as far as the first resume
        self.assertNotIn("all right", out)
        # Wrong results, or death by a signal (SIGSEGV with CPython 3.11).
        self.assertTrue(r.returncode < 0 or "wrong results" in out, out)


if __name__ == "__main__":
    unittest.main()
