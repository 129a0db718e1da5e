# coframe-gdb.py: gdb commands that list a process's coframe coroutines and
# show a suspended coroutine's stack. docs/DEBUGGING.md explains them.
#
#   (gdb) source scripts/coframe-gdb.py
#   (gdb) coframe list [RUNTIME]      every live coroutine (of one runtime)
#   (gdb) coframe bt ID [BT-OPTIONS]  the stack of coroutine ID (an expression:
#                                     a number, or a variable of the program)
#   (gdb) coframe bt all [BT-OPTIONS] the stack of every coroutine not running
#
# gdb cannot do this alone: a suspended coroutine is no thread, so `bt` and
# `thread apply` never see its stack. The helper reads the library's frame
# table (static TABLE in src/frame/table.rs: chunks of Slots) through the
# library's debug info (release builds keep the library's types: Cargo.toml,
# [profile.release.package.coframe]), takes each live frame's state word and
# the stack pointer corosensei saved when the coroutine switched out, and for
# `bt` loads the registers that switch saved on the coroutine's stack into
# the selected thread, runs gdb's own `bt`, and puts the thread's registers
# back. A core file's registers cannot be changed: there a Python unwinder
# makes the thread's innermost frame unwind into the coroutine's registers,
# so the coroutine's stack shows from frame #1. A frame filter leaves out
# the switch's own frames above the library function the program called
# (`coframe bt ID -no-filters` shows them). x86_64 only (the saved layout
# is corosensei's arch/x86_64.rs).
#
# The constants below are the library's (src/frame/state.rs, src/frame/wait.rs,
# src/frame/handle.rs); tests/gdb_helper.rs fails if they drift apart.

import itertools
import struct

import gdb
import gdb.unwinder

# The state word (src/frame/state.rs).
ASYNC_REF = 1 << 0
AWAITING = 1 << 1
SUSPEND_REF = 1 << 2
LIB_HELD = 1 << 3
EXEC = 1 << 4
CANCELLED = 1 << 5
DONE = 1 << 6
CANCEL_RETURNS = 1 << 7
FLAGS = 0xFF
GEN_SHIFT = 8
GEN_MASK = 0xFFFFFF

# A promise (src/frame/handle.rs): gen << 32 | slot + 1.
KIND_TOKEN = 1 << 31

# The wait description (src/frame/wait.rs).
KIND_NONE = 0
KIND_AWAIT = 1
KIND_POLL = 2
KIND_SYNC = 3
READABLE = 1
WRITABLE = 2

# corosensei 0.3.4, arch/x86_64.rs: switch_yield pushes rbp, rbx and the
# resume address; the coroutine's stack_ptr points at the resume address.
SAVED = (("rip", 0), ("rbx", 8), ("rbp", 16))
SAVED_SIZE = 24


class CoframeError(gdb.GdbError):
    pass


class RustLanguage:
    """Parses the library's names as Rust, then gives gdb its language back."""

    def __enter__(self):
        self.saved = gdb.parameter("language")
        gdb.execute("set language rust", to_string=True)
        return self

    def __exit__(self, *exc):
        gdb.execute("set language %s" % self.saved, to_string=True)
        return False


def field_offset(ty, *names):
    """Byte offset of a field path inside `ty`, and the field's type."""
    off = 0
    for name in names:
        ty = ty.strip_typedefs()
        for f in ty.fields():
            if f.name == name:
                off += f.bitpos // 8
                ty = f.type
                break
        else:
            raise CoframeError("coframe: %s has no field %s (a newer library? "
                               "update scripts/coframe-gdb.py)" % (ty, name))
    return off, ty


class Layout:
    """Where the helper finds things in the library's memory, from its debug info."""

    def __init__(self):
        if gdb.selected_inferior().pid == 0:
            raise CoframeError("coframe: no process (run the program, attach to it, or load a core)")
        with RustLanguage():
            try:
                table = gdb.parse_and_eval("coframe::frame::table::TABLE")
                slot = gdb.lookup_type("coframe::frame::slot::Slot")
                cell = gdb.lookup_type("coframe::frame::wait::WaitCell")
            except gdb.error as e:
                raise CoframeError(
                    "coframe: the library's types are not in its debug info (%s). Load a "
                    "libcoframe built with its release profile (debug = 2 for the coframe "
                    "package), or its separate debug file." % e)
            self.chunks = int(table["chunks"].address)
            self.nchunks = table["chunks"].type.range()[1] + 1
            self.chunk = 4096  # table.rs CHUNK
            self.slot_size = slot.sizeof
            self.state = field_offset(slot, "state")[0]
            self.index = field_offset(slot, "index")[0]
            self.owner = field_offset(slot, "owner")[0]
            self.worker = field_offset(slot, "worker")[0]
            wait = field_offset(slot, "wait")[0]
            self.wait = {name: wait + field_offset(cell, name)[0]
                         for name in ("kind", "events", "worker", "fd", "obj", "deadline")}
            self.context = field_offset(slot, "context")[0]
            self.slot_type = slot

    def chunk_addrs(self):
        inf = gdb.selected_inferior()
        raw = inf.read_memory(self.chunks, 8 * self.nchunks).tobytes()
        for i, (p,) in enumerate(struct.iter_unpack("<Q", raw)):
            if p:
                yield i, p


class Frame:
    """One live frame, decoded from its slot's bytes."""

    def __init__(self, layout, addr, raw):
        def u(off, fmt):
            return struct.unpack_from(fmt, raw, off)[0]
        self.addr = addr
        self.word = u(layout.state, "<Q")
        self.index = u(layout.index, "<I")
        self.owner = u(layout.owner, "<Q")
        self.worker = u(layout.worker, "<Q")
        w = layout.wait
        self.wait = (u(w["kind"], "<B"), u(w["events"], "<B"), u(w["worker"], "<H"),
                     u(w["fd"], "<i"), u(w["obj"], "<Q"), u(w["deadline"], "<q"))
        gen = (self.word >> GEN_SHIFT) & GEN_MASK
        self.id = (gen << 32) | (self.index + 1)

    def has(self, bits):
        return self.word & bits == bits

    def state(self):
        if self.has(DONE):
            return "finished (cancelled)" if self.has(CANCELLED) else "finished"
        if self.has(EXEC):
            if self.has(SUSPEND_REF):
                return "suspending (its on_suspend callback runs)"
            if self.has(CANCELLED):
                return "cancelled, finishing"
            return "runnable (queued or running)"
        if self.has(SUSPEND_REF | LIB_HELD):
            return "waiting in the library"
        if self.has(SUSPEND_REF):
            if self.has(CANCELLED):
                return "suspended, cancelled (CORO_ECANCELED once its token is consumed)"
            return "suspended"
        return "between states"

    def line(self):
        promise = ("consumed" if not self.has(ASYNC_REF)
                   else "held by an await" if self.has(AWAITING) else "held")
        token = ("none" if not self.has(SUSPEND_REF)
                 else "held by the library" if self.has(LIB_HELD) else "held by the user")
        s = "coroutine %d (runtime %d) on worker %d: %s; promise %s; token %s" % (
            self.id, self.owner, self.worker, self.state(), promise, token)
        if self.has(CANCEL_RETURNS):
            s += "; cancel-returns mode"
        if self.has(CANCELLED) and not self.has(DONE):
            s += "; cancel requested"
        return s

    def wait_line(self):
        if not (self.has(SUSPEND_REF | LIB_HELD) and not self.has(DONE)):
            return None
        kind, events, worker, fd, obj, deadline = self.wait
        if kind == KIND_AWAIT:
            return "await of coroutine %d" % obj
        if kind == KIND_POLL:
            dl = "no deadline" if deadline < 0 else "deadline %d ns (coro_now() clock)" % deadline
            if fd < 0:
                return ("sleep with no deadline (until cancelled)" if deadline < 0
                        else "sleep until %d ns (coro_now() clock)" % deadline)
            what = {READABLE: "readable", WRITABLE: "writable"}.get(
                events & (READABLE | WRITABLE), "readable or writable")
            return "fd %d %s, %s" % (fd, what, dl)
        if kind == KIND_SYNC:
            dl = "no deadline" if deadline < 0 else "deadline %d ns (coro_now() clock)" % deadline
            addr, obj_kind = obj & ~3, obj & 3
            what = {0: "lock of mutex 0x%x", 1: "signal of condition 0x%x"}.get(
                obj_kind, "room in channel 0x%x (send)" if events else "item from channel 0x%x (receive)")
            return "%s, %s" % (what % addr, dl)
        return "a library wait that does not describe itself"


def live_frames(layout):
    inf = gdb.selected_inferior()
    size = layout.slot_size
    for _, chunk in layout.chunk_addrs():
        raw = inf.read_memory(chunk, size * layout.chunk).tobytes()
        for i in range(layout.chunk):
            word = struct.unpack_from("<Q", raw, i * size + layout.state)[0]
            if word & FLAGS:
                yield Frame(layout, chunk + i * size, raw[i * size:(i + 1) * size])


def find_frame(layout, cid):
    index = (cid & (KIND_TOKEN - 1)) - 1
    if cid & KIND_TOKEN or index < 0:
        raise CoframeError("coframe: %d is not a coroutine id (coro_self_id's value)" % cid)
    chunk = dict(layout.chunk_addrs()).get(index // layout.chunk)
    if chunk is None:
        raise CoframeError("coframe: no coroutine %d" % cid)
    addr = chunk + (index % layout.chunk) * layout.slot_size
    raw = gdb.selected_inferior().read_memory(addr, layout.slot_size).tobytes()
    f = Frame(layout, addr, raw)
    if not f.word & FLAGS or f.id != cid:
        raise CoframeError("coframe: no coroutine %d (it ended, or the id is stale)" % cid)
    return f


def saved_sp(layout, frame):
    """The stack pointer corosensei saved at the coroutine's last switch out,
    or a reason why there is none."""
    with RustLanguage():
        slot = gdb.Value(frame.addr).cast(layout.slot_type.pointer()).dereference()
        ctx = slot["context"]["value"]
        try:
            co = ctx["Some"]["__0"]["co"]
        except gdb.error:
            return None, ("it has no stack of its own (a foreign frame, coro_spawn_frame: "
                          "its state lives in its host's frame)")
        u64p = gdb.lookup_type("u64").pointer()
        sp = int(co["stack_ptr"].address.cast(u64p).dereference())
        initial = int(co["initial_stack_ptr"].address.cast(u64p).dereference())
    if sp == 0:
        return None, "it is running (see its worker's thread: `info threads`, `thread N`, `bt`)"
    if sp == initial:
        return None, "it has not started yet"
    return sp, None


def solib(pc):
    try:
        return gdb.solib_name(pc)
    except gdb.error:
        return None


# Names of the library's own frames (and what it inlines from its crates).
LIBRARY_FRAMES = ("coframe::", "corosensei::", "core::", "std::", "alloc::")


def coroutine_frames(limit=256):
    """Which frames of the selected thread's stack `coframe bt` shows, as
    (first, end): from the library function the program called (e.g.
    coro_suspend; the switch's own frames above it are left out) down to
    the coroutine's entry function (the library's loop that called it,
    corosensei's trampoline and the stale worker frames its link still
    points at are left out)."""
    frames = []
    f = gdb.newest_frame()
    while f is not None and len(frames) < limit:
        frames.append(f)
        if f.name() == "stack_init_trampoline":
            break
        try:
            f = f.older()
        except gdb.error:
            break
    top = 1 if UNWINDER.saved is not None and len(frames) > 1 else 0

    def mine(fr):
        name = fr.name() or ""
        return name.startswith(LIBRARY_FRAMES) or name == "stack_init_trampoline"
    i = top
    while i < len(frames) and mine(frames[i]):
        i += 1
    first = max(top, i - 1)
    while i < len(frames) and not mine(frames[i]):
        i += 1
    if i == len(frames) and frames[-1].name() == "stack_init_trampoline":
        i -= 1
    return (first if first > top else top), i


class CoroutineFrameFilter:
    """Leaves the switch's frames out of `coframe bt`'s backtrace while it
    runs (`bt -no-filters` keeps them)."""

    def __init__(self):
        self.name = "coframe"
        self.priority = 100
        self.enabled = True
        self.skip = None
        gdb.frame_filters[self.name] = self

    def filter(self, frames):
        if not self.skip:
            return frames
        return itertools.islice(frames, self.skip, None)


FILTER = CoroutineFrameFilter()


class FrameId:
    """A frame's identity for an unwinder (gdb.unwinder.FrameId from gdb 14 on)."""

    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


class CoroutineUnwinder(gdb.unwinder.Unwinder):
    """For a core file, whose registers gdb cannot change: while `saved` is
    set, the selected thread's innermost frame unwinds into the coroutine's
    saved registers, so its stack shows from frame #1 on."""

    def __init__(self):
        super().__init__("coframe")
        self.saved = None

    def __call__(self, pending):
        if self.saved is None or pending.level() != 0:
            return None
        info = pending.create_unwind_info(
            FrameId(pending.read_register("rsp"), pending.read_register("rip")))
        for reg, value in self.saved.items():
            info.add_saved_register(reg, gdb.Value(value).cast(gdb.lookup_type("long")))
        return info


UNWINDER = CoroutineUnwinder()
gdb.unwinder.register_unwinder(None, UNWINDER, replace=True)


def flush_frames():
    gdb.execute("maintenance flush register-cache", to_string=True)


def backtrace(layout, frame, bt_args):
    if gdb.selected_inferior().architecture().name() != "i386:x86-64":
        raise CoframeError("coframe bt: x86_64 only (the saved registers are corosensei's "
                           "x86_64 layout)")
    sp, why = saved_sp(layout, frame)
    if sp is None:
        print("coframe: coroutine %d has no saved stack: %s" % (frame.id, why))
        return
    raw = gdb.selected_inferior().read_memory(sp, SAVED_SIZE).tobytes()
    saved = {reg: struct.unpack_from("<Q", raw, off)[0] for reg, off in SAVED}
    saved["rsp"] = sp + SAVED_SIZE
    level = gdb.selected_frame().level()
    gdb.newest_frame().select()
    regs = ("rbx", "rbp", "rsp", "rip")
    old = {r: int(gdb.parse_and_eval("$" + r)) for r in regs}
    loaded = []
    try:
        try:
            for r in regs:
                gdb.execute("set $%s = %d" % (r, saved[r]), to_string=True)
                loaded.append(r)
        except gdb.error:
            # No process (a core file): unwind into the coroutine instead.
            if loaded:
                raise
            UNWINDER.saved = saved
            flush_frames()
            first = 1
        else:
            first = 0
        skip, n = coroutine_frames()
        print("coroutine %d: its stack at its last switch out (saved sp %#x)%s:" % (
            frame.id, sp, "" if first == 0 else
            "; frame #0 is the thread's own (a core: its registers stay)"))
        if first == 1:
            gdb.execute("bt %s 1" % bt_args)
        # bt's count counts the frames the filter lets through.
        filtered = "-no-filters" not in bt_args.split()
        FILTER.skip = skip if filtered else None
        gdb.execute("bt %s %d" % (bt_args, n - skip if filtered else n))
    finally:
        FILTER.skip = None
        if UNWINDER.saved is not None:
            UNWINDER.saved = None
            flush_frames()
        for r in loaded:
            try:
                gdb.execute("set $%s = %d" % (r, old[r]), to_string=True)
            except gdb.error:
                pass
        try:
            gdb.execute("frame %d" % level, to_string=True)
        except gdb.error:
            pass


class CoframeCommand(gdb.Command):
    """coframe's coroutines: coframe list [RUNTIME], coframe bt ID|all [BT-OPTIONS]."""

    def __init__(self):
        super().__init__("coframe", gdb.COMMAND_STACK, gdb.COMPLETE_NONE, True)


class CoframeList(gdb.Command):
    """List every live coroutine: coframe list [RUNTIME].

Each line: its id (coro_self_id's value), runtime, worker, state, and which
references are held; a library wait adds what it waits on. The same words as
coro_dump (docs/API.md)."""

    def __init__(self):
        super().__init__("coframe list", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        layout = Layout()
        runtime = int(gdb.parse_and_eval(arg)) if arg.strip() else None
        n = 0
        for f in live_frames(layout):
            if runtime is not None and f.owner != runtime:
                continue
            n += 1
            print(f.line())
            w = f.wait_line()
            if w:
                print("  waits on: " + w)
        print("coframe: %d coroutines" % n)


class CoframeBt(gdb.Command):
    """The stack of a coroutine that is not running: coframe bt ID|all [BT-OPTIONS].

ID is an expression (a number, or a variable of the program holding
coro_self_id's value). The coroutine's saved registers are loaded into the
selected thread, gdb's `bt` runs (with BT-OPTIONS, e.g. `full`), and the
thread's registers are put back. `all`: every coroutine with a saved stack."""

    def __init__(self):
        super().__init__("coframe bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        words = arg.split(None, 1)
        if not words:
            raise CoframeError("usage: coframe bt ID|all [BT-OPTIONS]")
        rest = words[1] if len(words) > 1 else ""
        layout = Layout()
        if words[0] == "all":
            for f in list(live_frames(layout)):
                if not f.has(DONE):
                    print(f.line())
                    backtrace(layout, f, rest)
            return
        cid = int(gdb.parse_and_eval(words[0]))
        frame = find_frame(layout, cid)
        print(frame.line())
        backtrace(layout, frame, rest)


CoframeCommand()
CoframeList()
CoframeBt()
