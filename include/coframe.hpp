/*
 * coframe.hpp: the C++20 host over <coframe.h>. Header-only.
 *
 *   coframe::runtime            workers, their queues and pollers (RAII)
 *   coframe::spawn(rt, f, a...) runs f(a...) on rt: a stackful body, or a
 *                               C++20 coroutine (a callable returning
 *                               coframe::task<T>) as a foreign frame
 *   coframe::promise<T>         the async reference: get(), co_await, cancel()
 *   coframe::token              the suspend reference: resume(), cancel()
 *   coframe::task<T>            a lazy C++20 coroutine that runs on coframe
 *   coframe::this_coro          waits for stackful bodies (std::this_thread's)
 *   readable, writable, sleep_for, sleep_until, yield, suspend
 *                               awaitables for tasks
 *   read, write, recv, send, accept, connect (and read_some, recv_some)
 *                               blocking-style I/O: awaitables for tasks,
 *                               and this_coro:: calls for stackful bodies
 *   coframe::unique_fd          an owned descriptor (what accept gives)
 *   coframe::mutex, channel<T>  suspension-aware mutex and channel
 *   coframe::lock_guard<M>      a std::lock_guard that refuses suspensions (CP.52)
 *   coframe::error, canceled    exceptions; coframe::errc, category()
 *
 * docs/CPP.md records every decision, the C++ Core Guidelines rules it
 * enforces (CP.51, CP.52, CP.53) and the thread model. Every failing call
 * throws coframe::error; no exception ever crosses into the C library.
 */
#ifndef COFRAME_HPP
#define COFRAME_HPP

#include <coframe.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#if __cplusplus < 202002L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 202002L)
#error "coframe.hpp needs C++20 (-std=c++20)"
#endif

#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <concepts>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <version>
#if defined(__cpp_lib_source_location)
#include <source_location>
#endif

// Functions that read the thread-local state of this header. Never
// inlined (nor, with GCC, analysed across calls), and each body opens
// with COFRAME_DETAIL_OPAQUE, so that no compiler infers that it reads no
// memory and merges or hoists its calls (LLVM did that to the library's
// own thread_ctx: docs/TESTING.md): a compiler may keep a thread-local's
// address across a co_await, and the task may then run on another thread
// (docs/CPP.md, "Thread-local state").
#if defined(__clang__)
#define COFRAME_DETAIL_NOINLINE __attribute__((noinline))
#elif defined(__GNUC__)
#define COFRAME_DETAIL_NOINLINE __attribute__((noinline, noipa))
#elif defined(_MSC_VER)
#define COFRAME_DETAIL_NOINLINE __declspec(noinline)
#else
#define COFRAME_DETAIL_NOINLINE
#endif
#if defined(__GNUC__) || defined(__clang__)
#define COFRAME_DETAIL_OPAQUE() __asm__ volatile("" ::: "memory")
#else
#define COFRAME_DETAIL_OPAQUE() ((void)0)
#endif

namespace coframe {

// =====================================================================
// Errors
// =====================================================================

/// One enumerator per CORO_E* code, with the C code as its value.
enum class errc : int {
    invalid = CORO_EINVAL,
    stale = CORO_ESTALE,
    state = CORO_ESTATE,
    canceled = CORO_ECANCELED,
    timed_out = CORO_ETIMEDOUT,
    no_memory = CORO_ENOMEM,
    lock_held = CORO_ELOCKHELD,
    shutdown = CORO_ESHUTDOWN,
    io = CORO_EIO,
    busy = CORO_EBUSY,
    closed = CORO_ECLOSED,
};

} // namespace coframe

template <>
struct std::is_error_code_enum<coframe::errc> : std::true_type {
};

namespace coframe {

namespace detail {

class category_impl final : public std::error_category {
public:
    const char *name() const noexcept override { return "coframe"; }
    std::string message(int code) const override { return coro_strerror(code); }
    // So that `e.code() == std::errc::timed_out` holds where a portable
    // condition means the same thing.
    std::error_condition default_error_condition(int code) const noexcept override
    {
        switch (code) {
        case CORO_EINVAL:
            return std::errc::invalid_argument;
        case CORO_ECANCELED:
            return std::errc::operation_canceled;
        case CORO_ETIMEDOUT:
            return std::errc::timed_out;
        case CORO_ENOMEM:
            return std::errc::not_enough_memory;
        case CORO_EBUSY:
            return std::errc::device_or_resource_busy;
        default:
            return std::error_condition(code, *this);
        }
    }
};

} // namespace detail

/// The category of every coframe error code: name() "coframe", messages
/// from coro_strerror.
inline const std::error_category &category() noexcept
{
    static const detail::category_impl instance;
    return instance;
}

inline std::error_code make_error_code(errc e) noexcept { return { static_cast<int>(e), category() }; }

/// Thrown by every failing call. code() is in coframe::category(); what()
/// names the call, e.g. "coro_wait_fd: deadline passed". For errc::io it
/// also gives errno's text, and os_error() its value.
class error : public std::system_error {
public:
    explicit error(errc e) : std::system_error(make_error_code(e)) {}
    error(errc e, const std::string &what) : std::system_error(make_error_code(e), what) {}
    error(std::error_code ec, const std::string &what, int os_error = 0)
        : std::system_error(ec, what), os_error_(os_error)
    {
    }
    /// errno as the failing call left it (errc::io), else 0.
    int os_error() const noexcept { return os_error_; }

private:
    int os_error_ = 0;
};

/// Thrown at a suspension point of a cancelled coroutine (and by
/// promise::get() for a cancelled one). Catch it only to clean up, then
/// let it go on: the coroutine's later suspension points throw it again.
class canceled : public error {
public:
    canceled() : error(errc::canceled) {}
    explicit canceled(const std::string &what) : error(errc::canceled, what) {}
};


// =====================================================================
// Clock and deadlines
// =====================================================================

/// The clock of every deadline: CLOCK_MONOTONIC, which coro_now() reads
/// and std::chrono::steady_clock is on Linux (libstdc++ and libc++).
using clock = std::chrono::steady_clock;
/// A deadline; a default-constructed one ({}) means none.
using time_point = clock::time_point;

namespace detail {

/// coro_* deadline of `tp`: -1 for {}, else CLOCK_MONOTONIC ns (a time
/// before the clock's epoch is already past: 0).
template <class Dur>
std::int64_t deadline_ns(std::chrono::time_point<clock, Dur> tp) noexcept
{
    if (tp == std::chrono::time_point<clock, Dur>{})
        return -1;
    using ns_f = std::chrono::duration<long double, std::nano>;
    long double ns = std::chrono::duration_cast<ns_f>(tp.time_since_epoch()).count();
    if (ns <= 0)
        return 0;
    if (ns >= static_cast<long double>(INT64_MAX))
        return INT64_MAX;
    return std::chrono::ceil<std::chrono::nanoseconds>(tp.time_since_epoch()).count();
}

/// `d` in nanoseconds, rounded up (timers never fire early), saturated;
/// 0 for a negative duration.
template <class Rep, class Period>
std::int64_t duration_ns(std::chrono::duration<Rep, Period> d) noexcept
{
    if (d <= d.zero())
        return 0;
    using ns_f = std::chrono::duration<long double, std::nano>;
    if (std::chrono::duration_cast<ns_f>(d).count() >= static_cast<long double>(INT64_MAX))
        return INT64_MAX;
    return static_cast<std::int64_t>(std::chrono::ceil<std::chrono::nanoseconds>(d).count());
}

/// The deadline `ns` nanoseconds after coro_now() (saturated).
inline std::int64_t after_ns(std::int64_t ns) noexcept
{
    const std::int64_t now = coro_now();
    return ns >= INT64_MAX - now ? INT64_MAX : now + ns;
}

// =====================================================================
// Internals shared by everything below
// =====================================================================

template <class...>
inline constexpr bool always_false = false;

[[noreturn]] inline void fatal(const char *msg) noexcept
{
    std::fputs(msg, stderr);
    std::fputc('\n', stderr);
    std::fflush(stderr);
    std::abort();
}

/// The root of a running task (a foreign frame): what its resume
/// trampoline resumes next, and whether the code it ran began a wait.
struct task_root {
    /// The coroutine that began the pending library wait: the innermost
    /// task of the co_await chain, which the next resume continues.
    std::coroutine_handle<> leaf;
    /// The frame's id (coro_self_id() inside its resume).
    std::uint64_t id = 0;
    /// Set by an awaitable whose library call answered CORO_PENDING.
    bool wait_begun = false;
    /// An I/O awaitable whose readiness wait is pending (section
    /// "Blocking-style I/O"): the next resume calls io_resumed(io) before
    /// the leaf. It retries the system call, and answers true if it began
    /// another wait, when the leaf stays suspended.
    bool (*io_resumed)(void *) noexcept = nullptr;
    void *io = nullptr;
};

inline thread_local task_root *tls_task = nullptr;

/// The task whose resume runs on this thread, if any. Not inlined: see
/// COFRAME_DETAIL_NOINLINE.
COFRAME_DETAIL_NOINLINE inline task_root *current_task() noexcept
{
    COFRAME_DETAIL_OPAQUE();
    return tls_task;
}

COFRAME_DETAIL_NOINLINE inline task_root *exchange_current_task(task_root *r) noexcept
{
    COFRAME_DETAIL_OPAQUE();
    task_root *old = tls_task;
    tls_task = r;
    return old;
}

/// True when the calling code is a task's body (its resume runs on this
/// thread and the running coroutine is that task's frame: a stackful
/// child that the library runs nested inside a task's co_await is not).
inline bool in_task() noexcept
{
    task_root *r = current_task();
    return r != nullptr && r->id == coro_self_id();
}

/// The live coframe::lock_guards of this thread that noted their lock,
/// innermost first (section "lock_guard").
struct noted_lock {
    const char *name;
    noted_lock *outer;
};
inline thread_local noted_lock *tls_noted = nullptr;
COFRAME_DETAIL_NOINLINE inline noted_lock *&noted_locks() noexcept
{
    COFRAME_DETAIL_OPAQUE();
    return tls_noted;
}

/// The innermost noted lock the running code holds: that of the innermost
/// live coframe::lock_guard (coro_lock_note_name names the last one
/// noted, even after it was released while an outer one is still held),
/// else the library's for locks noted by other code.
inline const char *held_lock_name() noexcept
{
    if (noted_lock *n = noted_locks())
        return n->name;
    return coro_lock_note_name();
}

[[noreturn]] COFRAME_DETAIL_NOINLINE inline void throw_error(int rc, const char *where)
{
    const int os = errno;
    const std::error_code ec(rc, category());
    switch (rc) {
    case CORO_ECANCELED:
        throw canceled(where);
    case CORO_EIO:
        throw error(ec, std::string(where) + ": " + std::generic_category().message(os) + " (errno " +
                            std::to_string(os) + ")",
                    os);
    case CORO_ELOCKHELD: {
        const char *name = held_lock_name();
        throw error(ec, std::string(where) + ": suspends while holding " +
                            (name != nullptr ? name : "a noted blocking lock") + " (CP.52)");
    }
    default:
        throw error(ec, where);
    }
}

inline void check(int rc, const char *where)
{
    if (rc != 0) [[unlikely]]
        throw_error(rc, where);
}

/// What a stackful-only call does in a task: throw errc::state, saying
/// what to write instead.
inline void not_in_task(const char *what)
{
    if (in_task()) [[unlikely]]
        throw error(errc::state, what);
}

// ---------------------------------------------------------------------
// A body's outcome: nothing yet, a value, or an exception.

template <class T>
class result {
public:
    template <class U>
    void set_value(U &&v)
    {
        v_.template emplace<1>(std::forward<U>(v));
    }
    void set_exception(std::exception_ptr e) noexcept { v_.template emplace<2>(std::move(e)); }
    bool has_exception() const noexcept { return v_.index() == 2; }
    /// The value (moved out), or the exception rethrown.
    T take()
    {
        if (v_.index() == 2)
            std::rethrow_exception(std::get<2>(v_));
        if (v_.index() != 1)
            throw error(errc::state, "coframe: no result (the coroutine did not finish)");
        return std::move(std::get<1>(v_));
    }

private:
    std::variant<std::monostate, T, std::exception_ptr> v_;
};

template <class T>
class result<T &> {
public:
    void set_value(T &v) noexcept { v_.template emplace<1>(std::addressof(v)); }
    void set_exception(std::exception_ptr e) noexcept { v_.template emplace<2>(std::move(e)); }
    bool has_exception() const noexcept { return v_.index() == 2; }
    T &take()
    {
        if (v_.index() == 2)
            std::rethrow_exception(std::get<2>(v_));
        if (v_.index() != 1)
            throw error(errc::state, "coframe: no result (the coroutine did not finish)");
        return *std::get<1>(v_);
    }

private:
    std::variant<std::monostate, T *, std::exception_ptr> v_;
};

template <>
class result<void> {
public:
    void set_value() noexcept { done_ = true; }
    void set_exception(std::exception_ptr e) noexcept { exc_ = std::move(e); }
    bool has_exception() const noexcept { return exc_ != nullptr; }
    void take()
    {
        if (exc_)
            std::rethrow_exception(exc_);
        if (!done_)
            throw error(errc::state, "coframe: no result (the coroutine did not finish)");
    }

private:
    std::exception_ptr exc_;
    bool done_ = false;
};

/// The outcome of a spawned body, shared by its promise<T> and its frame
/// (a frame is freed once awaited, so a result cannot live in it): two
/// references, and whichever lets go last frees it.
template <class T>
struct result_state {
    std::atomic<unsigned> refs{ 2 };
    result<T> r;

    void release() noexcept
    {
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
            delete this;
    }
};

/// What every task's promise_type derives from: where its frame memory
/// comes from, its root, and the coroutine that awaits it.
struct promise_base {
    task_root *root = nullptr;
    std::coroutine_handle<> continuation;

    /// Frame memory from the library, so that a cancelled task's frame
    /// (destroyed at once) stays valid memory until its last reference
    /// drops: a waker that still holds its token may write into it.
    static void *operator new(std::size_t size)
    {
        void *p = coro_frame_alloc(size);
        if (p == nullptr)
            throw std::bad_alloc();
        return p;
    }
    static void operator delete(void *p) noexcept { coro_frame_free(p); }
};

template <class P>
inline constexpr bool is_task_promise = std::is_base_of_v<promise_base, P>;

/// The state of one library wait inside a task's awaitable: the status
/// its call answered, or that the wait is pending (CORO_PENDING).
///
/// An awaitable destroyed with its wait still pending belongs to a frame
/// destroyed by a cancel: the library resumes a frame whose wait was
/// granted (the lock, an item, room) before a cancel came, so such a wait
/// was granted nothing ("abandoned" below).
class wait_op {
public:
    /// After the library call in await_suspend: suspend (true) if it
    /// began a wait, else keep its status for await_resume.
    template <class P>
    bool begin(std::coroutine_handle<P> h, int rc) noexcept
    {
        static_assert(is_task_promise<P>,
                      "coframe's awaitables work inside a coframe::task (spawn it to run it)");
        if (rc == CORO_PENDING) {
            task_root *root = h.promise().root;
            root->leaf = h;
            root->wait_begun = true;
            pending_ = true;
            return true;
        }
        rc_ = rc;
        return false;
    }
    /// In await_resume: the call's final status.
    int end(void **value = nullptr) noexcept
    {
        if (pending_) {
            pending_ = false;
            rc_ = coro_frame_resumed(value);
        }
        return rc_;
    }
private:
    int rc_ = 0;
    bool pending_ = false;
};

/// An awaitable over one library wait that gives nothing back: the
/// derived struct calls the C function in start().
template <class Derived>
class simple_wait {
public:
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept
    {
        return op_.begin(h, static_cast<Derived *>(this)->start());
    }
    void await_resume()
    {
        int rc = op_.end();
        if (rc != 0)
            throw_error(rc, Derived::what);
    }

private:
    wait_op op_;
};

struct promise_access;

} // namespace detail

// =====================================================================
// runtime
// =====================================================================

/// A runtime: `workers` threads (0: one per CPU) running coroutines with
/// `stack_size`-byte stacks (0: 64 KiB). Not copyable nor movable, as its
/// coroutines may refer to it. The destructor shuts it down: every live
/// coroutine is cancelled (stackful bodies unwind, tasks are destroyed)
/// and the workers are joined.
class runtime {
public:
    explicit runtime(unsigned workers = 0, std::size_t stack_size = 0)
    {
        coro_config cfg{};
        cfg.struct_size = sizeof cfg;
        cfg.workers = workers;
        cfg.stack_size = stack_size;
        detail::check(coro_runtime_new(&cfg, &rt_), "coro_runtime_new");
    }
    runtime(const runtime &) = delete;
    runtime &operator=(const runtime &) = delete;
    /// Shuts down; a runtime already shut down answers nothing. Must not
    /// run on one of its own workers (the C API refuses: the runtime then
    /// stays up).
    ~runtime() { (void)coro_runtime_shutdown(rt_); }

    /// Shuts down now. Later spawns throw errc::shutdown.
    void shutdown() { detail::check(coro_runtime_shutdown(rt_), "coro_runtime_shutdown"); }
    coro_runtime *native() const noexcept { return rt_; }

private:
    coro_runtime *rt_ = nullptr;
};

// =====================================================================
// token
// =====================================================================

/// The suspend reference of one suspension (this_coro::suspend gives it
/// to its callback). Move-only; consumed by std::move(t).resume() or
/// std::move(t).cancel(); the destructor cancels a suspension still held,
/// so a dropped token never leaves its coroutine parked forever.
class token {
public:
    token() noexcept = default;
    explicit token(coro_token t) noexcept : t_(t) {}
    token(token &&o) noexcept : t_(std::exchange(o.t_, coro_token{})) {}
    token &operator=(token &&o) noexcept
    {
        if (this != &o) {
            reset();
            t_ = std::exchange(o.t_, coro_token{});
        }
        return *this;
    }
    token(const token &) = delete;
    token &operator=(const token &) = delete;
    ~token() { reset(); }

    /// Resumes the coroutine (on its worker). Throws errc::invalid on an
    /// empty token, errc::stale if the reference was consumed already.
    void resume() &&
    {
        detail::check(coro_resume(std::exchange(t_, coro_token{})), "coro_resume");
    }
    /// Cancels the coroutine at this suspension (a stackful body's
    /// suspension point then throws coframe::canceled).
    void cancel() &&
    {
        detail::check(coro_cancel_suspend(std::exchange(t_, coro_token{})), "coro_cancel_suspend");
    }
    std::uint64_t id() const noexcept { return t_.id; }
    explicit operator bool() const noexcept { return t_.id != 0; }
    /// Gives up the reference without consuming it: the caller now owns it.
    coro_token release() noexcept { return std::exchange(t_, coro_token{}); }

private:
    void reset() noexcept
    {
        if (t_.id != 0)
            (void)coro_cancel_suspend(std::exchange(t_, coro_token{}));
    }
    coro_token t_{};
};

// =====================================================================
// promise<T>
// =====================================================================

template <class T>
class promise;

namespace detail {

template <class T>
class promise_awaiter;

} // namespace detail

/// The async reference of a spawned coroutine. Move-only; consumed by
/// get() (or co_await), cancel() or detach(); the destructor cancels a
/// coroutine whose promise is still held (as std::jthread stops).
template <class T>
class promise {
    static_assert(!std::is_reference_v<T>, "coframe::promise<T&>: spawn returns values only");

public:
    using value_type = T;

    promise() noexcept = default;
    promise(promise &&o) noexcept : p_(std::exchange(o.p_, coro_promise{})), st_(std::exchange(o.st_, nullptr)) {}
    promise &operator=(promise &&o) noexcept
    {
        if (this != &o) {
            reset();
            p_ = std::exchange(o.p_, coro_promise{});
            st_ = std::exchange(o.st_, nullptr);
        }
        return *this;
    }
    promise(const promise &) = delete;
    promise &operator=(const promise &) = delete;
    ~promise() { reset(); }

    /// Waits for the coroutine and gives its result: suspends a stackful
    /// body, blocks a plain thread. Rethrows the body's exception; throws
    /// coframe::canceled if it was cancelled (or if the caller was).
    /// In a task it throws errc::state: co_await the promise there.
    T get()
    {
        detail::not_in_task("coframe::promise::get() in a task: co_await the promise instead");
        if (p_.id == 0)
            throw error(errc::invalid, "coframe::promise::get: empty promise");
        const int rc = coro_await(p_, nullptr);
        consumed(rc);
        if (rc != 0) {
            if (p_.id == 0)
                drop_state(); // else still held (CORO_ELOCKHELD, CORO_ESTATE): try again later
            detail::throw_error(rc, "coro_await");
        }
        return take();
    }

    /// Cancels the coroutine (consumes the promise). A suspended stackful
    /// body's suspension point throws coframe::canceled; a suspended task
    /// is destroyed before this returns, on this thread.
    void cancel()
    {
        if (p_.id == 0)
            throw error(errc::invalid, "coframe::promise::cancel: empty promise");
        const int rc = coro_cancel_async(std::exchange(p_, coro_promise{}));
        drop_state();
        detail::check(rc, "coro_cancel_async");
    }

    /// Lets the coroutine run on unwatched (consumes the promise).
    void detach()
    {
        if (p_.id == 0)
            throw error(errc::invalid, "coframe::promise::detach: empty promise");
        const int rc = coro_detach(std::exchange(p_, coro_promise{}));
        drop_state();
        detail::check(rc, "coro_detach");
    }

    /// The coroutine's id (this_coro::id() inside it); 0 once consumed.
    std::uint64_t id() const noexcept { return p_.id; }
    bool valid() const noexcept { return p_.id != 0; }
    explicit operator bool() const noexcept { return valid(); }
    coro_promise native() const noexcept { return p_; }

    /// co_await p in a task: waits without blocking the worker.
    detail::promise_awaiter<T> operator co_await() & noexcept;
    detail::promise_awaiter<T> operator co_await() && noexcept;

private:
    friend struct detail::promise_access;
    friend class detail::promise_awaiter<T>;

    promise(coro_promise p, detail::result_state<T> *st) noexcept : p_(p), st_(st) {}

    /// After coro_await answered `rc`: was the reference consumed?
    void consumed(int rc) noexcept
    {
        if (rc == 0 || rc == CORO_PENDING || rc == CORO_ECANCELED || rc == CORO_ESTALE)
            p_ = coro_promise{};
    }
    void drop_state() noexcept
    {
        if (st_ != nullptr)
            std::exchange(st_, nullptr)->release();
    }
    T take()
    {
        struct release_on_exit {
            detail::result_state<T> *st;
            ~release_on_exit() { st->release(); }
        } guard{ std::exchange(st_, nullptr) };
        return guard.st->r.take();
    }
    void reset() noexcept
    {
        if (p_.id != 0)
            (void)coro_cancel_async(std::exchange(p_, coro_promise{}));
        drop_state();
    }

    coro_promise p_{};
    detail::result_state<T> *st_ = nullptr;
};

namespace detail {

struct promise_access {
    template <class T>
    static promise<T> make(coro_promise p, result_state<T> *st) noexcept
    {
        return promise<T>(p, st);
    }
};

/// co_await of a promise in a task: coro_await, which answers
/// CORO_PENDING there.
template <class T>
class promise_awaiter {
public:
    explicit promise_awaiter(promise<T> &p) noexcept : p_(p) {}
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept
    {
        int rc = CORO_EINVAL;
        if (p_.p_.id != 0) {
            rc = coro_await(p_.p_, nullptr);
            p_.consumed(rc);
        }
        return op_.begin(h, rc);
    }
    T await_resume()
    {
        const int rc = op_.end();
        if (rc != 0) {
            if (p_.p_.id == 0)
                p_.drop_state(); // else not consumed: the promise is still held
            throw_error(rc, rc == CORO_EINVAL ? "co_await of a coframe::promise (empty?)" : "coro_await");
        }
        return p_.take();
    }

private:
    promise<T> &p_;
    wait_op op_;
};

} // namespace detail

template <class T>
detail::promise_awaiter<T> promise<T>::operator co_await() & noexcept
{
    return detail::promise_awaiter<T>(*this);
}

template <class T>
detail::promise_awaiter<T> promise<T>::operator co_await() && noexcept
{
    return detail::promise_awaiter<T>(*this);
}

// =====================================================================
// task<T>
// =====================================================================

template <class T = void>
class task;

namespace detail {

template <class T>
struct is_task_impl : std::false_type {
};
template <class T>
struct is_task_impl<task<T>> : std::true_type {
};
template <class T>
inline constexpr bool is_task = is_task_impl<std::remove_cvref_t<T>>::value;

/// final_suspend: hands control to the awaiting coroutine (symmetric
/// transfer), or back to the resume trampoline for the root.
struct final_awaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept
    {
        std::coroutine_handle<> next = h.promise().continuation;
        return next ? next : std::noop_coroutine();
    }
    void await_resume() const noexcept {}
};

template <class T>
struct task_promise_common : promise_base, result<T> {
    std::suspend_always initial_suspend() const noexcept { return {}; }
    final_awaiter final_suspend() const noexcept { return {}; }
    void unhandled_exception() noexcept { this->set_exception(std::current_exception()); }
};

template <class T>
struct task_promise : task_promise_common<T> {
    task<T> get_return_object() noexcept;
    void return_value(T &&v) { this->set_value(std::move(v)); }
    void return_value(const T &v)
        requires std::copy_constructible<T>
    {
        this->set_value(v);
    }
};

template <class T>
struct task_promise<T &> : task_promise_common<T &> {
    task<T &> get_return_object() noexcept;
    void return_value(T &v) noexcept { this->set_value(v); }
};

template <>
struct task_promise<void> : task_promise_common<void> {
    task<void> get_return_object() noexcept;
    void return_void() noexcept { this->set_value(); }
};

/// co_await of a task in a task: runs it in the same foreign frame by
/// symmetric transfer; it comes back through final_awaiter.
template <class T>
class task_awaiter {
public:
    explicit task_awaiter(std::coroutine_handle<task_promise<T>> h) noexcept : h_(h) {}
    bool await_ready() const noexcept { return !h_ || h_.done(); }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> caller) noexcept
    {
        static_assert(is_task_promise<P>,
                      "a coframe::task can be co_awaited only in a coframe::task (spawn it to run it elsewhere)");
        h_.promise().continuation = caller;
        h_.promise().root = caller.promise().root;
        return h_;
    }
    T await_resume()
    {
        if (!h_)
            throw error(errc::invalid, "co_await of an empty coframe::task");
        return h_.promise().take();
    }

private:
    std::coroutine_handle<task_promise<T>> h_;
};

template <class R, class Fd, class... Ad>
struct task_state;

} // namespace detail

/// A lazy C++20 coroutine that runs on coframe's workers: spawn a callable
/// that returns one (spawn(rt, f, args...)), or co_await it in another
/// task, which runs it in the same frame. Move-only; the destructor
/// destroys a frame that was not started or has finished.
template <class T>
class [[nodiscard]] task {
public:
    using promise_type = detail::task_promise<T>;
    using value_type = T;

    task() noexcept = default;
    task(task &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    task &operator=(task &&o) noexcept
    {
        if (this != &o) {
            if (h_)
                h_.destroy();
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    task(const task &) = delete;
    task &operator=(const task &) = delete;
    ~task()
    {
        if (h_)
            h_.destroy();
    }

    bool valid() const noexcept { return static_cast<bool>(h_); }
    explicit operator bool() const noexcept { return valid(); }

    detail::task_awaiter<T> operator co_await() & noexcept { return detail::task_awaiter<T>(h_); }
    detail::task_awaiter<T> operator co_await() && noexcept { return detail::task_awaiter<T>(h_); }

private:
    friend struct detail::task_promise<T>;
    template <class R, class Fd, class... Ad>
    friend struct detail::task_state;

    explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    std::coroutine_handle<promise_type> h_;
};

namespace detail {

template <class T>
task<T> task_promise<T>::get_return_object() noexcept
{
    return task<T>(std::coroutine_handle<task_promise<T>>::from_promise(*this));
}

template <class T>
task<T &> task_promise<T &>::get_return_object() noexcept
{
    return task<T &>(std::coroutine_handle<task_promise<T &>>::from_promise(*this));
}

inline task<void> task_promise<void>::get_return_object() noexcept
{
    return task<void>(std::coroutine_handle<task_promise<void>>::from_promise(*this));
}

/// Sets the thread's current task around a resume.
class task_scope {
public:
    explicit task_scope(task_root *r) noexcept : old_(exchange_current_task(r)) {}
    ~task_scope() { (void)exchange_current_task(old_); }
    task_scope(const task_scope &) = delete;
    task_scope &operator=(const task_scope &) = delete;

private:
    task_root *old_;
};

/// A spawned task: its callable and arguments (decay-copied; the
/// callable's captures live here as long as the frame), the task it
/// returned (the root frame) and the shared result. Given to
/// coro_spawn_frame as its frame.
template <class R, class Fd, class... Ad>
struct task_state final : task_root {
    result_state<R> *res;
    std::tuple<Fd, Ad...> fn;
    task<R> root_task; // after fn: destroyed first

    template <class F, class... A>
    explicit task_state(result_state<R> *r, F &&f, A &&...a)
        : res(r), fn(std::forward<F>(f), std::forward<A>(a)...)
    {
    }
    task_state(const task_state &) = delete;
    task_state &operator=(const task_state &) = delete;
    ~task_state()
    {
        // The root frame first: its locals may use the captures in `fn`.
        root_task = task<R>();
        res->release();
    }

    /// Invokes the callable on the copies (as rvalues, as std::thread
    /// does) to make the root task; does not run it (tasks are lazy).
    void start()
    {
        root_task = std::apply([](auto &...x) { return std::invoke(std::move(x)...); }, fn);
        root_task.h_.promise().root = this;
        leaf = root_task.h_;
    }

    static void *resume(void *frame) noexcept
    {
        auto *st = static_cast<task_state *>(frame);
        task_scope scope(st);
        if (st->id == 0)
            st->id = coro_self_id();
        st->wait_begun = false;
        if (st->io_resumed != nullptr && std::exchange(st->io_resumed, nullptr)(st->io))
            return nullptr; // an I/O awaitable waits again: its task stays where it is
        st->leaf.resume();
        auto root = st->root_task.h_;
        if (root.done()) {
            try {
                if constexpr (std::is_void_v<R>) {
                    root.promise().take();
                    st->res->r.set_value();
                } else {
                    st->res->r.set_value(root.promise().take());
                }
            } catch (...) {
                st->res->r.set_exception(std::current_exception());
            }
        } else if (!st->wait_begun) {
            fatal("coframe: a task suspended in an awaitable that is not coframe's; a task may co_await "
                  "only coframe's awaitables, tasks and promises (docs/CPP.md)");
        }
        return nullptr;
    }

    static void destroy(void *frame) noexcept { delete static_cast<task_state *>(frame); }
};

} // namespace detail

// =====================================================================
// Awaitables for task bodies
// =====================================================================

namespace detail {

/// A readiness wait on fd for `Events` (CORO_READABLE or CORO_WRITABLE):
/// what readable and writable are.
template <class Derived, std::uint32_t Events>
class fd_wait : public simple_wait<Derived> {
public:
    template <class Dur = clock::duration>
    explicit fd_wait(int fd, std::chrono::time_point<clock, Dur> deadline = {}) noexcept
        : fd_(fd), deadline_(deadline_ns(deadline))
    {
    }
    int start() noexcept { return coro_wait_fd(fd_, Events, deadline_); }

private:
    int fd_;
    std::int64_t deadline_;
};

} // namespace detail

/// co_await readable(fd[, deadline]): waits until fd is readable (or in
/// error or hung up). Throws error(errc::timed_out) at the deadline.
struct readable : detail::fd_wait<readable, CORO_READABLE> {
    using fd_wait::fd_wait;
    static constexpr const char *what = "coro_wait_fd (readable)";
};

/// co_await writable(fd[, deadline]): as readable, for writing.
struct writable : detail::fd_wait<writable, CORO_WRITABLE> {
    using fd_wait::fd_wait;
    static constexpr const char *what = "coro_wait_fd (writable)";
};

/// co_await sleep_for(d): the deadline counts from the co_await.
struct sleep_for : detail::simple_wait<sleep_for> {
    template <class Rep, class Period>
    explicit sleep_for(std::chrono::duration<Rep, Period> d) noexcept : ns_(detail::duration_ns(d))
    {
    }
    int start() noexcept { return coro_sleep_until(detail::after_ns(ns_)); }
    static constexpr const char *what = "coro_sleep_until";

private:
    std::int64_t ns_;
};

/// co_await sleep_until(tp); {} sleeps until the task is cancelled.
struct sleep_until : detail::simple_wait<sleep_until> {
    template <class Dur>
    explicit sleep_until(std::chrono::time_point<clock, Dur> tp) noexcept : deadline_(detail::deadline_ns(tp))
    {
    }
    int start() noexcept { return coro_sleep_until(deadline_); }
    static constexpr const char *what = "coro_sleep_until";

private:
    std::int64_t deadline_;
};

/// co_await yield(): lets the worker's other runnable coroutines run.
struct yield : detail::simple_wait<yield> {
    yield() noexcept = default;
    int start() noexcept { return coro_yield(); }
    static constexpr const char *what = "coro_yield";
};

/// co_await suspend(on_suspend): this_coro::suspend for tasks. The task
/// suspends; once it has switched out, on_suspend(token) runs on the
/// worker (the awaitable, which holds a copy of on_suspend, stays where
/// it is meanwhile), and whoever ends up with the token resumes the task
/// or cancels it. A task cancelled there is destroyed, not resumed: its
/// locals' destructors run, on the thread that cancels. An exception
/// from on_suspend is rethrown by the co_await once the task runs again.
template <class F>
class suspend {
    static_assert(std::is_invocable_v<F &, token>,
                  "coframe::suspend: on_suspend must be callable with a coframe::token");

public:
    explicit suspend(F on_suspend) noexcept(std::is_nothrow_move_constructible_v<F>) : fn_(std::move(on_suspend)) {}
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept
    {
        return op_.begin(h, coro_suspend(&callback, this));
    }
    void await_resume()
    {
        const int rc = op_.end();
        if (exc_)
            std::rethrow_exception(std::exchange(exc_, nullptr));
        detail::check(rc, "coro_suspend");
    }

private:
    // Runs on the worker after the task switched out: its frame, and so
    // this awaitable, lives until the callback returns.
    static void callback(coro_token t, void *arg) noexcept
    {
        auto *self = static_cast<suspend *>(arg);
        try {
            self->fn_(token(t));
        } catch (...) {
            self->exc_ = std::current_exception();
        }
    }

    F fn_;
    std::exception_ptr exc_;
    detail::wait_op op_;
};

template <class F>
suspend(F) -> suspend<F>;

// =====================================================================
// this_coro: for stackful bodies, as std::this_thread
// =====================================================================

namespace this_coro {

/// Lets the worker's other runnable coroutines run.
inline void yield()
{
    detail::not_in_task("coframe::this_coro::yield() in a task: co_await coframe::yield()");
    detail::check(coro_yield(), "coro_yield");
}

template <class Dur>
void sleep_until(std::chrono::time_point<clock, Dur> tp)
{
    detail::not_in_task("coframe::this_coro::sleep_until() in a task: co_await coframe::sleep_until(tp)");
    detail::check(coro_sleep_until(detail::deadline_ns(tp)), "coro_sleep_until");
}

template <class Rep, class Period>
void sleep_for(std::chrono::duration<Rep, Period> d)
{
    detail::not_in_task("coframe::this_coro::sleep_for() in a task: co_await coframe::sleep_for(d)");
    detail::check(coro_sleep_until(detail::after_ns(detail::duration_ns(d))), "coro_sleep_until");
}

/// Waits until fd is readable; throws error(errc::timed_out) at the deadline.
template <class Dur = clock::duration>
void wait_readable(int fd, std::chrono::time_point<clock, Dur> deadline = {})
{
    detail::not_in_task("coframe::this_coro::wait_readable() in a task: co_await coframe::readable(fd)");
    detail::check(coro_wait_fd(fd, CORO_READABLE, detail::deadline_ns(deadline)), "coro_wait_fd (readable)");
}

/// Waits until fd is writable; throws error(errc::timed_out) at the deadline.
template <class Dur = clock::duration>
void wait_writable(int fd, std::chrono::time_point<clock, Dur> deadline = {})
{
    detail::not_in_task("coframe::this_coro::wait_writable() in a task: co_await coframe::writable(fd)");
    detail::check(coro_wait_fd(fd, CORO_WRITABLE, detail::deadline_ns(deadline)), "coro_wait_fd (writable)");
}

/// Suspends the body; once it has switched out, on_suspend(token) runs
/// on the worker, and whoever ends up with the token resumes or cancels
/// the body (a dropped token cancels it). Returns when resumed; throws
/// coframe::canceled when cancelled. An exception from on_suspend is
/// rethrown here once the body runs again.
template <class F>
void suspend(F &&on_suspend)
{
    static_assert(std::is_invocable_v<F &, token>,
                  "coframe::this_coro::suspend: on_suspend must be callable with a coframe::token");
    detail::not_in_task("coframe::this_coro::suspend() in a task");
    struct context {
        std::remove_reference_t<F> *fn;
        std::exception_ptr exc;
    } ctx{ std::addressof(on_suspend), nullptr };
    // Runs on the worker while the body is switched out: its stack, and
    // so `ctx` and `on_suspend`, stay where they are.
    auto callback = [](coro_token t, void *arg) noexcept {
        auto *c = static_cast<context *>(arg);
        try {
            (*c->fn)(token(t));
        } catch (...) {
            c->exc = std::current_exception();
        }
    };
    const int rc = coro_suspend(callback, &ctx);
    if (ctx.exc)
        std::rethrow_exception(ctx.exc);
    detail::check(rc, "coro_suspend");
}

/// The running coroutine's id (its promise's id()); 0 outside one.
inline std::uint64_t id() noexcept { return coro_self_id(); }

} // namespace this_coro

// =====================================================================
// Blocking-style I/O: coro_read, coro_write, coro_recv, coro_send,
// coro_accept, coro_connect for both kinds of body
// =====================================================================

/// Owns a file descriptor and closes it when destroyed: what accept gives.
/// Move-only; -1 when empty.
class unique_fd {
public:
    unique_fd() noexcept = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    unique_fd &operator=(unique_fd &&o) noexcept
    {
        if (this != &o)
            reset(std::exchange(o.fd_, -1));
        return *this;
    }
    unique_fd(const unique_fd &) = delete;
    unique_fd &operator=(const unique_fd &) = delete;
    ~unique_fd() { reset(); }

    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    /// Gives up the descriptor without closing it.
    int release() noexcept { return std::exchange(fd_, -1); }
    /// Closes the descriptor held (if any) and holds `fd` instead.
    void reset(int fd = -1) noexcept
    {
        const int old = std::exchange(fd_, fd);
        if (old >= 0)
            (void)::close(old);
    }

private:
    int fd_ = -1;
};

namespace detail {

/// The loop the C calls run, for a task: try the system call
/// (Derived::start the first time, Derived::attempt after each wait: true
/// once finished, false when it would block), and wait for `events` only
/// when it would block. The C calls cannot run it in a foreign frame (it
/// returns from its resume at each wait), so the awaitable runs it:
/// between waits from the resume trampoline (task_root::io_resumed),
/// which resumes the task only once the call finished. No allocation, and
/// the task's coroutine is resumed once per call, not once per wait.
template <class Derived>
class io_wait {
public:
    io_wait(const io_wait &) = delete;
    io_wait &operator=(const io_wait &) = delete;

    /// Tries at once: a call that need not wait does not suspend. A held
    /// noted lock is refused first, as by the C calls (each is a
    /// suspension point whether or not it waits).
    bool await_ready() noexcept
    {
        if (rc_ == 0 && coro_lock_note_name() != nullptr)
            return fail(CORO_ELOCKHELD, 0);
        return rc_ != 0 || self().start();
    }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept
    {
        static_assert(is_task_promise<P>,
                      "coframe's awaitables work inside a coframe::task (spawn it to run it)");
        root_ = h.promise().root;
        root_->leaf = h;
        return wait();
    }

protected:
    io_wait(int fd, std::uint32_t events, time_point deadline) noexcept
        : fd_(fd), events_(events), deadline_(deadline_ns(deadline))
    {
    }
    ~io_wait() = default;

    /// Records the call's failure: its status and errno. Returns true
    /// (finished), for `return fail(...)` in start and attempt.
    bool fail(int rc, int err) noexcept
    {
        rc_ = rc;
        err_ = err;
        return true;
    }
    /// A failed system call's errno: a closed descriptor is bad input, as
    /// for coro_wait_fd; the rest is CORO_EIO.
    bool fail_errno(int err) noexcept { return fail(err == EBADF ? CORO_EINVAL : CORO_EIO, err); }
    /// read(2), write(2), accept(2) and connect(2) have no per-call
    /// MSG_DONTWAIT: a blocking descriptor would block the worker, so it
    /// is refused (CORO_EINVAL), as by the C calls. True if refused.
    bool refuse_blocking() noexcept
    {
        const int fl = ::fcntl(fd_, F_GETFL);
        if (fl < 0)
            return fail_errno(errno);
        return (fl & O_NONBLOCK) == 0 && fail(CORO_EINVAL, 0);
    }
    /// In await_resume: throws what the call failed with, errno as it was.
    void rethrow(const char *what) const
    {
        if (rc_ != 0) [[unlikely]] {
            errno = err_;
            throw_error(rc_, what);
        }
    }
    static bool would_block(int err) noexcept { return err == EAGAIN || err == EWOULDBLOCK; }

    int fd_;

private:
    Derived &self() noexcept { return static_cast<Derived &>(*this); }

    /// After a try that would block: waits, and tries again while the
    /// wait ends at once (a deadline already past only looks). True: a
    /// wait is pending, the task suspends (or stays suspended).
    bool wait() noexcept
    {
        for (;;) {
            const int rc = coro_wait_fd(fd_, events_, deadline_);
            if (rc == CORO_PENDING) {
                root_->wait_begun = true;
                root_->io_resumed = &resumed;
                root_->io = this;
                return true;
            }
            if (rc != 0)
                return !fail(rc, errno);
            if (self().attempt())
                return false;
        }
    }
    /// The trampoline's call when the pending wait ended.
    static bool resumed(void *p) noexcept
    {
        auto *op = static_cast<io_wait *>(p);
        const int rc = coro_frame_resumed(nullptr);
        if (rc != 0)
            return !op->fail(rc, errno);
        return !op->self().attempt() && op->wait();
    }

    std::uint32_t events_;
    std::int64_t deadline_;
    task_root *root_ = nullptr;
    int rc_ = 0;
    int err_ = 0;
};

enum class io_call : unsigned char { read, write, recv, send };

/// send(2)'s flags: never SIGPIPE where the platform has the flag (macOS
/// has a socket option instead, SO_NOSIGPIPE, left to the program).
#if defined(MSG_NOSIGNAL)
inline constexpr int send_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
#else
inline constexpr int send_flags = MSG_DONTWAIT;
#endif

/// read, write, recv, send (all bytes) and read_some, recv_some.
template <class Derived, io_call Call, bool Some>
class io_transfer : public io_wait<Derived> {
    static constexpr bool reads = Call == io_call::read || Call == io_call::recv;
    using buffer = std::conditional_t<reads, void *, const void *>;
    friend io_wait<Derived>;

public:
    explicit io_transfer(int fd, buffer buf, std::size_t len, time_point deadline = {},
                         std::size_t *done = nullptr) noexcept
        : io_wait<Derived>(fd, reads ? CORO_READABLE : CORO_WRITABLE, deadline),
          buf_(static_cast<const char *>(buf)), len_(len), out_(done)
    {
        if (fd < 0 || (buf == nullptr && len > 0))
            (void)this->fail(CORO_EINVAL, 0);
    }
    /// void; the count for read_some and recv_some (0 at end of file).
    auto await_resume() const
    {
        if (out_ != nullptr)
            *out_ = done_;
        this->rethrow(Derived::what);
        if constexpr (Some)
            return done_;
    }

private:
    bool start() noexcept
    {
        if constexpr (Call == io_call::read || Call == io_call::write) {
            if (len_ > 0 && this->refuse_blocking())
                return true;
        }
        return attempt();
    }
    /// One system call over what is left.
    ssize_t once() noexcept
    {
        const int fd = this->fd_;
        char *p = const_cast<char *>(buf_) + done_; // written only by the reads
        const std::size_t n = len_ - done_;
        if constexpr (Call == io_call::read)
            return ::read(fd, p, n);
        else if constexpr (Call == io_call::write)
            return ::write(fd, p, n);
        else if constexpr (Call == io_call::recv)
            return ::recv(fd, p, n, MSG_DONTWAIT);
        else
            return ::send(fd, p, n, send_flags);
    }
    bool attempt() noexcept
    {
        while (done_ < len_) {
            const ssize_t n = once();
            if (n > 0) {
                done_ += static_cast<std::size_t>(n);
                if constexpr (Some)
                    return true;
            } else if (n == 0) {
                if constexpr (Some)
                    return true; // end of file
                // End of file before len bytes (libdill's EPIPE), or a
                // write(2) of a non-zero count that moved nothing.
                return this->fail(CORO_EIO, reads ? EPIPE : EIO);
            } else if (const int err = errno; this->would_block(err)) {
                return false;
            } else if (err != EINTR) {
                return this->fail_errno(err);
            }
        }
        return true;
    }

    const char *buf_;
    std::size_t len_;
    std::size_t done_ = 0;
    std::size_t *out_;
};

} // namespace detail

// Each awaitable's constructor takes (fd, buf, len, deadline = {}, done =
// nullptr): `*done` (done may be null) gets the bytes moved, also when the
// co_await throws. Errors: errc::timed_out at the deadline; errc::io with
// os_error() EPIPE at end of file before len bytes, errno's value for other
// failures; errc::invalid for bad arguments or a closed descriptor.

/// co_await read(fd, buf, len, ...): reads all len bytes (coro_read). fd
/// must be non-blocking (errc::invalid otherwise: it would block the worker).
struct [[nodiscard]] read : detail::io_transfer<read, detail::io_call::read, false> {
    using io_transfer::io_transfer;
    static constexpr const char *what = "coframe::read";
};

/// std::size_t n = co_await read_some(fd, buf, len, ...): as read, but
/// returns once some bytes arrived; 0 only at end of file (CORO_IO_SOME).
struct [[nodiscard]] read_some : detail::io_transfer<read_some, detail::io_call::read, true> {
    using io_transfer::io_transfer;
    static constexpr const char *what = "coframe::read_some";
};

/// co_await write(fd, buf, len, ...): writes all len bytes (coro_write);
/// raises SIGPIPE as write(2) does. fd must be non-blocking.
struct [[nodiscard]] write : detail::io_transfer<write, detail::io_call::write, false> {
    using io_transfer::io_transfer;
    static constexpr const char *what = "coframe::write";
};

/// co_await recv(fd, buf, len, ...): read for a socket, through recv(2)
/// with MSG_DONTWAIT (coro_recv): fd may be blocking.
struct [[nodiscard]] recv : detail::io_transfer<recv, detail::io_call::recv, false> {
    using io_transfer::io_transfer;
    static constexpr const char *what = "coframe::recv";
};

/// std::size_t n = co_await recv_some(fd, buf, len, ...): read_some for a socket.
struct [[nodiscard]] recv_some : detail::io_transfer<recv_some, detail::io_call::recv, true> {
    using io_transfer::io_transfer;
    static constexpr const char *what = "coframe::recv_some";
};

/// co_await send(fd, buf, len, ...): write for a socket, through send(2)
/// with MSG_DONTWAIT | MSG_NOSIGNAL (coro_send): a gone peer is errc::io
/// with EPIPE (or ECONNRESET), never a signal.
struct [[nodiscard]] send : detail::io_transfer<send, detail::io_call::send, false> {
    using io_transfer::io_transfer;
    static constexpr const char *what = "coframe::send";
};

/// unique_fd c = co_await accept(listener, deadline = {}, addr = nullptr,
/// addrlen = nullptr): the next connection (coro_accept), its socket
/// non-blocking and close-on-exec. listener must be non-blocking. Out of
/// descriptors is errc::io with EMFILE or ENFILE.
class [[nodiscard]] accept : public detail::io_wait<accept> {
    friend io_wait<accept>;

public:
    explicit accept(int listener, time_point deadline = {}, sockaddr *addr = nullptr,
                    socklen_t *addrlen = nullptr) noexcept
        : io_wait(listener, CORO_READABLE, deadline), addr_(addr), addrlen_(addrlen)
    {
        if (listener < 0 || (addr != nullptr && addrlen == nullptr))
            (void)fail(CORO_EINVAL, 0);
    }
    ~accept()
    {
        if (conn_ >= 0)
            (void)::close(conn_); // taken but never handed over
    }
    unique_fd await_resume()
    {
        rethrow("coframe::accept");
        return unique_fd(std::exchange(conn_, -1));
    }

private:
    bool start() noexcept { return refuse_blocking() || attempt(); }
    bool attempt() noexcept
    {
        for (;;) {
#if defined(__APPLE__)
            conn_ = ::accept(fd_, addr_, addrlen_);
            if (conn_ >= 0) {
                (void)::fcntl(conn_, F_SETFD, FD_CLOEXEC);
                (void)::fcntl(conn_, F_SETFL, O_NONBLOCK);
                return true;
            }
#else
            conn_ = ::accept4(fd_, addr_, addrlen_, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (conn_ >= 0)
                return true;
#endif
            const int err = errno;
            // A connection that failed before it was taken is skipped, as
            // accept(2)'s manual asks.
            if (err == EINTR || err == ECONNABORTED || err == EPROTO)
                continue;
            return !would_block(err) && fail_errno(err);
        }
    }

    sockaddr *addr_;
    socklen_t *addrlen_;
    int conn_ = -1;
};

/// co_await connect(fd, addr, addrlen, deadline = {}): connects the
/// non-blocking socket fd (coro_connect); a refused connection is
/// errc::io with ECONNREFUSED. After a failure the socket is of no use.
class [[nodiscard]] connect : public detail::io_wait<connect> {
    friend io_wait<connect>;

public:
    explicit connect(int fd, const sockaddr *addr, socklen_t addrlen, time_point deadline = {}) noexcept
        : io_wait(fd, CORO_WRITABLE, deadline), addr_(addr), len_(addrlen)
    {
        if (fd < 0 || addr == nullptr || addrlen == 0)
            (void)fail(CORO_EINVAL, 0);
    }
    void await_resume() const { rethrow("coframe::connect"); }

private:
    bool start() noexcept
    {
        if (refuse_blocking() || ::connect(fd_, addr_, len_) == 0)
            return true;
        const int err = errno;
        // Interrupted, the connection goes on in the background, as for a
        // non-blocking socket.
        return err != EINPROGRESS && err != EINTR && fail_errno(err);
    }
    /// Writable: connected, or failed; SO_ERROR says which (and clears it).
    bool attempt() noexcept
    {
        int err = 0;
        socklen_t n = sizeof err;
        if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &n) != 0)
            err = errno;
        return err == 0 || fail_errno(err);
    }

    const sockaddr *addr_;
    socklen_t len_;
};

namespace detail {

/// A this_coro transfer: the C call, refused in a task.
template <class Fn, class Buf>
std::size_t blocking_transfer(Fn call, const char *what, const char *in_task_msg, int fd, Buf buf, std::size_t len,
                              std::uint32_t flags, time_point deadline, std::size_t *done)
{
    not_in_task(in_task_msg);
    std::size_t n = 0;
    const int rc = call(fd, buf, len, flags, &n, deadline_ns(deadline));
    if (done != nullptr)
        *done = n;
    check(rc, what);
    return n;
}

} // namespace detail

namespace this_coro {

/// The blocking-style I/O for stackful bodies (and plain threads, where
/// they block): the C calls, with the task awaitables' parameters, which
/// throw as those do. In a task they throw errc::state: co_await
/// coframe::read(...) there.
inline void read(int fd, void *buf, std::size_t len, time_point deadline = {}, std::size_t *done = nullptr)
{
    (void)detail::blocking_transfer(&coro_read, "coro_read",
                                    "coframe::this_coro::read() in a task: co_await coframe::read()", fd, buf, len,
                                    0, deadline, done);
}

/// Some bytes: the count, 0 only at end of file (CORO_IO_SOME).
inline std::size_t read_some(int fd, void *buf, std::size_t len, time_point deadline = {},
                             std::size_t *done = nullptr)
{
    return detail::blocking_transfer(&coro_read, "coro_read",
                                     "coframe::this_coro::read_some() in a task: co_await coframe::read_some()", fd,
                                     buf, len, CORO_IO_SOME, deadline, done);
}

inline void write(int fd, const void *buf, std::size_t len, time_point deadline = {}, std::size_t *done = nullptr)
{
    (void)detail::blocking_transfer(&coro_write, "coro_write",
                                    "coframe::this_coro::write() in a task: co_await coframe::write()", fd, buf, len,
                                    0, deadline, done);
}

inline void recv(int fd, void *buf, std::size_t len, time_point deadline = {}, std::size_t *done = nullptr)
{
    (void)detail::blocking_transfer(&coro_recv, "coro_recv",
                                    "coframe::this_coro::recv() in a task: co_await coframe::recv()", fd, buf, len,
                                    0, deadline, done);
}

inline std::size_t recv_some(int fd, void *buf, std::size_t len, time_point deadline = {},
                             std::size_t *done = nullptr)
{
    return detail::blocking_transfer(&coro_recv, "coro_recv",
                                     "coframe::this_coro::recv_some() in a task: co_await coframe::recv_some()", fd,
                                     buf, len, CORO_IO_SOME, deadline, done);
}

inline void send(int fd, const void *buf, std::size_t len, time_point deadline = {}, std::size_t *done = nullptr)
{
    (void)detail::blocking_transfer(&coro_send, "coro_send",
                                    "coframe::this_coro::send() in a task: co_await coframe::send()", fd, buf, len,
                                    0, deadline, done);
}

inline unique_fd accept(int listener, time_point deadline = {}, sockaddr *addr = nullptr, socklen_t *addrlen = nullptr)
{
    detail::not_in_task("coframe::this_coro::accept() in a task: co_await coframe::accept()");
    int fd = -1;
    detail::check(coro_accept(listener, addr, addrlen, 0, &fd, detail::deadline_ns(deadline)), "coro_accept");
    return unique_fd(fd);
}

inline void connect(int fd, const sockaddr *addr, socklen_t len, time_point deadline = {})
{
    detail::not_in_task("coframe::this_coro::connect() in a task: co_await coframe::connect()");
    detail::check(coro_connect(fd, addr, len, detail::deadline_ns(deadline)), "coro_connect");
}

} // namespace this_coro

// =====================================================================
// mutex
// =====================================================================

/// A mutex over coro_mutex: waiters queue in FIFO order and suspend (a
/// plain thread blocks). It may be held across a suspension: that is
/// what it is for (it is not a noted lock, CP.52). Not recursive.
class mutex {
public:
    class guard;

    mutex() { detail::check(coro_mutex_new(&m_), "coro_mutex_new"); }
    /// Destroying a mutex that is held or waited on leaks it (the C API
    /// refuses to free it).
    ~mutex() { (void)coro_mutex_free(m_); }
    mutex(const mutex &) = delete;
    mutex &operator=(const mutex &) = delete;

    /// In a stackful body or on a thread: takes the mutex (waiting in line
    /// until the deadline) and returns a held guard. In a task: returns a
    /// guard to co_await, which gives the held guard:
    ///     auto g = co_await m.lock();
    [[nodiscard]] guard lock(time_point deadline = {});
    /// Takes the mutex if it is free: the guard owns it, or is empty.
    [[nodiscard]] guard try_lock();

    coro_mutex *native() const noexcept { return m_; }

private:
    coro_mutex *m_ = nullptr;
};

/// Owns a held coframe::mutex and unlocks it when destroyed, also when a
/// cancelled coroutine unwinds (stackful) or its frame is destroyed
/// (task). Made by lock() in a task, it is not held yet: it is an
/// awaitable whose co_await takes the mutex and gives the held guard.
class [[nodiscard]] mutex::guard {
public:
    guard() noexcept = default;
    guard(guard &&o) noexcept
        : m_(std::exchange(o.m_, nullptr)), deadline_(o.deadline_), state_(std::exchange(o.state_, state::empty))
    {
    }
    guard &operator=(guard &&o) noexcept
    {
        if (this != &o) {
            release();
            m_ = std::exchange(o.m_, nullptr);
            deadline_ = o.deadline_;
            state_ = std::exchange(o.state_, state::empty);
        }
        return *this;
    }
    guard(const guard &) = delete;
    guard &operator=(const guard &) = delete;
    ~guard() { release(); }

    bool owns_lock() const noexcept { return state_ == state::held; }
    explicit operator bool() const noexcept { return owns_lock(); }
    /// Unlocks early.
    void unlock()
    {
        if (state_ != state::held)
            throw error(errc::state, "coframe::mutex::guard::unlock: not held");
        state_ = state::empty;
        detail::check(coro_mutex_unlock(std::exchange(m_, nullptr)), "coro_mutex_unlock");
    }

    // The awaitable of a task's lock().
    bool await_ready() const noexcept { return state_ != state::pending; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept
    {
        state_ = state::waiting;
        return op_.begin(h, coro_mutex_lock(m_, deadline_));
    }
    guard await_resume()
    {
        if (state_ == state::waiting) {
            const int rc = op_.end();
            if (rc != 0) {
                state_ = state::empty;
                m_ = nullptr;
                detail::throw_error(rc, "coro_mutex_lock");
            }
            state_ = state::held;
        }
        return std::move(*this);
    }

private:
    friend class mutex;
    enum class state : unsigned char { empty, held, pending, waiting };

    guard(coro_mutex *m, state s, std::int64_t deadline = -1) noexcept : m_(m), deadline_(deadline), state_(s) {}

    void release() noexcept
    {
        switch (state_) {
        case state::held:
            (void)coro_mutex_unlock(m_);
            break;
        case state::waiting:
            // The task's frame is destroyed (cancelled) while it waited
            // for the lock: it was not given the lock (wait_op).
            break;
        case state::pending:
            detail::fatal("coframe: a coframe::mutex::lock() made in a task was never co_awaited "
                          "(write `auto g = co_await m.lock();`)");
        case state::empty:
            break;
        }
        state_ = state::empty;
        m_ = nullptr;
    }

    coro_mutex *m_ = nullptr;
    std::int64_t deadline_ = -1;
    detail::wait_op op_;
    state state_ = state::empty;
};

inline mutex::guard mutex::lock(time_point deadline)
{
    const std::int64_t dl = detail::deadline_ns(deadline);
    if (detail::in_task())
        return guard(m_, guard::state::pending, dl);
    detail::check(coro_mutex_lock(m_, dl), "coro_mutex_lock");
    return guard(m_, guard::state::held);
}

inline mutex::guard mutex::try_lock()
{
    const int rc = coro_mutex_trylock(m_);
    if (rc == CORO_EBUSY)
        return guard();
    detail::check(rc, "coro_mutex_trylock");
    return guard(m_, guard::state::held);
}

// =====================================================================
// channel<T>
// =====================================================================

template <class T>
class channel;

namespace detail {

/// Items up to this size that are trivially copyable travel inline (as
/// their bytes); others as an owned heap pointer.
inline constexpr std::size_t inline_item_max = 256;

template <class T>
inline constexpr bool inline_item = std::is_trivially_copyable_v<T> && sizeof(T) <= inline_item_max;

/// One item as it crosses a coro_chan: trivially copyable T inline, any
/// other T as an owned heap pointer (the channel's items are pointers
/// then). Owns the boxed T until a receiver takes it (`sent`) or it is
/// moved out (`take`); what is left is deleted with it.
template <class T>
class chan_item {
public:
    chan_item() noexcept = default;
    explicit chan_item(T &&v)
    {
        if constexpr (inline_item<T>)
            std::memcpy(bytes_, std::addressof(v), sizeof(T));
        else
            box_ = new T(std::move(v));
    }
    chan_item(const chan_item &) = delete;
    chan_item &operator=(const chan_item &) = delete;
    ~chan_item()
    {
        if constexpr (!inline_item<T>)
            delete box_;
    }
    /// What coro_chan_send reads and coro_chan_recv writes.
    void *buffer() noexcept
    {
        if constexpr (inline_item<T>)
            return bytes_;
        else
            return &box_;
    }
    /// A receiver took the item: the box is its now.
    void sent() noexcept
    {
        if constexpr (!inline_item<T>)
            box_ = nullptr;
    }
    /// The received item, moved out.
    T take()
    {
        if constexpr (inline_item<T>) {
            return std::bit_cast<T>(bytes_);
        } else {
            std::unique_ptr<T> box(std::exchange(box_, nullptr));
            return T(std::move(*box));
        }
    }

private:
    T *box_ = nullptr;
    alignas(T) unsigned char bytes_[inline_item<T> ? sizeof(T) : 1];
};

template <class T>
class chan_send_op {
public:
    chan_send_op(coro_chan *ch, T &&v, std::int64_t deadline) : ch_(ch), deadline_(deadline), item_(std::move(v)) {}
    chan_send_op(const chan_send_op &) = delete;
    chan_send_op &operator=(const chan_send_op &) = delete;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept
    {
        return op_.begin(h, coro_chan_send(ch_, item_.buffer(), deadline_));
    }
    void await_resume()
    {
        const int rc = op_.end();
        if (rc != 0)
            throw_error(rc, "coro_chan_send");
        item_.sent();
    }

private:
    coro_chan *ch_;
    std::int64_t deadline_;
    // Still ours unless a receiver took it (await_resume saw 0); a frame
    // destroyed with the send pending was given no receiver (wait_op).
    chan_item<T> item_;
    wait_op op_;
};

template <class T>
class chan_recv_op {
public:
    chan_recv_op(coro_chan *ch, std::int64_t deadline) noexcept : ch_(ch), deadline_(deadline) {}
    chan_recv_op(const chan_recv_op &) = delete;
    chan_recv_op &operator=(const chan_recv_op &) = delete;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept
    {
        return op_.begin(h, coro_chan_recv(ch_, item_.buffer(), deadline_));
    }
    T await_resume()
    {
        const int rc = op_.end();
        if (rc != 0)
            throw_error(rc, "coro_chan_recv");
        return item_.take();
    }

private:
    coro_chan *ch_;
    std::int64_t deadline_;
    // A sender writes the item here before it wakes us: a frame destroyed
    // after that still owns it.
    chan_item<T> item_;
    wait_op op_;
};

} // namespace detail

/// A bounded MPMC channel of T over coro_chan: items are moved in and out.
/// capacity 0 is a rendezvous (a send returns once a receiver took the
/// item). Trivially copyable T of at most 256 bytes travels inline;
/// anything else as an owned heap pointer, so any movable T works.
template <class T>
class channel {
    static_assert(std::is_object_v<T> && !std::is_const_v<T>, "coframe::channel<T>: T must be a movable object type");
    static_assert(std::is_move_constructible_v<T>, "coframe::channel<T>: T must be move-constructible");

public:
    explicit channel(std::size_t capacity = 0)
    {
        detail::check(coro_chan_new(sizeof(item), capacity, &ch_), "coro_chan_new");
    }
    channel(const channel &) = delete;
    channel &operator=(const channel &) = delete;
    /// Destroys the items still in it. Destroying a channel that a
    /// coroutine waits on leaks it (the C API refuses to free it).
    ~channel()
    {
        if constexpr (!detail::inline_item<T>) {
            for (;;) {
                detail::chan_item<T> left; // deletes what it receives
                if (coro_chan_recv(ch_, left.buffer(), 0) != 0)
                    break;
            }
        }
        (void)coro_chan_free(ch_);
    }

    /// Sends v (suspends a stackful body, blocks a thread, until there is
    /// room or a receiver). Throws error(errc::closed) on a closed channel,
    /// errc::timed_out at the deadline; the item is then dropped.
    void send(T v, time_point deadline = {})
    {
        detail::not_in_task("coframe::channel::send() in a task: co_await ch.async_send(v)");
        detail::chan_item<T> out(std::move(v));
        detail::check(coro_chan_send(ch_, out.buffer(), detail::deadline_ns(deadline)), "coro_chan_send");
        out.sent();
    }

    /// The next item. Throws error(errc::closed) once the channel is
    /// closed and drained, errc::timed_out at the deadline.
    T recv(time_point deadline = {})
    {
        detail::not_in_task("coframe::channel::recv() in a task: co_await ch.async_recv()");
        detail::chan_item<T> in;
        detail::check(coro_chan_recv(ch_, in.buffer(), detail::deadline_ns(deadline)), "coro_chan_recv");
        return in.take();
    }

    /// In a task: co_await ch.async_send(v).
    [[nodiscard]] detail::chan_send_op<T> async_send(T v, time_point deadline = {})
    {
        return detail::chan_send_op<T>(ch_, std::move(v), detail::deadline_ns(deadline));
    }
    /// In a task: T v = co_await ch.async_recv().
    [[nodiscard]] detail::chan_recv_op<T> async_recv(time_point deadline = {}) noexcept
    {
        return detail::chan_recv_op<T>(ch_, detail::deadline_ns(deadline));
    }

    /// Closes the channel: sends fail with errc::closed, receivers drain
    /// what is left, then get errc::closed. A second close throws errc::closed.
    void close() { detail::check(coro_chan_close(ch_), "coro_chan_close"); }

    coro_chan *native() const noexcept { return ch_; }

private:
    using item = std::conditional_t<detail::inline_item<T>, T, T *>;
    coro_chan *ch_ = nullptr;
};

// =====================================================================
// lock_guard<M>: blocking locks, noted (CP.52)
// =====================================================================

#if defined(__cpp_lib_source_location)
using source_location = std::source_location;
#else
/// std::source_location where the standard library lacks it (clang 14
/// with libstdc++ 12): the same three members, from the same builtins.
class source_location {
public:
    static constexpr source_location current(const char *file = __builtin_FILE(), unsigned line = __builtin_LINE(),
                                             const char *function = __builtin_FUNCTION()) noexcept
    {
        source_location l;
        l.file_ = file;
        l.line_ = line;
        l.function_ = function;
        return l;
    }
    constexpr const char *file_name() const noexcept { return file_; }
    constexpr std::uint_least32_t line() const noexcept { return line_; }
    constexpr std::uint_least32_t column() const noexcept { return 0; }
    constexpr const char *function_name() const noexcept { return function_; }

private:
    const char *file_ = "";
    std::uint_least32_t line_ = 0;
    const char *function_ = "";
};
#endif

namespace detail {

/// "std::mutex" for M = std::mutex: read off the compiler's name of this
/// function ("[with M = std::mutex]" for GCC, "[M = std::mutex]" for clang).
template <class M>
std::string_view lock_type_name() noexcept
{
#if defined(__GNUC__) || defined(__clang__)
    std::string_view s = __PRETTY_FUNCTION__;
    const auto at = s.find("M = ");
    if (at != std::string_view::npos) {
        s.remove_prefix(at + 4);
        const auto end = s.find_first_of(";]");
        if (end != std::string_view::npos)
            return s.substr(0, end);
    }
#endif
    return "a lock";
}

} // namespace detail

/// std::lock_guard for blocking locks (std::mutex and the like) that tells
/// coframe it holds one (coro_lock_note_acquire/release, DESIGN section 5):
/// while it lives, every suspension of the coroutine (a this_coro call, a
/// blocking coframe call, a co_await of a library wait in a task) throws
/// error(errc::lock_held) naming the lock, e.g. "std::mutex taken at
/// server.cpp:42 in void serve()", instead of parking with the lock held
/// (CP.52). On a plain thread it is a std::lock_guard.
template <class M>
class [[nodiscard]] lock_guard {
public:
    using mutex_type = M;

    explicit lock_guard(M &m, source_location where = source_location::current()) : m_(m)
    {
        make_name(where);
        m_.lock();
        note();
    }
    /// Adopts a lock the caller already holds.
    lock_guard(M &m, std::adopt_lock_t, source_location where = source_location::current()) : m_(m)
    {
        try {
            make_name(where);
        } catch (...) {
            m_.unlock();
            throw;
        }
        note();
    }
    lock_guard(const lock_guard &) = delete;
    lock_guard &operator=(const lock_guard &) = delete;
    ~lock_guard()
    {
        if (noted_) {
            detail::noted_lock *&top = detail::noted_locks();
            if (top == &link_) {
                top = link_.outer;
            } else {
                for (detail::noted_lock *n = top; n != nullptr; n = n->outer)
                    if (n->outer == &link_) {
                        n->outer = link_.outer;
                        break;
                    }
            }
            (void)coro_lock_note_release(name_.c_str());
        }
        m_.unlock();
    }

    /// "std::mutex taken at file.cpp:12 in f()" (empty on a plain thread,
    /// where nothing is noted).
    const char *name() const noexcept { return name_.c_str(); }

private:
    void make_name(const source_location &where)
    {
        if (coro_self_id() == 0)
            return; // a plain thread: nothing to note
        std::string_view file = where.file_name();
        name_.reserve(64 + file.size());
        name_ += detail::lock_type_name<M>();
        name_ += " taken at ";
        name_ += file;
        name_ += ':';
        name_ += std::to_string(where.line());
        name_ += " in ";
        name_ += where.function_name();
    }
    void note() noexcept
    {
        if (name_.empty())
            return;
        (void)coro_lock_note_acquire(name_.c_str());
        link_.name = name_.c_str();
        detail::noted_lock *&top = detail::noted_locks();
        link_.outer = top;
        top = &link_;
        noted_ = true;
    }

    M &m_;
    std::string name_;
    detail::noted_lock link_{ nullptr, nullptr };
    bool noted_ = false;
};

// =====================================================================
// spawn
// =====================================================================

namespace detail {

// The parameters of a callable whose signature can be seen: functions,
// pointers to functions and to member functions, and class types with one
// non-template operator(). A generic lambda's cannot.
template <class T>
struct signature {
    static constexpr bool known = false;
    static constexpr bool ref_param = false;
};
template <class R, class... P>
struct signature<R(P...)> {
    static constexpr bool known = true;
    static constexpr bool ref_param = (std::is_reference_v<P> || ...);
};
template <class R, class... P>
struct signature<R(P...) noexcept> : signature<R(P...)> {
};
template <class R, class... P>
struct signature<R (*)(P...)> : signature<R(P...)> {
};
template <class R, class... P>
struct signature<R (*)(P...) noexcept> : signature<R(P...)> {
};
#define COFRAME_DETAIL_MEMFN(Q)                                                                                        \
    template <class R, class C, class... P>                                                                            \
    struct signature<R (C::*)(P...) Q> : signature<R(P...)> {                                                          \
    };                                                                                                                 \
    template <class R, class C, class... P>                                                                            \
    struct signature<R (C::*)(P...) Q noexcept> : signature<R(P...)> {                                                 \
    };
COFRAME_DETAIL_MEMFN()
COFRAME_DETAIL_MEMFN(const)
COFRAME_DETAIL_MEMFN(volatile)
COFRAME_DETAIL_MEMFN(const volatile)
COFRAME_DETAIL_MEMFN(&)
COFRAME_DETAIL_MEMFN(const &)
COFRAME_DETAIL_MEMFN(volatile &)
COFRAME_DETAIL_MEMFN(const volatile &)
COFRAME_DETAIL_MEMFN(&&)
COFRAME_DETAIL_MEMFN(const &&)
COFRAME_DETAIL_MEMFN(volatile &&)
COFRAME_DETAIL_MEMFN(const volatile &&)
#undef COFRAME_DETAIL_MEMFN

template <class F>
concept plain_call_operator = requires { &F::operator(); };

/// Does the callable take a reference parameter (as far as can be seen)?
template <class F>
constexpr bool has_reference_parameter() noexcept
{
    if constexpr (signature<F>::known)
        return signature<F>::ref_param;
    else if constexpr (plain_call_operator<F>)
        return signature<decltype(&F::operator())>::ref_param;
    else
        return false;
}

template <class T>
struct task_value;
template <class T>
struct task_value<task<T>> {
    using type = T;
};

/// A stackful body: the callable and its arguments, decay-copied, and the
/// shared result. coro_spawn copies a pointer to it into the frame.
template <class R, class Fd, class... Ad>
struct stackful_state {
    result_state<R> *res;
    std::tuple<Fd, Ad...> fn;

    template <class F, class... A>
    explicit stackful_state(result_state<R> *r, F &&f, A &&...a) : res(r), fn(std::forward<F>(f), std::forward<A>(a)...)
    {
    }
    stackful_state(const stackful_state &) = delete;
    stackful_state &operator=(const stackful_state &) = delete;
    ~stackful_state() { res->release(); }

    static void *entry(void *env) noexcept
    {
        auto *st = *static_cast<stackful_state **>(env);
        try {
            if constexpr (std::is_void_v<R>) {
                std::apply([](auto &...x) { std::invoke(std::move(x)...); }, st->fn);
                st->res->r.set_value();
            } else {
                st->res->r.set_value(std::apply([](auto &...x) -> R { return std::invoke(std::move(x)...); }, st->fn));
            }
        } catch (...) {
            st->res->r.set_exception(std::current_exception());
        }
        return nullptr;
    }
    static void drop(void *env) noexcept { delete *static_cast<stackful_state **>(env); }
};

template <class R, class Fd, class... Ad, class F, class... A>
promise<R> spawn_stackful(runtime &rt, F &&f, A &&...a)
{
    auto *res = new result_state<R>;
    using state = stackful_state<R, Fd, Ad...>;
    state *st;
    try {
        st = new state(res, std::forward<F>(f), std::forward<A>(a)...);
    } catch (...) {
        delete res;
        throw;
    }
    coro_promise p{};
    const int rc = coro_spawn(rt.native(), &state::entry, &st, sizeof st, &state::drop, CORO_SPAWN_CANCEL_RETURNS, &p);
    if (rc != 0) {
        delete st; // the C API gave the environment back: releases one reference
        res->release();
        throw_error(rc, "coro_spawn");
    }
    return promise_access::make<R>(p, res);
}

template <class R, class Fd, class... Ad, class F, class... A>
promise<R> spawn_task(runtime &rt, F &&f, A &&...a)
{
    auto *res = new result_state<R>;
    using state = task_state<R, Fd, Ad...>;
    std::unique_ptr<state> st;
    try {
        st.reset(new state(res, std::forward<F>(f), std::forward<A>(a)...));
    } catch (...) {
        delete res;
        throw;
    }
    try {
        st->start();
    } catch (...) {
        // Making the task threw (the callable, or no memory for its
        // frame): the frame's reference goes with the state, the
        // promise's here.
        st.reset();
        res->release();
        throw;
    }
    coro_promise p{};
    const int rc = coro_spawn_frame(rt.native(), &state::resume, &state::destroy, st.get(), 0, &p);
    if (rc != 0) {
        st.reset(); // the C API gave the frame back: releases one reference
        res->release();
        throw_error(rc, "coro_spawn_frame");
    }
    (void)st.release(); // the frame's: its destroy deletes it
    return promise_access::make<R>(p, res);
}

} // namespace detail

/// Runs f(args...) on rt. f and args are decay-copied into state that
/// lives exactly as long as the coroutine and invoked there as rvalues,
/// as std::thread does (CP.51: the caller's lambda may die at once;
/// std::ref(x) is the way to share x).
///
///  - A callable that returns task<T> runs as a foreign frame (a C++20
///    coroutine on the runtime's workers); cancelling it destroys its
///    frame. Its parameters must not be references (CP.53).
///  - Anything else runs as a stackful body, in cancel-returns mode: a
///    cancelled body's suspension point throws coframe::canceled.
///
/// Returns promise<T> (promise<R> for a body returning R).
template <class F, class... Args>
auto spawn(runtime &rt, F &&f, Args &&...args)
{
    using Fd = std::decay_t<F>;
    if constexpr (detail::is_task<Fd>) {
        static_assert(detail::always_false<F>,
                      "CP.51, CP.53: coframe::spawn was given a task that already exists: its frame may hold "
                      "references to captures and arguments that are gone before it runs. Pass the callable and its "
                      "arguments instead, spawn(rt, f, args...), which copies both into the frame");
    } else if constexpr (!std::is_constructible_v<Fd, F> || !(std::is_constructible_v<std::decay_t<Args>, Args> && ...)) {
        static_assert(detail::always_false<F>,
                      "coframe::spawn copies the callable and its arguments into the frame: each must be copy- or "
                      "move-constructible (std::move a move-only one)");
    } else if constexpr (!std::is_invocable_v<Fd, std::decay_t<Args>...>) {
        if constexpr (std::is_invocable_v<Fd &, std::decay_t<Args> &...>) {
            static_assert(detail::always_false<F>,
                          "CP.53: coframe::spawn passes the callable rvalue copies of its arguments, which live in the "
                          "frame (as std::thread does); a non-const lvalue reference parameter cannot bind to them. "
                          "Take the parameter by value, or pass std::ref(x) to share x");
        } else {
            static_assert(detail::always_false<F>,
                          "coframe::spawn: the callable cannot be called with (rvalue copies of) these arguments");
        }
    } else {
        using result_t = std::invoke_result_t<Fd, std::decay_t<Args>...>;
        using R = std::remove_cv_t<result_t>;
        if constexpr (detail::is_task<R>) {
            if constexpr (detail::has_reference_parameter<Fd>()) {
                static_assert(detail::always_false<F>,
                              "CP.53: a task (a callable returning coframe::task) must not take reference "
                              "parameters: its frame would keep references to objects that may be gone when it "
                              "runs. Take them by value (std::reference_wrapper<T> or T* to share)");
            } else {
                using T = typename detail::task_value<R>::type;
                if constexpr (std::is_reference_v<T>) {
                    static_assert(detail::always_false<F>,
                                  "coframe::spawn: a spawned task must return a value, not a reference (it could "
                                  "refer to its own frame, gone once it finishes)");
                } else {
                    return detail::spawn_task<T, Fd, std::decay_t<Args>...>(rt, std::forward<F>(f),
                                                                              std::forward<Args>(args)...);
                }
            }
        } else if constexpr (std::is_reference_v<result_t>) {
            static_assert(detail::always_false<F>,
                          "coframe::spawn: the body returns a reference, which could refer to its own copies of the "
                          "callable and arguments, gone once it finishes: return a value");
        } else {
            return detail::spawn_stackful<R, Fd, std::decay_t<Args>...>(rt, std::forward<F>(f),
                                                                         std::forward<Args>(args)...);
        }
    }
}

} // namespace coframe

#undef COFRAME_DETAIL_NOINLINE
#undef COFRAME_DETAIL_OPAQUE

#endif // COFRAME_HPP
