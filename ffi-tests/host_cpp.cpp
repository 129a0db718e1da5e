/*
 * host_cpp.cpp: coframe's C ABI from C++17 (g++ -std=c++17 -Wall -Wextra
 * -pedantic -Werror), with what C++ code brings: destructors, exceptions,
 * lambdas, std::thread.
 *
 *   raii      with CORO_SPAWN_CANCEL_RETURNS, coro_cancel_suspend makes the
 *             pending coro_suspend return CORO_ECANCELED, the body returns
 *             and the destructors of its locals run, once
 *   abandon   in the default mode a cancelled body never runs again: its
 *             coro_defer runs, the destructors of its locals do not (the
 *             reason to use CANCEL_RETURNS, or defers, for C++ cleanup)
 *   lockheld  CP.52: while an RAII guard has noted a blocking lock,
 *             coro_suspend returns CORO_ELOCKHELD without suspending; once
 *             the guard is gone it suspends
 *   throw     an exception thrown and caught inside a coroutine's entry
 *             unwinds its own stack and lands in its catch
 *   thread    a std::thread (not a worker) resumes 100 suspensions of
 *             each of 8 coroutines; every resume answers 0
 *
 * Ends with "host_cpp: N passed, N failed"; exits 1 on any failure.
 */
#include <coframe.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

std::atomic<int> passed{0}, failed{0};

void check(bool ok, const char *what, int line)
{
    if (ok) {
        passed++;
    } else {
        failed++;
        std::fprintf(stderr, "host_cpp.cpp:%d: CHECK failed: %s\n", line, what);
    }
}
#define CHECK(cond) check((cond), #cond, __LINE__)

void check_rc(int rc, int want, const char *what, int line)
{
    if (rc == want) {
        passed++;
    } else {
        failed++;
        std::fprintf(stderr, "host_cpp.cpp:%d: CHECK failed: %s: %s (%d), want %s (%d)\n", line, what,
                     coro_strerror(rc), rc, coro_strerror(want), want);
    }
}
#define CHECK_RC(expr, want) check_rc((expr), (want), #expr, __LINE__)

/* The token of the last suspension that parked through `park`. */
std::atomic<uint64_t> parked{0};

void park(coro_token t, void *) { parked.store(t.id); }

/* Waits for a parked token (10 s at most); 0 if none came. */
coro_token take_parked()
{
    int64_t deadline = coro_now() + 10'000'000'000LL;
    while (coro_now() < deadline) {
        uint64_t id = parked.exchange(0);
        if (id != 0)
            return coro_token{ id };
        std::this_thread::yield();
    }
    return coro_token{ 0 };
}

std::atomic<int> destructed{0};
std::atomic<int> continued{0};
std::atomic<int> defers{0};
std::atomic<int> seen_rc{1};

struct Tracked {
    ~Tracked() { destructed++; }
};

/* ------------------------------------------------------------- raii */

void *raii_body(void *)
{
    Tracked local;
    seen_rc = coro_suspend(park, nullptr);
    return nullptr;
}

void test_raii(coro_runtime *rt)
{
    destructed = 0;
    coro_promise p;
    CHECK_RC(coro_spawn(rt, raii_body, nullptr, 0, nullptr, CORO_SPAWN_CANCEL_RETURNS, &p), CORO_OK);
    coro_token t = take_parked();
    CHECK(t.id != 0);
    CHECK_RC(coro_cancel_suspend(t), CORO_OK);
    CHECK_RC(coro_await(p, nullptr), CORO_ECANCELED);
    CHECK(seen_rc == CORO_ECANCELED);
    CHECK(destructed == 1);
}

/* ---------------------------------------------------------- abandon */

void *abandon_body(void *)
{
    Tracked local;
    CHECK_RC(coro_defer([](void *) { defers++; }, nullptr), CORO_OK);
    coro_suspend(park, nullptr);
    continued++;
    return nullptr;
}

void test_abandon(coro_runtime *rt)
{
    destructed = 0;
    defers = 0;
    continued = 0;
    coro_promise p;
    CHECK_RC(coro_spawn(rt, abandon_body, nullptr, 0, nullptr, 0, &p), CORO_OK);
    coro_token t = take_parked();
    CHECK(t.id != 0);
    CHECK_RC(coro_cancel_suspend(t), CORO_OK);
    CHECK_RC(coro_await(p, nullptr), CORO_ECANCELED);
    CHECK(defers == 1);
    CHECK(continued == 0);
    CHECK(destructed == 0);
}

/* --------------------------------------------------------- lockheld */

/* What <coframe.hpp>'s guards will do: note the lock while it is held. */
class NotedLock {
public:
    explicit NotedLock(const char *what) : what_(what) { CHECK_RC(coro_lock_note_acquire(what_), CORO_OK); }
    ~NotedLock() { CHECK_RC(coro_lock_note_release(what_), CORO_OK); }
    NotedLock(const NotedLock &) = delete;
    NotedLock &operator=(const NotedLock &) = delete;

private:
    const char *what_;
};

void *lockheld_body(void *)
{
    {
        NotedLock guard("a std::mutex");
        CHECK_RC(coro_suspend(park, nullptr), CORO_ELOCKHELD);
    }
    CHECK_RC(coro_suspend(park, nullptr), CORO_OK);
    return reinterpret_cast<void *>(uintptr_t{ 5 });
}

void test_lockheld(coro_runtime *rt)
{
    coro_promise p;
    CHECK_RC(coro_spawn(rt, lockheld_body, nullptr, 0, nullptr, 0, &p), CORO_OK);
    coro_token t = take_parked();
    CHECK(t.id != 0); /* only the second suspension parked */
    CHECK_RC(coro_resume(t), CORO_OK);
    void *res = nullptr;
    CHECK_RC(coro_await(p, &res), CORO_OK);
    CHECK(res == reinterpret_cast<void *>(uintptr_t{ 5 }));
}

/* ------------------------------------------------------------ throw */

int deep(int n)
{
    if (n == 0)
        throw std::runtime_error("from the bottom");
    coro_yield();
    return deep(n - 1) + 1;
}

void *throw_body(void *)
{
    try {
        deep(20);
    } catch (const std::runtime_error &e) {
        return reinterpret_cast<void *>(uintptr_t{ 9 });
    }
    return nullptr;
}

void test_throw(coro_runtime *rt)
{
    coro_promise p;
    CHECK_RC(coro_spawn(rt, throw_body, nullptr, 0, nullptr, 0, &p), CORO_OK);
    void *res = nullptr;
    CHECK_RC(coro_await(p, &res), CORO_OK);
    CHECK(res == reinterpret_cast<void *>(uintptr_t{ 9 }));
}

/* ----------------------------------------------------------- thread */

constexpr int kCoroutines = 8;
constexpr int kSuspends = 100;

struct Mailbox {
    std::atomic<int> parked{0};
    std::vector<std::atomic<uint64_t>> tokens;
    Mailbox() : tokens(kCoroutines) {}
};

struct ThreadEnv {
    Mailbox *box;
    int index;
};

void *thread_body(void *envp)
{
    auto *env = static_cast<ThreadEnv *>(envp);
    for (int i = 0; i < kSuspends; i++) {
        int rc = coro_suspend(
            [](coro_token t, void *arg) {
                auto *e = static_cast<ThreadEnv *>(arg);
                e->box->tokens[e->index].store(t.id);
            },
            env);
        if (rc != CORO_OK)
            return nullptr;
    }
    return reinterpret_cast<void *>(uintptr_t{ 1 });
}

void test_thread(coro_runtime *rt)
{
    Mailbox box;
    coro_promise p[kCoroutines];
    for (int i = 0; i < kCoroutines; i++) {
        ThreadEnv env{ &box, i };
        CHECK_RC(coro_spawn(rt, thread_body, &env, sizeof env, nullptr, 0, &p[i]), CORO_OK);
    }
    std::atomic<int> bad{0};
    std::thread resumer([&] {
        int resumed = 0;
        int64_t deadline = coro_now() + 30'000'000'000LL;
        while (resumed < kCoroutines * kSuspends && coro_now() < deadline) {
            for (auto &slot : box.tokens) {
                uint64_t id = slot.exchange(0);
                if (id == 0)
                    continue;
                if (coro_resume(coro_token{ id }) != CORO_OK)
                    bad++;
                resumed++;
            }
        }
        if (resumed != kCoroutines * kSuspends)
            bad++;
    });
    resumer.join();
    CHECK(bad == 0);
    for (auto &one : p) {
        void *res = nullptr;
        CHECK_RC(coro_await(one, &res), CORO_OK);
        CHECK(res == reinterpret_cast<void *>(uintptr_t{ 1 }));
    }
}

} // namespace

int main()
{
    uint64_t frames = coro_live_frames();
    coro_config cfg{ sizeof(coro_config), 2, 0 };
    coro_runtime *rt = nullptr;
    CHECK_RC(coro_runtime_new(&cfg, &rt), CORO_OK);
    if (rt) {
        test_raii(rt);
        test_abandon(rt);
        test_lockheld(rt);
        test_throw(rt);
        test_thread(rt);
        CHECK_RC(coro_runtime_shutdown(rt), CORO_OK);
    }
    CHECK(coro_live_frames() == frames);
    std::printf("host_cpp: %d passed, %d failed\n", passed.load(), failed.load());
    return failed == 0 ? 0 : 1;
}
