//! A deterministic harness for coframe's C ABI, driven by a byte string.
//!
//! Shared by the cargo-fuzz target (`fuzz/fuzz_targets/ops.rs`) and the
//! corpus replay of `cargo test` (`tests/fuzz_corpus.rs`). Every byte
//! string decodes to a program (`decode`): the number of workers, then up
//! to `MAX_OPS` operations. The harness runs them one at a time from its
//! own thread against a fresh runtime, calling the C ABI exactly as a C
//! program would, with `extern "C"` bodies, callbacks, defers and
//! env_drops.
//!
//! Next to the real runtime runs a `Model` of DESIGN.md sections 1 and 8
//! and docs/API.md. For every call it predicts the exact return code;
//! after every operation it predicts where each coroutine stands (which
//! step of its script it is in, what each library call returned, how many
//! tokens it handed out, how many defers, errdefers and env_drops ran) and
//! how many frames are alive. The bodies report their progress through
//! the `RECORDS` table; the harness waits until the records and
//! `coro_live_frames()` match the prediction, and fails, naming the
//! coroutine, if they do not within `SETTLE_LIMIT`. Nothing waits for time
//! to pass: deadlines are either past (0) or absent (-1).

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use coframe::ffi::*;

/// Operations per input; the rest of the input is ignored.
pub const MAX_OPS: usize = 64;
/// Coroutines alive at once; a spawn beyond it is skipped.
const MAX_ALIVE: usize = 16;
/// Steps in one body's script.
const MAX_STEPS: usize = 8;
/// One record per spawn of an input, and one for the child each body
/// may spawn.
const MAX_RECORDS: usize = 2 * MAX_OPS;
/// How long the system may take to reach the predicted state. Only a
/// lost wake-up or a wrong prediction takes this long.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------
// Body scripts
// ---------------------------------------------------------------------

/// The steps a body can take, one library call each.
mod step {
    pub const DEFER: u8 = 0;
    pub const ERRDEFER: u8 = 1;
    /// `coro_suspend`; `on_suspend` hands the token to the harness.
    pub const SUSPEND: u8 = 2;
    pub const YIELD: u8 = 3;
    /// `coro_sleep_until(0)`: due already, returns at once.
    pub const SLEEP_PAST: u8 = 4;
    /// `coro_sleep_until(-1)`: ends only by cancellation.
    pub const SLEEP_FOREVER: u8 = 5;
    /// `coro_wait_fd` on the read end of the coroutine's own pipe.
    pub const WAIT_PIPE: u8 = 6;
    /// `coro_await` of the promise the harness put in the environment.
    pub const AWAIT: u8 = 7;
    /// `coro_await` of its own promise: `CORO_EINVAL`.
    pub const AWAIT_SELF: u8 = 8;
    /// Returns from the body.
    pub const RETURN: u8 = 9;
    /// `coro_spawn` of a child from inside the body (its script and flags
    /// from the argument: `CHILD_SCRIPTS`, `CHILD_FLAGS`). One per body.
    pub const SPAWN_CHILD: u8 = 10;
    /// `coro_await` of that child: it may run nested, at once.
    pub const AWAIT_CHILD: u8 = 11;

    /// How a script byte's low five bits pick a step (weights by
    /// repetition); its top three bits are the step's argument.
    pub const TABLE: [u8; 32] = [
        DEFER,
        ERRDEFER,
        SUSPEND,
        SUSPEND,
        YIELD,
        SLEEP_PAST,
        SLEEP_FOREVER,
        WAIT_PIPE,
        AWAIT,
        AWAIT,
        RETURN,
        AWAIT_SELF,
        DEFER,
        ERRDEFER,
        SUSPEND,
        WAIT_PIPE,
        SPAWN_CHILD,
        AWAIT_CHILD,
        SPAWN_CHILD,
        AWAIT_CHILD,
        SUSPEND,
        AWAIT,
        DEFER,
        ERRDEFER,
        SPAWN_CHILD,
        YIELD,
        SLEEP_FOREVER,
        WAIT_PIPE,
        AWAIT,
        SUSPEND,
        RETURN,
        SLEEP_PAST,
    ];

    /// The scripts a child may run (argument bits 0-1).
    pub const CHILD_SCRIPTS: [&[u8]; 4] =
        [&[], &[YIELD, DEFER], &[SUSPEND], &[ERRDEFER, SLEEP_FOREVER]];

    /// Its spawn flags (argument bit 2).
    pub const CHILD_FLAGS: [u32; 2] = [0, coframe::ffi::CORO_SPAWN_CANCEL_RETURNS];

    pub fn name(kind: u8) -> &'static str {
        [
            "defer",
            "errdefer",
            "suspend",
            "yield",
            "sleep-past",
            "sleep-forever",
            "wait-pipe",
            "await",
            "await-self",
            "return",
            "spawn-child",
            "await-child",
        ][kind as usize]
    }
}

/// What a body returns when a call answered `CORO_ECANCELED`.
const EARLY: u64 = 0xdead0;

/// An expected step value that is not known in advance (a child's
/// promise); checked once it is known.
const ANY: u64 = u64::MAX;

/// `Env::child` of a body that spawns no child.
const NO_CHILD: u32 = u32::MAX;

/// What body `record` returns when its script runs out.
fn end_value(record: usize) -> u64 {
    0x1_0000 | (record as u64) << 4
}

/// What body `record` returns at a `RETURN` step with argument `arg`.
fn return_value(record: usize, arg: u8) -> u64 {
    0x2_0000 | (record as u64) << 8 | (arg as u64) << 4
}

const ENV_MAGIC: u64 = 0x636f_6672_616d_6521;

/// The environment copied into each frame: the body's whole script.
#[repr(C)]
#[derive(Clone, Copy)]
struct Env {
    magic: u64,
    record: u32,
    len: u32,
    kinds: [u8; MAX_STEPS],
    args: [u8; MAX_STEPS],
    /// Read end of the coroutine's pipe, or -1.
    pipe: i32,
    /// The record of the child its `SPAWN_CHILD` step spawns.
    child: u32,
    /// The promise its `AWAIT` steps await (0: none).
    target: u64,
    /// The runtime it spawns its child on.
    rt: u64,
}

// ---------------------------------------------------------------------
// Records: what the bodies and callbacks report
// ---------------------------------------------------------------------

const FAULT_LIFO: u32 = 1;
const FAULT_DEFER_AFTER_DROP: u32 = 2;
/// An rc slot no call has written.
const UNSET: i32 = i32::MIN;

/// One coroutine's progress, written by its body and callbacks (on any
/// thread), read by the harness.
struct Record {
    /// Steps begun.
    entered: AtomicU32,
    /// Steps whose call returned; `rc` and `value` hold what it returned.
    progress: AtomicU32,
    rc: [AtomicI32; MAX_STEPS],
    value: [AtomicU64; MAX_STEPS],
    returned: AtomicU32,
    return_value: AtomicU64,
    /// `coro_self_id()` as the body began.
    self_id: AtomicU64,
    /// `on_suspend` calls, and the last token handed out.
    suspends: AtomicU32,
    token: AtomicU64,
    /// Registered by the body.
    reg_defers: AtomicU32,
    reg_errdefers: AtomicU32,
    /// Run by the library.
    defers: AtomicU32,
    errdefers: AtomicU32,
    drops: AtomicU32,
    /// Defers and errdefers that had run when env_drop ran.
    ran_at_drop: AtomicU32,
    /// Registration number of the last defer run (LIFO check).
    last_defer: AtomicU32,
    faults: AtomicU32,
}

impl Record {
    const fn new() -> Record {
        Record {
            entered: AtomicU32::new(0),
            progress: AtomicU32::new(0),
            rc: [const { AtomicI32::new(UNSET) }; MAX_STEPS],
            value: [const { AtomicU64::new(0) }; MAX_STEPS],
            returned: AtomicU32::new(0),
            return_value: AtomicU64::new(0),
            self_id: AtomicU64::new(0),
            suspends: AtomicU32::new(0),
            token: AtomicU64::new(0),
            reg_defers: AtomicU32::new(0),
            reg_errdefers: AtomicU32::new(0),
            defers: AtomicU32::new(0),
            errdefers: AtomicU32::new(0),
            drops: AtomicU32::new(0),
            ran_at_drop: AtomicU32::new(0),
            last_defer: AtomicU32::new(u32::MAX),
            faults: AtomicU32::new(0),
        }
    }

    /// Back to `new`: only between inputs, when no frame of the last one
    /// is left to write here.
    fn reset(&self) {
        for a in [
            &self.entered,
            &self.progress,
            &self.returned,
            &self.suspends,
            &self.reg_defers,
            &self.reg_errdefers,
            &self.defers,
            &self.errdefers,
            &self.drops,
            &self.ran_at_drop,
            &self.faults,
        ] {
            a.store(0, SeqCst);
        }
        for (rc, value) in self.rc.iter().zip(&self.value) {
            rc.store(UNSET, SeqCst);
            value.store(0, SeqCst);
        }
        self.return_value.store(0, SeqCst);
        self.self_id.store(0, SeqCst);
        self.token.store(0, SeqCst);
        self.last_defer.store(u32::MAX, SeqCst);
    }

    fn fault(&self, bit: u32) {
        self.faults.fetch_or(bit, SeqCst);
    }
}

static RECORDS: [Record; MAX_RECORDS] = [const { Record::new() }; MAX_RECORDS];

/// env_drops of frames that were never made, and runs of `never_runs`:
/// spawns that failed must leave no trace.
static STRAYS: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------
// What runs inside the runtime
// ---------------------------------------------------------------------

/// The body of every coroutine: runs the script in its environment and
/// reports each call's result. Any `CORO_ECANCELED` makes it return early.
unsafe extern "C" fn body(env: *mut c_void) -> *mut c_void {
    // SAFETY: the frame's own copy of the `Env` given to coro_spawn,
    // 16-byte aligned, valid while the frame lives.
    let env = unsafe { &*env.cast::<Env>() };
    let index = env.record as usize;
    let rec = &RECORDS[index];
    rec.self_id.store(coro_self_id(), SeqCst);
    // The child's promise, once spawned: a plain number on this stack.
    let mut child = 0;
    for i in 0..(env.len as usize).min(MAX_STEPS) {
        rec.entered.store(i as u32 + 1, SeqCst);
        let (kind, arg) = (env.kinds[i], env.args[i]);
        let (rc, value) = run_step(env, rec, index, (kind, arg), &mut child);
        rec.rc[i].store(rc, SeqCst);
        rec.value[i].store(value, SeqCst);
        rec.progress.store(i as u32 + 1, SeqCst);
        if rc == CORO_ECANCELED {
            return body_returns(rec, EARLY);
        }
        if kind == step::RETURN {
            return body_returns(rec, return_value(index, arg));
        }
    }
    body_returns(rec, end_value(index))
}

fn body_returns(rec: &Record, value: u64) -> *mut c_void {
    rec.return_value.store(value, SeqCst);
    rec.returned.store(1, SeqCst);
    value as usize as *mut c_void
}

/// One library call of a body: its status and, for awaits, the result
/// (for a spawn, the promise).
fn run_step(
    env: &Env,
    rec: &Record,
    index: usize,
    (kind, arg): (u8, u8),
    child: &mut u64,
) -> (i32, u64) {
    match kind {
        step::DEFER | step::ERRDEFER => {
            let err = kind == step::ERRDEFER;
            let n = rec.reg_defers.load(SeqCst) + rec.reg_errdefers.load(SeqCst);
            let arg = defer_arg(index, n, err);
            let rc = if err {
                coro_errdefer(Some(deferred), arg)
            } else {
                coro_defer(Some(deferred), arg)
            };
            if rc == CORO_OK {
                let count = if err {
                    &rec.reg_errdefers
                } else {
                    &rec.reg_defers
                };
                count.fetch_add(1, SeqCst);
            }
            (rc, 0)
        }
        step::SUSPEND => (coro_suspend(Some(hand_token), index as *mut c_void), 0),
        step::YIELD => (coro_yield(), 0),
        step::SLEEP_PAST => (coro_sleep_until(0), 0),
        step::SLEEP_FOREVER => (coro_sleep_until(-1), 0),
        step::WAIT_PIPE => (coro_wait_fd(env.pipe, CORO_READABLE, -1), 0),
        step::AWAIT => await_value(env.target),
        step::AWAIT_SELF => await_value(coro_self_id()),
        step::SPAWN_CHILD => {
            let p = spawn_child(env, arg);
            *child = p.1;
            p
        }
        step::AWAIT_CHILD => await_value(*child),
        _ => (CORO_OK, 0),
    }
}

/// A body's `coro_spawn` of its child, from inside the runtime.
fn spawn_child(env: &Env, arg: u8) -> (i32, u64) {
    let script = step::CHILD_SCRIPTS[(arg & 3) as usize];
    let mut child = Env {
        magic: ENV_MAGIC,
        record: env.child,
        len: script.len() as u32,
        kinds: [0; MAX_STEPS],
        args: [0; MAX_STEPS],
        pipe: -1,
        child: NO_CHILD,
        target: 0,
        rt: 0,
    };
    child.kinds[..script.len()].copy_from_slice(script);
    let flags = step::CHILD_FLAGS[(arg >> 2 & 1) as usize];
    let mut p = coro_promise { id: 0 };
    // SAFETY: `rt` is the runtime this body runs on, alive while it runs;
    // `child` is readable for its size.
    let rc = unsafe {
        coro_spawn(
            env.rt as *mut coro_runtime,
            Some(body),
            (&child as *const Env).cast(),
            core::mem::size_of::<Env>(),
            Some(drop_env),
            flags,
            &mut p,
        )
    };
    (rc, p.id)
}

fn await_value(promise: u64) -> (i32, u64) {
    let mut out = ptr::null_mut();
    // SAFETY: `out` is writable.
    let rc = unsafe { coro_await(coro_promise { id: promise }, &mut out) };
    (rc, out as usize as u64)
}

/// `on_suspend`: hands the token to the harness through the record.
unsafe extern "C" fn hand_token(token: coro_token, arg: *mut c_void) {
    let rec = &RECORDS[arg as usize];
    rec.token.store(token.id, SeqCst);
    rec.suspends.fetch_add(1, SeqCst);
}

fn defer_arg(record: usize, n: u32, err: bool) -> *mut c_void {
    (record << 16 | (n as usize) << 1 | err as usize) as *mut c_void
}

/// Every defer and errdefer: counts itself and checks the LIFO order.
unsafe extern "C" fn deferred(arg: *mut c_void) {
    let arg = arg as usize;
    let rec = &RECORDS[arg >> 16];
    let n = (arg as u32 & 0xffff) >> 1;
    if rec.last_defer.swap(n, SeqCst) <= n {
        rec.fault(FAULT_LIFO);
    }
    if rec.drops.load(SeqCst) != 0 {
        rec.fault(FAULT_DEFER_AFTER_DROP);
    }
    let count = if arg & 1 != 0 {
        &rec.errdefers
    } else {
        &rec.defers
    };
    count.fetch_add(1, SeqCst);
}

/// Every env_drop: checks the frame's copy of the environment.
unsafe extern "C" fn drop_env(env: *mut c_void) {
    // SAFETY: the frame's copy of an `Env`, or of the smaller zeroed
    // environment of a spawn that must fail (then only `magic` is read,
    // and it is within those bytes).
    let magic = unsafe { env.cast::<u64>().read() };
    if magic != ENV_MAGIC {
        STRAYS.fetch_add(1, SeqCst);
        return;
    }
    // SAFETY: as above: a whole `Env`.
    let env = unsafe { &*env.cast::<Env>() };
    let Some(rec) = RECORDS.get(env.record as usize) else {
        STRAYS.fetch_add(1, SeqCst);
        return;
    };
    let ran = rec.defers.load(SeqCst) + rec.errdefers.load(SeqCst);
    rec.ran_at_drop.store(ran, SeqCst);
    rec.drops.fetch_add(1, SeqCst);
}

/// An entry for spawns that must fail: it never runs.
unsafe extern "C" fn never_runs(_env: *mut c_void) -> *mut c_void {
    STRAYS.fetch_add(1, SeqCst);
    ptr::null_mut()
}

// ---------------------------------------------------------------------
// Decoding: every byte string is a program
// ---------------------------------------------------------------------

/// A decoded input.
#[derive(Clone, Debug)]
pub struct Program {
    pub workers: u32,
    pub ops: Vec<Op>,
}

/// One operation of the harness thread. The `u8` selectors pick a
/// coroutine or handle among those that fit, when the op runs.
#[derive(Clone, Debug)]
pub enum Op {
    Spawn {
        flags: u32,
        steps: Vec<(u8, u8)>,
        target: u8,
    },
    Resume(u8),
    CancelSuspend(u8),
    CancelAsync(u8),
    Detach(u8),
    /// `coro_await` from the harness, after `prelude` (0 none, 1 resume,
    /// 2 cancel_suspend, 3 write the pipe) if the model says the
    /// coroutine is then done; skipped otherwise.
    Await {
        pick: u8,
        prelude: u8,
    },
    WritePipe(u8),
    /// `coro_wait_fd(pipe, READABLE, 0)` from the harness thread.
    PollPipe(u8),
    StaleToken {
        pick: u8,
        cancel: bool,
    },
    StalePromise {
        pick: u8,
        call: u8,
    },
    BadHandle {
        how: u8,
        call: u8,
        pick: u8,
        bits: u64,
    },
    Misuse(u8),
    /// `coro_runtime_shutdown`; bit 0 of `then`: make a new runtime, with
    /// 1 + bit 1 workers.
    Shutdown {
        then: u8,
    },
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A byte, or 0 once the input is used up: an op cut short still runs.
    fn arg(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }
}

/// Decodes any byte string: a first byte for the workers (1 or 2), then
/// one op per opcode byte (`opcode % 16`) and its argument bytes.
pub fn decode(data: &[u8]) -> Program {
    let mut b = Bytes(data);
    let workers = 1 + (b.arg() & 1) as u32;
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        let Some(code) = b.next() else { break };
        let op = match code % 16 {
            0 | 1 | 14 => decode_spawn(&mut b),
            2 | 15 => Op::Resume(b.arg()),
            3 => Op::CancelSuspend(b.arg()),
            4 => Op::CancelAsync(b.arg()),
            5 => Op::Detach(b.arg()),
            6 => Op::Await {
                pick: b.arg(),
                prelude: b.arg(),
            },
            7 => Op::WritePipe(b.arg()),
            8 => Op::PollPipe(b.arg()),
            9 => {
                let x = b.arg();
                Op::StaleToken {
                    pick: x >> 1,
                    cancel: x & 1 != 0,
                }
            }
            10 => Op::StalePromise {
                pick: b.arg(),
                call: b.arg(),
            },
            11 => {
                let how = b.arg();
                let call = b.arg();
                let pick = b.arg();
                let bits = (0..8).fold(0u64, |acc, _| acc << 8 | b.arg() as u64);
                Op::BadHandle {
                    how,
                    call,
                    pick,
                    bits,
                }
            }
            12 => Op::Misuse(b.arg()),
            _ => Op::Shutdown { then: b.arg() },
        };
        ops.push(op);
    }
    Program { workers, ops }
}

fn decode_spawn(b: &mut Bytes) -> Op {
    let head = b.arg();
    let flags = [
        0,
        CORO_SPAWN_CANCEL_RETURNS,
        CORO_SPAWN_MIGRATABLE,
        CORO_SPAWN_CANCEL_RETURNS | CORO_SPAWN_MIGRATABLE,
    ][(head & 3) as usize];
    let len = (head >> 2) as usize % (MAX_STEPS + 1);
    let mut spawns_child = false;
    let steps: Vec<(u8, u8)> = (0..len)
        .map(|_| {
            let s = b.arg();
            let mut kind = step::TABLE[(s & 31) as usize];
            if kind == step::SPAWN_CHILD {
                // One child per body: a second spawn step yields instead.
                if spawns_child {
                    kind = step::YIELD;
                }
                spawns_child = true;
            }
            (kind, s >> 5)
        })
        .collect();
    let target = if steps.iter().any(|&(k, _)| k == step::AWAIT) {
        b.arg()
    } else {
        0
    };
    Op::Spawn {
        flags,
        steps,
        target,
    }
}

// ---------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------

/// Where a coroutine stands once everything is quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Its body is in a step (`Co::at`) and parked there.
    Blocked(Block),
    /// Cancel-returns mode, cancelled while its user token was out: the
    /// body waits for that token to be consumed (docs/API.md).
    CancelWait,
    /// Between a wake-up and its next park (only inside the model).
    Running,
    /// Finished or finalized: defers and env_drop ran.
    Done { cancelled: bool, value: u64 },
    /// A child whose parent has not reached its `SPAWN_CHILD` step.
    Unborn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    /// `coro_suspend`: the harness holds (or is about to read) the token.
    Token,
    Sleep,
    Pipe,
    /// `coro_await` of this coroutine.
    Await(usize),
}

/// Who may use a coroutine's promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    Harness,
    /// It is in this coroutine's environment, for its `AWAIT` steps.
    Body(usize),
}

/// The promise a body's `AWAIT` steps use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Zero,
    /// The consumed promise of this coroutine.
    Stale(usize),
    Live(usize),
}

/// What the harness expects to read in a coroutine's record.
#[derive(Clone, Debug, Default)]
struct Expect {
    entered: u32,
    /// Status and value of each step whose call returned.
    rcs: Vec<(i32, u64)>,
    suspends: u32,
    reg_defers: u32,
    reg_errdefers: u32,
    defers: u32,
    errdefers: u32,
    drops: u32,
    returned: Option<u64>,
    /// Its promise, which `coro_self_id()` must answer in the body.
    self_id: Option<u64>,
    /// Shutdown caught it inside an await, where the order in which
    /// shutdown reaches it and its child decides whether it is woken by
    /// the child's end (and runs on) or finalized first: only the
    /// exactly-once rules are checked, against what the body registered.
    loose: bool,
}

#[derive(Clone, Debug)]
struct Co {
    flags: u32,
    steps: Vec<(u8, u8)>,
    target: Target,
    promise: u64,
    holder: Holder,
    /// The async reference is not consumed.
    async_ref: bool,
    /// A body's await holds the async reference (`AWAITING`).
    awaited_by: Option<usize>,
    /// The user token the harness holds.
    token: Option<u64>,
    /// A token the harness has yet to read from the record.
    token_pending: bool,
    phase: Phase,
    /// The step the body is in.
    at: usize,
    cancelled: bool,
    freed: bool,
    epoch: u32,
    pipe: Option<(i32, i32)>,
    pipe_written: bool,
    /// The child its `SPAWN_CHILD` step spawns (its record is reserved).
    child: Option<usize>,
    /// Spawned by a body: the harness has yet to read its promise.
    promise_pending: bool,
    exp: Expect,
}

impl Co {
    fn new(flags: u32, steps: Vec<(u8, u8)>, epoch: u32) -> Co {
        Co {
            flags,
            steps,
            target: Target::Zero,
            promise: 0,
            holder: Holder::Harness,
            async_ref: true,
            awaited_by: None,
            token: None,
            token_pending: false,
            phase: Phase::Running,
            at: 0,
            cancelled: false,
            freed: false,
            epoch,
            pipe: None,
            pipe_written: false,
            child: None,
            promise_pending: false,
            exp: Expect::default(),
        }
    }

    fn cancel_returns(&self) -> bool {
        self.flags & CORO_SPAWN_CANCEL_RETURNS != 0
    }

    fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }

    /// The harness may use the promise without racing a body's await.
    fn promise_usable(&self) -> bool {
        !self.freed && self.async_ref && self.awaited_by.is_none()
    }
}

/// DESIGN.md section 1 as a state machine over the coroutines of one
/// input. Every transition settles at once: whatever a call wakes runs,
/// in the model, until it parks or ends.
#[derive(Clone, Debug, Default)]
struct Model {
    cos: Vec<Co>,
    stale_tokens: Vec<u64>,
    /// Coroutines whose promise was consumed (their `promise` is known
    /// by the time an op picks one).
    stale_promises: Vec<usize>,
    epoch: u32,
}

impl Model {
    fn live(&self) -> u64 {
        self.cos.iter().filter(|c| !c.freed).count() as u64
    }

    /// A spawned body starts and runs until it parks or ends.
    fn start(&mut self, c: usize) {
        self.cos[c].phase = Phase::Running;
        self.run(c);
    }

    /// Runs the body from step `at` until it parks or returns.
    fn run(&mut self, c: usize) {
        loop {
            let at = self.cos[c].at;
            let Some(&(kind, arg)) = self.cos[c].steps.get(at) else {
                return self.body_returns(c, end_value(c));
            };
            self.cos[c].exp.entered = at as u32 + 1;
            let co = &mut self.cos[c];
            let result = match kind {
                step::DEFER => {
                    co.exp.reg_defers += 1;
                    Some((CORO_OK, 0))
                }
                step::ERRDEFER => {
                    co.exp.reg_errdefers += 1;
                    Some((CORO_OK, 0))
                }
                step::SUSPEND => {
                    co.exp.suspends += 1;
                    co.token_pending = true;
                    co.phase = Phase::Blocked(Block::Token);
                    None
                }
                step::YIELD | step::SLEEP_PAST => Some((CORO_OK, 0)),
                step::SLEEP_FOREVER => {
                    co.phase = Phase::Blocked(Block::Sleep);
                    None
                }
                step::WAIT_PIPE if co.pipe_written => Some((CORO_OK, 0)),
                step::WAIT_PIPE => {
                    co.phase = Phase::Blocked(Block::Pipe);
                    None
                }
                step::AWAIT => self.body_awaits(c),
                step::AWAIT_SELF => Some((CORO_EINVAL, 0)),
                step::SPAWN_CHILD => {
                    let child = co.child.expect("a child record is reserved");
                    self.spawn_child(c, child);
                    Some((CORO_OK, ANY))
                }
                step::AWAIT_CHILD => {
                    let child = co.child;
                    match child.filter(|&t| self.cos[t].phase != Phase::Unborn) {
                        Some(t) => self.await_live(c, t),
                        None => Some((CORO_EINVAL, 0)),
                    }
                }
                _ => {
                    self.cos[c].exp.rcs.push((CORO_OK, 0));
                    self.cos[c].at += 1;
                    return self.body_returns(c, return_value(c, arg));
                }
            };
            let Some((rc, value)) = result else { return };
            if !self.step_returned(c, rc, value) {
                return;
            }
        }
    }

    /// Records a step's result; false if the body returned because of it.
    fn step_returned(&mut self, c: usize, rc: i32, value: u64) -> bool {
        let co = &mut self.cos[c];
        co.exp.rcs.push((rc, value));
        co.at += 1;
        if rc == CORO_ECANCELED {
            self.body_returns(c, EARLY);
            return false;
        }
        true
    }

    /// A parked body is resumed: its call returns `rc`.
    fn wake(&mut self, c: usize, rc: i32, value: u64) {
        self.cos[c].phase = Phase::Running;
        if self.step_returned(c, rc, value) {
            self.run(c);
        }
    }

    /// An `AWAIT` step: its result if it does not park.
    fn body_awaits(&mut self, c: usize) -> Option<(i32, u64)> {
        match self.cos[c].target {
            Target::Zero => Some((CORO_EINVAL, 0)),
            // A consumed promise, even one naming the slot the awaiter now
            // occupies (docs/API.md, Handles; fuzz/regressions/ops/
            // stale-self-await).
            Target::Stale(_) => Some((CORO_ESTALE, 0)),
            Target::Live(t) => self.await_live(c, t),
        }
    }

    /// A `SPAWN_CHILD` step: the child is born and runs until it parks
    /// or ends. Whether it runs before, after or nested in its parent's
    /// next steps changes nothing the model predicts.
    fn spawn_child(&mut self, parent: usize, child: usize) {
        let co = &mut self.cos[child];
        co.phase = Phase::Running;
        co.freed = false;
        co.async_ref = true;
        co.promise_pending = true;
        co.holder = Holder::Body(parent);
        self.start(child);
    }

    /// A body's await of coroutine `t`: its result if it does not park.
    fn await_live(&mut self, c: usize, t: usize) -> Option<(i32, u64)> {
        if !self.cos[t].promise_usable() {
            return Some((CORO_ESTALE, 0));
        }
        if let Phase::Done { cancelled, value } = self.cos[t].phase {
            self.consume_promise(t);
            self.maybe_free(t);
            return Some(await_result(cancelled, value));
        }
        self.cos[t].awaited_by = Some(c);
        self.cos[c].phase = Phase::Blocked(Block::Await(t));
        None
    }

    fn body_returns(&mut self, c: usize, value: u64) {
        self.cos[c].exp.returned = Some(value);
        self.finish(c, value);
    }

    /// The frame ends: defers, errdefers if cancelled, env_drop; an
    /// awaiter is woken; the frame is freed if nothing holds it.
    fn finish(&mut self, c: usize, value: u64) {
        let cancelled = self.cos[c].cancelled;
        if let (true, Phase::Blocked(Block::Await(child))) = (cancelled, self.cos[c].phase) {
            // Cancellation flows down.
            self.cancel_async(child, true);
        }
        let co = &mut self.cos[c];
        co.exp.defers = co.exp.reg_defers;
        co.exp.errdefers = if cancelled { co.exp.reg_errdefers } else { 0 };
        co.exp.drops = 1;
        let value = if cancelled { 0 } else { value };
        co.phase = Phase::Done { cancelled, value };
        match co.awaited_by.take() {
            Some(awaiter) => {
                self.consume_promise(c);
                self.maybe_free(c);
                let (rc, value) = await_result(cancelled, value);
                self.wake(awaiter, rc, value);
            }
            None => self.maybe_free(c),
        }
    }

    /// `coro_cancel_async`, or an awaiter's cancellation of its child
    /// (`awaiting`). The caller checked that the promise is usable.
    fn cancel_async(&mut self, c: usize, awaiting: bool) {
        debug_assert_eq!(self.cos[c].awaited_by.is_some(), awaiting);
        self.cos[c].awaited_by = None;
        self.consume_promise(c);
        let co = &mut self.cos[c];
        if co.is_done() || co.cancelled {
            return self.maybe_free(c);
        }
        co.cancelled = true;
        match (co.phase, co.cancel_returns()) {
            (Phase::Blocked(Block::Token), true) => co.phase = Phase::CancelWait,
            (Phase::Blocked(_), true) => self.wake_cancelled(c),
            (Phase::Blocked(_), false) => self.finish(c, 0),
            (phase, _) => unreachable!("cancel_async of a {phase:?} coroutine"),
        }
    }

    /// Cancel-returns mode: a library wait returns `CORO_ECANCELED`; an
    /// await cancels its child first.
    fn wake_cancelled(&mut self, c: usize) {
        if let Phase::Blocked(Block::Await(child)) = self.cos[c].phase {
            self.cancel_async(child, true);
        }
        self.wake(c, CORO_ECANCELED, 0);
    }

    /// `coro_resume` (`cancel == false`) or `coro_cancel_suspend` of the
    /// token the harness holds.
    fn consume_token(&mut self, c: usize, cancel: bool) {
        let token = self.cos[c].token.take().expect("token held");
        self.stale_tokens.push(token);
        let co = &mut self.cos[c];
        match co.phase {
            Phase::Blocked(Block::Token) if !cancel => self.wake(c, CORO_OK, 0),
            Phase::Blocked(Block::Token) => {
                co.cancelled = true;
                if co.cancel_returns() {
                    self.wake(c, CORO_ECANCELED, 0);
                } else {
                    self.finish(c, 0);
                }
            }
            Phase::CancelWait => self.wake(c, CORO_ECANCELED, 0),
            Phase::Done { .. } => self.maybe_free(c),
            phase => unreachable!("token held for a {phase:?} coroutine"),
        }
    }

    fn detach(&mut self, c: usize) {
        self.consume_promise(c);
        self.maybe_free(c);
    }

    /// `coro_await` from the harness of a finished coroutine.
    fn await_done(&mut self, c: usize) -> (i32, u64) {
        let Phase::Done { cancelled, value } = self.cos[c].phase else {
            unreachable!("the harness awaits only finished coroutines");
        };
        self.consume_promise(c);
        self.maybe_free(c);
        await_result(cancelled, value)
    }

    fn consume_promise(&mut self, c: usize) {
        let co = &mut self.cos[c];
        if co.async_ref {
            co.async_ref = false;
            self.stale_promises.push(c);
        }
    }

    fn maybe_free(&mut self, c: usize) {
        let co = &mut self.cos[c];
        if co.is_done() && !co.async_ref && co.token.is_none() && !co.token_pending {
            co.freed = true;
        }
    }

    /// `coro_runtime_shutdown`: every coroutine of the current runtime is
    /// cancelled and every frame freed; its handles turn stale.
    fn shutdown(&mut self) {
        for (c, co) in self.cos.iter_mut().enumerate() {
            if co.freed || co.epoch != self.epoch {
                continue;
            }
            if !co.is_done() {
                co.exp.loose = matches!(co.phase, Phase::Blocked(Block::Await(_)));
                if co.cancel_returns() && !co.exp.loose {
                    // Resumed with CORO_ECANCELED; the body returns.
                    co.exp.rcs.push((CORO_ECANCELED, 0));
                    co.exp.returned = Some(EARLY);
                }
                co.cancelled = true;
                co.exp.defers = co.exp.reg_defers;
                co.exp.errdefers = co.exp.reg_errdefers;
                co.exp.drops = 1;
                co.phase = Phase::Done {
                    cancelled: true,
                    value: 0,
                };
            }
            co.freed = true;
            co.awaited_by = None;
            if let Some(t) = co.token.take() {
                self.stale_tokens.push(t);
            }
            if co.async_ref {
                co.async_ref = false;
                self.stale_promises.push(c);
            }
        }
    }
}

fn await_result(cancelled: bool, value: u64) -> (i32, u64) {
    if cancelled {
        (CORO_ECANCELED, 0)
    } else {
        (CORO_OK, value)
    }
}

// ---------------------------------------------------------------------
// Checking the records against the model
// ---------------------------------------------------------------------

enum Mismatch {
    /// Not there yet: keep waiting.
    NotYet(String),
    /// Past the prediction: no wait can fix it.
    Wrong(String),
}

/// Compares `actual` with `expected`: fewer is not yet, more is wrong.
fn count(what: &str, actual: u32, expected: u32) -> Result<(), Mismatch> {
    match actual.cmp(&expected) {
        core::cmp::Ordering::Equal => Ok(()),
        core::cmp::Ordering::Less => Err(Mismatch::NotYet(format!(
            "{what}: {actual}, expected {expected}"
        ))),
        core::cmp::Ordering::Greater => Err(Mismatch::Wrong(format!(
            "{what}: {actual}, expected {expected}"
        ))),
    }
}

fn check_record(rec: &Record, exp: &Expect) -> Result<(), Mismatch> {
    let faults = rec.faults.load(SeqCst);
    if faults != 0 {
        return Err(Mismatch::Wrong(format!(
            "faults {faults:#x} (1: defers out of LIFO order, 2: a defer ran \
             after env_drop)"
        )));
    }
    let progress = rec.progress.load(SeqCst) as usize;
    for (i, &(rc, value)) in exp.rcs.iter().enumerate().take(progress) {
        let got = (rec.rc[i].load(SeqCst), rec.value[i].load(SeqCst));
        if got.0 != rc || (value != ANY && got.1 != value) {
            return Err(Mismatch::Wrong(format!(
                "step {i} returned rc {} value {:#x}, expected rc {rc} value {value:#x}",
                got.0, got.1
            )));
        }
    }
    if exp.loose {
        return check_loose(rec, exp, progress);
    }
    count("steps entered", rec.entered.load(SeqCst), exp.entered)?;
    count("steps returned", progress as u32, exp.rcs.len() as u32)?;
    count("tokens handed out", rec.suspends.load(SeqCst), exp.suspends)?;
    count(
        "defers registered",
        rec.reg_defers.load(SeqCst),
        exp.reg_defers,
    )?;
    count(
        "errdefers registered",
        rec.reg_errdefers.load(SeqCst),
        exp.reg_errdefers,
    )?;
    count("defers run", rec.defers.load(SeqCst), exp.defers)?;
    count("errdefers run", rec.errdefers.load(SeqCst), exp.errdefers)?;
    count("env_drops", rec.drops.load(SeqCst), exp.drops)?;
    check_drop_after_defers(rec)?;
    let returned = rec.returned.load(SeqCst) != 0;
    match (returned, exp.returned) {
        (false, None) => Ok(()),
        (false, Some(_)) => Err(Mismatch::NotYet("body has not returned".into())),
        (true, None) => Err(Mismatch::Wrong("body returned, expected it not to".into())),
        (true, Some(v)) => {
            let got = rec.return_value.load(SeqCst);
            if got == v {
                Ok(())
            } else {
                Err(Mismatch::Wrong(format!(
                    "body returned {got:#x}, expected {v:#x}"
                )))
            }
        }
    }
}

/// The exactly-once rules alone (see `Expect::loose`).
fn check_loose(rec: &Record, exp: &Expect, progress: usize) -> Result<(), Mismatch> {
    // Steps that had returned before shutdown; the await it was in may
    // answer or not, and what follows is not predicted.
    if progress < exp.rcs.len() {
        return Err(Mismatch::Wrong(format!(
            "steps returned: {progress}, expected at least {}",
            exp.rcs.len()
        )));
    }
    count("env_drops", rec.drops.load(SeqCst), 1)?;
    let reg_errdefers = rec.reg_errdefers.load(SeqCst);
    count(
        "defers run",
        rec.defers.load(SeqCst),
        rec.reg_defers.load(SeqCst),
    )?;
    let errdefers = rec.errdefers.load(SeqCst);
    if errdefers != 0 && errdefers != reg_errdefers {
        return Err(Mismatch::Wrong(format!(
            "errdefers run: {errdefers}, expected 0 or {reg_errdefers}"
        )));
    }
    check_drop_after_defers(rec)
}

/// env_drop ran after every defer (DESIGN section 1: "right after").
fn check_drop_after_defers(rec: &Record) -> Result<(), Mismatch> {
    if rec.drops.load(SeqCst) == 0 {
        return Ok(());
    }
    let ran = rec.defers.load(SeqCst) + rec.errdefers.load(SeqCst);
    let at_drop = rec.ran_at_drop.load(SeqCst);
    if at_drop != ran {
        return Err(Mismatch::Wrong(format!(
            "env_drop ran after {at_drop} defers, but {ran} ran in all"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------

/// Runs one input: the log of its operations, or which check failed,
/// with the operations that led there.
pub fn run(data: &[u8]) -> Result<Vec<String>, String> {
    let program = decode(data);
    for rec in RECORDS.iter() {
        rec.reset();
    }
    STRAYS.store(0, SeqCst);
    let mut h = Harness::new(program.workers)?;
    let result = h.run_ops(&program.ops).and_then(|()| h.finish());
    h.cleanup();
    match result {
        Ok(()) => Ok(h.log),
        Err(e) => Err(format!("{e}\noperations:\n{}", h.log.join("\n"))),
    }
}

struct Harness {
    rt: *mut coro_runtime,
    rt_live: bool,
    model: Model,
    base_frames: u64,
    base_fds: usize,
    log: Vec<String>,
}

type Step = Result<(), String>;

impl Harness {
    fn new(workers: u32) -> Result<Harness, String> {
        let mut h = Harness {
            rt: ptr::null_mut(),
            rt_live: false,
            model: Model::default(),
            base_frames: coro_live_frames(),
            base_fds: open_fds(),
            log: Vec::new(),
        };
        h.new_runtime(workers)?;
        Ok(h)
    }

    fn new_runtime(&mut self, workers: u32) -> Step {
        let cfg = coro_config {
            struct_size: core::mem::size_of::<coro_config>() as u32,
            workers,
            stack_size: 0,
        };
        let mut rt = ptr::null_mut();
        // SAFETY: a valid config and out-pointer.
        let rc = unsafe { coro_runtime_new(&cfg, &mut rt) };
        self.log(format!("runtime_new({workers} workers) = {rc}"));
        expect_rc("coro_runtime_new", rc, CORO_OK)?;
        self.rt = rt;
        self.rt_live = true;
        Ok(())
    }

    fn log(&mut self, line: String) {
        self.log.push(line);
    }

    fn run_ops(&mut self, ops: &[Op]) -> Step {
        for op in ops {
            let acted = self.apply(op)?;
            if acted {
                self.settle()?;
            }
        }
        Ok(())
    }

    /// Runs one op; false if it did not apply (nothing to pick from).
    fn apply(&mut self, op: &Op) -> Result<bool, String> {
        match *op {
            Op::Spawn {
                flags,
                ref steps,
                target,
            } => self.spawn(flags, steps, target),
            Op::Resume(pick) => self.use_token(pick, false),
            Op::CancelSuspend(pick) => self.use_token(pick, true),
            Op::CancelAsync(pick) => self.use_promise(pick, PromiseCall::CancelAsync),
            Op::Detach(pick) => self.use_promise(pick, PromiseCall::Detach),
            Op::Await { pick, prelude } => self.await_from_thread(pick, prelude),
            Op::WritePipe(pick) => self.write_pipe(pick),
            Op::PollPipe(pick) => self.poll_pipe(pick),
            Op::StaleToken { pick, cancel } => self.stale_token(pick, cancel),
            Op::StalePromise { pick, call } => self.stale_promise(pick, call),
            Op::BadHandle {
                how,
                call,
                pick,
                bits,
            } => self.bad_handle(how, call, pick, bits),
            Op::Misuse(what) => self.misuse(what).map(|()| true),
            Op::Shutdown { then } => self.shutdown(then).map(|()| true),
        }
    }

    // -- spawn --------------------------------------------------------

    fn spawn(&mut self, flags: u32, steps: &[(u8, u8)], target: u8) -> Result<bool, String> {
        let index = self.model.cos.len();
        if index >= MAX_RECORDS || self.model.live() as usize >= MAX_ALIVE {
            return Ok(false);
        }
        if !self.rt_live {
            return self.spawn_refused(flags);
        }
        let mut steps = steps.to_vec();
        let child = steps.iter().find(|s| s.0 == step::SPAWN_CHILD).copied();
        if child.is_some()
            && (index + 1 >= MAX_RECORDS || self.model.live() as usize + 2 > MAX_ALIVE)
        {
            // No room for the child: the step only sleeps (past deadline).
            for s in steps.iter_mut().filter(|s| s.0 == step::SPAWN_CHILD) {
                s.0 = step::SLEEP_PAST;
            }
        }
        let child = child.filter(|_| steps.iter().any(|s| s.0 == step::SPAWN_CHILD));
        let target = self.pick_target(target, &steps);
        let pipe = if steps.iter().any(|&(k, _)| k == step::WAIT_PIPE) {
            Some(make_pipe()?)
        } else {
            None
        };
        let child_record = child.map_or(NO_CHILD, |_| index as u32 + 1);
        let env = make_env(index, &steps, pipe, target, child_record, self);
        let mut p = coro_promise { id: 0 };
        // SAFETY: `env` is readable for its size; `body` and `drop_env`
        // take the frame's copy of it.
        let rc = unsafe {
            coro_spawn(
                self.rt,
                Some(body),
                (&env as *const Env).cast(),
                core::mem::size_of::<Env>(),
                Some(drop_env),
                flags,
                &mut p,
            )
        };
        let script: Vec<String> = steps
            .iter()
            .map(|&(k, a)| match k {
                step::SPAWN_CHILD => format!("spawn-child(co {}, {a})", index + 1),
                _ => step::name(k).to_string(),
            })
            .collect();
        self.log(format!(
            "co {index}: spawn(flags {flags}, [{}], target {target:?}) = {rc}, promise {:#x}",
            script.join(", "),
            p.id
        ));
        if rc != CORO_OK {
            if let Some((r, w)) = pipe {
                close_fd(r);
                close_fd(w);
            }
            return Err(format!("coro_spawn returned {rc}, expected 0"));
        }
        if let Target::Live(t) = target {
            self.model.cos[t].holder = Holder::Body(index);
        }
        let mut co = Co::new(flags, steps, self.model.epoch);
        co.target = target;
        co.promise = p.id;
        co.pipe = pipe;
        co.exp.self_id = Some(p.id);
        if let Some((_, arg)) = child {
            co.child = Some(index + 1);
            self.model.cos.push(co);
            let script = step::CHILD_SCRIPTS[(arg & 3) as usize];
            let flags = step::CHILD_FLAGS[(arg >> 2 & 1) as usize];
            let mut unborn = Co::new(
                flags,
                script.iter().map(|&k| (k, 0)).collect(),
                self.model.epoch,
            );
            unborn.phase = Phase::Unborn;
            unborn.freed = true;
            unborn.async_ref = false;
            self.model.cos.push(unborn);
        } else {
            self.model.cos.push(co);
        }
        self.model.start(index);
        Ok(true)
    }

    /// A spawn on a shut-down runtime: `CORO_ESHUTDOWN`, no env_drop.
    fn spawn_refused(&mut self, flags: u32) -> Result<bool, String> {
        let env = [0u8; 16];
        let mut p = coro_promise { id: 0 };
        // SAFETY: `rt` came from coro_runtime_new (shut down: its cell
        // stays valid); `env` is readable.
        let rc = unsafe {
            coro_spawn(
                self.rt,
                Some(never_runs),
                env.as_ptr().cast(),
                env.len(),
                Some(drop_env),
                flags,
                &mut p,
            )
        };
        self.log(format!("spawn on a shut-down runtime = {rc}"));
        expect_rc("coro_spawn after shutdown", rc, CORO_ESHUTDOWN)?;
        Ok(true)
    }

    /// The promise a new body's `AWAIT` steps get: one the harness holds
    /// (it moves to the body), a stale one, or zero.
    fn pick_target(&self, pick: u8, steps: &[(u8, u8)]) -> Target {
        if !steps.iter().any(|&(k, _)| k == step::AWAIT) {
            return Target::Zero;
        }
        let m = &self.model;
        match pick {
            0xf0.. => Target::Zero,
            0xe0.. if !m.stale_promises.is_empty() => {
                Target::Stale(*pick_from(&m.stale_promises, pick).expect("not empty"))
            }
            _ => {
                let held: Vec<usize> = (0..m.cos.len())
                    .filter(|&t| {
                        let co = &m.cos[t];
                        co.epoch == m.epoch && co.holder == Holder::Harness && co.promise_usable()
                    })
                    .collect();
                match held.len() {
                    0 => Target::Zero,
                    n => Target::Live(held[pick as usize % n]),
                }
            }
        }
    }

    // -- tokens and promises ----------------------------------------

    fn use_token(&mut self, pick: u8, cancel: bool) -> Result<bool, String> {
        let held = self.pick(pick, |co| co.token.is_some());
        let Some(c) = held else { return Ok(false) };
        let token = self.model.cos[c].token.expect("picked for its token");
        let co = &self.model.cos[c];
        let sync = cancel && !co.cancel_returns() && co.phase == Phase::Blocked(Block::Token);
        let rc = call_token(token, cancel);
        self.log(format!(
            "co {c}: {}({token:#x}) = {rc}",
            token_call_name(cancel)
        ));
        expect_rc(token_call_name(cancel), rc, CORO_OK)?;
        self.model.consume_token(c, cancel);
        if sync {
            self.check_finalized_now(c)?;
        }
        Ok(true)
    }

    fn use_promise(&mut self, pick: u8, call: PromiseCall) -> Result<bool, String> {
        let Some(c) = self.pick(pick, Co::promise_usable) else {
            return Ok(false);
        };
        let co = &self.model.cos[c];
        let sync = call == PromiseCall::CancelAsync
            && !co.cancel_returns()
            && co.phase == Phase::Blocked(Block::Token);
        let promise = co.promise;
        let (rc, _) = call_promise(promise, call);
        self.log(format!("co {c}: {}({promise:#x}) = {rc}", call.name()));
        expect_rc(call.name(), rc, CORO_OK)?;
        match call {
            PromiseCall::CancelAsync => self.model.cancel_async(c, false),
            _ => self.model.detach(c),
        }
        if sync {
            self.check_finalized_now(c)?;
        }
        Ok(true)
    }

    /// DESIGN section 1 / docs/API.md: cancelling a parked default-mode
    /// coroutine runs its defers and env_drop before the call returns.
    fn check_finalized_now(&self, c: usize) -> Step {
        let rec = &RECORDS[c];
        let exp = &self.model.cos[c].exp;
        let got = (
            rec.defers.load(SeqCst),
            rec.errdefers.load(SeqCst),
            rec.drops.load(SeqCst),
        );
        if got != (exp.defers, exp.errdefers, 1) {
            return Err(format!(
                "co {c}: cancelled while parked, but when the cancel returned \
                 defers/errdefers/env_drops were {got:?}, expected ({}, {}, 1)",
                exp.defers, exp.errdefers
            ));
        }
        Ok(())
    }

    /// `coro_await` from this thread, only where the model says it ends:
    /// the coroutine is done, or will be after the prelude (a resume, a
    /// cancel_suspend or a write to its pipe) made just before the await,
    /// with no wait in between, so that the await may find it finished or
    /// have to wait for it.
    fn await_from_thread(&mut self, pick: u8, prelude: u8) -> Result<bool, String> {
        let Some(c) = self.pick(pick, Co::promise_usable) else {
            return Ok(false);
        };
        let co = &self.model.cos[c];
        let prelude = match prelude % 4 {
            1 | 2 if co.token.is_some() => Prelude::Token {
                cancel: prelude % 4 == 2,
            },
            3 if co.pipe.is_some() && !co.pipe_written => Prelude::Pipe,
            _ => Prelude::None,
        };
        let mut after = self.model.clone();
        match prelude {
            Prelude::Token { cancel } => after.consume_token(c, cancel),
            Prelude::Pipe => write_pipe_model(&mut after, c),
            Prelude::None => {}
        }
        if !after.cos[c].is_done() {
            // It would wait for something only this thread can do.
            return Ok(false);
        }
        match prelude {
            Prelude::Token { cancel } => {
                let token = self.model.cos[c].token.expect("checked");
                let rc = call_token(token, cancel);
                self.log(format!(
                    "co {c}: {}({token:#x}) = {rc}",
                    token_call_name(cancel)
                ));
                expect_rc(token_call_name(cancel), rc, CORO_OK)?;
            }
            Prelude::Pipe => self.write_pipe_now(c)?,
            Prelude::None => {}
        }
        self.model = after;
        let promise = self.model.cos[c].promise;
        let (rc, value) = call_promise(promise, PromiseCall::Await);
        self.log(format!(
            "co {c}: await({promise:#x}) = {rc}, value {value:#x}"
        ));
        let expected = self.model.await_done(c);
        if (rc, value) != expected {
            return Err(format!(
                "co {c}: coro_await from a thread = ({rc}, {value:#x}), expected {expected:?}"
            ));
        }
        Ok(true)
    }

    // -- pipes --------------------------------------------------------

    fn write_pipe(&mut self, pick: u8) -> Result<bool, String> {
        let Some(c) = self.pick(pick, |co| co.pipe.is_some()) else {
            return Ok(false);
        };
        self.write_pipe_now(c)?;
        write_pipe_model(&mut self.model, c);
        Ok(true)
    }

    fn write_pipe_now(&mut self, c: usize) -> Step {
        let (_, w) = self.model.cos[c].pipe.expect("has a pipe");
        // SAFETY: `w` is the write end of a pipe this harness owns.
        let n = unsafe { libc::write(w, b"x".as_ptr().cast(), 1) };
        self.log(format!("co {c}: write its pipe = {n}"));
        if n != 1 {
            return Err(format!("write to the pipe of co {c} returned {n}"));
        }
        Ok(())
    }

    fn poll_pipe(&mut self, pick: u8) -> Result<bool, String> {
        let Some(c) = self.pick(pick, |co| co.pipe.is_some()) else {
            return Ok(false);
        };
        let (r, _) = self.model.cos[c].pipe.expect("has a pipe");
        let rc = coro_wait_fd(r, CORO_READABLE, 0);
        self.log(format!("co {c}: wait_fd(its pipe, deadline 0) = {rc}"));
        let expected = if self.model.cos[c].pipe_written {
            CORO_OK
        } else {
            CORO_ETIMEDOUT
        };
        expect_rc("coro_wait_fd with a past deadline", rc, expected)?;
        Ok(true)
    }

    // -- stale, wrong and random handles ---------------------------------

    fn stale_token(&mut self, pick: u8, cancel: bool) -> Result<bool, String> {
        let Some(&token) = pick_from(&self.model.stale_tokens, pick) else {
            return Ok(false);
        };
        let rc = call_token(token, cancel);
        self.log(format!(
            "stale {}({token:#x}) = {rc}",
            token_call_name(cancel)
        ));
        expect_rc("a consumed token", rc, CORO_ESTALE)?;
        Ok(true)
    }

    fn stale_promise(&mut self, pick: u8, call: u8) -> Result<bool, String> {
        let Some(&c) = pick_from(&self.model.stale_promises, pick) else {
            return Ok(false);
        };
        let promise = self.model.cos[c].promise;
        let call = PromiseCall::from(call);
        let (rc, _) = call_promise(promise, call);
        self.log(format!("stale {}({promise:#x}) = {rc}", call.name()));
        expect_rc("a consumed promise", rc, CORO_ESTALE)?;
        Ok(true)
    }

    /// Zero handles, a handle of the wrong kind, and numbers that no
    /// frame can match: each answers its code and changes nothing.
    fn bad_handle(&mut self, how: u8, call: u8, pick: u8, bits: u64) -> Result<bool, String> {
        /// Low half of a handle naming a slot that never exists.
        const FAR_SLOT: u64 = 0x4000_0000;
        let live_token = self.pick(pick, |co| co.token.is_some());
        let live_promise = self.pick(pick, |co| !co.freed);
        let (handle, as_token, expected) = match how % 8 {
            0 => (0, false, CORO_EINVAL),
            1 => (0, true, CORO_EINVAL),
            // A token passed as a promise, a promise as a token.
            2 => match live_token {
                Some(c) => (self.model.cos[c].token.expect("held"), false, CORO_EINVAL),
                None => (bits | 1 << 31 | 1, false, CORO_EINVAL),
            },
            3 => match live_promise {
                Some(c) => (self.model.cos[c].promise, true, CORO_EINVAL),
                None => (bits & !(1 << 31) | 1, true, CORO_EINVAL),
            },
            4 => (
                bits & !0xffff_ffff | FAR_SLOT | (bits & 0x3fff_ffff),
                false,
                CORO_ESTALE,
            ),
            5 => (
                bits & !0xffff_ffff | 1 << 31 | FAR_SLOT | (bits & 0x3fff_ffff),
                true,
                CORO_ESTALE,
            ),
            // A live frame's slot with a generation wider than 24 bits.
            6 => match live_promise {
                Some(c) => (self.model.cos[c].promise | 1 << 56, false, CORO_ESTALE),
                None => return Ok(false),
            },
            // The token the harness holds, with another sequence number.
            _ => match live_token {
                Some(c) => {
                    let t = self.model.cos[c].token.expect("held");
                    let flip = (bits | 1) << 32;
                    (t ^ flip, true, CORO_ESTALE)
                }
                None => return Ok(false),
            },
        };
        let (rc, name) = if as_token {
            let cancel = call & 1 != 0;
            (call_token(handle, cancel), token_call_name(cancel))
        } else {
            let call = PromiseCall::from(call);
            (call_promise(handle, call).0, call.name())
        };
        self.log(format!("bad handle {name}({handle:#x}) = {rc}"));
        expect_rc(name, rc, expected)?;
        Ok(true)
    }

    // -- misuse from this thread -----------------------------------------

    fn misuse(&mut self, what: u8) -> Step {
        let what = what % 26;
        let (rc, expected) = match what {
            0 => (coro_suspend(Some(hand_token), ptr::null_mut()), CORO_ESTATE),
            1 => (coro_suspend(None, ptr::null_mut()), CORO_EINVAL),
            2 => (coro_yield(), CORO_ESTATE),
            3 => (coro_defer(Some(deferred), ptr::null_mut()), CORO_ESTATE),
            4 => (coro_defer(None, ptr::null_mut()), CORO_EINVAL),
            5 => (coro_errdefer(Some(deferred), ptr::null_mut()), CORO_ESTATE),
            6 => (coro_errdefer(None, ptr::null_mut()), CORO_EINVAL),
            7 => (coro_sleep_until(-1), CORO_EINVAL),
            8 => (coro_sleep_until(-2), CORO_EINVAL),
            9 => (coro_sleep_until(0), CORO_OK),
            10 => (coro_wait_fd(-1, CORO_READABLE, 0), CORO_EINVAL),
            11 => (coro_wait_fd(i32::MAX, CORO_READABLE, 0), CORO_EINVAL),
            12 => (coro_wait_fd(0, 0, 0), CORO_EINVAL),
            13 => (coro_wait_fd(0, CORO_READABLE, -2), CORO_EINVAL),
            14 => (coro_wait_fd(0, 4, 0), CORO_EINVAL),
            15 => (coro_self_id() as i32, 0),
            16..=20 => self.misuse_spawn(what),
            21 => {
                // SAFETY: NULL is allowed.
                (
                    unsafe { coro_runtime_shutdown(ptr::null_mut()) },
                    CORO_EINVAL,
                )
            }
            22..=24 => misuse_runtime_new(what),
            25 => (
                coro_lock_note_acquire(ptr::null()) | coro_lock_note_release(ptr::null()),
                CORO_OK,
            ),
            _ => unreachable!(),
        };
        self.log(format!("misuse {what} = {rc}"));
        expect_rc("a call outside any coroutine", rc, expected)?;
        if coro_fd_forget(-1) != CORO_EINVAL || coro_strerror(rc).is_null() {
            return Err("coro_fd_forget(-1) or coro_strerror misbehaved".into());
        }
        Ok(())
    }

    /// Spawns with a bad argument: nothing is made, env_drop never runs.
    fn misuse_spawn(&mut self, what: u8) -> (i32, i32) {
        let env = [0u8; 8];
        let mut p = coro_promise { id: 0 };
        let entry: coro_entry = Some(never_runs);
        let mut args = (self.rt, entry, env.as_ptr(), &mut p as *mut coro_promise, 0);
        match what {
            16 => args.0 = ptr::null_mut(),
            17 => args.1 = None,
            18 => args.3 = ptr::null_mut(),
            19 => args.2 = ptr::null(),
            _ => args.4 = 4,
        }
        // A shut-down runtime is looked at after the pointers, before the
        // flags (coro_spawn).
        let expected = if what == 20 && !self.rt_live {
            CORO_ESHUTDOWN
        } else {
            CORO_EINVAL
        };
        let (rt, entry, env, out, flags) = args;
        // SAFETY: each pointer is NULL or valid for what it names; `rt`
        // came from coro_runtime_new.
        let rc = unsafe { coro_spawn(rt, entry, env.cast(), 8, Some(drop_env), flags, out) };
        (rc, expected)
    }

    // -- shutdown ----------------------------------------------------------

    fn shutdown(&mut self, then: u8) -> Step {
        // SAFETY: `rt` came from coro_runtime_new; this thread is not one
        // of its workers.
        let rc = unsafe { coro_runtime_shutdown(self.rt) };
        self.log(format!("shutdown = {rc}"));
        if !self.rt_live {
            return expect_rc("a second coro_runtime_shutdown", rc, CORO_ESHUTDOWN);
        }
        expect_rc("coro_runtime_shutdown", rc, CORO_OK)?;
        self.rt_live = false;
        self.model.shutdown();
        self.close_pipes();
        // Shutdown frees every frame before it returns.
        let frames = coro_live_frames();
        if frames != self.base_frames {
            return Err(format!(
                "{} frames alive after coro_runtime_shutdown returned, expected 0",
                frames as i64 - self.base_frames as i64
            ));
        }
        let fds = open_fds();
        if fds != self.base_fds {
            return Err(format!(
                "{fds} descriptors open after shutdown, {} before the runtime",
                self.base_fds
            ));
        }
        if then & 1 != 0 {
            self.model.epoch += 1;
            self.new_runtime(1 + (then >> 1 & 1) as u32)?;
        }
        Ok(())
    }

    fn close_pipes(&mut self) {
        for co in self.model.cos.iter_mut() {
            if let Some((r, w)) = co.pipe.take() {
                close_fd(r);
                close_fd(w);
            }
        }
    }

    /// The end of an input: shutdown, then every count back to the start.
    fn finish(&mut self) -> Step {
        if self.rt_live {
            self.shutdown(0)?;
        }
        self.settle()
    }

    /// After a failure: leave nothing behind for the next input.
    fn cleanup(&mut self) {
        if self.rt_live {
            // SAFETY: as in `shutdown`.
            unsafe { coro_runtime_shutdown(self.rt) };
            self.rt_live = false;
        }
        self.close_pipes();
    }

    // -- waiting for the predicted state --------------------------------

    /// Waits until every record and the live frame count match the model,
    /// then takes the tokens the bodies handed out.
    fn settle(&mut self) -> Step {
        let deadline = Instant::now() + SETTLE_LIMIT;
        let mut looks = 0u32;
        loop {
            match self.compare() {
                Ok(()) => break,
                Err(Mismatch::Wrong(e)) => return Err(e),
                Err(Mismatch::NotYet(e)) if Instant::now() > deadline => {
                    return Err(format!(
                        "not in the predicted state after {SETTLE_LIMIT:?} \
                         (a lost wake-up or a wrong prediction): {e}"
                    ));
                }
                Err(Mismatch::NotYet(_)) => {
                    looks += 1;
                    if looks < 1000 {
                        std::thread::yield_now();
                    } else {
                        // Only to spare the CPU; no result depends on it.
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
            }
        }
        for (c, co) in self.model.cos.iter_mut().enumerate() {
            if co.token_pending {
                co.token_pending = false;
                co.token = Some(RECORDS[c].token.load(SeqCst));
            }
        }
        self.collect_children()?;
        self.check_self_ids()
    }

    /// Learns the promises that bodies' `SPAWN_CHILD` steps made: the
    /// child's `coro_self_id()`, which must be what its parent's
    /// `coro_spawn` gave.
    fn collect_children(&mut self) -> Step {
        let pending: Vec<(usize, usize)> = (0..self.model.cos.len())
            .filter_map(|parent| Some((parent, self.model.cos[parent].child?)))
            .filter(|&(_, child)| self.model.cos[child].promise_pending)
            .collect();
        for (parent, child) in pending {
            let spawned = RECORDS[child].self_id.load(SeqCst);
            let i = self.model.cos[parent]
                .steps
                .iter()
                .position(|s| s.0 == step::SPAWN_CHILD)
                .expect("it spawned");
            let given = RECORDS[parent].value[i].load(SeqCst);
            if spawned == 0 || spawned != given {
                return Err(format!(
                    "co {child}: its parent's coro_spawn gave {given:#x}, \
                     its coro_self_id() is {spawned:#x}"
                ));
            }
            self.log(format!(
                "co {child}: spawned by co {parent}, promise {spawned:#x}"
            ));
            let co = &mut self.model.cos[child];
            co.promise = spawned;
            co.exp.self_id = Some(spawned);
            co.promise_pending = false;
        }
        Ok(())
    }

    /// `coro_self_id()` in each body that began is its promise.
    fn check_self_ids(&self) -> Step {
        for (c, co) in self.model.cos.iter().enumerate() {
            let began = co.exp.entered > 0 || co.exp.returned.is_some();
            let id = RECORDS[c].self_id.load(SeqCst);
            if began && Some(id) != co.exp.self_id {
                return Err(format!(
                    "co {c}: coro_self_id() = {id:#x}, expected {:?}",
                    co.exp.self_id
                ));
            }
        }
        Ok(())
    }

    fn compare(&self) -> Result<(), Mismatch> {
        let strays = STRAYS.load(SeqCst);
        if strays != 0 {
            return Err(Mismatch::Wrong(format!(
                "{strays} env_drops or entry runs for spawns that failed"
            )));
        }
        for (c, co) in self.model.cos.iter().enumerate() {
            check_record(&RECORDS[c], &co.exp).map_err(|m| self.name_coroutine(c, m))?;
        }
        let frames = coro_live_frames() as i64 - self.base_frames as i64;
        let expected = self.model.live() as i64;
        if frames != expected {
            return Err(Mismatch::NotYet(format!(
                "{frames} frames alive, expected {expected}: {}",
                self.describe_alive()
            )));
        }
        Ok(())
    }

    /// The coroutines the model holds alive, and what holds them.
    fn describe_alive(&self) -> String {
        let alive: Vec<String> = (0..self.model.cos.len())
            .filter(|&c| !self.model.cos[c].freed)
            .map(|c| {
                let co = &self.model.cos[c];
                format!(
                    "co {c} {:?} (promise {}, token {})",
                    co.phase,
                    if co.async_ref { "held" } else { "consumed" },
                    if co.token.is_some() { "held" } else { "none" },
                )
            })
            .collect();
        alive.join("; ")
    }

    fn name_coroutine(&self, c: usize, m: Mismatch) -> Mismatch {
        let co = &self.model.cos[c];
        let script: Vec<&str> = co.steps.iter().map(|&(k, _)| step::name(k)).collect();
        let what = |e: String| {
            format!(
                "co {c} (flags {}, [{}], expected {:?} at step {}): {e}",
                co.flags,
                script.join(", "),
                co.phase,
                co.at
            )
        };
        match m {
            Mismatch::NotYet(e) => Mismatch::NotYet(what(e)),
            Mismatch::Wrong(e) => Mismatch::Wrong(what(e)),
        }
    }

    /// The `pick`-th coroutine (modulo) of those that `fits`.
    fn pick(&self, pick: u8, fits: impl Fn(&Co) -> bool) -> Option<usize> {
        let fitting: Vec<usize> = (0..self.model.cos.len())
            .filter(|&c| fits(&self.model.cos[c]))
            .collect();
        pick_from(&fitting, pick).copied()
    }
}

fn write_pipe_model(model: &mut Model, c: usize) {
    let co = &mut model.cos[c];
    co.pipe_written = true;
    if co.phase == Phase::Blocked(Block::Pipe) {
        model.wake(c, CORO_OK, 0);
    }
}

fn pick_from<T>(items: &[T], pick: u8) -> Option<&T> {
    match items.len() {
        0 => None,
        n => items.get(pick as usize % n),
    }
}

fn make_env(
    index: usize,
    steps: &[(u8, u8)],
    pipe: Option<(i32, i32)>,
    target: Target,
    child: u32,
    h: &Harness,
) -> Env {
    let model = &h.model;
    let mut env = Env {
        magic: ENV_MAGIC,
        record: index as u32,
        len: steps.len() as u32,
        kinds: [0; MAX_STEPS],
        args: [0; MAX_STEPS],
        pipe: pipe.map_or(-1, |(r, _)| r),
        child,
        target: match target {
            Target::Zero => 0,
            Target::Stale(t) | Target::Live(t) => model.cos[t].promise,
        },
        rt: h.rt as u64,
    };
    for (i, &(kind, arg)) in steps.iter().enumerate() {
        env.kinds[i] = kind;
        env.args[i] = arg;
    }
    env
}

/// What `Op::Await` does just before its await.
#[derive(Clone, Copy)]
enum Prelude {
    None,
    Token { cancel: bool },
    Pipe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PromiseCall {
    Await,
    CancelAsync,
    Detach,
}

impl PromiseCall {
    fn from(b: u8) -> PromiseCall {
        [
            PromiseCall::Await,
            PromiseCall::CancelAsync,
            PromiseCall::Detach,
        ][b as usize % 3]
    }

    fn name(self) -> &'static str {
        match self {
            PromiseCall::Await => "coro_await",
            PromiseCall::CancelAsync => "coro_cancel_async",
            PromiseCall::Detach => "coro_detach",
        }
    }
}

fn call_promise(id: u64, call: PromiseCall) -> (i32, u64) {
    let p = coro_promise { id };
    match call {
        PromiseCall::Await => {
            let mut out = ptr::null_mut();
            // SAFETY: `out` is writable.
            let rc = unsafe { coro_await(p, &mut out) };
            (rc, out as usize as u64)
        }
        PromiseCall::CancelAsync => (coro_cancel_async(p), 0),
        PromiseCall::Detach => (coro_detach(p), 0),
    }
}

fn call_token(id: u64, cancel: bool) -> i32 {
    let t = coro_token { id };
    if cancel {
        coro_cancel_suspend(t)
    } else {
        coro_resume(t)
    }
}

fn token_call_name(cancel: bool) -> &'static str {
    if cancel {
        "coro_cancel_suspend"
    } else {
        "coro_resume"
    }
}

fn misuse_runtime_new(what: u8) -> (i32, i32) {
    let mut rt = ptr::null_mut();
    let cfg = coro_config {
        struct_size: if what == 23 {
            4
        } else {
            core::mem::size_of::<coro_config>() as u32
        },
        workers: 5000,
        stack_size: 0,
    };
    // SAFETY: NULL or valid pointers; every case is refused before a
    // runtime is made.
    let rc = unsafe {
        match what {
            22 => coro_runtime_new(ptr::null(), ptr::null_mut()),
            _ => coro_runtime_new(&cfg, &mut rt),
        }
    };
    (rc, CORO_EINVAL)
}

fn expect_rc(what: &str, rc: i32, expected: i32) -> Step {
    if rc == expected {
        Ok(())
    } else {
        Err(format!("{what} returned {rc}, expected {expected}"))
    }
}

fn make_pipe() -> Result<(i32, i32), String> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if rc != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    Ok((fds[0], fds[1]))
}

fn close_fd(fd: i32) {
    // SAFETY: a descriptor this harness opened and closes once.
    unsafe { libc::close(fd) };
}

/// Open descriptors of the process (the directory's own included, the
/// same in every count).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}
