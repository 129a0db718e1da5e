// C++20 coroutines ("tasks") side by side: coframe's task<T> (a foreign
// frame on coframe's workers, <coframe.hpp>), Boost.Asio's awaitable on a
// single-threaded io_context (Debian's libboost-dev, header-only), and a
// hand-written cppcoro-style task on a minimal FIFO scheduler (the floor:
// what a C++20 task switch costs with no library).
//
//   taskbench yield_coframe | yield_asio | yield_hand  [--iters N] [--reps R]
//       two tasks on one thread (a one-worker runtime, an io_context run
//       by one thread, the FIFO loop) each make N yields: one op = one
//       yield that returns (the task goes to the back of the queue, the
//       other one runs), as in the `yield` group (cbench yield)
//   taskbench spawn_coframe | spawn_asio | spawn_hand  [--iters N] [--reps R]
//       a task spawns an empty task and awaits it, N times: one op =
//       create the child's frame, queue it, suspend the parent, run the
//       child to its end, resume the parent, free the child
//
// Each prints one JSON line, like the other benches: the median ns/op of
// R repetitions (after one warm-up when R > 1) and every sample.
#include <coframe.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace asio = boost::asio;

static std::uint64_t now_ns()
{
    return std::uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count());
}

static void report(const char *bench, std::uint64_t iters, const std::vector<double> &s)
{
    std::vector<double> sorted = s;
    std::sort(sorted.begin(), sorted.end());
    size_t n = sorted.size();
    double med = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    std::printf("{\"bench\":\"%s\",\"iters\":%llu,\"ns_per_op\":%.4f,\"samples\":[", bench,
                (unsigned long long)iters, med);
    for (size_t i = 0; i < n; i++)
        std::printf("%s%.3f", i ? "," : "", s[i]);
    std::printf("]}\n");
    std::fflush(stdout);
}

// Runs one repetition (N iterations) and answers its nanoseconds; repeats
// it R times after a warm-up (none when R is 1, as under callgrind).
template <class Rep>
static void repeat(const char *bench, std::uint64_t iters, int reps, std::uint64_t ops_per_iter, Rep rep)
{
    std::vector<double> s;
    if (reps > 1)
        (void)rep(iters);
    for (int r = 0; r < reps; r++)
        s.push_back(double(rep(iters)) / double(iters * ops_per_iter));
    report(bench, iters, s);
}

// ------------------------------------------------------------------ coframe
//
// Tasks take the runtime by pointer: a task's reference parameter does not
// compile (CP.53).

namespace cf {

coframe::task<void> yielder(std::uint64_t n)
{
    for (std::uint64_t i = 0; i < n; i++)
        co_await coframe::yield();
}

// Timed inside a task, as cbench's drivers are timed inside a coroutine:
// the main thread's wake-up at the end is not in the figure.
coframe::task<std::uint64_t> yield_driver(coframe::runtime *rt, std::uint64_t n)
{
    std::uint64_t t0 = now_ns();
    coframe::promise<void> a = coframe::spawn(*rt, yielder, n);
    coframe::promise<void> b = coframe::spawn(*rt, yielder, n);
    co_await a;
    co_await b;
    co_return now_ns() - t0;
}

coframe::task<void> empty()
{
    co_return;
}

coframe::task<std::uint64_t> spawn_driver(coframe::runtime *rt, std::uint64_t n)
{
    std::uint64_t t0 = now_ns();
    for (std::uint64_t i = 0; i < n; i++)
        co_await coframe::spawn(*rt, empty);
    co_return now_ns() - t0;
}

template <class Driver>
void run(const char *bench, Driver driver, std::uint64_t ops_per_iter, std::uint64_t iters, int reps)
{
    coframe::runtime rt(1);
    repeat(bench, iters, reps, ops_per_iter,
           [&](std::uint64_t n) { return coframe::spawn(rt, driver, &rt, n).get(); });
}

} // namespace cf

// ------------------------------------------------------------------ Boost.Asio
//
// asio::awaitable on an io_context with concurrency hint 1 (one thread runs
// it: the main thread, so nothing is woken at the end). A yield is
// `co_await post(executor, use_awaitable)`: the coroutine's resumption is
// queued behind what is queued already, as coro_yield queues its coroutine.

namespace as {

asio::awaitable<void> yielder(std::uint64_t n)
{
    auto ex = co_await asio::this_coro::executor;
    for (std::uint64_t i = 0; i < n; i++)
        co_await asio::post(ex, asio::use_awaitable);
}

std::uint64_t yield_rep(std::uint64_t n)
{
    asio::io_context ctx(1);
    std::uint64_t t0 = now_ns();
    asio::co_spawn(ctx, yielder(n), asio::detached);
    asio::co_spawn(ctx, yielder(n), asio::detached);
    ctx.run();
    return now_ns() - t0;
}

asio::awaitable<void> empty()
{
    co_return;
}

asio::awaitable<void> spawn_driver(std::uint64_t n)
{
    auto ex = co_await asio::this_coro::executor;
    for (std::uint64_t i = 0; i < n; i++)
        co_await asio::co_spawn(ex, empty(), asio::use_awaitable);
}

std::uint64_t spawn_rep(std::uint64_t n)
{
    asio::io_context ctx(1);
    std::uint64_t t0 = now_ns();
    asio::co_spawn(ctx, spawn_driver(n), asio::detached);
    ctx.run();
    return now_ns() - t0;
}

} // namespace as

// ------------------------------------------------------------------ hand-written
//
// A cppcoro-style lazy task and the least a scheduler can be: one thread,
// a FIFO ring of coroutine handles, a loop that resumes them in turn.
// Frames come from operator new (malloc), as coframe's come from
// coro_frame_alloc (malloc underneath).

namespace hand {

class fifo {
public:
    fifo() : buf_(new std::coroutine_handle<>[64]), mask_(63) {}
    ~fifo() { delete[] buf_; }
    fifo(const fifo &) = delete;
    fifo &operator=(const fifo &) = delete;
    void push(std::coroutine_handle<> h)
    {
        if (tail_ - head_ > mask_)
            grow();
        buf_[tail_++ & mask_] = h;
    }
    void run()
    {
        while (head_ != tail_)
            buf_[head_++ & mask_].resume();
    }

private:
    void grow()
    {
        auto *b = new std::coroutine_handle<>[2 * (mask_ + 1)];
        size_t m = 2 * mask_ + 1;
        for (size_t i = head_; i != tail_; i++)
            b[i & m] = buf_[i & mask_];
        delete[] buf_;
        buf_ = b;
        mask_ = m;
    }
    std::coroutine_handle<> *buf_;
    size_t mask_;
    size_t head_ = 0, tail_ = 0;
};

// The one scheduler of the thread (cppcoro's static_thread_pool has its
// thread-local too).
static fifo *sched;

class task {
public:
    struct promise_type {
        std::coroutine_handle<> continuation;

        task get_return_object() noexcept
        {
            return task(std::coroutine_handle<promise_type>::from_promise(*this));
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        // The task's end resumes its awaiter at once (symmetric
        // transfer), cppcoro's task: the continuation, not the queue.
        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept
            {
                auto c = h.promise().continuation;
                return c ? c : std::noop_coroutine();
            }
            void await_resume() const noexcept {}
        };
        final_awaiter final_suspend() const noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };

    explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    task(task &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    task(const task &) = delete;
    task &operator=(const task &) = delete;
    ~task()
    {
        if (h_)
            h_.destroy();
    }

    // Queues the task; the task object keeps its frame (freed when the
    // object goes). Await it with co_await.
    task &&start() &&
    {
        sched->push(h_);
        return std::move(*this);
    }

    // co_await of a started task: suspend until its end resumes us.
    auto operator co_await() && noexcept
    {
        struct awaiter {
            std::coroutine_handle<promise_type> h;
            bool await_ready() const noexcept { return h.done(); }
            void await_suspend(std::coroutine_handle<> caller) noexcept { h.promise().continuation = caller; }
            void await_resume() const noexcept {}
        };
        return awaiter{ h_ };
    }

    // For the root tasks: queue them without an awaiter.
    std::coroutine_handle<promise_type> handle() const noexcept { return h_; }

private:
    std::coroutine_handle<promise_type> h_;
};

// co_await yield(): to the back of the queue.
struct yield {
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) const { sched->push(h); }
    void await_resume() const noexcept {}
};

task yielder(std::uint64_t n)
{
    for (std::uint64_t i = 0; i < n; i++)
        co_await yield();
}

std::uint64_t yield_rep(std::uint64_t n)
{
    fifo f;
    sched = &f;
    std::uint64_t t0 = now_ns();
    task a = yielder(n), b = yielder(n);
    f.push(a.handle());
    f.push(b.handle());
    f.run();
    std::uint64_t dt = now_ns() - t0;
    if (!a.handle().done() || !b.handle().done())
        std::abort();
    return dt;
}

task empty()
{
    co_return;
}

task spawn_driver(std::uint64_t n)
{
    for (std::uint64_t i = 0; i < n; i++)
        co_await empty().start();
}

std::uint64_t spawn_rep(std::uint64_t n)
{
    fifo f;
    sched = &f;
    std::uint64_t t0 = now_ns();
    task d = spawn_driver(n);
    f.push(d.handle());
    f.run();
    std::uint64_t dt = now_ns() - t0;
    if (!d.handle().done())
        std::abort();
    return dt;
}

} // namespace hand

// ------------------------------------------------------------------ main

int main(int argc, char **argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: taskbench yield_coframe|yield_asio|yield_hand|spawn_coframe|spawn_asio|"
                             "spawn_hand [--iters N] [--reps R]\n");
        return 2;
    }
    std::uint64_t iters = 100000;
    int reps = 5;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--iters"))
            iters = std::strtoull(argv[i + 1], nullptr, 10);
        else if (!std::strcmp(argv[i], "--reps"))
            reps = std::atoi(argv[i + 1]);
    }
    if (reps < 1)
        reps = 1;
    if (iters < 1)
        iters = 1;
    const std::string m = argv[1];
    if (m == "yield_coframe")
        cf::run("task_yield_coframe", cf::yield_driver, 2, iters, reps);
    else if (m == "spawn_coframe")
        cf::run("task_spawn_coframe", cf::spawn_driver, 1, iters, reps);
    else if (m == "yield_asio")
        repeat("task_yield_asio", iters, reps, 2, as::yield_rep);
    else if (m == "spawn_asio")
        repeat("task_spawn_asio", iters, reps, 1, as::spawn_rep);
    else if (m == "yield_hand")
        repeat("task_yield_hand", iters, reps, 2, hand::yield_rep);
    else if (m == "spawn_hand")
        repeat("task_spawn_hand", iters, reps, 1, hand::spawn_rep);
    else {
        std::fprintf(stderr, "taskbench: unknown mode %s\n", argv[1]);
        return 2;
    }
    return 0;
}
