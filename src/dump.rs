//! `coro_dump`: every live coroutine of a runtime, as text, to a file
//! descriptor.
//!
//! Safe to call from any thread while the runtime runs: it reads only
//! what any thread may read, the slot's atomics (the state word, the
//! owner, the worker, the wait description of `frame/wait.rs`, the trace
//! of `frame/trace.rs`), never the body (rule 3 in `frame/mod.rs`). Each
//! frame is read seqlock-style: the state word, then the words, an
//! acquire fence, and the state word again; the words are written with
//! release stores, so if the state word did not change, neither did what
//! was read for it (the state word changes at every park, resume and
//! free, and the words are rewritten only after such a change). A frame
//! that keeps changing is shown with its state only, and says so.
//!
//! It allocates nothing: the text goes through a fixed buffer to
//! `write(2)`. Symbols come from `dladdr`, which names what the dynamic
//! symbol table holds (a library's exported functions, and a program's
//! own functions only when it is linked with `-rdynamic`); every frame
//! also gets its module and offset, for `addr2line`.

use core::ffi::{c_void, CStr};
use core::fmt::{self, Write};
use std::sync::atomic::{fence, Ordering::*};

use crate::error::{Error, Result};
use crate::frame::slot::Slot;
use crate::frame::state::{
    Snapshot, ASYNC_REF, AWAITING, CANCELLED, CANCEL_RETURNS, DONE, EXEC, LIB_HELD, SUSPEND_REF,
};
use crate::frame::trace::{self, Frames};
use crate::frame::wait::Wait;
use crate::frame::{table, Promise};
use crate::sched::Runtime;
use crate::sync::Obj;

/// How many times a frame that changed while it was read is read again.
const READS: usize = 4;

/// What the dump found of one frame.
struct View {
    snap: Snapshot,
    /// The state word did not hold still over `READS` reads: only `snap`
    /// is shown, without wait, worker or backtrace.
    changing: bool,
    worker: usize,
    wait: Wait,
    frames: Option<Frames>,
}

/// Writes the dump of `rt` to `fd`. Errors: `Io` (a write failed; errno
/// says why).
pub fn dump(rt: &Runtime, fd: i32) -> Result<()> {
    let mut out = Out::new(fd);
    let r = write_dump(&mut out, rt).and_then(|()| out.flush());
    match (r, out.failed) {
        (Ok(()), false) => Ok(()),
        _ => Err(Error::Io),
    }
}

fn write_dump(out: &mut Out, rt: &Runtime) -> fmt::Result {
    let now = crate::poll::now();
    let checking = crate::util::checking();
    // SAFETY: getpid(2) cannot fail.
    let pid = unsafe { libc::getpid() };
    writeln!(
        out,
        "coro_dump: runtime {}, {} workers, pid {pid}, coro_now() {now} ns",
        rt.id(),
        rt.workers()
    )?;
    if checking {
        writeln!(
            out,
            "coro_dump: backtraces are captured at each suspension (check mode)"
        )?;
    } else {
        writeln!(
            out,
            "coro_dump: backtraces are not captured: run with COFRAME_CHECK=1 \
             (or a debug build of coframe), or use gdb (docs/DEBUGGING.md)"
        )?;
    }
    let own = Module::of(dump as *const () as usize);
    let mut count = 0usize;
    let mut result = Ok(());
    table::for_each(|slot| {
        if result.is_err() {
            return;
        }
        let Some(view) = read(slot, rt.id()) else {
            return;
        };
        count += 1;
        result = write_frame(out, slot, &view, now, checking, own);
    });
    result?;
    writeln!(
        out,
        "coro_dump: end of runtime {}: {count} coroutines",
        rt.id()
    )
}

/// Reads `slot` if it holds a live frame of runtime `rt`.
fn read(slot: &Slot, rt: u64) -> Option<View> {
    let mut last = None;
    for _ in 0..READS {
        let snap = slot.state.load();
        if snap.is_free() || slot.owner.load(Acquire) != rt {
            return None;
        }
        let worker = slot.worker();
        let wait = slot.wait.get();
        let frames = trace::of(slot).map(|t| t.read());
        // Whatever was read above happens before this fence; a word
        // rewritten after the state changed was written with a release
        // store, so the state word read next is at least that new.
        fence(Acquire);
        if slot.state.load() == snap && slot.owner.load(Relaxed) == rt {
            return Some(View {
                snap,
                changing: false,
                worker,
                wait,
                frames,
            });
        }
        last = Some(snap);
    }
    let snap = last?;
    Some(View {
        snap,
        changing: true,
        worker: 0,
        wait: Wait::None,
        frames: None,
    })
}

fn write_frame(
    out: &mut Out,
    slot: &Slot,
    v: &View,
    now: i64,
    checking: bool,
    own: Module,
) -> fmt::Result {
    let s = v.snap;
    let id = Promise::new(slot.index(), s.gen()).0;
    // Switched out with a token made: parked, or its on_suspend runs.
    let suspended = !s.has(DONE) && s.has(SUSPEND_REF);
    let state = if s.has(DONE) {
        if s.has(CANCELLED) {
            "finished (cancelled)"
        } else {
            "finished"
        }
    } else if s.has(EXEC) {
        if s.has(SUSPEND_REF) {
            "suspending (its on_suspend callback runs)"
        } else if s.has(CANCELLED) {
            "cancelled, finishing (running to its next suspension point, queued, or running its defers)"
        } else {
            "runnable (queued or running)"
        }
    } else if s.has(SUSPEND_REF | LIB_HELD) {
        "waiting in the library"
    } else if s.has(SUSPEND_REF) {
        if s.has(CANCELLED) {
            "suspended, cancelled (CORO_ECANCELED once its token is consumed)"
        } else {
            "suspended"
        }
    } else {
        "between states"
    };
    let promise = if !s.has(ASYNC_REF) {
        "consumed"
    } else if s.has(AWAITING) {
        "held by an await"
    } else {
        "held"
    };
    let token = if !s.has(SUSPEND_REF) {
        "none"
    } else if s.has(LIB_HELD) {
        "held by the library"
    } else {
        "held by the user"
    };
    write!(out, "coroutine {id}")?;
    if !v.changing {
        write!(out, " on worker {}", v.worker)?;
    }
    write!(out, ": {state}; promise {promise}; token {token}")?;
    if s.has(CANCEL_RETURNS) {
        write!(out, "; cancel-returns mode")?;
    }
    if s.has(CANCELLED) && !s.has(DONE) {
        write!(out, "; cancel requested")?;
    }
    writeln!(out)?;
    if v.changing {
        return writeln!(
            out,
            "  (its state changed at each of {READS} reads: shown without its wait or backtrace)"
        );
    }
    if suspended && s.has(LIB_HELD) {
        write!(out, "  waits on: ")?;
        describe_wait(out, v.wait, now)?;
        writeln!(out)?;
    }
    if suspended {
        return write_trace(out, id, v.frames, s.seq(), checking, own);
    }
    if !s.has(DONE) {
        writeln!(
            out,
            "  backtrace: none while it runs or is queued (gdb: coframe bt {id})"
        )?;
    }
    Ok(())
}

/// What a parked frame waits on. One arm per kind of `Wait`.
fn describe_wait(out: &mut Out, wait: Wait, now: i64) -> fmt::Result {
    match wait {
        Wait::None => write!(out, "a library wait that does not describe itself"),
        Wait::Await(child) => write!(out, "await of coroutine {}", child.0),
        Wait::Poll {
            fd: -1, deadline, ..
        } => {
            if deadline < 0 {
                write!(out, "sleep with no deadline (until cancelled)")
            } else {
                write!(out, "sleep until ")?;
                describe_deadline(out, deadline, now)
            }
        }
        Wait::Poll {
            fd,
            events,
            deadline,
            ..
        } => {
            let what = match events & (crate::poll::READABLE | crate::poll::WRITABLE) {
                crate::poll::READABLE => "readable",
                crate::poll::WRITABLE => "writable",
                _ => "readable or writable",
            };
            write!(out, "fd {fd} {what}, ")?;
            write_deadline(out, deadline, now)
        }
        Wait::Sync {
            obj,
            sending,
            deadline,
            ..
        } => {
            match obj {
                Obj::Mutex(m) => write!(out, "lock of mutex {m:p}, ")?,
                Obj::Cond(c) => write!(out, "signal of condition {c:p}, ")?,
                Obj::Chan(ch) if sending => write!(out, "room in channel {ch:p} (send), ")?,
                Obj::Chan(ch) => write!(out, "item from channel {ch:p} (receive), ")?,
            }
            write_deadline(out, deadline, now)
        }
    }
}

/// ", deadline …" of a wait, or that it has none.
fn write_deadline(out: &mut Out, deadline: i64, now: i64) -> fmt::Result {
    if deadline < 0 {
        write!(out, "no deadline")
    } else {
        write!(out, "deadline ")?;
        describe_deadline(out, deadline, now)
    }
}

fn describe_deadline(out: &mut Out, deadline: i64, now: i64) -> fmt::Result {
    let left = deadline.saturating_sub(now);
    let (word, ns) = if left >= 0 {
        ("in", left)
    } else {
        ("passed", left.saturating_neg())
    };
    write!(
        out,
        "{deadline} ns ({word} {}.{:06} s",
        ns / 1_000_000_000,
        ns % 1_000_000_000 / 1_000
    )?;
    if left < 0 {
        write!(out, " ago")?;
    }
    write!(out, ")")
}

fn write_trace(
    out: &mut Out,
    id: u64,
    frames: Option<Frames>,
    seq: u32,
    checking: bool,
    own: Module,
) -> fmt::Result {
    let frames = frames.filter(|f| f.seq == seq && f.len > 0);
    let Some(frames) = frames else {
        let why = if checking {
            "none captured for this suspension"
        } else {
            "not captured (COFRAME_CHECK=1 captures one at each suspension)"
        };
        return writeln!(
            out,
            "  backtrace: {why}; in gdb: coframe bt {id} (scripts/coframe-gdb.py, docs/DEBUGGING.md)"
        );
    };
    writeln!(out, "  backtrace at its suspension:")?;
    let ips = frames.ips();
    let modules: [Module; trace::FRAMES] =
        core::array::from_fn(|i| ips.get(i).map_or(Module::NONE, |&ip| Module::of(ip - 1)));
    let modules = &modules[..ips.len()];
    // The library's own frames at the top (the capture, the suspension
    // point) and at the bottom (the loop that called the entry) say
    // nothing: the innermost shown is the library's entry point the
    // program called. If every frame is in one module (the library
    // linked statically), all are shown.
    let mine = |m: &Module| m.base == own.base && own.base != 0;
    let (first, last) = if modules.iter().all(mine) {
        (0, ips.len())
    } else {
        let top = modules.iter().take_while(|m| mine(m)).count();
        let bottom = modules.iter().rev().take_while(|m| mine(m)).count();
        (top.saturating_sub(1), ips.len() - bottom)
    };
    for (n, i) in (first..last).enumerate() {
        write_ip(out, n, ips[i], &modules[i])?;
    }
    Ok(())
}

fn write_ip(out: &mut Out, n: usize, ip: usize, m: &Module) -> fmt::Result {
    write!(out, "    #{n:<2} {ip:#018x} ")?;
    match m.symbol {
        Some((name, addr)) => write!(out, "{}+{:#x}", Lossy(name), ip - addr)?,
        None => write!(out, "??")?,
    }
    match m.name {
        Some(name) => writeln!(out, " ({}+{:#x})", Lossy(basename(name)), ip - m.base),
        None => writeln!(out),
    }
}

/// Where an address lies, as `dladdr` says.
#[derive(Clone, Copy)]
struct Module {
    base: usize,
    name: Option<&'static CStr>,
    symbol: Option<(&'static CStr, usize)>,
}

impl Module {
    const NONE: Module = Module {
        base: 0,
        name: None,
        symbol: None,
    };

    /// `addr` is looked up as given: for a return address, pass the
    /// address before it (the call), which is still in the caller even
    /// when the call is the caller's last instruction.
    fn of(addr: usize) -> Module {
        // SAFETY: Dl_info is plain data; dladdr fills it on success.
        let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
        // SAFETY: dladdr reads only its arguments; any address is allowed.
        if unsafe { libc::dladdr(addr as *const c_void, &mut info) } == 0 {
            return Module::NONE;
        }
        // SAFETY: dladdr's strings are NUL-terminated and belong to the
        // loaded object, which the library never unloads from under a
        // running dump (the caller's frames are in it).
        let cstr = |p: *const libc::c_char| (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) });
        Module {
            base: info.dli_fbase as usize,
            name: cstr(info.dli_fname),
            symbol: cstr(info.dli_sname).map(|name| (name, info.dli_saddr as usize)),
        }
    }
}

fn basename(path: &CStr) -> &CStr {
    let bytes = path.to_bytes_with_nul();
    match bytes.iter().rposition(|&b| b == b'/') {
        // The rest still ends in the NUL.
        Some(i) => CStr::from_bytes_with_nul(&bytes[i + 1..]).unwrap_or(path),
        None => path,
    }
}

/// A C string shown as text, bad UTF-8 replaced.
struct Lossy<'a>(&'a CStr);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.to_bytes().utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_char(char::REPLACEMENT_CHARACTER)?;
            }
        }
        Ok(())
    }
}

/// A buffered writer to a descriptor that allocates nothing. A failed
/// write sets `failed` (errno keeps the reason) and fails every write
/// after it.
struct Out {
    fd: i32,
    buf: [u8; 4096],
    len: usize,
    failed: bool,
}

impl Out {
    fn new(fd: i32) -> Out {
        Out {
            fd,
            buf: [0; 4096],
            len: 0,
            failed: false,
        }
    }

    fn flush(&mut self) -> fmt::Result {
        let mut at = 0;
        while at < self.len && !self.failed {
            let rest = &self.buf[at..self.len];
            // SAFETY: the pointer and length come from a live slice.
            let n = unsafe { libc::write(self.fd, rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                at += n as usize;
                continue;
            }
            let err = std::io::Error::last_os_error().raw_os_error();
            if n < 0 && err == Some(libc::EINTR) {
                continue;
            }
            if n < 0 && (err == Some(libc::EAGAIN) || err == Some(libc::EWOULDBLOCK)) {
                // A non-blocking descriptor: wait until it takes more.
                let mut pfd = libc::pollfd {
                    fd: self.fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one pollfd, ours.
                if unsafe { libc::poll(&mut pfd, 1, -1) } >= 0 || errno_is(libc::EINTR) {
                    continue;
                }
            }
            // write(2) returned 0 for a non-empty buffer: say why as EIO.
            if n == 0 {
                crate::util::set_errno(libc::EIO);
            }
            self.failed = true;
        }
        self.len = 0;
        if self.failed {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

impl Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush()?;
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        if self.failed {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

fn errno_is(code: i32) -> bool {
    std::io::Error::last_os_error().raw_os_error() == Some(code)
}
