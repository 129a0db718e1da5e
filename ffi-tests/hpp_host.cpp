/*
 * hpp_host.cpp: <coframe.hpp>, the C++20 host, from g++ and clang++
 * (-std=c++20 -Wall -Wextra -Wpedantic -Werror), plain and under ASan.
 *
 *   errors     errc values, category(), make_error_code, std::errc
 *              conditions, error/canceled, errno's text for errc::io
 *   runtime    native(), spawn after shutdown throws errc::shutdown
 *   values     stackful bodies returning a value, void, a string; a
 *              thrown exception comes back from get(); this_coro::id()
 *   unwind     a stackful body cancelled at this_coro::suspend, at
 *              sleep_for and by ~promise: its suspension point throws
 *              canceled, its locals' destructors run exactly once, get()
 *              throws canceled
 *   fiasco     CP.51 / Seastar's lambda coroutine fiasco: a capturing
 *              lambda (stackful and task) spawned, then destroyed by the
 *              caller before it runs, still runs right (ASan run too)
 *   ref        std::ref shares an object with a body
 *   token      this_coro::suspend hands tokens to a std::thread that
 *              resumes them; a dropped token cancels the suspension
 *   detach     a detached body runs to its end; no frame is left
 *   mutex      coframe::mutex held across yields by 4 bodies on 2
 *              workers: the counter is exact; try_lock
 *   channel    channel<std::string> and channel<int> (rendezvous)
 *              between bodies and threads; close semantics; leftovers
 *              freed by ~channel
 *   lockheld   CP.52: coframe::lock_guard<std::mutex> held across
 *              this_coro::yield throws errc::lock_held naming the lock
 *              and file:line; nested guards; on a plain thread it is a
 *              plain lock_guard
 *   tasks      task<T>: values, exceptions, nested co_await of task<U>,
 *              co_await of a promise, readable on a pipe, sleep_for,
 *              yield, mutex and channel in tasks, this_coro and get()
 *              refused in a task, cancel of a task parked in a sleep
 *              destroys its frame (its locals' destructors run once,
 *              get() throws canceled), lock_guard across a co_await,
 *              co_await suspend(on_suspend): its token resumed by a
 *              thread, cancelled (the frame destroyed), on_suspend's
 *              exception rethrown by the co_await
 *   io         the blocking-style I/O: a task echo server and client over
 *              loopback TCP (accept, connect, recv_some, send, recv), all
 *              bytes across delayed writes (recv, read), read_some, write,
 *              deadlines (errc::timed_out, *done), end of file before all
 *              bytes (errc::io, EPIPE), a refused connect (ECONNREFUSED),
 *              a blocking descriptor refused, lock_held; the this_coro
 *              calls in a stackful body and on a thread, refused in a
 *              task; the cancel of a task blocked in recv (its frame
 *              destroyed, its chain's locals destroyed once)
 *
 * `hpp_host NAME...` runs only those groups. Ends with "hpp_host: N
 * passed, N failed"; exits 1 on any failure.
 */
#include <coframe.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

std::atomic<int> passed{ 0 }, failed{ 0 };

void check(bool ok, const char *what, int line)
{
    if (ok) {
        passed++;
    } else {
        failed++;
        std::fprintf(stderr, "hpp_host.cpp:%d: CHECK failed: %s\n", line, what);
    }
}
#define CHECK(cond) check(static_cast<bool>(cond), #cond, __LINE__)

/* CHECK_THROWS(expr, Type, pred): expr throws Type `e` with pred(e) true. */
#define CHECK_THROWS(expr, Type, pred)                                                                                 \
    do {                                                                                                               \
        bool caught_ = false;                                                                                          \
        try {                                                                                                          \
            (void)(expr);                                                                                              \
        } catch (const Type &e) {                                                                                      \
            caught_ = (pred);                                                                                          \
            if (!caught_)                                                                                              \
                std::fprintf(stderr, "hpp_host.cpp:%d: caught %s: %s\n", __LINE__, #Type, e.what());                \
        } catch (const std::exception &e) {                                                                            \
            std::fprintf(stderr, "hpp_host.cpp:%d: unexpected exception: %s\n", __LINE__, e.what());                \
        }                                                                                                              \
        check(caught_, #expr " throws " #Type " with " #pred, __LINE__);                                               \
    } while (0)

/* Polls `cond` for up to `ms` milliseconds. */
template <class F>
bool wait_until(F cond, int ms = 10000)
{
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (!cond()) {
        if (std::chrono::steady_clock::now() > end)
            return false;
        std::this_thread::sleep_for(100us);
    }
    return true;
}

bool has(const std::string &s, const std::string &part) { return s.find(part) != std::string::npos; }

/* Counts destructor runs of the locals it is put in. */
struct Tracked {
    std::atomic<int> *count;
    explicit Tracked(std::atomic<int> &c) : count(&c) {}
    Tracked(const Tracked &) = delete;
    Tracked &operator=(const Tracked &) = delete;
    ~Tracked() { ++*count; }
};

/* A token handed from on_suspend to whoever takes it. */
class Mailbox {
public:
    void put(coframe::token t)
    {
        std::lock_guard<std::mutex> g(m_);
        slots_.push_back(std::move(t));
    }
    /* Waits (10 s at most) for a token; an empty one if none came. */
    coframe::token take()
    {
        coframe::token out;
        wait_until([&] {
            std::lock_guard<std::mutex> g(m_);
            if (slots_.empty())
                return false;
            out = std::move(slots_.front());
            slots_.erase(slots_.begin());
            return true;
        });
        return out;
    }

private:
    std::mutex m_;
    std::vector<coframe::token> slots_;
};

/* ------------------------------------------------------------ errors */

void test_errors(coframe::runtime &rt)
{
    using coframe::errc;
    CHECK(static_cast<int>(errc::invalid) == CORO_EINVAL);
    CHECK(static_cast<int>(errc::stale) == CORO_ESTALE);
    CHECK(static_cast<int>(errc::state) == CORO_ESTATE);
    CHECK(static_cast<int>(errc::canceled) == CORO_ECANCELED);
    CHECK(static_cast<int>(errc::timed_out) == CORO_ETIMEDOUT);
    CHECK(static_cast<int>(errc::no_memory) == CORO_ENOMEM);
    CHECK(static_cast<int>(errc::lock_held) == CORO_ELOCKHELD);
    CHECK(static_cast<int>(errc::shutdown) == CORO_ESHUTDOWN);
    CHECK(static_cast<int>(errc::io) == CORO_EIO);
    CHECK(static_cast<int>(errc::busy) == CORO_EBUSY);
    CHECK(static_cast<int>(errc::closed) == CORO_ECLOSED);
    static_assert(std::is_error_code_enum_v<coframe::errc>);

    std::error_code ec = errc::timed_out; // implicit, through is_error_code_enum
    CHECK(ec.category() == coframe::category());
    CHECK(std::string(coframe::category().name()) == "coframe");
    CHECK(ec.message() == coro_strerror(CORO_ETIMEDOUT));
    CHECK(ec == std::errc::timed_out);
    CHECK(coframe::make_error_code(errc::canceled) == std::errc::operation_canceled);
    CHECK(coframe::make_error_code(errc::closed) != std::errc::timed_out);

    coframe::canceled c;
    const coframe::error &as_error = c;
    CHECK(as_error.code() == errc::canceled);
    CHECK(has(c.what(), coro_strerror(CORO_ECANCELED)));

    // errc::io: what() gives errno's text. coro_dump to a closed
    // descriptor fails with CORO_EIO and errno EBADF.
    int fds[2];
    CHECK(pipe(fds) == 0);
    close(fds[0]);
    close(fds[1]);
    CHECK_THROWS(coframe::detail::check(coro_dump(rt.native(), fds[1]), "coro_dump"), coframe::error,
                 e.code() == errc::io && e.os_error() == EBADF && has(e.what(), std::strerror(EBADF)) &&
                     has(e.what(), "coro_dump"));

    // A deadline passed: errc::timed_out, also as std::errc::timed_out.
    auto p = coframe::spawn(rt, [] { coframe::this_coro::sleep_until(coframe::clock::now() - 1s); });
    p.get();
    int fd2[2];
    CHECK(pipe(fd2) == 0);
    auto q = coframe::spawn(rt, [fd = fd2[0]] {
        coframe::this_coro::wait_readable(fd, coframe::clock::now() + 1ms);
    });
    CHECK_THROWS(q.get(), coframe::error, e.code() == errc::timed_out && e.code() == std::errc::timed_out);
    close(fd2[0]);
    close(fd2[1]);

    // Empty handles.
    coframe::promise<int> empty;
    CHECK_THROWS(empty.get(), coframe::error, e.code() == errc::invalid);
    CHECK_THROWS(coframe::token().resume(), coframe::error, e.code() == errc::invalid);
    // Outside a coroutine, this_coro::yield is not allowed.
    CHECK_THROWS(coframe::this_coro::yield(), coframe::error, e.code() == errc::state);
    CHECK(coframe::this_coro::id() == 0);
}

/* ----------------------------------------------------------- runtime */

void test_runtime()
{
    coframe::runtime rt(1, 32 * 1024);
    CHECK(rt.native() != nullptr);
    CHECK(coframe::spawn(rt, [] { return 7; }).get() == 7);
    rt.shutdown();
    CHECK_THROWS(coframe::spawn(rt, [] { return 7; }), coframe::error, e.code() == coframe::errc::shutdown);
    CHECK_THROWS(rt.shutdown(), coframe::error, e.code() == coframe::errc::shutdown);
}

/* ------------------------------------------------------------ values */

int add(int a, int b) { return a + b; }

struct Functor {
    std::string prefix;
    std::string operator()(const std::string &s) const { return prefix + s; }
};

void test_values(coframe::runtime &rt)
{
    CHECK(coframe::spawn(rt, add, 2, 3).get() == 5);
    CHECK(coframe::spawn(rt, &add, 4, 5).get() == 9);
    CHECK(coframe::spawn(rt, Functor{ "a" }, std::string("b")).get() == "ab");
    std::atomic<int> ran{ 0 };
    coframe::spawn(rt, [&ran] {
        coframe::this_coro::yield();
        ran++;
    }).get();
    CHECK(ran == 1);

    auto p = coframe::spawn(rt, [] {
        coframe::this_coro::yield();
        throw std::runtime_error("from the body");
        return 1;
    });
    CHECK_THROWS(p.get(), std::runtime_error, std::string(e.what()) == "from the body");

    std::atomic<std::uint64_t> seen{ 0 };
    auto q = coframe::spawn(rt, [&seen] { seen = coframe::this_coro::id(); });
    std::uint64_t id = q.id();
    q.get();
    CHECK(id != 0 && seen == id);
    CHECK(!q.valid());
    CHECK_THROWS(q.get(), coframe::error, e.code() == coframe::errc::invalid);

    // A body awaiting another body.
    auto outer = coframe::spawn(rt, [&rt] {
        auto inner = coframe::spawn(rt, [] {
            coframe::this_coro::sleep_for(1ms);
            return std::string(100, 'z');
        });
        return inner.get().size();
    });
    CHECK(outer.get() == 100);

    // A move-only result.
    auto u = coframe::spawn(rt, [] { return std::make_unique<int>(42); });
    CHECK(*u.get() == 42);
}

/* ------------------------------------------------------------ unwind */

void test_unwind(coframe::runtime &rt)
{
    // Cancelled at this_coro::suspend, through the token.
    {
        std::atomic<int> destructed{ 0 }, saw_cancel{ 0 }, after{ 0 };
        Mailbox box;
        auto p = coframe::spawn(rt, [&] {
            Tracked local(destructed);
            try {
                coframe::this_coro::suspend([&](coframe::token t) { box.put(std::move(t)); });
            } catch (const coframe::canceled &) {
                saw_cancel++;
                throw;
            }
            after++;
        });
        coframe::token t = box.take();
        CHECK(static_cast<bool>(t));
        std::move(t).cancel();
        CHECK_THROWS(p.get(), coframe::canceled, e.code() == coframe::errc::canceled);
        CHECK(destructed == 1);
        CHECK(saw_cancel == 1);
        CHECK(after == 0);
    }
    // Cancelled in sleep_for by promise::cancel: the body unwinds on its worker.
    {
        std::atomic<int> destructed{ 0 }, started{ 0 }, saw_cancel{ 0 };
        auto p = coframe::spawn(rt, [&] {
            Tracked local(destructed);
            started++;
            try {
                coframe::this_coro::sleep_for(1h);
            } catch (const coframe::canceled &) {
                saw_cancel++;
                throw;
            }
        });
        CHECK(wait_until([&] { return started == 1; }));
        std::this_thread::sleep_for(1ms);
        p.cancel();
        CHECK(!p.valid());
        CHECK(wait_until([&] { return destructed == 1; }));
        std::this_thread::sleep_for(5ms);
        CHECK(destructed == 1);
        CHECK(saw_cancel == 1);
    }
    // ~promise cancels a body still running.
    {
        std::atomic<int> destructed{ 0 }, started{ 0 };
        {
            auto p = coframe::spawn(rt, [&] {
                Tracked local(destructed);
                started++;
                coframe::this_coro::sleep_for(1h);
            });
            CHECK(wait_until([&] { return started == 1; }));
        }
        CHECK(wait_until([&] { return destructed == 1; }));
    }
    // A cancelled body's later suspension points throw canceled too.
    {
        std::atomic<int> throws{ 0 };
        Mailbox box;
        auto p = coframe::spawn(rt, [&] {
            for (int i = 0; i < 3; i++) {
                try {
                    if (i == 0)
                        coframe::this_coro::suspend([&](coframe::token t) { box.put(std::move(t)); });
                    else
                        coframe::this_coro::yield();
                } catch (const coframe::canceled &) {
                    throws++;
                }
            }
            return 5;
        });
        std::move(box.take()).cancel();
        CHECK_THROWS(p.get(), coframe::canceled, true);
        CHECK(throws == 3);
    }
}

/* ------------------------------------------------------------ fiasco */

std::atomic<int> fiasco_copies_alive{ 0 };

struct Counted {
    std::vector<int> data = std::vector<int>(64, 7);
    Counted() { fiasco_copies_alive++; }
    Counted(const Counted &o) : data(o.data) { fiasco_copies_alive++; }
    Counted(Counted &&o) noexcept : data(std::move(o.data)) { fiasco_copies_alive++; }
    ~Counted() { fiasco_copies_alive--; }
};

void test_fiasco(coframe::runtime &rt)
{
    std::vector<coframe::promise<std::size_t>> ps;
    for (int i = 0; i < 50; i++) {
        // The lambda and what it captured die at the end of this block,
        // before the body runs; spawn's copy is what the body uses.
        std::string text(200 + i, 'a' + i % 26);
        Counted counted;
        auto lambda = [text, counted]() {
            coframe::this_coro::yield();
            coframe::this_coro::sleep_for(100us);
            std::size_t sum = 0;
            for (int v : counted.data)
                sum += static_cast<std::size_t>(v);
            return text.size() + sum;
        };
        ps.push_back(coframe::spawn(rt, lambda));
    }
    for (std::size_t i = 0; i < ps.size(); i++)
        CHECK(ps[i].get() == 200 + i + 64 * 7);
    // Every copy made by spawn is gone with its frame.
    CHECK(fiasco_copies_alive == 0);

    // Arguments too: the string is copied into the frame.
    coframe::promise<std::size_t> p;
    {
        std::string arg(300, 'q');
        p = coframe::spawn(
            rt,
            [](const std::string &s) {
                coframe::this_coro::sleep_for(1ms);
                return s.size();
            },
            arg);
    }
    CHECK(p.get() == 300);
}

/* --------------------------------------------------------------- ref */

void test_ref(coframe::runtime &rt)
{
    int counter = 0;
    coframe::spawn(rt, [](int &c) { c += 5; }, std::ref(counter)).get();
    CHECK(counter == 5);
    std::string s = "x";
    coframe::spawn(rt, [](std::string &t, const std::string &suffix) { t += suffix; }, std::ref(s), std::string("y"))
        .get();
    CHECK(s == "xy");
}

/* ------------------------------------------------------------- token */

void test_token(coframe::runtime &rt)
{
    constexpr int bodies = 4, rounds = 100;
    Mailbox box;
    std::vector<coframe::promise<int>> ps;
    for (int b = 0; b < bodies; b++)
        ps.push_back(coframe::spawn(rt, [&box] {
            int n = 0;
            for (int i = 0; i < rounds; i++) {
                coframe::this_coro::suspend([&box](coframe::token t) { box.put(std::move(t)); });
                n++;
            }
            return n;
        }));
    std::atomic<int> bad{ 0 };
    std::thread resumer([&] {
        for (int i = 0; i < bodies * rounds; i++) {
            coframe::token t = box.take();
            if (!t) {
                bad++;
                return;
            }
            try {
                std::move(t).resume();
            } catch (const coframe::error &) {
                bad++;
            }
            if (t)
                bad++; // consumed by resume
        }
    });
    resumer.join();
    CHECK(bad == 0);
    for (auto &p : ps)
        CHECK(p.get() == rounds);

    // A token nobody keeps cancels the suspension.
    auto p = coframe::spawn(rt, [] { coframe::this_coro::suspend([](coframe::token) {}); });
    CHECK_THROWS(p.get(), coframe::canceled, true);

    // A token used twice: the second use is stale.
    Mailbox box2;
    auto q = coframe::spawn(rt, [&box2] {
        coframe::this_coro::suspend([&box2](coframe::token t) { box2.put(std::move(t)); });
        return 3;
    });
    coframe::token t = box2.take();
    coro_token raw = t.release();
    CHECK(coro_resume(raw) == 0);
    CHECK_THROWS(coframe::token(raw).resume(), coframe::error, e.code() == coframe::errc::stale);
    CHECK(q.get() == 3);

    // An exception from on_suspend comes back from suspend(); the token it
    // dropped cancelled the suspension, so the body is cancelled: its
    // result is lost and get() throws canceled.
    std::atomic<int> seen{ 0 };
    auto r = coframe::spawn(rt, [&seen] {
        try {
            coframe::this_coro::suspend([](coframe::token) { throw std::logic_error("on_suspend"); });
        } catch (const std::logic_error &) {
            seen++;
        }
        return 1;
    });
    CHECK_THROWS(r.get(), coframe::canceled, true);
    CHECK(seen == 1);
    // One that keeps the token and then throws: the body goes on.
    Mailbox box3;
    auto k = coframe::spawn(rt, [&box3] {
        try {
            coframe::this_coro::suspend([&box3](coframe::token t) {
                box3.put(std::move(t));
                throw std::logic_error("after handing the token on");
            });
        } catch (const std::logic_error &) {
            return 2;
        }
        return 0;
    });
    std::move(box3.take()).resume();
    CHECK(k.get() == 2);
}

/* ------------------------------------------------------------ detach */

void test_detach(coframe::runtime &rt)
{
    std::atomic<int> done{ 0 };
    auto p = coframe::spawn(rt, [&done] {
        coframe::this_coro::sleep_for(2ms);
        done++;
        return std::string(64, 'd'); // dropped: nobody awaits it
    });
    p.detach();
    CHECK(!p.valid());
    CHECK(wait_until([&] { return done == 1; }));
    // Detached after it finished: the result is freed too (ASan's leak check).
    auto q = coframe::spawn(rt, [] { return std::string(100, 'e'); });
    std::this_thread::sleep_for(2ms);
    q.detach();
    // Cancelled after it finished.
    auto r = coframe::spawn(rt, [] { return std::string(100, 'f'); });
    std::this_thread::sleep_for(2ms);
    r.cancel();
}

/* ------------------------------------------------------------- mutex */

void test_mutex(coframe::runtime &rt)
{
    coframe::mutex m;
    long counter = 0;
    constexpr int bodies = 4, rounds = 2000;
    std::vector<coframe::promise<void>> ps;
    for (int b = 0; b < bodies; b++)
        ps.push_back(coframe::spawn(
            rt,
            [&m](long &c) {
                for (int i = 0; i < rounds; i++) {
                    auto g = m.lock();
                    long v = c;
                    if (i % 3 == 0)
                        coframe::this_coro::yield(); // held across a suspension: allowed
                    c = v + 1;
                }
            },
            std::ref(counter)));
    // A plain thread takes it too.
    for (int i = 0; i < rounds; i++) {
        auto g = m.lock();
        counter++;
    }
    for (auto &p : ps)
        p.get();
    CHECK(counter == (bodies + 1) * rounds);

    {
        auto g = m.lock();
        CHECK(g.owns_lock());
        auto busy = coframe::spawn(rt, [&m] { return m.try_lock().owns_lock(); });
        CHECK(busy.get() == false);
        g.unlock();
        CHECK(!g.owns_lock());
        auto g2 = m.try_lock();
        CHECK(static_cast<bool>(g2));
    }
    // A body cancelled while it holds the mutex gives it back as it unwinds.
    {
        std::atomic<int> holding{ 0 };
        auto p = coframe::spawn(rt, [&] {
            auto g = m.lock();
            holding++;
            coframe::this_coro::sleep_for(1h);
        });
        CHECK(wait_until([&] { return holding == 1; }));
        p.cancel();
        auto g = m.lock(coframe::clock::now() + 10s);
        CHECK(g.owns_lock());
    }
    // A deadline on lock().
    {
        auto g = m.lock();
        auto p = coframe::spawn(rt, [&m] { (void)m.lock(coframe::clock::now() + 2ms); });
        CHECK_THROWS(p.get(), coframe::error, e.code() == coframe::errc::timed_out);
    }
}

/* ----------------------------------------------------------- channel */

void test_channel(coframe::runtime &rt)
{
    // std::string items (heap pointers inside), capacity 2, body -> thread.
    {
        coframe::channel<std::string> ch(2);
        auto producer = coframe::spawn(rt, [&ch] {
            for (int i = 0; i < 200; i++)
                ch.send(std::to_string(i) + std::string(40, 's'));
            ch.close();
        });
        int n = 0;
        bool in_order = true;
        try {
            for (;;) {
                std::string s = ch.recv();
                if (s != std::to_string(n) + std::string(40, 's'))
                    in_order = false;
                n++;
            }
        } catch (const coframe::error &e) {
            CHECK(e.code() == coframe::errc::closed);
        }
        producer.get();
        CHECK(n == 200);
        CHECK(in_order);
        CHECK_THROWS(ch.send("late"), coframe::error, e.code() == coframe::errc::closed);
        CHECK_THROWS(ch.close(), coframe::error, e.code() == coframe::errc::closed);
    }
    // int items inline, rendezvous, thread -> bodies.
    {
        coframe::channel<int> ch(0);
        std::atomic<long> sum{ 0 };
        std::vector<coframe::promise<int>> consumers;
        for (int c = 0; c < 3; c++)
            consumers.push_back(coframe::spawn(rt, [&ch, &sum] {
                int got = 0;
                try {
                    for (;;) {
                        sum += ch.recv();
                        got++;
                    }
                } catch (const coframe::error &e) {
                    if (e.code() != coframe::errc::closed)
                        throw;
                }
                return got;
            }));
        for (int i = 1; i <= 1000; i++)
            ch.send(i);
        ch.close();
        int got = 0;
        for (auto &p : consumers)
            got += p.get();
        CHECK(got == 1000);
        CHECK(sum == 1000L * 1001 / 2);
    }
    // Closed with items left: receivers drain, then closed; ~channel frees the rest.
    {
        coframe::channel<std::string> ch(4);
        ch.send("one");
        ch.send("two");
        ch.send("three");
        ch.close();
        CHECK(ch.recv() == "one");
        coframe::channel<std::string> left(3);
        left.send(std::string(100, 'l'));
        left.send(std::string(100, 'm'));
        // `left` is destroyed with two items in it: ASan's leak check sees them freed.
    }
    // A deadline: recv on an empty channel.
    {
        coframe::channel<int> ch(1);
        CHECK_THROWS(ch.recv(coframe::clock::now() + 1ms), coframe::error, e.code() == coframe::errc::timed_out);
    }
    // A move-only item.
    {
        coframe::channel<std::unique_ptr<int>> ch(1);
        ch.send(std::make_unique<int>(9));
        CHECK(*ch.recv() == 9);
    }
}

/* ---------------------------------------------------------- lockheld */

int lockheld_line = 0;

void test_lockheld(coframe::runtime &rt)
{
    std::mutex sm;
    auto p = coframe::spawn(rt, [&sm] {
        std::string what;
        try {
            // clang-format off
            lockheld_line = __LINE__; coframe::lock_guard g(sm);
            // clang-format on
            coframe::this_coro::yield();
        } catch (const coframe::error &e) {
            if (e.code() == coframe::errc::lock_held)
                what = e.what();
        }
        coframe::this_coro::yield(); // released: fine
        return what;
    });
    std::string what = p.get();
    CHECK(has(what, "std::mutex taken at "));
    CHECK(has(what, "hpp_host.cpp:" + std::to_string(lockheld_line) + " in "));
    CHECK(has(what, "CP.52"));
    if (!has(what, "hpp_host.cpp:"))
        std::fprintf(stderr, "lock_held what(): %s\n", what.c_str());

    // sleep_for and a blocking channel call are suspension points too.
    auto q = coframe::spawn(rt, [&sm] {
        int refused = 0;
        coframe::channel<int> ch(1);
        coframe::lock_guard g(sm);
        try {
            coframe::this_coro::sleep_for(1ms);
        } catch (const coframe::error &e) {
            refused += e.code() == coframe::errc::lock_held;
        }
        try {
            (void)ch.recv();
        } catch (const coframe::error &e) {
            refused += e.code() == coframe::errc::lock_held;
        }
        return refused;
    });
    CHECK(q.get() == 2);

    // get() refused while a lock_guard is held keeps the promise: it can
    // be awaited once the guard is gone.
    auto kept = coframe::spawn(rt, [&rt, &sm] {
        auto child = coframe::spawn(rt, [] { return 11; });
        bool refused = false;
        {
            coframe::lock_guard g(sm);
            try {
                (void)child.get();
            } catch (const coframe::error &e) {
                refused = e.code() == coframe::errc::lock_held;
            }
        }
        return refused && child.valid() ? child.get() : -1;
    });
    CHECK(kept.get() == 11);

    // Nested guards: with the inner one released, the outer one is named.
    std::recursive_mutex rm;
    std::mutex inner_m;
    auto r = coframe::spawn(rt, [&] {
        coframe::lock_guard outer(rm);
        {
            coframe::lock_guard inner(inner_m);
        }
        try {
            coframe::this_coro::yield();
        } catch (const coframe::error &e) {
            return std::string(e.what());
        }
        return std::string();
    });
    std::string rw = r.get();
    CHECK(has(rw, "std::recursive_mutex taken at "));
    CHECK(!has(rw, "std::mutex taken"));

    // On a plain thread it is a std::lock_guard.
    {
        coframe::lock_guard g(sm);
        CHECK(std::string(g.name()).empty());
        CHECK(!sm.try_lock());
    }
    CHECK(sm.try_lock());
    sm.unlock();
}

/* ------------------------------------------------------------- tasks */

coframe::task<int> twice(int x)
{
    co_await coframe::yield();
    co_return 2 * x;
}

coframe::task<std::string> describe(int x)
{
    int y = co_await twice(x);
    std::string s = std::to_string(y);
    s += "!";
    co_return s;
}

coframe::task<void> thrower()
{
    co_await coframe::yield();
    throw std::runtime_error("task threw");
}

coframe::task<int> catcher()
{
    try {
        co_await thrower();
    } catch (const std::runtime_error &e) {
        co_return static_cast<int>(std::strlen(e.what()));
    }
    co_return -1;
}

coframe::task<int> deep(int n)
{
    if (n == 0)
        co_return 0;
    co_await coframe::yield();
    co_return 1 + co_await deep(n - 1);
}

coframe::task<int> reader(int fd)
{
    char buf[16];
    co_await coframe::readable(fd, coframe::clock::now() + 10s);
    ssize_t n = read(fd, buf, sizeof buf);
    co_return static_cast<int>(n);
}

coframe::task<long> sleeper(std::chrono::milliseconds d)
{
    auto t0 = coframe::clock::now();
    co_await coframe::sleep_for(d);
    co_return std::chrono::duration_cast<std::chrono::milliseconds>(coframe::clock::now() - t0).count();
}

coframe::task<void> counter_task(coframe::mutex *m, long *counter, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        auto g = co_await m->lock();
        long v = *counter;
        if (i % 3 == 0)
            co_await coframe::yield(); // held across a suspension
        *counter = v + 1;
    }
}

coframe::task<long> chan_consumer(coframe::channel<std::string> *ch)
{
    long total = 0;
    for (;;) {
        try {
            std::string s = co_await ch->async_recv();
            total += static_cast<long>(s.size());
        } catch (const coframe::error &e) {
            if (e.code() == coframe::errc::closed)
                break;
            throw;
        }
    }
    co_return total;
}

coframe::task<void> chan_producer(coframe::channel<std::string> *ch, int n)
{
    for (int i = 0; i < n; i++)
        co_await ch->async_send(std::string(static_cast<std::size_t>(i % 50), 'p'));
}

std::atomic<int> task_dtors{ 0 };
std::atomic<int> task_parked{ 0 };

coframe::task<int> parked_child()
{
    Tracked inner(task_dtors);
    task_parked++;
    co_await coframe::sleep_for(1h);
    co_return 1;
}

coframe::task<int> parked_parent()
{
    Tracked outer(task_dtors);
    std::string s(100, 'x'); // a heap-owning local (ASan's leak check)
    int v = co_await parked_child();
    co_return v + static_cast<int>(s.size());
}

void test_tasks(coframe::runtime &rt)
{
    CHECK(coframe::spawn(rt, twice, 21).get() == 42);
    CHECK(coframe::spawn(rt, describe, 5).get() == "10!");
    CHECK_THROWS(coframe::spawn(rt, thrower).get(), std::runtime_error, std::string(e.what()) == "task threw");
    CHECK(coframe::spawn(rt, catcher).get() == 10);
    CHECK(coframe::spawn(rt, deep, 200).get() == 200);
    // A callable that throws while it makes the task: spawn throws it and
    // keeps nothing (the ASan runs' leak check sees the shared result).
    {
        const auto live = coro_live_frames();
        CHECK_THROWS(coframe::spawn(rt, []() -> coframe::task<int> { throw std::runtime_error("no task"); }),
                     std::runtime_error, std::string(e.what()) == "no task");
        CHECK(coro_live_frames() == live);
    }

    // A lambda task with captures, destroyed before it runs (the fiasco).
    {
        coframe::promise<std::size_t> p;
        {
            std::string cap(500, 'c');
            Counted counted;
            auto lam = [cap, counted]() -> coframe::task<std::size_t> {
                co_await coframe::yield();
                co_await coframe::sleep_for(1ms);
                co_return cap.size() + counted.data.size();
            };
            p = coframe::spawn(rt, lam);
        }
        CHECK(p.get() == 564);
        CHECK(fiasco_copies_alive == 0);
    }

    // co_await of a promise (a stackful body's and a task's).
    auto awaiter = coframe::spawn(rt, [&rt]() -> coframe::task<int> {
        auto body = coframe::spawn(rt, [] {
            coframe::this_coro::sleep_for(1ms);
            return 30;
        });
        auto other = coframe::spawn(rt, twice, 6);
        int a = co_await body;
        int b = co_await std::move(other);
        auto failing = coframe::spawn(rt, [] { throw std::logic_error("child"); });
        try {
            co_await failing;
        } catch (const std::logic_error &) {
            a += 100;
        }
        co_return a + b;
    });
    CHECK(awaiter.get() == 142);

    // readable on a pipe.
    {
        int fds[2];
        CHECK(pipe(fds) == 0);
        auto p = coframe::spawn(rt, reader, fds[0]);
        std::this_thread::sleep_for(2ms);
        CHECK(write(fds[1], "hello", 5) == 5);
        CHECK(p.get() == 5);
        auto timeout = coframe::spawn(rt, [fd = fds[0]]() -> coframe::task<void> {
            co_await coframe::readable(fd, coframe::clock::now() + 1ms);
        });
        CHECK_THROWS(timeout.get(), coframe::error, e.code() == coframe::errc::timed_out);
        auto w = coframe::spawn(rt, [fd = fds[1]]() -> coframe::task<int> {
            co_await coframe::writable(fd);
            co_return 1;
        });
        CHECK(w.get() == 1);
        close(fds[0]);
        close(fds[1]);
    }

    // sleep_for, sleep_until.
    CHECK(coframe::spawn(rt, sleeper, 5ms).get() >= 5);
    auto until = coframe::spawn(rt, []() -> coframe::task<bool> {
        auto t = coframe::clock::now() + 3ms;
        co_await coframe::sleep_until(t);
        co_return coframe::clock::now() >= t;
    });
    CHECK(until.get());

    // mutex in tasks, with stackful bodies on the same mutex.
    {
        coframe::mutex m;
        long counter = 0;
        constexpr int rounds = 1000;
        std::vector<coframe::promise<void>> ps;
        for (int i = 0; i < 3; i++)
            ps.push_back(coframe::spawn(rt, counter_task, &m, &counter, rounds));
        ps.push_back(coframe::spawn(rt, [&m, &counter] {
            for (int i = 0; i < rounds; i++) {
                auto g = m.lock();
                long v = counter;
                coframe::this_coro::yield();
                counter = v + 1;
            }
        }));
        for (auto &p : ps)
            p.get();
        CHECK(counter == 4 * rounds);
    }

    // channel in tasks.
    {
        coframe::channel<std::string> ch(1);
        auto cons = coframe::spawn(rt, chan_consumer, &ch);
        auto prod = coframe::spawn(rt, chan_producer, &ch, 300);
        prod.get();
        ch.close();
        long want = 0;
        for (int i = 0; i < 300; i++)
            want += i % 50;
        CHECK(cons.get() == want);
        coframe::channel<int> ci(0);
        auto icons = coframe::spawn(rt, [&ci]() -> coframe::task<int> {
            int s = 0;
            for (int i = 0; i < 100; i++)
                s += co_await ci.async_recv();
            co_return s;
        });
        for (int i = 0; i < 100; i++)
            ci.send(i);
        CHECK(icons.get() == 4950);
    }

    // Stackful-only calls are refused in a task.
    auto misuse = coframe::spawn(rt, [&rt]() -> coframe::task<int> {
        int refused = 0;
        try {
            coframe::this_coro::yield();
        } catch (const coframe::error &e) {
            refused += e.code() == coframe::errc::state;
        }
        try {
            coframe::this_coro::sleep_for(1ms);
        } catch (const coframe::error &e) {
            refused += e.code() == coframe::errc::state;
        }
        auto child = coframe::spawn(rt, [] { return 1; });
        try {
            (void)child.get();
        } catch (const coframe::error &e) {
            refused += e.code() == coframe::errc::state;
        }
        refused += co_await child; // still usable
        coframe::channel<int> ch(1);
        try {
            ch.send(1);
        } catch (const coframe::error &e) {
            refused += e.code() == coframe::errc::state;
        }
        co_return refused;
    });
    CHECK(misuse.get() == 5);

    // Cancel of a task parked in a sleep: its frame is destroyed, its
    // locals' destructors run once, and get() throws canceled. The awaiter
    // is a stackful body; cancelling it cancels the task it awaits.
    {
        task_dtors = 0;
        task_parked = 0;
        std::atomic<int> saw_cancel{ 0 };
        auto watcher = coframe::spawn(rt, [&] {
            auto t = coframe::spawn(rt, parked_parent);
            try {
                (void)t.get();
            } catch (const coframe::canceled &) {
                saw_cancel++;
                throw;
            }
        });
        CHECK(wait_until([] { return task_parked == 1; }));
        std::this_thread::sleep_for(1ms);
        watcher.cancel();
        CHECK(wait_until([&] { return task_dtors == 2 && saw_cancel == 1; }));
        std::this_thread::sleep_for(5ms);
        CHECK(task_dtors == 2);
        CHECK(saw_cancel == 1);
    }
    // The same, cancelled directly: the frame is destroyed on this thread.
    {
        task_dtors = 0;
        task_parked = 0;
        auto t = coframe::spawn(rt, parked_parent);
        CHECK(wait_until([] { return task_parked == 1; }));
        std::this_thread::sleep_for(1ms);
        t.cancel();
        // Parked, it is destroyed on this thread before cancel() returns;
        // waited for all the same, in case a loaded machine had not let
        // it park yet.
        CHECK(wait_until([] { return task_dtors == 2; }));
    }
    // co_await suspend(on_suspend): the token goes to a thread that resumes
    // it; a token cancelled there destroys the task (its local's destructor
    // runs once, get() throws canceled); an exception from on_suspend comes
    // back from the co_await.
    {
        Mailbox box;
        task_dtors = 0;
        auto parker = [&box](int v) -> coframe::task<int> {
            Tracked t(task_dtors);
            co_await coframe::suspend([&box](coframe::token tk) { box.put(std::move(tk)); });
            co_return v;
        };
        auto resumed = coframe::spawn(rt, parker, 7);
        std::thread th([&box] { box.take().resume(); });
        th.join();
        CHECK(resumed.get() == 7);
        CHECK(task_dtors == 1);
        auto cancelled = coframe::spawn(rt, parker, 8);
        coframe::token tk = box.take();
        CHECK(tk);
        std::move(tk).cancel();
        CHECK(wait_until([] { return task_dtors == 2; }));
        CHECK_THROWS(cancelled.get(), coframe::canceled, true);
        auto throwing = coframe::spawn(rt, [&box]() -> coframe::task<int> {
            try {
                co_await coframe::suspend([&box](coframe::token t) {
                    box.put(std::move(t));
                    throw std::runtime_error("on_suspend threw");
                });
            } catch (const std::runtime_error &e) {
                co_return std::string(e.what()) == "on_suspend threw" ? 9 : -1;
            }
            co_return 0;
        });
        box.take().resume();
        CHECK(throwing.get() == 9);
        CHECK(task_dtors == 2);
    }

    // Cancellation flows down: cancelling a task that awaits another
    // task's promise cancels that task too (its frame is destroyed).
    {
        task_dtors = 0;
        task_parked = 0;
        auto t = coframe::spawn(rt, [&rt]() -> coframe::task<int> {
            auto child = coframe::spawn(rt, parked_child);
            co_return co_await child;
        });
        CHECK(wait_until([] { return task_parked == 1; }));
        t.cancel();
        CHECK(wait_until([] { return task_dtors == 1; }));
    }

    // A cancelled task's frame gives back the mutex it holds (its guard's
    // destructor runs in destroy, as the coroutine), and a task cancelled
    // while it waits for the mutex, or to send a boxed item, was given
    // neither: it unlocks nothing and frees its item (ASan's leak check).
    {
        coframe::mutex m;
        task_dtors = 0;
        task_parked = 0;
        auto holder = coframe::spawn(rt, [&m]() -> coframe::task<void> {
            auto g = co_await m.lock();
            Tracked local(task_dtors);
            task_parked++;
            co_await coframe::sleep_for(1h);
        });
        CHECK(wait_until([] { return task_parked == 1; }));
        holder.cancel();
        CHECK(wait_until([] { return task_dtors == 1; }));
        auto g = m.try_lock();
        CHECK(g.owns_lock());
        auto waiter = coframe::spawn(rt, [&m]() -> coframe::task<void> {
            task_parked++;
            auto g2 = co_await m.lock();
            task_dtors += 100; // never: cancelled while waiting
        });
        coframe::channel<std::string> full(1);
        full.send(std::string(100, 'f'));
        auto sender = coframe::spawn(rt, [&full]() -> coframe::task<void> {
            task_parked++;
            co_await full.async_send(std::string(200, 's'));
            task_dtors += 100; // never: the channel stays full
        });
        CHECK(wait_until([] { return task_parked == 3; }));
        std::this_thread::sleep_for(2ms);
        waiter.cancel();
        sender.cancel();
        std::this_thread::sleep_for(2ms);
        CHECK(task_dtors == 1);
        CHECK(g.owns_lock());
        g.unlock();
        CHECK(m.try_lock().owns_lock()); // free: the cancelled waiter was not handed it
        CHECK(full.recv() == std::string(100, 'f'));
    }

    // CP.52 in a task: a co_await of a library wait while a lock_guard is
    // held throws lock_held naming the lock.
    {
        std::mutex sm;
        auto p = coframe::spawn(rt, [&sm]() -> coframe::task<std::string> {
            std::string what;
            try {
                coframe::lock_guard g(sm);
                co_await coframe::yield();
            } catch (const coframe::error &e) {
                if (e.code() == coframe::errc::lock_held)
                    what = e.what();
            }
            co_await coframe::yield();
            co_return what;
        });
        std::string what = p.get();
        CHECK(has(what, "std::mutex taken at ") && has(what, "hpp_host.cpp:"));
    }
}

// ---------------------------------------------------------------------
// io: the blocking-style I/O, as awaitables in tasks and this_coro calls

/* A non-blocking listener on 127.0.0.1 (port from the kernel), or a
 * socket bound there that does not listen (refuses connections). */
coframe::unique_fd loopback_socket(sockaddr_in &addr, bool listening)
{
    coframe::unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    addr = sockaddr_in{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 ||
        (listening && ::listen(fd.get(), 16) != 0) ||
        ::getsockname(fd.get(), reinterpret_cast<sockaddr *>(&addr), &len) != 0)
        throw std::system_error(errno, std::generic_category(), "loopback_socket");
    return fd;
}

coframe::unique_fd tcp_socket()
{
    coframe::unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd)
        throw std::system_error(errno, std::generic_category(), "socket");
    return fd;
}

const sockaddr *sa(const sockaddr_in &a) { return reinterpret_cast<const sockaddr *>(&a); }

/* A non-blocking socketpair: fds[0] for the task, fds[1] for the test. */
bool nb_socketpair(int fds[2])
{
    return ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0;
}

constexpr std::size_t echo_msg = 32 * 1024;
constexpr int echo_rounds = 20;

/* The echo server: one connection, recv_some and send until end of file;
 * returns the bytes echoed. */
coframe::task<long> echo_server(int listener)
{
    coframe::unique_fd c = co_await coframe::accept(listener, coframe::clock::now() + 10s);
    const int flags = ::fcntl(c.get(), F_GETFL);
    const int fdflags = ::fcntl(c.get(), F_GETFD);
    if ((flags & O_NONBLOCK) == 0 || (fdflags & FD_CLOEXEC) == 0)
        co_return -1;
    char buf[4096];
    long total = 0;
    for (;;) {
        const std::size_t n = co_await coframe::recv_some(c.get(), buf, sizeof buf, coframe::clock::now() + 10s);
        if (n == 0)
            co_return total;
        co_await coframe::send(c.get(), buf, n);
        total += static_cast<long>(n);
    }
}

/* The client: connects, then echo_rounds round trips of echo_msg bytes
 * (more than its small send buffer holds, so its send waits), each echo
 * checked byte for byte; returns the round trips that matched. */
coframe::task<int> echo_client(sockaddr_in addr)
{
    coframe::unique_fd fd = tcp_socket();
    int small = 4096;
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    co_await coframe::connect(fd.get(), sa(addr), sizeof addr, coframe::clock::now() + 10s);
    std::vector<char> out(echo_msg), in(echo_msg);
    int matched = 0;
    for (int r = 0; r < echo_rounds; r++) {
        for (std::size_t i = 0; i < echo_msg; i++)
            out[i] = static_cast<char>((i * 7 + static_cast<std::size_t>(r)) & 0xff);
        const auto deadline = coframe::clock::now() + 10s;
        std::size_t sent = 0, got = 0;
        co_await coframe::send(fd.get(), out.data(), out.size(), deadline, &sent);
        co_await coframe::recv(fd.get(), in.data(), in.size(), deadline, &got);
        matched += sent == echo_msg && got == echo_msg && in == out;
    }
    co_return matched;
}

std::atomic<int> io_dtors{ 0 };
std::atomic<int> io_parked{ 0 };

coframe::task<std::size_t> parked_recv(int fd)
{
    Tracked inner(io_dtors);
    char buf[10];
    io_parked++;
    co_await coframe::recv(fd, buf, sizeof buf);
    co_return sizeof buf;
}

void test_io(coframe::runtime &rt)
{
    // Echo between a task server and a task client over loopback TCP.
    {
        sockaddr_in addr{};
        coframe::unique_fd listener = loopback_socket(addr, true);
        auto server = coframe::spawn(rt, echo_server, listener.get());
        auto client = coframe::spawn(rt, echo_client, addr);
        int matched = -1;
        long echoed = -1;
        try {
            matched = client.get();
            echoed = server.get();
        } catch (const std::exception &e) { // reported, and the group goes on
            std::fprintf(stderr, "hpp_host.cpp:%d: echo: %s\n", __LINE__, e.what());
        }
        CHECK(matched == echo_rounds);
        CHECK(echoed == static_cast<long>(echo_rounds * echo_msg));
    }

    // All bytes across delayed writes: recv returns once all 10 came, not
    // after the first 3; read on a pipe likewise; write and read_some.
    {
        int sp[2];
        CHECK(nb_socketpair(sp));
        auto p = coframe::spawn(rt, [fd = sp[0]]() -> coframe::task<std::string> {
            char buf[10];
            co_await coframe::recv(fd, buf, sizeof buf, coframe::clock::now() + 10s);
            co_return std::string(buf, sizeof buf);
        });
        CHECK(::send(sp[1], "abc", 3, 0) == 3);
        std::this_thread::sleep_for(5ms);
        CHECK(::send(sp[1], "defg", 4, 0) == 4);
        std::this_thread::sleep_for(5ms);
        CHECK(::send(sp[1], "hij", 3, 0) == 3);
        CHECK(p.get() == "abcdefghij");

        int pp[2];
        CHECK(::pipe2(pp, O_NONBLOCK | O_CLOEXEC) == 0);
        auto r = coframe::spawn(rt, [fd = pp[0]]() -> coframe::task<std::string> {
            char buf[6];
            co_await coframe::read(fd, buf, sizeof buf);
            std::size_t n = co_await coframe::read_some(fd, buf, sizeof buf);
            co_return std::string(buf, n);
        });
        CHECK(::write(pp[1], "123", 3) == 3);
        std::this_thread::sleep_for(5ms);
        CHECK(::write(pp[1], "456", 3) == 3);
        std::this_thread::sleep_for(5ms);
        CHECK(::write(pp[1], "78", 2) == 2);
        CHECK(r.get() == "78");
        auto w = coframe::spawn(rt, [fd = pp[1]]() -> coframe::task<void> {
            co_await coframe::write(fd, "xyz", 3);
        });
        w.get();
        char got[4] = {};
        CHECK(::read(pp[0], got, sizeof got) == 3 && std::string(got, 3) == "xyz");
        ::close(pp[0]);
        ::close(pp[1]);
        ::close(sp[0]);
        ::close(sp[1]);
    }

    // Deadline: errc::timed_out, *done counting what came before it; end of
    // file before all bytes: errc::io with EPIPE; recv_some at end of file: 0.
    {
        int sp[2];
        CHECK(nb_socketpair(sp));
        CHECK(::send(sp[1], "ab", 2, 0) == 2);
        auto timed = coframe::spawn(rt, [fd = sp[0]]() -> coframe::task<std::size_t> {
            char buf[8];
            std::size_t done = 99;
            try {
                co_await coframe::recv(fd, buf, sizeof buf, coframe::clock::now() + 5ms, &done);
            } catch (const coframe::error &e) {
                if (e.code() == coframe::errc::timed_out && e.code() == std::errc::timed_out)
                    co_return done;
            }
            co_return 1000;
        });
        CHECK(timed.get() == 2);
        CHECK(::send(sp[1], "cde", 3, 0) == 3);
        ::close(sp[1]);
        auto eof = coframe::spawn(rt, [fd = sp[0]]() -> coframe::task<std::size_t> {
            char buf[8];
            std::size_t done = 99;
            bool epipe = false;
            try {
                co_await coframe::recv(fd, buf, sizeof buf, {}, &done);
            } catch (const coframe::error &e) {
                epipe = e.code() == coframe::errc::io && e.os_error() == EPIPE;
            }
            // No co_await in a handler: after it.
            co_return epipe && co_await coframe::recv_some(fd, buf, sizeof buf) == 0 ? done : 1000;
        });
        CHECK(eof.get() == 3);
        ::close(sp[0]);
    }

    // A refused connect: errc::io with ECONNREFUSED; a blocking descriptor
    // refused by read (it would block the worker): errc::invalid.
    {
        sockaddr_in addr{};
        coframe::unique_fd bound = loopback_socket(addr, false);
        auto refused = coframe::spawn(rt, [addr]() -> coframe::task<int> {
            coframe::unique_fd fd = tcp_socket();
            try {
                co_await coframe::connect(fd.get(), sa(addr), sizeof addr, coframe::clock::now() + 10s);
            } catch (const coframe::error &e) {
                if (e.code() == coframe::errc::io)
                    co_return e.os_error();
            }
            co_return 0;
        });
        CHECK(refused.get() == ECONNREFUSED);
        int pp[2];
        CHECK(::pipe(pp) == 0);
        CHECK(::write(pp[1], "b", 1) == 1); // readable: refused all the same
        auto blocking = coframe::spawn(rt, [fd = pp[0]]() -> coframe::task<bool> {
            char c;
            try {
                co_await coframe::read(fd, &c, 1);
            } catch (const coframe::error &e) {
                co_return e.code() == coframe::errc::invalid;
            }
            co_return false;
        });
        CHECK(blocking.get());
        ::close(pp[0]);
        ::close(pp[1]);
    }

    // CP.52: a task's I/O with a lock_guard held is refused even when the
    // descriptor is ready (it is a suspension point whether or not it
    // waits), naming the lock.
    {
        int sp[2];
        CHECK(nb_socketpair(sp));
        CHECK(::send(sp[1], "r", 1, 0) == 1);
        std::mutex sm;
        auto p = coframe::spawn(rt, [&sm, fd = sp[0]]() -> coframe::task<std::string> {
            char c;
            std::string what;
            try {
                coframe::lock_guard g(sm);
                (void)co_await coframe::recv_some(fd, &c, 1);
            } catch (const coframe::error &e) {
                if (e.code() == coframe::errc::lock_held)
                    what = e.what();
            }
            // The byte is still there (a deadline: not if the first call took it).
            const auto deadline = coframe::clock::now() + 2s;
            co_return what + (co_await coframe::recv_some(fd, &c, 1, deadline) == 1 ? "; then read" : "");
        });
        std::string what = p.get();
        CHECK(has(what, "coframe::recv_some: suspends while holding std::mutex taken at ") && has(what, "; then read"));
        ::close(sp[0]);
        ::close(sp[1]);
    }

    // The stackful calls: a stackful server (accept with the peer's address,
    // recv_some, send), a plain thread's client (the calls block there), a
    // deadline, end of file, and the calls refused in a task.
    {
        sockaddr_in addr{};
        coframe::unique_fd listener = loopback_socket(addr, true);
        auto server = coframe::spawn(rt, [lfd = listener.get()] {
            sockaddr_in peer{};
            socklen_t plen = sizeof peer;
            coframe::unique_fd c = coframe::this_coro::accept(lfd, coframe::clock::now() + 10s,
                                                               reinterpret_cast<sockaddr *>(&peer), &plen);
            long total = peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK) ? 0 : -1000000;
            char buf[512];
            while (const std::size_t n = coframe::this_coro::recv_some(c.get(), buf, sizeof buf)) {
                coframe::this_coro::send(c.get(), buf, n);
                total += static_cast<long>(n);
            }
            return total;
        });
        coframe::unique_fd fd = tcp_socket();
        coframe::this_coro::connect(fd.get(), sa(addr), sizeof addr, coframe::clock::now() + 10s);
        std::string out(3000, 'q'), in(3000, '\0');
        coframe::this_coro::send(fd.get(), out.data(), out.size());
        coframe::this_coro::recv(fd.get(), in.data(), in.size(), coframe::clock::now() + 10s);
        CHECK(in == out);
        std::size_t done = 99;
        CHECK_THROWS(coframe::this_coro::recv(fd.get(), in.data(), 1, coframe::clock::now() + 5ms, &done),
                     coframe::error, e.code() == coframe::errc::timed_out && done == 0);
        fd.reset();
        CHECK(server.get() == 3000);

        int pp[2];
        CHECK(::pipe2(pp, O_NONBLOCK | O_CLOEXEC) == 0);
        auto body = coframe::spawn(rt, [rfd = pp[0]] {
            char buf[8];
            std::size_t done = 0;
            coframe::this_coro::read(rfd, buf, 2);
            const std::string first(buf, 2);
            try {
                coframe::this_coro::read(rfd, buf, sizeof buf, {}, &done);
            } catch (const coframe::error &e) {
                if (e.code() == coframe::errc::io && e.os_error() == EPIPE)
                    return first + std::string(buf, done) + std::to_string(done) +
                           std::to_string(coframe::this_coro::read_some(rfd, buf, sizeof buf));
            }
            return std::string("no EPIPE");
        });
        coframe::this_coro::write(pp[1], "hi", 2); // on this thread
        std::this_thread::sleep_for(2ms);
        coframe::this_coro::write(pp[1], "!!!", 3);
        ::close(pp[1]);
        CHECK(body.get() == "hi!!!30");
        ::close(pp[0]);

        auto misuse = coframe::spawn(rt, []() -> coframe::task<int> {
            char c = 0;
            int refused = 0;
            // The C calls would answer CORO_ESTATE too; the message says
            // what to write instead.
            const auto state = [](const coframe::error &e) {
                return e.code() == coframe::errc::state && has(e.what(), "in a task: co_await coframe::");
            };
            try {
                coframe::this_coro::recv(0, &c, 1);
            } catch (const coframe::error &e) {
                refused += state(e);
            }
            try {
                (void)coframe::this_coro::accept(0);
            } catch (const coframe::error &e) {
                refused += state(e);
            }
            try {
                coframe::this_coro::write(1, &c, 1);
            } catch (const coframe::error &e) {
                refused += state(e);
            }
            co_return refused;
        });
        CHECK(misuse.get() == 3);
    }

    // Cancel of a task blocked in recv (3 of its 10 bytes came): its frame
    // is destroyed on this thread, the locals of both tasks of its
    // co_await chain destroyed once; bytes that come later wake nothing.
    {
        int sp[2];
        CHECK(nb_socketpair(sp));
        io_dtors = 0;
        io_parked = 0;
        auto t = coframe::spawn(rt, [](int fd) -> coframe::task<std::size_t> {
            Tracked outer(io_dtors);
            co_return co_await parked_recv(fd);
        }, sp[0]);
        CHECK(wait_until([] { return io_parked == 1; }));
        CHECK(::send(sp[1], "abc", 3, 0) == 3);
        std::this_thread::sleep_for(2ms);
        CHECK(io_dtors == 0);
        t.cancel();
        CHECK(wait_until([] { return io_dtors == 2; }));
        CHECK(::send(sp[1], "defghijklm", 10, 0) == 10);
        std::this_thread::sleep_for(5ms);
        CHECK(io_dtors == 2);
        ::close(sp[0]);
        ::close(sp[1]);
    }
}

struct Group {
    const char *name;
    std::function<void(coframe::runtime &)> run;
};

} // namespace

int main(int argc, char **argv)
{
    const std::uint64_t frames = coro_live_frames();
    std::vector<Group> groups = {
        { "errors", test_errors },
        { "runtime", [](coframe::runtime &) { test_runtime(); } },
        { "values", test_values },
        { "unwind", test_unwind },
        { "fiasco", test_fiasco },
        { "ref", test_ref },
        { "token", test_token },
        { "detach", test_detach },
        { "mutex", test_mutex },
        { "channel", test_channel },
        { "lockheld", test_lockheld },
        { "tasks", test_tasks },
        { "io", test_io },
    };
    {
        coframe::runtime rt(2);
        for (auto &g : groups) {
            bool wanted = argc < 2;
            for (int i = 1; i < argc; i++)
                wanted |= std::strcmp(argv[i], g.name) == 0;
            if (!wanted)
                continue;
            try {
                g.run(rt);
            } catch (const std::exception &e) {
                failed++;
                std::fprintf(stderr, "hpp_host: group %s threw: %s\n", g.name, e.what());
            }
        }
    }
    CHECK(wait_until([&] { return coro_live_frames() == frames; }));
    std::printf("hpp_host: %d passed, %d failed\n", passed.load(), failed.load());
    return failed == 0 ? 0 : 1;
}
