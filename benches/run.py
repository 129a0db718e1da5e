#!/usr/bin/env python3
"""Runs the side-by-side benchmarks of issue 4 and writes docs/bench/.

    python3 benches/run.py [--full] [--only SUBSTR] [--no-callgrind] [--out DIR]

`make bench` builds everything first (benches/Makefile) and then runs
this. Quick mode (the default) finishes in a few minutes on a 2-core VM;
--full runs longer loops, more repetitions, 1,000,000 coroutines for the
memory and scale benches and a longer throughput window.

For every operation and every implementation it records
  - wall time: the bench binary runs R+1 repetitions of N iterations
    (the first is a warm-up) and reports ns/op per repetition; we keep
    the median;
  - user-space instructions per op: the same binary under
    `valgrind --tool=callgrind` with one repetition at N1 and at N2
    iterations; (Ir(N2) - Ir(N1)) / (ops(N2) - ops(N1)) cancels the
    setup (runtime start, thread creation, teardown). Ir counts every
    thread of the process, user space only.
It writes docs/bench/results.json (raw), docs/bench/RESULTS.md (tables,
targets, machine, versions), docs/bench/results.svg (plot) and, for each
coframe bench, docs/bench/profiles/<name>.txt (callgrind_annotate
--inclusive=no of its N2 run: where the instructions go).

Benchmarks report; they never pass or fail on a number. The exit status
is non-zero only if a bench crashed, timed out or printed no result.
Standard library only.
"""

import argparse
import concurrent.futures
import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.path.join(ROOT, "target", "bench")
COMPARE = os.path.join(ROOT, "benches", "compare", "target", "release", "compare")
CBENCH = os.path.join(BIN, "cbench")
LOADGEN = os.path.join(BIN, "loadgen")
FIBER = os.path.join(BIN, "fiber")
UVBENCH = os.path.join(BIN, "uvbench")
TASKBENCH = os.path.join(BIN, "taskbench")
IOBENCH = os.path.join(BIN, "iobench")
CG_DIR = os.path.join(BIN, "callgrind")
DOCS = os.path.join(ROOT, "docs", "bench")

MODES = {
    "quick": dict(reps=5, iter_scale=1, cg_scale=1, scale_big=100_000, mem_count=1_000_000,
                  echo_secs=2.0, echo_runs=5, timers=100_000, processes=5,
                  scale_processes=3),
    "full": dict(reps=11, iter_scale=3, cg_scale=2, scale_big=1_000_000, mem_count=1_000_000,
                 echo_secs=5.0, echo_runs=7, timers=100_000, processes=7,
                 scale_processes=7),
}

FAMILY_SHORT = {"coframe": "coframe", "coframe_c": "coframe (C)", "coframe_thread": "coframe (thread)",
                "corosensei": "corosensei", "may": "may", "boost": "Boost", "tokio": "tokio",
                "libuv": "libuv", "coframe_cpp": "coframe (C++)", "asio": "Asio",
                "handwritten": "hand-written", "coframe_zig": "coframe.Io",
                "zig_threaded": "Io.Threaded"}
FAMILY_LEGEND = [("coframe", "coframe, Rust through the C ABI"), ("coframe_c", "coframe from C (libcoframe.so)"),
                 ("coframe_thread", "coframe driven by a plain thread"), ("corosensei", "corosensei 0.3.4"),
                 ("may", "may"), ("boost", "Boost.Context fiber"), ("tokio", "tokio"),
                 ("libuv", "libuv"), ("machine", "the machine alone (no library)"),
                 ("coframe_cpp", "coframe from C++20 (task<T>, coframe.hpp)"),
                 ("asio", "Boost.Asio C++20 coroutines"),
                 ("handwritten", "hand-written C++20 task, FIFO scheduler"),
                 ("coframe_zig", "coframe.Io (Zig std.Io on coframe)"),
                 ("zig_threaded", "Zig std.Io.Threaded")]

# Issue 4's reference figures for the peers (measured on a VM like ours).
REF = {
    "yield.corosensei": "37 instr",
    "yield.boost": "73 instr",
    "yield.may": "327 instr",
    "spawn.tokio": "~2,400 instr, ~230 ns",
    "xthread.tokio": "~1,560 instr, 260-380 ns",
    "echo.tokio": "~4,900 instr",
    "mem.corosensei": "ENOMEM at 32,751",
}


def impls(m):
    """Every timed bench: key -> label, command, timing iters, callgrind
    (N1, N2), operations per iteration, group (for the plot)."""
    s, c = m["iter_scale"], m["cg_scale"]
    big = m["scale_big"]

    def I(label, cmd, iters, cg, ops=1, group=None, family="coframe", short=None):
        return dict(label=label, short=short or FAMILY_SHORT.get(family, family), cmd=cmd, iters=iters * s,
                    cg=(cg[0] * c, cg[1] * c) if cg else None,
                    ops=ops, group=group, family=family)

    return {
        # a. yield round trip: one op = one coro_yield returning (the
        # coroutine switches out, the scheduler picks the other one and
        # switches in) = one resume + one suspend of a raw coroutine.
        "yield.coframe": I("coframe (Rust, C ABI)", [COMPARE, "yield_coframe"], 1_000_000,
                           (50_000, 100_000), 2, "yield"),
        "yield.coframe_c": I("coframe (from C, .so)", [CBENCH, "yield"], 1_000_000,
                             (50_000, 100_000), 2, "yield", "coframe_c"),
        "yield.corosensei": I("corosensei 0.3.4", [COMPARE, "yield_corosensei"], 10_000_000,
                              (500_000, 1_000_000), 1, "yield", "corosensei"),
        "yield.corosensei_fn": I("corosensei 0.3.4, suspend one call deep",
                                 [COMPARE, "yield_corosensei_fn"], 10_000_000,
                                 (500_000, 1_000_000), 1, "yield", "corosensei",
                                 "corosensei (call)"),
        "yield.may": I("may yield_now", [COMPARE, "yield_may"], 500_000,
                       (50_000, 100_000), 2, "yield", "may"),
        "yield.boost": I("Boost.Context fiber", [FIBER, "yield"], 10_000_000,
                         (500_000, 1_000_000), 1, "yield", "boost"),
        # b. spawn + run + finish + await an empty coroutine, one worker.
        "spawn.coframe": I("coframe, awaited in a coroutine", [COMPARE, "spawn_coframe_coro"],
                           200_000, (20_000, 40_000), 1, "spawn"),
        "spawn.coframe_c": I("coframe from C, in a coroutine", [CBENCH, "spawn"], 200_000,
                             (20_000, 40_000), 1, "spawn", "coframe_c"),
        "spawn.coframe_thread": I("coframe, awaited from a plain thread",
                                  [COMPARE, "spawn_coframe_thread"], 20_000, (2_000, 4_000), 1,
                                  "spawn", "coframe_thread", "coframe (thread)"),
        "spawn.tokio": I("tokio current_thread spawn().await", [COMPARE, "spawn_tokio"], 200_000,
                         (20_000, 40_000), 1, "spawn", "tokio"),
        "spawn.corosensei": I("corosensei create+run+drop", [COMPARE, "spawn_corosensei"],
                              2_000_000, (100_000, 200_000), 1, "spawn", "corosensei"),
        "spawn.boost": I("Boost.Context fiber create+run", [FIBER, "spawn"], 2_000_000,
                         (100_000, 200_000), 1, "spawn", "boost"),
        # c. cross-thread wake-up: one op = one round trip (two wakes).
        "xthread.coframe": I("coframe, 2 workers ping-pong", [COMPARE, "pingpong_coframe"],
                             20_000, (2_000, 4_000), 1, "xthread"),
        "xthread.coframe_migratable": I("coframe, 2 workers ping-pong, migratable",
                                        [COMPARE, "pingpong_coframe_migratable"], 20_000,
                                        (2_000, 4_000), 1, "xthread", "coframe",
                                        "coframe (migratable)"),
        "xthread.coframe_foreign": I("coframe, foreign thread resumes",
                                     [COMPARE, "foreign_coframe"], 20_000, (2_000, 4_000), 1,
                                     "xthread", "coframe_thread", "coframe (foreign)"),
        "xthread.coframe_foreign_looks": I("coframe, foreign thread resumes, looks before sleeping",
                                           [COMPARE, "foreign_coframe_looks"], 20_000, (2_000, 4_000), 1,
                                           "xthread", "coframe_thread", "coframe (foreign, looks)"),
        "xthread.tokio": I("tokio 2 workers Notify ping-pong", [COMPARE, "pingpong_tokio"],
                           200_000, (10_000, 20_000), 1, "xthread", "tokio"),
        # The like-for-like peers of the pinned pair and the foreign thread:
        # each hop wakes a thread that sleeps (tens of µs on the test VM),
        # so fewer iterations.
        "xthread.tokio_pinned": I("tokio, 2 current-thread runtimes on 2 threads, Notify ping-pong",
                                  [COMPARE, "pingpong_tokio_pinned"], 2_000, (200, 400), 1,
                                  "xthread", "tokio", "tokio (pinned)"),
        "xthread.tokio_foreign": I("tokio, foreign thread notifies a task",
                                   [COMPARE, "foreign_tokio"], 2_000, (200, 400), 1,
                                   "xthread", "tokio", "tokio (foreign)"),
        "xthread.tokio_foreign_looks": I("tokio, foreign thread notifies a task, looks before sleeping",
                                         [COMPARE, "foreign_tokio_looks"], 2_000, (200, 400), 1,
                                         "xthread", "tokio", "tokio (foreign, looks)"),
        # The machine's own floor, no library: two threads pass one word
        # back and forth, spinning. Run alternated with the rows above, so
        # each run shows how fast the VM moved a cache line between its
        # two vCPUs at the time. Not under callgrind (it serialises threads).
        "xthread.floor": I("two plain threads pass one word back and forth, spinning (no library)",
                           [COMPARE, "handoff_spin"], 500_000, None, 1, "xthread", "machine",
                           "floor (threads)"),
        # e. loopback echo, one connection, 64 bytes: one op = one round trip.
        "echo.coframe_c": I("coframe from C, 2 workers", [CBENCH, "echo_rtt", "--workers", "2"],
                            10_000, (1_000, 2_000), 1, "echo", "coframe_c"),
        "echo.tokio": I("tokio, 2 workers", [COMPARE, "echo_rtt_tokio", "--workers", "2"],
                        10_000, (1_000, 2_000), 1, "echo", "tokio"),
        "echo.libuv": I("libuv, client and server on one loop thread", [UVBENCH, "echo_rtt"],
                        10_000, (1_000, 2_000), 1, "echo", "libuv"),
        # h. contended mutex: two contenders, one op = one acquisition,
        # handed over by the other's unlock (the share is in the output).
        # i. channel ping-pong: one op = one round trip over two bounded
        # channels. One thread first (the primitive's cost), then a
        # runtime of two (coframe's coroutines migratable, like tokio's).
        **{f"{g}{sfx}.{lib}": I(f"{label}, {where}", [COMPARE, f"{g}_{lib}", "--workers", w], iters,
                                 (10_000, 20_000), ops, g,
                                 "coframe" if lib == "coframe" else lib,
                                 f"{FAMILY_SHORT[lib]}{'' if w == '1' else ' (2w)'}")
           for g, ops, iters in (("mutex", 2, 100_000), ("chan", 1, 100_000))
           for sfx, w in (("", "1"), ("2", "2"))
           for lib, label in (("coframe", {"mutex": "coro_mutex", "chan": "coro_chan (capacity 1)"}[g]),
                              ("tokio", {"mutex": "tokio::sync::Mutex", "chan": "tokio mpsc (capacity 1)"}[g]),
                              ("may", {"mutex": "may::sync::Mutex", "chan": "may mpsc (unbounded)"}[g]))
           for where in ("one thread" if w == "1" else
                         ("2 workers, migratable" if lib == "coframe" else "2 workers"),)},
        # j. C++20 tasks' yield: two tasks on one thread alternate; one op =
        # one `co_await yield()` that returns (the task goes to the back of
        # the queue, the other one runs), as in a.
        "task_yield.coframe": I("coframe task<T>, co_await coframe::yield(), one worker",
                                [TASKBENCH, "yield_coframe"], 1_000_000, (50_000, 100_000), 2,
                                "task_yield", "coframe_cpp"),
        "task_yield.asio": I("Boost.Asio awaitable, co_await post(ex, use_awaitable), one thread",
                             [TASKBENCH, "yield_asio"], 500_000, (20_000, 40_000), 2,
                             "task_yield", "asio"),
        "task_yield.handwritten": I("hand-written task, FIFO scheduler, one thread",
                                    [TASKBENCH, "yield_hand"], 10_000_000, (500_000, 1_000_000), 2,
                                    "task_yield", "handwritten"),
        # k. C++20 tasks' spawn + await of an empty task, from a task.
        "task_spawn.coframe": I("coframe, co_await coframe::spawn(rt, empty) in a task, one worker",
                                [TASKBENCH, "spawn_coframe"], 500_000, (20_000, 40_000), 1,
                                "task_spawn", "coframe_cpp"),
        "task_spawn.asio": I("Boost.Asio, co_await co_spawn(ex, empty(), use_awaitable), one thread",
                             [TASKBENCH, "spawn_asio"], 200_000, (10_000, 20_000), 1,
                             "task_spawn", "asio"),
        "task_spawn.handwritten": I("hand-written task: create, queue, await its end, free",
                                    [TASKBENCH, "spawn_hand"], 5_000_000, (100_000, 200_000), 1,
                                    "task_spawn", "handwritten"),
        # l. the same std.Io code (benches/zig/iobench.zig, Zig 0.17.1) on
        # coframe.Io and on std.Io.Threaded, run inside a task: spawn
        # (io.concurrent of an empty function + await), ping-pong (two tasks,
        # two Io.Queue(u32) of capacity 1: futex waits and wakes) and the
        # 64-byte loopback echo round trip. std.Io.Uring does not compile in
        # 0.17.1 (docs/ZIG-IO.md), so it has no row.
        **{f"zigio.{op}_{impl}{sfx}": I(label, [IOBENCH, f"{op}_{impl}"] + extra, iters, cg, 1, "zigio",
                                        "coframe_zig" if impl == "coframe" else "zig_threaded", short)
           for op, impl, sfx, extra, iters, cg, label, short in (
               ("spawn", "coframe", "", ["--workers", "2"], 20_000, (2_000, 4_000),
                "coframe.Io, 2 workers: io.concurrent(empty) + await, in a task", "coframe.Io spawn"),
               ("spawn", "coframe", "1", ["--workers", "1"], 200_000, (20_000, 40_000),
                "coframe.Io, 1 worker: io.concurrent(empty) + await, in a task", "coframe.Io spawn (1w)"),
               ("spawn", "threaded", "", [], 20_000, (2_000, 4_000),
                "std.Io.Threaded: io.concurrent(empty) + await, in a task", "Threaded spawn"),
               ("pingpong", "coframe", "", ["--workers", "2"], 50_000, (5_000, 10_000),
                "coframe.Io, 2 workers: two tasks, two Io.Queue(u32) of capacity 1", "coframe.Io ping-pong"),
               ("pingpong", "threaded", "", [], 20_000, (2_000, 4_000),
                "std.Io.Threaded: two tasks, two Io.Queue(u32) of capacity 1", "Threaded ping-pong"),
               ("echo", "coframe", "", ["--workers", "2"], 10_000, (1_000, 2_000),
                "coframe.Io, 2 workers: std.Io.net client and server tasks", "coframe.Io echo"),
               ("echo", "threaded", "", [], 10_000, (1_000, 2_000),
                "std.Io.Threaded: std.Io.net client and server tasks", "Threaded echo"))},
        # f. scale: the same loops with K parked coroutines on the runtime.
        # Timed in one process (--live 1000, then --live2 big, back to back);
        # counted by callgrind in one process per K.
        "scale.yield.1k": I("coframe yield, 1,000 live", [COMPARE, "yield_coframe", "--live", "1000"],
                            1_000_000, (50_000, 100_000), 2),
        "scale.yield.big": I(f"coframe yield, {big:,} live",
                             [COMPARE, "yield_coframe", "--live", str(big)],
                             1_000_000, (50_000, 100_000), 2),
        "scale.spawn.1k": I("coframe spawn+await, 1,000 live",
                            [COMPARE, "spawn_coframe_coro", "--live", "1000"],
                            200_000, (20_000, 40_000), 1),
        "scale.spawn.big": I(f"coframe spawn+await, {big:,} live",
                             [COMPARE, "spawn_coframe_coro", "--live", str(big)],
                             200_000, (20_000, 40_000), 1),
    }


# ---------------------------------------------------------------- running

failures = []


def log(msg):
    print(msg, flush=True)


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return None


def run_json(name, cmd, timeout):
    t = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        failures.append(f"{name}: timed out after {timeout} s: {' '.join(cmd)}")
        log(f"  {name}: TIMEOUT")
        return None
    out = last_json(r.stdout)
    if r.returncode != 0 or out is None:
        failures.append(f"{name}: exit {r.returncode}: {' '.join(cmd)}\n{r.stderr[-2000:]}")
        log(f"  {name}: FAILED (exit {r.returncode})")
        return None
    out["wall_s"] = round(time.time() - t, 3)
    return out


# How long the runner sits idle, before and after the benches, to see
# whether other processes use the CPUs (the load average cannot tell: it
# counts this run's own build and benches).
QUIET_WINDOW_S = 2.0


def cpu_busy(secs=QUIET_WINDOW_S):
    """The share of all CPUs' time spent busy over `secs` while this
    runner sleeps: what other processes use (/proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v[:8]), idle
    try:
        t0, i0 = sample()
        time.sleep(secs)
        t1, i1 = sample()
    except OSError:
        return None
    return 1 - (i1 - i0) / (t1 - t0) if t1 > t0 else None


def timing(key, spec, reps, big=None):
    cmd = spec["cmd"] + ["--iters", str(spec["iters"]), "--reps", str(reps)]
    if big:
        cmd += ["--live2", str(big)]
    out = run_json(key, cmd, 600)
    if out:
        log(f"  {key:28s} {out['ns_per_op']:12.1f} ns/op   ({out['wall_s']:.1f} s)")
    return out


# Benches whose wall time depends on where the kernel and the hypervisor
# put the threads: stable within a process, but a process may land in a
# slow or a fast placement (the pinned ping-pong took about 180, 410 or
# 2,100 ns per round trip from one process to the next on the test VM).
# Each runs in several processes, alternated with its peers, and the
# process whose median is the median of all is reported.
MULTI_PROCESS = ("xthread.", "mutex2.", "chan2.")
# The ping-pongs whose hops are traced (`compare NAME_threads`), with their labels.
HOP_THREADS = {
    "pingpong_coframe": "coframe pinned",
    "pingpong_coframe_migratable": "coframe migratable",
    "pingpong_tokio": "tokio",
}


def timing_processes(keys, specs, reps, processes):
    """Alternated runs of `keys`, `processes` processes each: key -> result."""
    runs = {k: [] for k in keys}
    for _ in range(processes):
        for k in keys:
            out = timing(k, specs[k], reps)
            if out:
                runs[k].append(out)
    res = {}
    for k, outs in runs.items():
        if not outs:
            res[k] = None
            continue
        mid = dict(sorted(outs, key=lambda o: o["ns_per_op"])[len(outs) // 2])
        mid["process_medians"] = [o["ns_per_op"] for o in outs]
        log(f"  {k:28s} {mid['ns_per_op']:12.1f} ns/op   (median of {len(outs)} processes: "
            f"{', '.join(f'{o:,.0f}' for o in mid['process_medians'])})")
        res[k] = mid
    return res


def split_pair(out, big_key):
    """The big-K half of a --live2 run, shaped like a timing result."""
    if not out or "ns_per_op_2" not in out:
        return None
    b = dict(out)
    b["ns_per_op"], b["samples"], b["live"] = out["ns_per_op_2"], out["samples_2"], out["live2"]
    b["measured_with"] = out["bench"] + " --live2 (same process as the 1,000-live figure)"
    log(f"  {big_key:28s} {b['ns_per_op']:12.1f} ns/op   (same process)")
    return b


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    return None


def callgrind_one(key, spec, n):
    out = os.path.join(CG_DIR, f"{key}.{n}.out")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + spec["cmd"] + \
        ["--iters", str(n), "--reps", "1"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=3000,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"{key} under callgrind (N={n}): timed out"
    if r.returncode != 0 or not os.path.exists(out):
        return None, f"{key} under callgrind (N={n}): exit {r.returncode}\n{r.stderr[-2000:]}"
    return (callgrind_total(out), out, last_json(r.stdout)), None


def callgrind(key, spec):
    n1, n2 = spec["cg"]
    t = time.time()
    a, err1 = callgrind_one(key, spec, n1)
    b, err2 = callgrind_one(key, spec, n2)
    if err1 or err2:
        return key, None, err1 or err2
    (ir1, _, _), (ir2, f2, out2) = a, b
    per_op = (ir2 - ir1) / ((n2 - n1) * spec["ops"])
    res = dict(n1=n1, n2=n2, ir1=ir1, ir2=ir2, instr_per_op=round(per_op, 1),
               file=os.path.relpath(f2, ROOT), secs=round(time.time() - t, 1))
    # Valgrind runs one thread at a time, which can change how a
    # contended bench interleaves: keep what the N2 run said about it.
    if out2 and "handoff_share" in out2:
        res["handoff_share"] = out2["handoff_share"]
    return key, res, None


ANN_LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")


def annotate_raw(path):
    try:
        r = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", path],
                           capture_output=True, text=True, timeout=300)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return ""
    return r.stdout


def function_costs(text):
    """Exclusive Ir per function, summed over the source files its inlined
    code came from and over callgrind's recursion levels ('2, '3...)."""
    costs = {}
    for ln in text.splitlines():
        mt = ANN_LINE.match(ln)
        if not mt or "PROGRAM TOTALS" in mt.group(2):
            continue
        name = re.sub(r"\s+\[[^\]]*\]$", "", mt.group(2).strip())
        head, sep, tail = name.partition(":")
        if sep and not tail.startswith(":"):
            name = tail
        name = re.sub(r"'\d+$", "", name)
        costs[name] = costs.get(name, 0) + int(mt.group(1).replace(",", ""))
    return costs


def hot_path(key, spec_ops, cg, limit=25):
    """Per-function instructions per op: the N2 profile minus the N1 one,
    divided by the extra operations. Returns (rows, raw N2 annotate text)."""
    f1 = os.path.join(CG_DIR, f"{key}.{cg['n1']}.out")
    f2 = os.path.join(ROOT, cg["file"])
    raw2 = annotate_raw(f2)
    c1, c2 = function_costs(annotate_raw(f1)), function_costs(raw2)
    dops = (cg["n2"] - cg["n1"]) * spec_ops
    rows = [(name, (c2.get(name, 0) - c1.get(name, 0)) / dops) for name in set(c1) | set(c2)]
    rows = [r for r in rows if r[1] >= 0.5]
    rows.sort(key=lambda r: -r[1])
    return rows[:limit], raw2


def raw_top(raw, limit=30):
    """The head of callgrind_annotate's own table (file:function rows),
    with the build machine's cargo registry paths shortened."""
    out, rows, seen_table = [], 0, False
    raw = re.sub(r"/[^\s:]*/registry/src/[^/\s]+/", "<cargo registry>/", raw)
    for ln in raw.splitlines():
        if "file:function" in ln:
            seen_table = True
            out.append(ln)
            continue
        if seen_table and ANN_LINE.match(ln):
            out.append(ln)
            rows += 1
            if rows >= limit:
                break
        elif "PROGRAM TOTALS" in ln:
            out.append(ln)
    return "\n".join(out)


def process_cpu_s(pid):
    """User + system CPU seconds of a running process (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def echo_throughput(server_cmd, secs, name, env=None):
    """Starts a server that prints {"port":P} and echoes until stdin
    closes; drives it with loadgen (1,000 connections); stops it. `env`:
    variables to add to the server's environment."""
    try:
        p = subprocess.Popen(server_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, **env) if env else None)
    except OSError as e:
        failures.append(f"{name}: cannot start: {e}")
        return None
    port = None
    line = p.stdout.readline()
    try:
        port = json.loads(line)["port"]
    except (ValueError, KeyError, TypeError):
        pass
    res = None
    if port:
        cpu0 = process_cpu_s(p.pid)
        res = run_json(name + " loadgen", [LOADGEN, str(port), "1000", str(secs), "0.3"],
                       secs + 60)
        cpu1 = process_cpu_s(p.pid)
        # The server's CPU time (user + system) per round trip over the
        # whole load, warm-up included: steadier than the rate on a
        # shared VM, and it counts system calls, which callgrind does not.
        if res and cpu0 is not None and cpu1 is not None and res.get("total_round_trips"):
            res["server_cpu_us_per_rt"] = (cpu1 - cpu0) * 1e6 / res["total_round_trips"]
    try:
        p.stdin.close()
    except OSError:
        pass
    try:
        rc = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        failures.append(f"{name}: server did not stop within 60 s of its stdin closing")
        return res
    if rc != 0 or port is None:
        failures.append(f"{name}: server exit {rc}\n{p.stderr.read()[-2000:]}")
        return None
    return res


# ---------------------------------------------------------------- machine

def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                              shell=isinstance(cmd, str)).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass

    def first(cmd):
        return sh(cmd).splitlines()[0] if sh(cmd) else "?"

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "rustc": first(["rustc", "--version"]),
        "gcc": first(["gcc", "--version"]),
        "g++": first(["g++", "--version"]),
        "valgrind": first(["valgrind", "--version"]),
        "python": platform.python_version(),
        "vm.max_map_count": sh(["cat", "/proc/sys/vm/max_map_count"]),
    }


def versions():
    v = {}
    lock = os.path.join(ROOT, "benches", "compare", "Cargo.lock")
    try:
        text = open(lock).read()
        for name in ("corosensei", "may", "tokio", "mio", "libc"):
            m = re.search(r'name = "%s"\nversion = "([^"]+)"' % name, text)
            if m:
                v[name] = m.group(1)
    except OSError:
        pass
    v["boost (libboost-context-dev)"] = sh(
        ["dpkg-query", "-W", "-f=${Version}", "libboost-context-dev"]) or "?"
    try:
        m = re.search(r'#define BOOST_LIB_VERSION "([^"]+)"', open("/usr/include/boost/version.hpp").read())
        v["boost.asio (headers, /usr/include/boost)"] = m.group(1).replace("_", ".") if m else "?"
    except OSError:
        v["boost.asio (headers, /usr/include/boost)"] = "?"
    try:
        m = re.search(r'^version = "([^"]+)"', open(os.path.join(ROOT, "Cargo.toml")).read(), re.M)
        v["coframe"] = m.group(1) if m else "?"
    except OSError:
        v["coframe"] = "?"
    rev = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml"])
    v["coframe commit"] = rev + (" + uncommitted changes in src/" if dirty else "")
    return v


# ---------------------------------------------------------------- report

def fmt_num(x, digits=0):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if abs(x) >= 100 or digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def fmt_ns(x):
    if x is None:
        return "n/a"
    if x >= 10_000:
        return f"{x / 1000:,.1f} µs"
    if x >= 100:
        return f"{x:,.0f} ns"
    return f"{x:.1f} ns"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "n/a" if r is None else (f"{r:.2f}×" if r < 100 else f"{r:,.0f}×")


def build_rows(R, m):
    """The table: one row per (operation, coframe variant, peer)."""
    ns = {k: (v["timing"] or {}).get("ns_per_op") for k, v in R["ops"].items()}
    ir = {k: (v["callgrind"] or {}).get("instr_per_op") for k, v in R["ops"].items()}
    rows, targets = [], []
    big = m["scale_big"]

    def row(op, ck, pk, target="", met=None, note=""):
        c, p = R["ops"].get(ck), R["ops"].get(pk)
        rows.append(dict(
            op=op, coframe=c["label"] if c else ck, peer=p["label"] if p else pk,
            coframe_ns=ns.get(ck), peer_ns=ns.get(pk), ns_ratio=ratio(ns.get(ck), ns.get(pk)),
            coframe_instr=ir.get(ck), peer_instr=ir.get(pk),
            instr_ratio=ratio(ir.get(ck), ir.get(pk)), ref=REF.get(pk, ""),
            target=target, met=met, note=note))

    def verdict(*conds):
        if any(c is None for c in conds):
            return None
        return all(conds)

    def le(a, b):
        return None if a is None or b is None else a <= b

    def within(r, lo, hi):
        return None if r is None else lo <= r <= hi

    # 1. yield
    for ck, tid in (("yield.coframe", "1"), ("yield.coframe_c", "1 (from C)")):
        rn = ratio(ns.get(ck), ns.get("yield.corosensei"))
        ok = verdict(le(ir.get(ck), 100), le(rn, 2.5))
        if tid == "1":
            t1 = ok
            targets.append(dict(
                id="1", text="yield round trip ≤ 100 instructions and ≤ 2.5× corosensei's time", met=ok,
                detail=f"{fmt_num(ir.get(ck))} instr; {fmt_ratio(rn)} corosensei's time (from C: "
                f"{fmt_num(ir.get('yield.coframe_c'))} instr, "
                f"{fmt_ratio(ratio(ns.get('yield.coframe_c'), ns.get('yield.corosensei')))})"))
            row("a. yield round trip", ck, "yield.corosensei", "1: ≤ 100 instr, ≤ 2.5× time", ok)
            row("a. yield round trip", ck, "yield.corosensei_fn", "", None,
                "the same switch with the suspend in a non-inlined function, as every "
                "library's yield is: the CPU's return-address predictions miss")
            row("a. yield round trip", ck, "yield.may")
            row("a. yield round trip", ck, "yield.boost")
        else:
            row("a. yield round trip", ck, "yield.corosensei", "1 (from C)", ok)
    # 2. spawn
    for ck, tid in (("spawn.coframe", "2"), ("spawn.coframe_c", "2 (from C)")):
        tr = ratio(ir.get("spawn.tokio"), ir.get(ck))
        ok = verdict(le(ir.get(ck), 250), le(5, tr))
        if tid == "2":
            targets.append(dict(
                id="2", text="spawn+await ≤ 250 instructions and ≥ 5× fewer than tokio", met=ok,
                detail=f"{fmt_num(ir.get(ck))} instr; tokio ÷ coframe = {fmt_ratio(tr)} (from C: "
                f"{fmt_num(ir.get('spawn.coframe_c'))} instr)"))
            row("b. spawn + await (empty)", ck, "spawn.tokio", "2: ≤ 250 instr, ≥ 5× fewer than tokio", ok)
            row("b. spawn + await (empty)", ck, "spawn.corosensei")
            row("b. spawn + await (empty)", ck, "spawn.boost")
        else:
            row("b. spawn + await (empty)", ck, "spawn.tokio", "2 (from C)", ok)
    row("b. spawn + await (empty)", "spawn.coframe_thread", "spawn.tokio", "", None,
        "awaited from a plain thread: includes waking the worker and unparking the thread")
    # 3. cross-thread
    for ck, tid, what in (("xthread.coframe", "3a", "2-worker ping-pong"),
                          ("xthread.coframe_foreign", "3b", "foreign-thread resume")):
        ok = verdict(le(ns.get(ck), ns.get("xthread.tokio")))
        targets.append(dict(id=tid, text=f"{what} at least as fast as tokio's 2-worker Notify ping-pong",
                            met=ok, detail=f"{fmt_ns(ns.get(ck))} vs {fmt_ns(ns.get('xthread.tokio'))} "
                            f"per round trip ({fmt_num(ir.get(ck))} vs {fmt_num(ir.get('xthread.tokio'))} instr)"))
        row("c. cross-thread wake (round trip)", ck, "xthread.tokio", "3: time ≤ tokio", ok)
        if tid == "3a":
            hops = R.get("hop_threads") or {}
            share = ", ".join(f"{HOP_THREADS[k]} {hops[k]['changed_share']:.1%}" for k in HOP_THREADS if k in hops)
            crossed = f" (hops that changed thread: {share})" if share else ""
            targets[-1]["detail"] += (f"; with CORO_SPAWN_MIGRATABLE (the hand-off stays on one worker, "
                                      f"as tokio's does): {fmt_ns(ns.get('xthread.coframe_migratable'))}{crossed}")
            row("c. cross-thread wake (round trip)", "xthread.coframe_migratable", "xthread.tokio", "", None,
                "CORO_SPAWN_MIGRATABLE: the resumed coroutine moves to the resumer's idle worker, so the "
                "hand-off stays on one CPU, as tokio's LIFO slot keeps it; target 3a is judged on the pinned row")
            targets[-1]["detail"] += (f"; tokio with its two tasks pinned to two threads as coframe's are "
                                      f"(two current-thread runtimes): {fmt_ns(ns.get('xthread.tokio_pinned'))}")
            row("c. cross-thread wake (round trip)", ck, "xthread.tokio_pinned", "", None,
                "tokio's tasks pinned to two threads as coframe's pinned pair is (a current-thread runtime "
                "on each thread): every hop wakes a sleeping thread, since tokio does not look before it sleeps")
            targets[-1]["detail"] += (f"; the machine's floor in this run (two plain threads passing one "
                                      f"word, spinning): {fmt_ns(ns.get('xthread.floor'))}")
            row("c. cross-thread wake (round trip)", ck, "xthread.floor", "", None,
                "the machine's floor: two plain threads pass one word back and forth, spinning, with no "
                "library, in processes alternated with the rows above (every process's figure is under the "
                "wall-time details). It takes about 25 ns in some processes and 120-190 ns in others on the "
                "test VM, as the vCPUs' placement changes; coframe's pinned pair follows the placement too "
                "(about 230 ns next to a fast floor, 990-1,470 ns next to a slow one, measured in one "
                "process: HISTORY.md), since a pinned hand-off moves about six cache lines per hop")
        else:
            targets[-1]["detail"] += (f"; with the resuming thread looking before it sleeps, as coframe's "
                                      f"workers do: {fmt_ns(ns.get('xthread.coframe_foreign_looks'))}")
            row("c. cross-thread wake (round trip)", "xthread.coframe_foreign_looks", "xthread.tokio", "", None,
                "the bench's main thread looks for the token (50 pauses, then 64 sched_yield) before it "
                "sleeps on its futex, as coframe's workers do, so its own futex wake-up is not "
                "in the figure; target 3b is judged on the row above, where it sleeps at once")
            targets[-1]["detail"] += (f"; tokio with the same foreign thread notifying a task: "
                                      f"{fmt_ns(ns.get('xthread.tokio_foreign'))}, looking first "
                                      f"{fmt_ns(ns.get('xthread.tokio_foreign_looks'))}")
            row("c. cross-thread wake (round trip)", ck, "xthread.tokio_foreign", "", None,
                "the same foreign thread and futex, with a tokio task (one worker) woken by Notify in "
                "place of the coroutine's resume")
            row("c. cross-thread wake (round trip)", "xthread.coframe_foreign_looks",
                "xthread.tokio_foreign_looks", "", None, "both foreign threads look before they sleep")
    # 5a. echo
    er = ratio(ir.get("echo.coframe_c"), ir.get("echo.tokio"))
    t5a = verdict(le(er, 0.7))
    targets.append(dict(id="5a", text="echo round trip ≤ 0.7× tokio's user instructions",
                        met=t5a, detail=f"{fmt_num(ir.get('echo.coframe_c'))} vs {fmt_num(ir.get('echo.tokio'))} "
                        f"instr = {fmt_ratio(er)}; time {fmt_ns(ns.get('echo.coframe_c'))} vs "
                        f"{fmt_ns(ns.get('echo.tokio'))}"))
    row("e. loopback echo round trip (64 B)", "echo.coframe_c", "echo.tokio", "5: ≤ 0.7× tokio instr", t5a)
    row("e. loopback echo round trip (64 B)", "echo.coframe_c", "echo.libuv", "", None,
        "libuv's own shape: callbacks on one loop thread that serves both ends, so no hand-off between "
        "threads; coframe's and tokio's client and server run on a runtime of two workers")
    # h. and i.: the sync objects (issue 17), no target; the mutex rows
    # say which share of the acquisitions changed owner.
    def share(k):
        op = R["ops"].get(k, {})
        t, c = op.get("timing") or {}, op.get("callgrind") or {}
        timed = f"{t['handoff_share']:.1%}" if "handoff_share" in t else "?"
        return timed + (f" (under callgrind {c['handoff_share']:.1%})" if "handoff_share" in c else "")
    for g, op in (("mutex", "h. contended mutex hand-off"), ("chan", "i. channel ping-pong (round trip)")):
        for sfx, where in (("", "one thread"), ("2", "2 workers")):
            ck = f"{g}{sfx}.coframe"
            for lib in ("tokio", "may"):
                pk = f"{g}{sfx}.{lib}"
                note = (f"acquisitions that changed owner: coframe {share(ck)}, {lib} {share(pk)}"
                        if g == "mutex" else "")
                if lib == "may":
                    note += ("; " if note else "") + ("may parks and wakes through its own queues and "
                                                       "system calls, which callgrind does not count")
                row(f"{op}, {where}", ck, pk, "", None, note)
    # j. and k.: C++20 tasks (issue 18), no target. The stackful row from C
    # beside them shows what the same call costs without a foreign frame.
    for g, op, stackful in (("task_yield", "j. C++20 task: co_await yield()", "yield.coframe_c"),
                            ("task_spawn", "k. C++20 task: spawn + await (empty)", "spawn.coframe_c")):
        ck = f"{g}.coframe"
        if ck not in R["ops"]:
            continue  # results from before issue 18 (--render)
        row(op, ck, f"{g}.asio", "", None,
            "Asio's awaitable on an io_context run by one thread (concurrency hint 1)"
            if g == "task_yield" else "")
        row(op, ck, f"{g}.handwritten", "", None,
            "the floor: a lazy task, a ring of coroutine handles and a loop that resumes them, no library"
            + ("; a finished task resumes its awaiter by symmetric transfer" if g == "task_spawn" else ""))
        row(op, ck, stackful, "", None,
            "coframe's own stackful coroutine doing the same from C: what the task's foreign frame and "
            "coframe.hpp add or save")
    # l. std.Io (issue 19, point 4), no target: the same Zig code on
    # coframe.Io and on std.Io.Threaded.
    if "zigio.spawn_coframe" in R["ops"]:
        row("l. std.Io: concurrent + await (empty)", "zigio.spawn_coframe", "zigio.spawn_threaded", "", None,
            "Threaded hands the task to a pool thread; coframe.Io spawns a coroutine, placed round robin "
            "(every other one lands on the other worker, whose wake-up the figure includes)")
        row("l. std.Io: concurrent + await (empty)", "zigio.spawn_coframe1", "zigio.spawn_threaded", "", None,
            "coframe.Io on one worker: the spawn stays on the awaiting task's thread")
        row("l. std.Io: Io.Queue ping-pong (round trip)", "zigio.pingpong_coframe", "zigio.pingpong_threaded",
            "", None, "Io.Queue is Io.Mutex + Io.Condition over the futex calls: coframe.Io suspends "
            "the tasks on its futex table, Threaded blocks threads in FUTEX_WAIT")
        row("l. std.Io: loopback echo round trip (64 B)", "zigio.echo_coframe", "zigio.echo_threaded", "", None,
            "std.Io.net streams; coframe.Io's waits go through each task's kept helper (docs/ZIG-IO.md); "
            "std.Io.Uring, the evented peer, does not compile in Zig 0.17.1")
    # 6. scale
    sc = {}
    for op in ("yield", "spawn"):
        a, b = f"scale.{op}.1k", f"scale.{op}.big"
        rn, ri = ratio(ns.get(b), ns.get(a)), ratio(ir.get(b), ir.get(a))
        ok = verdict(within(rn, 0.8, 1.2), within(ri, 0.8, 1.2))
        sc[op] = (ok, rn, ri)
        row(f"f. scale: {op}, {big:,} vs 1,000 live", b, a, "6: within ±20%", ok)
    t6 = verdict(sc["yield"][0], sc["spawn"][0])
    targets.append(dict(id="6", text=f"cost per op flat (±20%) from 1,000 to {big:,} live coroutines"
                        + (" (quick mode: 100,000, not 1,000,000)" if big < 1_000_000 else ""),
                        met=t6, detail="; ".join(f"{op}: time {fmt_ratio(v[1])}, instr {fmt_ratio(v[2])}"
                                                 for op, v in sc.items())))
    # 4. memory, 5b. throughput, g. timers: own rows
    mem, memp = R.get("memory", {}).get("coframe"), R.get("memory", {}).get("corosensei")
    if mem:
        per = mem["rss_per_coroutine"]
        t4 = per <= 4.5 * 1024 and mem["live_frames"] >= mem["count"]
        targets.append(dict(
            id="4", text="1,000,000 suspended coroutines, default guarded stacks, ≤ 4.5 KiB RSS each, "
            "default vm.max_map_count", met=t4,
            detail=f"{per:,.0f} B each at {mem['count']:,} coroutines; maps {mem['maps_before']:.0f} → "
            f"{mem['maps_after']:.0f}; vm.max_map_count {mem['max_map_count']:.0f}"
            + ("" if mem["count"] >= 1_000_000 else
               f" (quick mode: {mem['count']:,} coroutines; `make bench FULL=1` runs 1,000,000)")))
        rows.append(dict(
            op="d. memory: suspended coroutines", coframe=f"coframe, {mem['count']:,} at once",
            peer="corosensei DefaultStack until it fails",
            coframe_val=f"{per:,.0f} B RSS each", peer_val=(
                f"{memp['count']:,.0f} coroutines, then {memp['error']}; {memp['rss_per_coroutine']:,.0f} B each"
                if memp else "n/a"),
            val_ratio=(f"{mem['count'] / memp['count']:.1f}× as many" if memp else "n/a"),
            ref=REF["mem.corosensei"], target="4: ≤ 4.5 KiB each at 1,000,000", met=t4))
    tp = R.get("throughput", {})
    c_rps, t_rps = (tp.get("coframe") or {}).get("rps"), (tp.get("tokio") or {}).get("rps")
    t5b = verdict(c_rps >= t_rps if c_rps and t_rps else None)
    targets.append(dict(id="5b", text="echo throughput, 1,000 connections, ≥ tokio with the same settings",
                        met=t5b, detail=f"{fmt_num(c_rps)} vs {fmt_num(t_rps)} round trips/s (medians of "
                        f"{(tp.get('coframe') or {}).get('runs', 0)} alternated runs each; every run under "
                        f"Echo throughput details){cpu_detail(tp)}{paired_detail(tp)}"))
    rows.append(dict(op="e. echo throughput, 1,000 connections", coframe="coframe from C, 2 workers",
                     peer="tokio, 2 workers", coframe_val=f"{fmt_num(c_rps)} rt/s",
                     peer_val=f"{fmt_num(t_rps)} rt/s", val_ratio=fmt_ratio(ratio(c_rps, t_rps)),
                     ref="", target="5: ≥ tokio", met=t5b))
    # The other echo rows: (our server, its label, the peer's server, its label).
    echo_rows = (
        ("coframe", "coframe from C, 2 workers", "libuv", "libuv, 2 loop threads (SO_REUSEPORT)"),
        ("coframe_rearm", "coframe from C, 2 workers, each wait re-arming (no CORO_KEEP)",
         "tokio", "tokio, 2 workers"),
        ("coframe_io", "coframe from C, 2 workers, on coro_recv/coro_send (CORO_KEEP)",
         "coframe", "the same server's hand-tuned loop"),
    )
    for ours, label, theirs, peer in echo_rows:
        o_rps, p_rps = (tp.get(ours) or {}).get("rps"), (tp.get(theirs) or {}).get("rps")
        if not (o_rps and p_rps):
            continue
        rows.append(dict(op="e. echo throughput, 1,000 connections", coframe=label, peer=peer,
                         coframe_val=f"{fmt_num(o_rps)} rt/s", peer_val=f"{fmt_num(p_rps)} rt/s",
                         val_ratio=fmt_ratio(ratio(o_rps, p_rps)), ref="", target="", met=None))
    tm = R.get("timers")
    if tm:
        rows.append(dict(op="g. timers: 100,000 sleepers over 1 s", coframe="coframe, 2 workers",
                         peer="(no peer)", coframe_val=f"late p50 {tm['p50_us']:,.0f} µs, p99 {tm['p99_us']:,.0f} µs",
                         peer_val="", val_ratio="", ref="", target="(none)", met=None))
    return rows, targets


# The coframe benches whose profiles explain each target.
HOT_KEYS = {
    "1": ["yield.coframe", "yield.coframe_c"],
    "2": ["spawn.coframe", "spawn.coframe_c"],
    "3a": ["xthread.coframe"],
    "3b": ["xthread.coframe_foreign"],
    "5a": ["echo.coframe_c"],
    "5b": ["echo.coframe_c"],
    "6": ["scale.yield.big", "scale.spawn.big"],
}


def paired_detail(tp):
    """The median of the per-round ratios: runs i of coframe and tokio ran
    next to each other, so their ratio cancels a slow spell of the VM that
    hit both, which the ratio of the two medians does not."""
    c = (tp.get("coframe") or {}).get("all_rps") or []
    t = (tp.get("tokio") or {}).get("all_rps") or []
    pairs = sorted(a / b for a, b in zip(c, t) if b)
    if not pairs:
        return ""
    return (f"; run by run (each coframe run against the tokio run next to it) the median ratio is "
            f"{pairs[len(pairs) // 2]:.2f}× ({', '.join(f'{r:.2f}' for r in pairs)}, sorted)")


def cpu_detail(tp):
    """The servers' median CPU per round trip, for the 5b row."""
    c = (tp.get("coframe") or {}).get("median_cpu_us_per_rt")
    t = (tp.get("tokio") or {}).get("median_cpu_us_per_rt")
    if c is None or t is None:
        return ""
    return f"; server CPU per round trip {c:.2f} vs {t:.2f} µs"


def mark(met):
    return {True: "met", False: "**missed**", None: "n/a"}[met]


def write_md(R, m, rows, targets, path):
    L = []
    ma, ve = R["machine"], R["versions"]
    L.append("# coframe benchmarks, side by side (issue 4)\n")
    L.append(f"Written by `make bench{' FULL=1' if R['mode'] == 'full' else ''}` "
             f"({R['mode']} mode, {R['elapsed_s']:.0f} s) on {R['date']}. "
             "Raw numbers: [results.json](results.json); plot: [results.svg](results.svg); "
             "where coframe's instructions go: [profiles/](profiles/); "
             "what was optimised, with figures before and after: [HISTORY.md](HISTORY.md).\n")
    L.append("![instructions and time per operation](results.svg)\n")
    L.append("## Machine and versions\n")
    L.append("| | |\n|---|---|")
    for k in ("cpu", "cores", "memory", "kernel", "rustc", "gcc", "g++", "valgrind", "python",
              "vm.max_map_count"):
        L.append(f"| {k} | {ma.get(k, '?')} |")
    for k, v in ve.items():
        L.append(f"| {k} | {v} |")
    L.append("")
    L.append("## Targets of issue 4\n")
    L.append("| # | target | result | |\n|---|---|---|---|")
    for t in targets:
        L.append(f"| {t['id']} | {t['text']} | {t['detail']} | {mark(t['met'])} |")
    L.append("")
    bb, ba = R.get("busy_before"), R.get("busy_after")
    if bb is not None and ba is not None and max(bb, ba) > 0.1:
        L.append(f"> Other processes kept {bb:.0%} of the {ma.get('cores')} cores busy in the "
                 f"{QUIET_WINDOW_S:g} s before the run and {ba:.0%} in the {QUIET_WINDOW_S:g} s after it: "
                 "wall times are noisier than usual. Instruction counts do not depend on it.\n")
    hot = [(t, HOT_KEYS.get(t["id"], [])) for t in targets if t["met"] is False]
    if hot:
        L.append("## Where coframe's instructions go (missed targets)\n")
        L.append("Instructions per operation by function, exclusive, from the difference of the two "
                 "callgrind runs (so setup is not in it); the full lists are in [profiles/](profiles/).\n")
        done = set()
        for t, keys in hot:
            for k in keys:
                op = R["ops"].get(k) or {}
                if k in done or not op.get("hot_path"):
                    continue
                done.add(k)
                total = (op.get("callgrind") or {}).get("instr_per_op")
                L.append(f"**{k}** ({op['label']}; target {t['id']}): {fmt_num(total)} instructions per op\n")
                L.append("```")
                for name, x in op["hot_path"][:12]:
                    L.append(f"{x:8.1f}  {name}")
                L.append("```\n")
    L.append("## Results\n")
    L.append("Time is the median wall time per operation over the repetitions; instructions are "
             "user-space instructions per operation from callgrind (all threads). Ratios are "
             "coframe ÷ peer: below 1 means coframe is cheaper (for throughput, above 1 means coframe "
             "is faster).\n")
    L.append("| operation | coframe | peer | coframe time | peer time | time ratio | coframe instr | "
             "peer instr | instr ratio | issue's peer figure | target | |")
    L.append("|---|---|---|--:|--:|--:|--:|--:|--:|---|---|---|")
    for r in rows:
        if "coframe_val" in r:
            L.append(f"| {r['op']} | {r['coframe']} | {r['peer']} | {r['coframe_val']} | {r['peer_val']} | "
                     f"{r['val_ratio']} | | | | {r['ref']} | {r['target']} | {mark(r['met']) if r['target'] else ''} |")
        else:
            L.append(f"| {r['op']} | {r['coframe']} | {r['peer']} | {fmt_ns(r['coframe_ns'])} | "
                     f"{fmt_ns(r['peer_ns'])} | {fmt_ratio(r['ns_ratio'])} | {fmt_num(r['coframe_instr'])} | "
                     f"{fmt_num(r['peer_instr'])} | {fmt_ratio(r['instr_ratio'])} | {r['ref']} | "
                     f"{r['target']} | {mark(r['met']) if r['target'] else ''} |")
    L.append("")
    for r in rows:
        if r.get("note"):
            L.append(f"- {r['op']}, {r['coframe']} against {r['peer']}: {r['note']}.")
    L.append("")
    mem = R.get("memory", {})
    if mem.get("coframe"):
        c = mem["coframe"]
        L.append("### Memory details\n")
        L.append(f"- coframe: {c['count']:,} coroutines spawned (from a coroutine, on "
                 f"{R['memory_workers']} workers, 64 KiB default stacks with a guard page each), each suspended "
                 f"once; VmRSS {c['rss_before'] / 2**20:,.1f} → {c['rss_after'] / 2**20:,.1f} MiB = "
                 f"{c['rss_per_coroutine']:,.0f} B each, plus {c['pte_per_coroutine']:,.0f} B of page tables "
                 f"(VmPTE) each; {c['maps_before']:.0f} → {c['maps_after']:.0f} lines in /proc/self/maps "
                 f"(vm.max_map_count {c['max_map_count']:.0f}). Spawning them took {c['spawn_ms']:,.0f} ms "
                 f"({c['spawn_ms'] * 1e6 / c['count']:,.0f} ns each, page faults included); shutdown "
                 f"{c['shutdown_ms']:,.0f} ms.")
    if mem.get("corosensei"):
        p = mem["corosensei"]
        L.append(f"- corosensei: `DefaultStack::new(1 MiB)` (mmap + mprotect guard: two mappings each), one "
                 f"coroutine suspended on each, until creation failed: {p['count']:,.0f} coroutines "
                 f"(`{p['error']}`), {p['rss_per_coroutine']:,.0f} B RSS each, {p['maps_after']:.0f} mappings.")
    L.append("")
    multi = [(k, v) for k, v in R["ops"].items()
             if k.startswith(MULTI_PROCESS) and v.get("timing") and v["timing"].get("process_medians")]
    if multi:
        L.append("### Cross-thread details\n")
        L.append(f"Where the kernel and the hypervisor place the threads decides these figures, and it holds "
                 f"for a whole process: each bench ran in {m['processes']} processes, alternated with the "
                 f"others, and the table shows the process whose median is the median of all. Each process's "
                 f"median, in order:\n")
        for k, v in multi:
            L.append(f"- {v['label']}: " + ", ".join(fmt_ns(x) for x in v["timing"]["process_medians"]))
        L.append("")
    hops = R.get("hop_threads") or {}
    if hops:
        L.append("Hops that ran on another thread than the hop before, in one more run of each ping-pong "
                 "(20,000 round trips, untimed) that notes the thread at every hop: "
                 + "; ".join(f"{HOP_THREADS.get(k, k)}: {v['changed_share']:.1%} of {v['hops']:,} hops"
                             for k, v in hops.items())
                 + ". tokio's `notify_one` from a worker puts the woken task in that worker's LIFO slot, "
                 "so its two tasks nearly always run on one thread, as coframe's migratable pair does; "
                 "the pinned pair crosses threads at every hop.\n")
    scale = [(k, v) for k, v in R["ops"].items()
             if k.startswith("scale.") and k.endswith(".big") and v.get("timing")
             and v["timing"].get("process_ratios")]
    if scale:
        L.append("### Scale details\n")
        L.append("Each scale pair (1,000 live, then more parked in the same process) ran in "
                 f"{m['scale_processes']} processes; the table shows the one whose ratio is the median. "
                 "Every process's ratio (many ÷ 1,000 live), sorted:\n")
        for k, v in scale:
            L.append(f"- {k[6:-4]}: " + ", ".join(f"{r:.2f}×" for r in v["timing"]["process_ratios"]))
        L.append("")
    tp = R.get("throughput", {})
    if tp:
        L.append("### Echo throughput details\n")
        for k, v in tp.items():
            if v:
                every = ", ".join(f"{r:,.0f}" for r in v.get("all_rps", [v["rps"]]))
                cpu = v.get("all_cpu_us_per_rt") or []
                cpu_txt = (f" Server CPU time (user + system) per round trip, same runs: "
                           f"{', '.join(f'{c:.2f}' for c in cpu)} µs." if cpu else "")
                L.append(f"- {k}: median run {v['round_trips']:,} round trips in {v['secs']:.2f} s = "
                         f"{v['rps']:,.0f}/s, {v['errors']} errors; {v.get('runs', 1)} run(s), alternated "
                         f"with the other servers', in order: {every} round trips/s.{cpu_txt}")
        L.append("")
    tm = R.get("timers")
    if tm:
        L.append("### Timer details\n")
        L.append(f"- {tm['count']:,.0f} coroutines (2 workers) first park (spawning them took "
                 f"{tm['spawn_ms']:,.0f} ms); then the clock origin is set {tm['margin_ms']:,.0f} ms ahead and a "
                 f"coroutine resumes them all ({tm['resume_ms']:,.0f} ms); each `coro_sleep_until` origin + an "
                 f"offset drawn uniformly over {tm['spread_s']:g} s. {tm['started_late']:.0f} were resumed after "
                 f"their deadline and are left out. Lateness = `coro_now()` after waking − deadline: p50 "
                 f"{tm['p50_us']:,.0f} µs, p90 {tm['p90_us']:,.0f} µs, p99 {tm['p99_us']:,.0f} µs, max "
                 f"{tm['max_us']:,.0f} µs, mean {tm['mean_us']:,.0f} µs; {tm['early']:.0f} woke early.")
        L.append("")
    L.append("## How measured\n")
    L.append(f"""- Every bench is its own process: `benches/compare` (Rust: coframe through `coframe::ffi`, the C ABI
  exactly as C calls it, statically linked; corosensei, may, tokio), `benches/c/cbench.c` (coframe from C through
  `libcoframe.so`), `benches/boost/fiber.cpp` (Boost.Context, `g++ -O2`), `benches/uv/uvbench.c` (libuv's echo
  client and server), `benches/c/loadgen.c` (the echo load), `benches/cpp/taskbench.cpp` (C++20 tasks:
  coframe's `task<T>` through `coframe.hpp` and `libcoframe.so`, Boost.Asio's `awaitable` and a hand-written
  task, `g++ -O2 -std=c++20`).
  Commands, iteration counts and raw samples are in results.json.
- **Time**: each bench runs one warm-up and {m['reps']} timed repetitions of N iterations and reports ns/op per
  repetition; the table shows the median (for the cross-thread benches, the median over {m['processes']}
  processes; see Cross-thread details). coframe's loops run inside a driver coroutine that reads
  `CLOCK_MONOTONIC` before and after, so the main thread's wake-up is not in the figure.
- **Instructions**: the same binary under `valgrind --tool=callgrind` with one repetition, at N1 and N2
  iterations: (Ir(N2) − Ir(N1)) / (ops(N2) − ops(N1)), which cancels setup and teardown. Ir is the `totals:`
  line: every thread of the process (workers, main), user space only — system calls' kernel work is not
  in it. Under valgrind threads run one at a time, so for the cross-thread and echo benches the instruction
  counts include whatever an idle worker does while its partner is not yet ready (spinning, polling,
  `sched_yield` loops, parking): the more a runtime spins, the more it is charged. The per-function lists
  below and in profiles/ show how much of a figure that is.
- **Definitions**: a. one op = one `coro_yield` that returns (two coroutines on one worker alternate: switch
  out, scheduler picks the other, switch in) = one corosensei `resume` + `suspend` = one Boost.Context fiber
  resume round trip = one may `yield_now` (two coroutines, one worker). b. one op = spawn an empty coroutine,
  run it to completion, await it (coframe: one worker, awaited by a coroutine, or by the main thread; tokio:
  `tokio::spawn(async {{}}).await` in `block_on` of a current-thread runtime; corosensei: create on a reused
  64 KiB stack, run, `into_stack`; Boost: a fiber on a pooled stack, resumed to its end). c. one op = one round
  trip: two coroutines on two workers each suspend handing their token to the other through a shared mailbox
  (the one that finds the other's token resumes it), or the main thread resumes a coroutine and sleeps on a
  futex until its `on_suspend` callback hands the token back (in the "looks" row it first looks for the token
  50 times with a pause and 64 times with `sched_yield` between looks); tokio: two tasks on a 2-worker runtime,
  `notify_one` / `notified().await` on two `Notify`s. e. one op = a 64-byte write and reading 64 bytes back
  over one loopback TCP connection (TCP_NODELAY), client and server in one process on 2 workers; the coframe
  server is one coroutine per connection, non-blocking sockets, read/write first and `coro_wait_fd` on
  EAGAIN or after a read shorter than its 4 KiB buffer (a drained socket: tokio too clears a socket's
  readiness after a short read, so neither server makes a failing read per round trip); its waits pass
  `CORO_KEEP`, so each connection stays registered with its worker's epoll, edge-triggered, as tokio's do
  (`coro_fd_forget` before `close`; `CBENCH_NO_KEEP=1` re-arms per wait instead); tokio's is a task per
  connection with `read` / `write_all` into the same 4 KiB buffer. Throughput: `loadgen` (one thread, epoll)
  keeps one 64-byte message in flight on each of 1,000 connections for {m['echo_secs']:g} s after a 0.3 s warm-up,
  against each server (2 workers each, each worker polling its own epoll).
  f. the a. and b. loops on a one-worker runtime that also holds K coroutines suspended in `coro_suspend`.
  h. one op = one acquisition of a mutex that two coroutines (tasks) take and release in a loop; on its first
  acquisition each yields while it holds the lock, so from then on every unlock finds the other waiting, and a
  FIFO mutex hands it over (the share of acquisitions that changed owner is in the row's note). coframe:
  `coro_mutex_lock` / `coro_mutex_unlock`; tokio: `tokio::sync::Mutex` (FIFO-fair); may: `may::sync::Mutex`.
  i. one op = one round trip: one coroutine sends a `u64` on one channel and receives it back, plus one, on
  another; the other receives and answers. coframe: `coro_chan` of capacity 1; tokio: `mpsc::channel(1)`;
  may: `may::sync::mpsc` (unbounded; may has no bounded channel, and a ping-pong holds one item at most).
  "One thread": a one-worker coframe runtime, tokio's current-thread runtime, may with one worker; "2
  workers": two worker threads, coframe's coroutines spawned `CORO_SPAWN_MIGRATABLE` (DESIGN section 12).
  j. one op = one `co_await` of a yield that returns: two C++20 tasks on one thread alternate, as in a.
  coframe: two `coframe::task<void>`s spawned on a one-worker runtime (foreign frames), each
  `co_await coframe::yield()` (`coro_yield`); Asio: two `asio::awaitable<void>`s `co_spawn`ed on an
  `io_context` that the main thread runs (concurrency hint 1), each `co_await asio::post(ex, use_awaitable)`;
  hand-written: a cppcoro-style lazy task on a FIFO ring of coroutine handles that one loop resumes, the yield
  an awaitable that queues its caller. k. one op = a task spawns an empty task and awaits it: the child's
  frame is made and queued, the parent suspends, the child runs to its end, the parent resumes with its
  result and the child's frame is freed. coframe: `co_await coframe::spawn(rt, empty)` (`coro_spawn_frame`,
  then `coro_await` of the promise), one worker; Asio: `co_await co_spawn(ex, empty(), use_awaitable)`;
  hand-written: the child is queued, its end resumes the parent by symmetric transfer. coframe's drivers
  are tasks that read the clock before and after, as a.'s and b.'s coroutines do; Asio's and the
  hand-written loops run on the main thread, which reads the clock around them.
- Memory benches run in their own processes; RSS is VmRSS from /proc/self/status.
- Quick mode (`make bench`) uses {MODES['quick']['mem_count']:,} coroutines for memory and
  {MODES['quick']['scale_big']:,} for scale; `make bench FULL=1` uses 1,000,000 for both, longer loops and
  {MODES['full']['reps']} repetitions.
- `perf stat` cannot count instructions in this VM, hence callgrind. Numbers on a 2-vCPU VM are noisy;
  compare ratios from the same run rather than figures across runs.
""")
    if R.get("failures"):
        L.append("## Failures\n")
        for f in R["failures"]:
            L.append("```\n" + f + "\n```")
    with open(path, "w") as f:
        f.write("\n".join(L))


# ---------------------------------------------------------------- plot

COLORS = {
    "coframe": "#1f5fbf", "coframe_c": "#5b9bef", "coframe_thread": "#9cc3f5",
    "corosensei": "#7a7a7a", "may": "#c9821c", "boost": "#2e9a5a", "tokio": "#c0392b",
    "libuv": "#8e44ad", "machine": "#444444",
    "coframe_cpp": "#0d2f6e", "asio": "#e377c2", "handwritten": "#bcbd22",
    "coframe_zig": "#17becf", "zig_threaded": "#f7b6d2",
}
GROUPS = [("yield", "a. yield round trip"), ("spawn", "b. spawn + await"),
          ("xthread", "c. cross-thread round trip"), ("echo", "e. echo round trip"),
          ("mutex", "h. mutex hand-off"), ("chan", "i. channel round trip"),
          ("task_yield", "j. C++20 yield"), ("task_spawn", "k. C++20 spawn"),
          ("zigio", "l. Zig std.Io")]


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_svg(R, path):
    groups = []
    for g, title in GROUPS:
        keys = [k for k, v in R["ops"].items() if v.get("group") == g]
        if keys:
            groups.append((g, title, keys))
    nbars = sum(len(k) for _, _, k in groups)
    gap = 40
    panel_h = 400
    top = 70
    left = 80
    right = 20
    # At least 29 px a bar, so that a figure like "1,434" stays over its own bar.
    W = max(1400, round(left + right + gap * (len(groups) + 1) + 29 * nbars))
    H = top + 2 * panel_h + 80
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="DejaVu Sans, Arial, sans-serif">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="30" text-anchor="middle" font-size="20" font-weight="bold">'
           f'coframe vs peers: user-space instructions and wall time per operation</text>',
           f'<text x="{W / 2}" y="52" text-anchor="middle" font-size="13" fill="#444">'
           f'{esc(R["machine"]["cpu"])}, {R["machine"]["cores"]} cores, {R["mode"]} mode, {R["date"]}; '
           'log scale; lower is better; dashed: issue 4 target</text>']
    plot_w = W - left - right
    bar_w = (plot_w - gap * (len(groups) + 1)) / max(nbars, 1)

    def value(k, metric):
        v = R["ops"].get(k, {}).get("callgrind" if metric == "instr" else "timing") or {}
        return v.get("instr_per_op" if metric == "instr" else "ns_per_op")

    # Targets drawn over a group: (group, metric) -> (value, label).
    tgt = {("yield", "instr"): (100, "≤ 100 instr"), ("spawn", "instr"): (250, "≤ 250 instr")}
    if value("echo.tokio", "instr"):
        tgt[("echo", "instr")] = (0.7 * value("echo.tokio", "instr"), "≤ 0.7× tokio's")
    if value("xthread.tokio", "ns"):
        tgt[("xthread", "ns")] = (value("xthread.tokio", "ns"), "≤ tokio's time")
    if value("yield.corosensei", "ns"):
        tgt[("yield", "ns")] = (2.5 * value("yield.corosensei", "ns"), "≤ 2.5× corosensei")

    def panel(y0, metric, unit, title):
        vals = [value(k, metric) for _, _, keys in groups for k in keys]
        vals = [v for v in vals if v and v > 0]
        if not vals:
            return
        lo = 10 ** math.floor(math.log10(min(vals)))
        hi = 10 ** math.ceil(math.log10(max(vals)) + 0.15)
        ph = panel_h - 150
        yb = y0 + 24 + ph

        def Y(v):
            return yb - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph
        out.append(f'<text x="{left}" y="{y0 + 8}" font-size="15" font-weight="bold">{esc(title)}</text>')
        d = lo
        while d <= hi * 1.0001:
            y = Y(d)
            out.append(f'<line x1="{left}" x2="{W - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            lab = f"{d:,.0f}" if d >= 1 else f"{d:g}"
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                       f'fill="#555">{lab}</text>')
            d *= 10
        out.append(f'<text x="18" y="{y0 + 24 + ph / 2}" font-size="12" fill="#333" '
                   f'transform="rotate(-90 18 {y0 + 24 + ph / 2})" text-anchor="middle">{esc(unit)}</text>')
        x = left + gap
        for g, gtitle, keys in groups:
            gx0 = x
            for k in keys:
                op = R["ops"][k]
                v = value(k, metric)
                col = COLORS.get(op["family"], "#888")
                if v and v > 0:
                    y = Y(max(v, lo))
                    out.append(f'<rect x="{x + 3:.1f}" y="{y:.1f}" width="{bar_w - 6:.1f}" '
                               f'height="{yb - y:.1f}" fill="{col}"><title>{esc(op["label"])}: '
                               f'{v:,.1f}</title></rect>')
                    lab = f"{v:,.0f}" if v >= 10 else f"{v:.1f}"
                    out.append(f'<text x="{x + bar_w / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle" '
                               f'font-size="10.5">{lab}</text>')
                else:
                    out.append(f'<text x="{x + bar_w / 2:.1f}" y="{yb - 4:.1f}" text-anchor="middle" '
                               f'font-size="10" fill="#999">n/a</text>')
                tx, ty = x + bar_w / 2 + 4, yb + 12
                out.append(f'<text x="{tx:.1f}" y="{ty}" font-size="10.5" text-anchor="end" '
                           f'transform="rotate(-35 {tx:.1f} {ty})">{esc(op.get("short", k))}</text>')
                x += bar_w
            t = tgt.get((g, metric))
            if t and lo < t[0] < hi:
                y = Y(t[0])
                out.append(f'<line x1="{gx0:.1f}" x2="{x:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d62728" '
                           'stroke-width="1.6" stroke-dasharray="6 4"/>')
            if t:
                out.append(f'<text x="{(gx0 + x) / 2:.1f}" y="{yb + 108}" text-anchor="middle" '
                           f'font-size="11" fill="#d62728">- - target {esc(t[1])}</text>')
            out.append(f'<text x="{(gx0 + x) / 2:.1f}" y="{yb + 92}" text-anchor="middle" '
                       f'font-size="12.5" font-weight="bold">{esc(gtitle)}</text>')
            x += gap
        out.append(f'<line x1="{left}" x2="{W - right}" y1="{yb}" y2="{yb}" stroke="#333"/>')

    panel(top, "instr", "instructions / op (callgrind)", "User-space instructions per operation")
    panel(top + panel_h, "ns", "ns / op (median wall time)", "Wall time per operation")
    ly = top + 2 * panel_h + 30
    col_w = (W - left - right) / 4
    for i, (fam, lab) in enumerate(FAMILY_LEGEND):
        cx = left + (i % 4) * col_w
        cy = ly + (i // 4) * 20
        out.append(f'<rect x="{cx:.1f}" y="{cy - 10}" width="12" height="12" fill="{COLORS[fam]}"/>')
        out.append(f'<text x="{cx + 17:.1f}" y="{cy}" font-size="11.5">{esc(lab)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--only", help="run only ops whose key contains this (for debugging; "
                    "writes to target/bench/partial instead of docs/bench)")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--out", help="write the results here instead of docs/bench")
    ap.add_argument("--render", action="store_true",
                    help="rewrite RESULTS.md and the plot from docs/bench/results.json, running nothing")
    args = ap.parse_args()
    if args.render:
        with open(os.path.join(DOCS, "results.json")) as f:
            R = json.load(f)
        m = MODES[R["mode"]]
        R["rows"], R["targets"] = build_rows(R, m)
        write_md(R, m, R["rows"], R["targets"], os.path.join(DOCS, "RESULTS.md"))
        write_svg(R, os.path.join(DOCS, "results.svg"))
        with open(os.path.join(DOCS, "results.json"), "w") as f:
            json.dump(R, f, indent=1, default=str)
        return
    mode = "full" if args.full else "quick"
    m = MODES[mode]
    t_start = time.time()
    for b in (COMPARE, CBENCH, LOADGEN, FIBER, UVBENCH, TASKBENCH, IOBENCH):
        if not os.path.exists(b):
            sys.exit(f"run.py: {b} is missing: run `make bench` (it builds everything first)")
    os.makedirs(CG_DIR, exist_ok=True)
    out_dir = args.out or (DOCS if not args.only else os.path.join(BIN, "partial"))
    os.makedirs(os.path.join(out_dir, "profiles"), exist_ok=True)

    specs = impls(m)
    if args.only:
        specs = {k: v for k, v in specs.items() if args.only in k}
    R = dict(mode=mode, date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
             machine=machine(), versions=versions(), ops={},
             load_before=os.getloadavg(), busy_before=cpu_busy())
    log(f"make bench: {mode} mode, {len(specs)} timed benches, then callgrind, memory, "
        f"throughput and timers")

    for k, s in specs.items():
        R["ops"][k] = dict(label=s["label"], short=s["short"], group=s["group"], family=s["family"],
                           cmd=[os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in s["cmd"]],
                           iters=s["iters"], ops_per_iter=s["ops"], reps=m["reps"],
                           timing=None, callgrind=None)
    log("== wall time")
    multi = [k for k in specs if k.startswith(MULTI_PROCESS)]
    for k, s in specs.items():
        if k in multi:
            continue
        if k.startswith("scale.") and k.endswith(".1k"):
            big_key = k[:-3] + ".big"
            if big_key not in R["ops"]:
                R["ops"][k]["timing"] = timing(k, s, m["reps"])
                continue
            # The two halves run one after the other in one process, so a
            # slow spell of the VM in either moves the ratio: several
            # processes, and the one whose ratio is the median.
            pairs = []
            for _ in range(m["scale_processes"]):
                out = timing(k, s, m["reps"], m["scale_big"])
                big = split_pair(out, big_key)
                if out and big:
                    pairs.append((big["ns_per_op"] / out["ns_per_op"], out, big))
            if pairs:
                pairs.sort(key=lambda p: p[0])
                _, out, big = pairs[len(pairs) // 2]
                out["process_ratios"] = big["process_ratios"] = [round(p[0], 3) for p in pairs]
                log(f"  {k[:-3]:28s} ratios of {len(pairs)} processes (sorted): "
                    f"{', '.join(f'{p[0]:.2f}' for p in pairs)}")
                R["ops"][k]["timing"], R["ops"][big_key]["timing"] = out, big
        elif k.startswith("scale.") and k.endswith(".big"):
            if k[:-4] + ".1k" not in R["ops"]:
                R["ops"][k]["timing"] = timing(k, s, m["reps"])
        else:
            R["ops"][k]["timing"] = timing(k, s, m["reps"])
    if multi:
        log(f"== wall time, {m['processes']} processes each, alternated")
        for k, out in timing_processes(multi, specs, m["reps"], m["processes"]).items():
            R["ops"][k]["timing"] = out

    if not args.only or "mem" in args.only:
        log("== memory")
        R["memory"] = {}
        R["memory_workers"] = 2
        R["memory"]["coframe"] = run_json("mem.coframe", [COMPARE, "mem_coframe", "--count",
                                                          str(m["mem_count"]), "--workers", "2"], 900)
        R["memory"]["corosensei"] = run_json("mem.corosensei", [COMPARE, "mem_corosensei",
                                                                "--count", "1000000"], 600)
        for k, v in R["memory"].items():
            if v:
                log(f"  mem.{k:24s} {v['count']:,.0f} coroutines, {v['rss_per_coroutine']:,.0f} B each")

    if not args.only or "echo" in args.only:
        log("== echo throughput, 1,000 connections")
        R["throughput"] = {}
        # coframe_rearm: the same C server without CORO_KEEP, each wait
        # re-arming its descriptor (an EPOLL_CTL_MOD), for comparison.
        # coframe_io: the same server on coro_recv/coro_send (CORO_KEEP)
        # instead of its hand-tuned read loop: what the calls cost.
        servers = (("coframe", [CBENCH, "echo_server", "--workers", "2"], None),
                   ("tokio", [COMPARE, "echo_server_tokio", "--workers", "2"], None),
                   ("libuv", [UVBENCH, "echo_server", "--workers", "2"], None),
                   ("coframe_rearm", [CBENCH, "echo_server", "--workers", "2"], {"CBENCH_NO_KEEP": "1"}),
                   ("coframe_io", [CBENCH, "echo_server", "--workers", "2"], {"CBENCH_IO": "1"}))
        # Alternated, so that a slow spell of the VM hits all alike; the
        # median of each is reported, with every run in results.json.
        runs = {name: [] for name, _, _ in servers}
        for _ in range(m["echo_runs"]):
            for name, cmd, env in servers:
                r = echo_throughput(cmd, m["echo_secs"], f"throughput.{name}", env)
                if r:
                    runs[name].append(r)
        for name, _, _ in servers:
            rs = sorted(runs[name], key=lambda r: r["rps"])
            if rs:
                best = dict(rs[len(rs) // 2])
                best["runs"] = len(rs)
                best["all_rps"] = [r["rps"] for r in runs[name]]
                cpus = [r["server_cpu_us_per_rt"] for r in runs[name] if "server_cpu_us_per_rt" in r]
                best["all_cpu_us_per_rt"] = cpus
                if cpus:
                    best["median_cpu_us_per_rt"] = sorted(cpus)[len(cpus) // 2]
                R["throughput"][name] = best
                log(f"  throughput.{name:19s} {best['rps']:12,.0f} round trips/s "
                    f"(median of {len(rs)}: {', '.join(f'{r:,.0f}' for r in best['all_rps'])})")
            else:
                R["throughput"][name] = None

    if not args.only or "timer" in args.only:
        log("== timers")
        R["timers"] = run_json("timers.coframe", [COMPARE, "timers_coframe", "--count",
                                                  str(m["timers"]), "--secs", "1", "--workers", "2"], 300)
        if R["timers"]:
            t = R["timers"]
            log(f"  timers: late p50 {t['p50_us']:,.0f} µs, p99 {t['p99_us']:,.0f} µs")

    if not args.only or "xthread" in args.only:
        # What the cross-thread benches cross: a separate, untimed run of
        # each ping-pong that notes the thread of every hop.
        log("== cross-thread hops: which thread each hop ran on")
        R["hop_threads"] = {}
        for name in HOP_THREADS:
            r = run_json(f"hops.{name}", [COMPARE, f"{name}_threads", "--iters", "20000"], 120)
            if r:
                R["hop_threads"][name] = r
                log(f"  {name:30s} {r['changed_share']:.2%} of {r['hops']:,} hops on another thread")

    if not args.no_callgrind and shutil.which("valgrind"):
        log("== instructions (callgrind, two runs per bench, two at a time)")
        todo = [(k, s) for k, s in specs.items() if s["cg"]]
        # The longest first, so the pool ends together.
        todo.sort(key=lambda ks: "big" not in ks[0])
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            futs = [pool.submit(callgrind, k, s) for k, s in todo]
            for f in concurrent.futures.as_completed(futs):
                k, res, err = f.result()
                if err:
                    failures.append(err)
                    log(f"  {k}: callgrind FAILED")
                    continue
                R["ops"][k]["callgrind"] = res
                log(f"  {k:28s} {res['instr_per_op']:12,.1f} instr/op   ({res['secs']:.0f} s)")
        log("== profiles (callgrind_annotate --inclusive=no)")
        for k, v in R["ops"].items():
            cg = v.get("callgrind")
            if not cg or not (v["family"].startswith("coframe") or k.startswith("scale.")):
                continue
            rows, raw = hot_path(k, v["ops_per_iter"], cg)
            v["hot_path"] = [[name, round(x, 1)] for name, x in rows]
            with open(os.path.join(out_dir, "profiles", f"{k}.txt"), "w") as f:
                f.write(f"# {k}: {v['label']}\n# {cg['instr_per_op']:,.1f} user instructions per op "
                        f"(callgrind, N={cg['n1']:,} and N={cg['n2']:,}: {' '.join(v['cmd'])})\n\n")
                f.write("## Instructions per op by function (exclusive; N2 profile minus N1 profile, "
                        "divided by the extra ops; inlined code counted in the function it was inlined "
                        "into)\n\n")
                for name, x in rows:
                    f.write(f"{x:10.1f}  {name}\n")
                f.write(f"\n## callgrind_annotate --inclusive=no, N={cg['n2']:,} run (setup included)\n\n")
                f.write(raw_top(raw) + "\n")

    R["elapsed_s"] = time.time() - t_start
    R["load_after"] = os.getloadavg()
    R["busy_after"] = cpu_busy()
    R["failures"] = failures
    if not args.only:
        rows, targets = build_rows(R, m)
        R["rows"] = rows
        R["targets"] = targets
        write_md(R, m, rows, targets, os.path.join(out_dir, "RESULTS.md"))
        write_svg(R, os.path.join(out_dir, "results.svg"))
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    log(f"== done in {R['elapsed_s']:.0f} s; wrote {os.path.relpath(out_dir, ROOT)}/")
    if not args.only:
        for t in R["targets"]:
            log(f"  target {t['id']:3s} {mark(t['met']):12s} {t['detail']}")
    if failures:
        log(f"== {len(failures)} bench(es) failed:")
        for f in failures:
            log("  " + f.replace("\n", "\n    "))
        sys.exit(1)


if __name__ == "__main__":
    main()
