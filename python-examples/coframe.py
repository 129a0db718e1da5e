"""coframe from Python: a small ctypes binding of libcoframe (include/coframe.h).

It covers what a Python program that drives coroutines needs: a runtime,
spawning C bodies, awaiting, cancelling, resuming tokens, channels, and the
live-frame count. Every call that returns a status raises CoroError for a
negative one, with coro_strerror's text. docs/PYTHON.md explains the shape
and what cannot work (a Python body that suspends).

ctypes releases the GIL around every foreign call, so a Python thread
blocked in coro_await or coro_chan_recv lets the other Python threads run.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Optional, Union

# Status codes, as include/coframe.h defines them (test_example.py checks
# them against the header).
CORO_OK = 0
CORO_EINVAL = -1
CORO_ESTALE = -2
CORO_ESTATE = -3
CORO_ECANCELED = -4
CORO_ETIMEDOUT = -5
CORO_ENOMEM = -6
CORO_ELOCKHELD = -7
CORO_ESHUTDOWN = -8
CORO_EIO = -9
CORO_EBUSY = -10
CORO_ECLOSED = -11
CORO_PENDING = 1

CORO_SPAWN_CANCEL_RETURNS = 1
CORO_SPAWN_MIGRATABLE = 2

CODE_NAMES = {
    value: name
    for name, value in globals().items()
    if name.startswith("CORO_E") or name in ("CORO_OK", "CORO_PENDING")
}


class coro_config(Structure):
    _fields_ = [("struct_size", c_uint32), ("workers", c_uint32), ("stack_size", c_size_t)]


class coro_promise(Structure):
    """The async reference: consumed by coro_await, coro_cancel_async or coro_detach."""

    _fields_ = [("id", c_uint64)]


class coro_token(Structure):
    """The suspend reference: consumed by coro_resume or coro_cancel_suspend."""

    _fields_ = [("id", c_uint64)]


class coro_runtime(Structure):
    """Opaque; only ever handled through a pointer."""


class coro_chan(Structure):
    """Opaque; only ever handled through a pointer."""


coro_entry = CFUNCTYPE(c_void_p, c_void_p)
coro_env_drop = CFUNCTYPE(None, c_void_p)
coro_on_suspend = CFUNCTYPE(None, coro_token, c_void_p)
coro_defer_fn = CFUNCTYPE(None, c_void_p)


class CoroError(Exception):
    """A negative status from libcoframe: .code, .name (CORO_E...), .call."""

    def __init__(self, code: int, call: str, text: str) -> None:
        self.code = code
        self.name = CODE_NAMES.get(code, str(code))
        self.call = call
        super().__init__(f"{call}: {text} ({self.name})")


# name: (restype, argtypes). A restype of c_int is a status: negative raises.
_PROTOTYPES = {
    "coro_runtime_new": (c_int, [POINTER(coro_config), POINTER(POINTER(coro_runtime))]),
    "coro_runtime_shutdown": (c_int, [POINTER(coro_runtime)]),
    "coro_spawn": (
        c_int,
        [POINTER(coro_runtime), coro_entry, c_void_p, c_size_t, coro_env_drop, c_uint32,
         POINTER(coro_promise)],
    ),
    "coro_await": (c_int, [coro_promise, POINTER(c_void_p)]),
    "coro_cancel_async": (c_int, [coro_promise]),
    "coro_detach": (c_int, [coro_promise]),
    "coro_resume": (c_int, [coro_token]),
    "coro_cancel_suspend": (c_int, [coro_token]),
    "coro_defer": (c_int, [coro_defer_fn, c_void_p]),
    "coro_self_id": (c_uint64, []),
    "coro_now": (c_int64, []),
    "coro_live_frames": (c_uint64, []),
    "coro_strerror": (c_char_p, [c_int]),
    "coro_chan_new": (c_int, [c_size_t, c_size_t, POINTER(POINTER(coro_chan))]),
    "coro_chan_free": (c_int, [POINTER(coro_chan)]),
    "coro_chan_recv": (c_int, [POINTER(coro_chan), c_void_p, c_int64]),
    "coro_chan_close": (c_int, [POINTER(coro_chan)]),
}


def _check(rc: int, func, args):
    if rc < 0:
        raise CoroError(rc, func.__name__, strerror(rc))
    return rc


def load(path: Optional[str] = None) -> ctypes.CDLL:
    """Opens libcoframe and gives every function used here its prototype.

    path: a file name; else $COFRAME_LIB; else the soname libcoframe.so.0,
    which the dynamic loader finds as it would for a C program (an installed
    library, or LD_LIBRARY_PATH).
    """
    lib = ctypes.CDLL(path or os.environ.get("COFRAME_LIB") or "libcoframe.so.0")
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
        if restype is c_int:
            fn.errcheck = _check
    return lib


lib = load()


def strerror(code: int) -> str:
    return lib.coro_strerror(code).decode()


def live_frames() -> int:
    """Frames allocated and not yet freed, in every runtime of the process."""
    return lib.coro_live_frames()


def now() -> int:
    """coro_now(): CLOCK_MONOTONIC in nanoseconds, the clock of every deadline."""
    return lib.coro_now()


def self_id() -> int:
    return lib.coro_self_id()


Env = Optional[Union[Structure, ctypes.Array]]


class Runtime:
    """A runtime: its workers start here; shutdown() (or leaving a with block)
    cancels what is left, joins them and frees every frame."""

    def __init__(self, workers: int = 0, stack_size: int = 0) -> None:
        cfg = coro_config(ctypes.sizeof(coro_config), workers, stack_size)
        self._rt = POINTER(coro_runtime)()
        lib.coro_runtime_new(ctypes.byref(cfg), ctypes.byref(self._rt))

    def spawn(self, entry: coro_entry, env: Env = None, drop: Optional[coro_env_drop] = None,
              flags: int = 0) -> coro_promise:
        """coro_spawn: env's bytes are copied into the frame. entry and drop
        must stay alive (referenced) until the coroutine ended."""
        p = coro_promise()
        addr = ctypes.addressof(env) if env is not None else None
        size = ctypes.sizeof(env) if env is not None else 0
        lib.coro_spawn(self._rt, entry, addr, size, drop or coro_env_drop(), flags,
                       ctypes.byref(p))
        return p

    def shutdown(self) -> None:
        lib.coro_runtime_shutdown(self._rt)

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.shutdown()
        except CoroError as e:
            if e.code != CORO_ESHUTDOWN:  # shut down in the block already
                raise


def await_(p: coro_promise) -> int:
    """coro_await: blocks this thread (not the others: ctypes drops the GIL)
    until the coroutine ends; its result (a void *) as an int, 0 for NULL."""
    result = c_void_p()
    lib.coro_await(p, ctypes.byref(result))
    return result.value or 0


def cancel_async(p: coro_promise) -> None:
    lib.coro_cancel_async(p)


def detach(p: coro_promise) -> None:
    lib.coro_detach(p)


def resume(t: coro_token) -> None:
    lib.coro_resume(t)


def cancel_suspend(t: coro_token) -> None:
    lib.coro_cancel_suspend(t)


class Channel:
    """coro_chan of ctypes items (a Structure type); recv blocks a plain thread."""

    def __init__(self, item_type, capacity: int) -> None:
        self.item_type = item_type
        self.ptr = POINTER(coro_chan)()
        lib.coro_chan_new(ctypes.sizeof(item_type), capacity, ctypes.byref(self.ptr))

    def recv(self, deadline_ns: int = -1):
        item = self.item_type()
        lib.coro_chan_recv(self.ptr, ctypes.byref(item), deadline_ns)
        return item

    def close(self) -> None:
        lib.coro_chan_close(self.ptr)

    def free(self) -> None:
        lib.coro_chan_free(self.ptr)
