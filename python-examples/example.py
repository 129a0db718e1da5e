"""coframe from Python: coroutines whose bodies are C functions (bodies.c),
spawned, awaited, resumed and cancelled from Python threads through ctypes.

Every coroutine frame has two references: the promise from coro_spawn
(consumed by coro_await, coro_cancel_async or coro_detach) and the token of
each suspension (consumed by coro_resume or coro_cancel_suspend). The frame
is freed when both are gone, never before. Each part below shows a piece of
that, prints what happened in plain words and returns its figures, which
test_example.py checks. docs/PYTHON.md walks through it.

usage: example.py [races]      (default 2,000)
"""

from __future__ import annotations

import ctypes
import os
import queue
import random
import sys
import threading
import time
from ctypes import POINTER, Structure, c_int64, c_uint64
from enum import IntEnum
from typing import Callable, Dict, List

import coframe as cf
from coframe import CoroError, coro_entry, coro_env_drop, coro_token

HERE = os.path.dirname(os.path.abspath(__file__))


class Counter(IntEnum):
    """bodies.c's counters (bodies_count's argument)."""

    STARTED = 0
    DEFERS = 1
    ERRDEFERS = 2
    DROPS = 3
    CONTINUED = 4
    LOST = 5


# The environments of bodies.c's bodies: coro_spawn copies their bytes.
class ComputeEnv(Structure):
    _fields_ = [("n", c_int64)]


class ParkEnv(Structure):
    _fields_ = [("tokens", POINTER(cf.coro_chan)), ("self", c_uint64), ("value", c_int64)]


class ParkWithEnv(Structure):
    _fields_ = [("on_suspend", cf.coro_on_suspend), ("arg", ctypes.c_void_p), ("value", c_int64)]


class SleepEnv(Structure):
    _fields_ = [("deadline_ns", c_int64), ("value", c_int64)]


class Parked(Structure):
    """What a park body's on_suspend callback sends: whose token it is."""

    _fields_ = [("promise", c_uint64), ("token", coro_token)]


class Bodies:
    """libbodies.so: the C bodies, typed as coro_entry / coro_env_drop."""

    def __init__(self, path: str | None = None) -> None:
        path = path or os.environ.get("COFRAME_BODIES") or os.path.join(HERE, "build", "libbodies.so")
        self.dll = ctypes.CDLL(path)
        self.compute = coro_entry(("bodies_compute", self.dll))
        self.park = coro_entry(("bodies_park", self.dll))
        self.sleep = coro_entry(("bodies_sleep", self.dll))
        self.park_with = coro_entry(("bodies_park_with", self.dll))
        self.drop = coro_env_drop(("bodies_drop", self.dll))
        self.dll.bodies_count.argtypes = [ctypes.c_int]
        self.dll.bodies_count.restype = c_uint64
        self.dll.bodies_reset.argtypes = []
        self.dll.bodies_reset.restype = None
        self.dll.bodies_sizeof.argtypes = [ctypes.c_int]
        self.dll.bodies_sizeof.restype = ctypes.c_size_t

    def count(self, which: Counter) -> int:
        return self.dll.bodies_count(which)

    def counts(self) -> Dict[str, int]:
        return {c.name.lower(): self.count(c) for c in Counter}

    def reset(self) -> None:
        self.dll.bodies_reset()


def wait_for(cond: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Polls until cond() holds or `seconds` pass; says which."""
    end = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.0005)
    return True


def run_threads(n: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Example:
    def __init__(self, bodies: Bodies, rt: cf.Runtime, verbose: bool = True) -> None:
        self.b = bodies
        self.rt = rt
        self.verbose = verbose
        # on_suspend callbacks send {promise, token} here; a Python thread
        # receives (coro_chan_recv blocks it; the GIL is released meanwhile).
        self.tokens = cf.Channel(Parked, 1024)
        self.failures: List[str] = []

    def say(self, *args) -> None:
        if self.verbose:
            print(*args, flush=True)

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.say("  !! unexpected:", what)
            self.failures.append(what)

    def settle(self, base: int, figures: Dict[str, object]) -> Dict[str, object]:
        """The end of a part: every frame it made is freed. Waits for it: a
        thread's coro_await can return before the worker has freed the frame
        (a body woken by its sleep's deadline: 31 of 100 awaits saw it live)."""
        figures["freed"] = wait_for(lambda: cf.live_frames() == base)
        self.expect(figures["freed"], "every frame of the part is freed")
        return figures

    def spawn_parked(self, value: int = 0) -> cf.coro_promise:
        return self.rt.spawn(self.b.park, ParkEnv(self.tokens.ptr, 0, value), self.b.drop)

    def take_token(self, promise: cf.coro_promise) -> coro_token:
        """The token of `promise`'s suspension, from the channel (5 s at most)."""
        item = self.tokens.recv(cf.now() + 5_000_000_000)
        self.expect(item.promise == promise.id, "the token should be the parked coroutine's")
        return coro_token(item.token.id)

    # ------------------------------------------------------------------
    def await_from_threads(self, n: int = 16, threads: int = 4) -> Dict[str, object]:
        """Spawn n compute bodies; `threads` Python threads await them."""
        self.b.reset()
        base = cf.live_frames()
        promises = [self.rt.spawn(self.b.compute, ComputeEnv(1000 * i), self.b.drop) for i in range(n)]
        self.say(f"spawned {n} coroutines running bodies_compute (C), 1 + 2 + ... + 1000*i each")
        results = [0] * n
        awaited_by: List[str] = [""] * n

        def awaiter(k: int) -> None:
            for i in range(k, n, threads):
                results[i] = cf.await_(promises[i])  # blocks this thread only
                awaited_by[i] = threading.current_thread().name

        run_threads(threads, awaiter)
        expected = [(1000 * i) * (1000 * i + 1) // 2 for i in range(n)]
        self.say(f"{threads} Python threads awaited them ({len(set(awaited_by))} distinct threads): "
                 f"results {'all right' if results == expected else 'WRONG'}, "
                 f"e.g. {results[n - 1]} for i = {n - 1}")
        figures = {"results": results, "expected": expected, **self.b.counts()}
        self.say(f"defers ran {figures['defers']}, env_drops {figures['drops']}, "
                 f"errdefers {figures['errdefers']} (none was cancelled)")
        self.expect(results == expected, "every await gives its body's result")
        self.expect(figures["defers"] == n and figures["drops"] == n, "one defer and drop per body")
        return self.settle(base, figures)

    # ------------------------------------------------------------------
    def cancel_from_threads(self, n: int = 8, threads: int = 4) -> Dict[str, object]:
        """n bodies sleep until cancelled; `threads` Python threads cancel them.
        One more sleeps 20 ms and is awaited: its deadline passes."""
        self.b.reset()
        base = cf.live_frames()
        sleepers = [self.rt.spawn(self.b.sleep, SleepEnv(-1, 0), self.b.drop) for _ in range(n)]
        started = wait_for(lambda: self.b.count(Counter.STARTED) == n)
        self.expect(started, "every sleeper starts")
        self.say(f"spawned {n} coroutines sleeping with no deadline (coro_sleep_until(-1))")

        def canceller(k: int) -> None:
            for i in range(k, n, threads):
                cf.cancel_async(sleepers[i])

        run_threads(threads, canceller)
        dropped = wait_for(lambda: self.b.count(Counter.DROPS) == n)
        figures: Dict[str, object] = dict(self.b.counts())
        self.say(f"{threads} Python threads cancelled them with coro_cancel_async: "
                 f"defers {figures['defers']}, errdefers {figures['errdefers']}, "
                 f"env_drops {figures['drops']}")
        self.expect(dropped and figures["defers"] == n and figures["errdefers"] == n,
                    "every cancelled sleeper runs its defer, errdefer and drop once")

        t0 = cf.now()
        p = self.rt.spawn(self.b.sleep, SleepEnv(t0 + 20_000_000, 7), self.b.drop)
        figures["sleep_result"] = cf.await_(p)
        figures["sleep_ms"] = (cf.now() - t0) / 1e6
        self.say(f"a coroutine sleeping until now + 20 ms was awaited: it returned "
                 f"{figures['sleep_result']} after {figures['sleep_ms']:.1f} ms")
        self.expect(figures["sleep_result"] == 7 and figures["sleep_ms"] >= 20, "the sleep ends at its deadline")
        return self.settle(base, figures)

    # ------------------------------------------------------------------
    def two_refs(self) -> Dict[str, object]:
        """One coroutine, two references, two Python threads."""
        self.b.reset()
        base = cf.live_frames()
        p = self.spawn_parked()
        token = self.take_token(p)  # the suspend reference, now Python's
        figures: Dict[str, object] = {"live_suspended": cf.live_frames() - base}
        self.say(f"coroutine {p.id} suspended; its on_suspend callback sent its token to Python")
        self.say(f"live frames: {figures['live_suspended']} (one frame, two references)")

        def thread_a() -> None:
            cf.cancel_async(p)  # consumes the promise
            figures["defers_at_return"] = self.b.count(Counter.DEFERS)

        a = threading.Thread(target=thread_a, name="A")
        a.start()
        a.join()
        # Parked, its defers ran before coro_cancel_async returned; but a
        # cancel that comes while its on_suspend callback still runs (the
        # token is sent from there) is acted on by the worker as soon as the
        # callback returns: so wait for the defer rather than assume it.
        wait_for(lambda: self.b.count(Counter.DEFERS) == 1)
        figures["defers"] = self.b.count(Counter.DEFERS)
        figures["live_cancelled"] = cf.live_frames() - base
        how = ("before coro_cancel_async returned" if figures["defers_at_return"] == 1
               else "on the worker, once its on_suspend callback returned")
        self.say(f"thread A cancelled it with coro_cancel_async: its defer ran {how}")
        self.say(f"the frame is still there (live frames {figures['live_cancelled']}): "
                 "Python's token keeps it alive")

        def thread_b() -> None:
            cf.resume(token)  # only drops the suspend reference: 0
            figures["resume"] = "returned 0"
            try:
                cf.resume(token)
            except CoroError as e:
                figures["second_resume"] = e.name

        b = threading.Thread(target=thread_b, name="B")
        b.start()
        b.join()
        figures["live_resumed"] = cf.live_frames() - base
        figures.update(self.b.counts())
        self.say(f"thread B resumed the token late: coro_resume {figures['resume']}, it only dropped "
                 f"the reference; both references gone, frame freed (live frames {figures['live_resumed']})")
        self.say(f"thread B resumed the same token again: CoroError {figures.get('second_resume')}, "
                 "no use-after-free")
        self.expect(figures["live_suspended"] == 1 and figures["live_cancelled"] == 1,
                    "the token keeps the cancelled frame alive")
        self.expect(figures["live_resumed"] == 0, "the late resume frees the frame")
        self.expect(figures["defers"] == 1 and figures["continued"] == 0,
                    "one defer, and the body never goes on")
        self.expect(figures.get("second_resume") == "CORO_ESTALE", "a second resume is CORO_ESTALE")
        return figures

    # ------------------------------------------------------------------
    def stale(self) -> Dict[str, object]:
        """Handles used twice, or zeroed, raise CoroError instead of touching freed memory."""
        figures: Dict[str, object] = {}
        base = cf.live_frames()
        p = self.rt.spawn(self.b.compute, ComputeEnv(10), self.b.drop)
        figures["first_await"] = cf.await_(p)
        for what, call in (("second_await", lambda: cf.await_(p)),
                           ("cancel_after_await", lambda: cf.cancel_async(p)),
                           ("zeroed_token", lambda: cf.resume(coro_token(0)))):
            try:
                call()
                figures[what] = "no error"
            except CoroError as e:
                figures[what] = e.name
                figures[what + "_text"] = str(e)
        self.say(f"awaited a promise: {figures['first_await']}; awaited it again: "
                 f"CoroError({figures.get('second_await_text')})")
        self.say(f"cancelled it after that: {figures['cancel_after_await']}; "
                 f"resumed a zeroed token: {figures['zeroed_token']}")
        self.expect(figures["second_await"] == "CORO_ESTALE", "a second await is CORO_ESTALE")
        self.expect(figures["cancel_after_await"] == "CORO_ESTALE", "a cancel after the await is CORO_ESTALE")
        self.expect(figures["zeroed_token"] == "CORO_EINVAL", "a zeroed token is CORO_EINVAL")
        return self.settle(base, figures)

    # ------------------------------------------------------------------
    def python_callbacks(self, n: int = 64) -> Dict[str, object]:
        """Python functions as callbacks that never suspend: bodies, defers,
        env_drops and on_suspend callbacks. Each runs on a worker (a body on
        the coroutine's stack) holding the GIL, which ctypes takes with
        PyGILState_Ensure, from its start to its return."""
        calls = {"defers": 0, "drops": 0}
        ids: Dict[int, int] = {}
        base = cf.live_frames()

        @cf.coro_defer_fn
        def py_defer(arg: int | None) -> None:
            calls["defers"] += 1  # under the GIL: ctypes takes it for the callback

        @cf.coro_env_drop
        def py_drop(env: int | None) -> None:
            calls["drops"] += 1

        @cf.coro_entry
        def py_body(env: int | None) -> int:
            n_ = ComputeEnv.from_address(env).n  # the frame's own copy
            ids[n_] = cf.self_id()
            cf.lib.coro_defer(py_defer, None)  # a foreign call that does not suspend
            return sum(range(n_ + 1))

        promises = [self.rt.spawn(py_body, ComputeEnv(i), py_drop) for i in range(n)]
        results = [cf.await_(p) for p in promises]
        figures: Dict[str, object] = {
            "results_ok": results == [i * (i + 1) // 2 for i in range(n)],
            "ids_ok": all(ids.get(i) == p.id for i, p in enumerate(promises)),
            **calls,
        }
        self.say(f"{n} coroutines whose bodies are Python functions that never suspend: results "
                 f"{'all right' if figures['results_ok'] else 'WRONG'}, coro_self_id() in each "
                 f"{'was' if figures['ids_ok'] else 'was NOT'} its promise's id; Python defers run "
                 f"{calls['defers']}, Python env_drops {calls['drops']}")

        # C bodies that suspend with a Python on_suspend callback: it runs on
        # the worker after the switch and hands the token over.
        tokens: "queue.Queue[coro_token]" = queue.Queue()

        @cf.coro_on_suspend
        def py_on_suspend(token: coro_token, arg: int | None) -> None:
            tokens.put(coro_token(token.id))

        parked = [self.rt.spawn(self.b.park_with, ParkWithEnv(py_on_suspend, None, i), self.b.drop)
                  for i in range(8)]
        for _ in parked:
            cf.resume(tokens.get(timeout=5))
        figures["parked_results"] = sorted(cf.await_(p) for p in parked)
        self.say(f"8 C bodies suspended with a Python on_suspend callback, which handed their tokens "
                 f"over; resumed and awaited, they returned {figures['parked_results']}")
        self.expect(figures["results_ok"] and figures["ids_ok"] and calls["defers"] == n
                    and calls["drops"] == n, "Python bodies, defers and drops that do not suspend work")
        self.expect(figures["parked_results"] == list(range(8)), "Python on_suspend callbacks work")
        return self.settle(base, figures)

    # ------------------------------------------------------------------
    def race(self, rounds: int = 2000, batch: int = 500, seed: int = 1) -> Dict[str, object]:
        """The resume-vs-cancel race: for each parked coroutine, thread A
        calls coro_resume(token) while thread B calls coro_cancel_async(promise)."""
        self.b.reset()
        base = cf.live_frames()
        rng = random.Random(seed)
        done = 0
        bad_rc = 0
        t0 = time.monotonic()
        while done < rounds:
            k = min(batch, rounds - done)
            promises = [self.spawn_parked() for _ in range(k)]
            tokens: Dict[int, coro_token] = {}
            for _ in range(k):
                item = self.tokens.recv(cf.now() + 5_000_000_000)
                tokens[item.promise] = coro_token(item.token.id)
            pairs = [(p, tokens[p.id]) for p in promises]
            line = threading.Barrier(2, timeout=10)  # a side that died breaks it, not hangs
            jitter = [rng.randrange(0, 2000) for _ in range(k)]
            rcs = [[0] * k, [0] * k]

            def side(which: int) -> None:
                for i, (p, t) in enumerate(pairs):
                    line.wait()  # lock step: both act on coroutine i together
                    for _ in range(jitter[i] if which else 0):
                        pass  # sometimes the worker runs the resumed body first
                    try:
                        cf.resume(t) if which == 0 else cf.cancel_async(p)
                    except CoroError as e:
                        rcs[which][i] = e.code

            run_threads(2, side)
            bad_rc += sum(1 for r in rcs[0] + rcs[1] if r != 0)
            done += k
        freed = wait_for(lambda: cf.live_frames() == base)
        secs = time.monotonic() - t0
        figures: Dict[str, object] = dict(self.b.counts())
        figures.update(rounds=done, bad_rc=bad_rc, live_after=cf.live_frames() - base, freed=freed,
                       seconds=secs)
        self.say(f"the resume-vs-cancel race, {done} times across 2 Python threads:")
        self.say(f"  resume won  {figures['continued']:6}  (the body went on, then finished)")
        self.say(f"  cancel won  {done - figures['continued']:6}  (the body never ran again)")
        self.say(f"  every call returned 0: {'yes' if bad_rc == 0 else 'NO'}; defers ran "
                 f"{figures['defers']}, env_drops {figures['drops']}: "
                 f"{'exactly once each' if figures['defers'] == figures['drops'] == done else 'WRONG'}; "
                 f"live frames afterwards: {figures['live_after']}; {secs:.2f} s")
        self.expect(bad_rc == 0 and figures["defers"] == done and figures["drops"] == done
                    and figures["lost"] == 0 and freed, "every race ends with one defer, one drop, no error")
        return figures

    # ------------------------------------------------------------------
    def shutdown_with_token(self) -> Dict[str, object]:
        """A token still held by Python when the runtime shuts down."""
        p = self.spawn_parked()
        token = self.take_token(p)
        figures: Dict[str, object] = {"live_before": cf.live_frames()}
        self.rt.shutdown()
        figures["live_after"] = cf.live_frames()
        try:
            cf.resume(token)
            figures["resume_after"] = "no error"
        except CoroError as e:
            figures["resume_after"] = e.name
        try:
            self.rt.spawn(self.b.compute, ComputeEnv(1), self.b.drop)
            figures["spawn_after"] = "no error"
        except CoroError as e:
            figures["spawn_after"] = e.name
        self.say(f"shut the runtime down with a token still held by Python: live frames "
                 f"{figures['live_before']} -> {figures['live_after']}; the token then: "
                 f"{figures['resume_after']}; a spawn: {figures['spawn_after']}")
        self.expect(figures["live_after"] == 0, "shutdown frees every frame")
        self.expect(figures["resume_after"] == "CORO_ESTALE", "a token of a freed frame is CORO_ESTALE")
        self.expect(figures["spawn_after"] == "CORO_ESHUTDOWN", "a spawn after shutdown is CORO_ESHUTDOWN")
        return figures


def main(argv: List[str]) -> int:
    races = int(argv[1]) if len(argv) > 1 else 2000
    bodies = Bodies()
    rt = cf.Runtime(workers=2)
    print(f"Python {sys.version.split()[0]}: runtime up (2 workers); "
          f"C bodies from {os.path.basename(bodies.dll._name)}")
    ex = Example(bodies, rt)
    steps = [ex.await_from_threads, ex.cancel_from_threads, ex.two_refs, ex.stale,
             ex.python_callbacks, lambda: ex.race(races), ex.shutdown_with_token]
    for step in steps:
        print()
        step()
    ex.tokens.free()
    print()
    if ex.failures:
        print(f"example.py: {len(ex.failures)} unexpected: {'; '.join(ex.failures)}")
        return 1
    print("example.py: everything happened as described")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
