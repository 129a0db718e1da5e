"""What cannot work: a Python function as a coroutine body that suspends.

Two Python bodies suspend (coro_suspend called through ctypes) on a
one-worker runtime; the first is resumed and calls a few Python functions,
then the second is resumed. Both bodies ran on the worker's one
PyThreadState, whose frame stack is a LIFO: the first body's new calls are
pushed over the second body's frames, and the second body, resumed, runs
on overwritten frames. With CPython 3.11 it returns a wrong result (435
instead of 440), later rounds raise nonsense errors, and the process dies
of SIGSEGV. test_example.py checks that it does not get through;
docs/PYTHON.md says why. Do not do this in a program.

usage: suspend_in_python.py [rounds]   (default 3; the last line says
"all right" only if every body returned 440 and the process survived)
"""

import ctypes
import queue
import sys

import coframe as cf

cf.lib.coro_suspend.argtypes = [cf.coro_on_suspend, ctypes.c_void_p]
cf.lib.coro_suspend.restype = ctypes.c_int
tokens: "queue.Queue[cf.coro_token]" = queue.Queue()


@cf.coro_on_suspend
def on_suspend(token: cf.coro_token, arg: object) -> None:
    tokens.put(cf.coro_token(token.id))  # runs on the worker, does not suspend: fine


def work(k: int) -> int:
    return k if k < 2 else work(k - 1) + 1


def deep(n: int) -> int:
    if n == 0:
        cf.lib.coro_suspend(on_suspend, None)  # the Python frames below stay on this stack
        return sum(work(k) for k in range(30))  # pushes frames over the other body's
    return deep(n - 1) + 1


@cf.coro_entry
def body(env: object) -> int:
    return deep(5)


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results = []
    with cf.Runtime(workers=1) as rt:
        for _ in range(rounds):
            a = rt.spawn(body)
            ta = tokens.get(timeout=5)
            b = rt.spawn(body)
            tb = tokens.get(timeout=5)
            cf.resume(ta)
            results.append(cf.await_(a))
            print("first body returned", results[-1], flush=True)
            cf.resume(tb)
            results.append(cf.await_(b))
            print("second body returned", results[-1], flush=True)
    print("all right" if results == [440] * 2 * rounds else f"survived, with wrong results: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
