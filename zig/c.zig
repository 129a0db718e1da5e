//! The C API of coframe, as Zig sees it: include/coframe.h translated by
//! build.zig's translate-c step (module `coframe_h`; Zig 0.17 has no
//! @cImport). The one place the C header enters the Zig package: every
//! other file of zig/ (coframe.zig, and Io.zig) imports this one. The names
//! are the C names, re-exported one by one, so a name the header loses is a
//! compile error here and not a surprise elsewhere.
const h = @import("coframe_h");

// Types (opaque objects, handles, callbacks).
pub const coro_runtime = h.coro_runtime;
pub const coro_config = h.coro_config;
pub const coro_promise = h.coro_promise;
pub const coro_token = h.coro_token;
pub const coro_mutex = h.coro_mutex;
pub const coro_cond = h.coro_cond;
pub const coro_chan = h.coro_chan;
pub const coro_entry = h.coro_entry;
pub const coro_env_drop = h.coro_env_drop;
pub const coro_on_suspend = h.coro_on_suspend;
pub const coro_defer_fn = h.coro_defer_fn;

// Codes, flags and the version.
pub const COFRAME_VERSION_MAJOR = h.COFRAME_VERSION_MAJOR;
pub const COFRAME_VERSION_MINOR = h.COFRAME_VERSION_MINOR;
pub const COFRAME_VERSION_PATCH = h.COFRAME_VERSION_PATCH;
pub const CORO_OK = h.CORO_OK;
pub const CORO_EINVAL = h.CORO_EINVAL;
pub const CORO_ESTALE = h.CORO_ESTALE;
pub const CORO_ESTATE = h.CORO_ESTATE;
pub const CORO_ECANCELED = h.CORO_ECANCELED;
pub const CORO_ETIMEDOUT = h.CORO_ETIMEDOUT;
pub const CORO_ENOMEM = h.CORO_ENOMEM;
pub const CORO_ELOCKHELD = h.CORO_ELOCKHELD;
pub const CORO_ESHUTDOWN = h.CORO_ESHUTDOWN;
pub const CORO_EIO = h.CORO_EIO;
pub const CORO_EBUSY = h.CORO_EBUSY;
pub const CORO_ECLOSED = h.CORO_ECLOSED;
pub const CORO_PENDING = h.CORO_PENDING;
pub const CORO_SPAWN_CANCEL_RETURNS = h.CORO_SPAWN_CANCEL_RETURNS;
pub const CORO_SPAWN_MIGRATABLE = h.CORO_SPAWN_MIGRATABLE;
pub const CORO_READABLE = h.CORO_READABLE;
pub const CORO_WRITABLE = h.CORO_WRITABLE;
pub const CORO_KEEP = h.CORO_KEEP;
pub const CORO_IO_SOME = h.CORO_IO_SOME;

// Functions.
pub const coro_runtime_new = h.coro_runtime_new;
pub const coro_runtime_shutdown = h.coro_runtime_shutdown;
pub const coro_spawn = h.coro_spawn;
pub const coro_suspend = h.coro_suspend;
pub const coro_spawn_frame = h.coro_spawn_frame;
pub const coro_frame_resumed = h.coro_frame_resumed;
pub const coro_frame_alloc = h.coro_frame_alloc;
pub const coro_frame_free = h.coro_frame_free;
pub const coro_resume = h.coro_resume;
pub const coro_cancel_suspend = h.coro_cancel_suspend;
pub const coro_await = h.coro_await;
pub const coro_cancel_async = h.coro_cancel_async;
pub const coro_detach = h.coro_detach;
pub const coro_yield = h.coro_yield;
pub const coro_wait_fd = h.coro_wait_fd;
pub const coro_fd_forget = h.coro_fd_forget;
pub const coro_sleep_until = h.coro_sleep_until;
pub const coro_read = h.coro_read;
pub const coro_write = h.coro_write;
pub const coro_recv = h.coro_recv;
pub const coro_send = h.coro_send;
pub const coro_accept = h.coro_accept;
pub const coro_connect = h.coro_connect;
pub const coro_now = h.coro_now;
pub const coro_defer = h.coro_defer;
pub const coro_errdefer = h.coro_errdefer;
pub const coro_lock_note_acquire = h.coro_lock_note_acquire;
pub const coro_lock_note_release = h.coro_lock_note_release;
pub const coro_lock_note_name = h.coro_lock_note_name;
pub const coro_self_id = h.coro_self_id;
pub const coro_mutex_new = h.coro_mutex_new;
pub const coro_mutex_free = h.coro_mutex_free;
pub const coro_mutex_lock = h.coro_mutex_lock;
pub const coro_mutex_trylock = h.coro_mutex_trylock;
pub const coro_mutex_unlock = h.coro_mutex_unlock;
pub const coro_cond_new = h.coro_cond_new;
pub const coro_cond_free = h.coro_cond_free;
pub const coro_cond_wait = h.coro_cond_wait;
pub const coro_cond_signal = h.coro_cond_signal;
pub const coro_cond_broadcast = h.coro_cond_broadcast;
pub const coro_chan_new = h.coro_chan_new;
pub const coro_chan_free = h.coro_chan_free;
pub const coro_chan_send = h.coro_chan_send;
pub const coro_chan_recv = h.coro_chan_recv;
pub const coro_chan_close = h.coro_chan_close;
pub const coro_live_frames = h.coro_live_frames;
pub const coro_dump = h.coro_dump;
pub const coro_strerror = h.coro_strerror;
