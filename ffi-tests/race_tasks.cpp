/*
 * race_tasks.cpp: race.c's race (DESIGN.md section 1) with C++20 tasks of
 * <coframe.hpp>, which run as foreign frames.
 *
 * A "poller" thread A holds the suspend tokens of a batch of K tasks and
 * resumes them, while thread B cancels the same tasks through their
 * promises (promise::cancel). The two walk the batch in lock step (neither
 * gets more than one task ahead of the other), so every task sees a resume
 * and a cancel arrive at nearly the same moment.
 *
 * Each task holds RAII locals (a Counted: its destructor counts, per task,
 * and owns a heap block, so a missed destructor is a leak under ASan and a
 * second one a double free) and a move-only by-value argument (a Ticket,
 * counted when its live copy dies), then suspends with
 * co_await coframe::suspend(...), whose on_suspend gives the token to A.
 * If it is resumed before the cancel takes hold, it marks that it
 * continued and returns i + 1. B cancels a task unless it has already
 * continued (a "cancel if not done yet" timeout); the main thread gets the
 * promises B left alone. Odd batches are nested: the spawned root task
 * co_awaits a child task<int>, which holds its own Counted and does the
 * suspension, so cancelling the parked root destroys the child's frame
 * and its locals too (innermost first).
 *
 * Afterwards, for every task:
 *   - each of its Counted locals (the root's, and the child's in nested
 *     batches) and its Ticket was destroyed exactly once (per-task counters
 *     and a batch total), whether it finished or was cancelled
 *   - token::resume and promise::cancel did not throw (resuming a cancelled
 *     task's token only drops it)
 *   - a task that B left alone: promise::get() gives i + 1
 *   - a task that never continued: B cancelled it ("cancel won")
 * and coro_live_frames() is back to where it started: every frame freed.
 *
 * B's cancel consumes the promise, as race.c's coro_cancel_async does, so a
 * cancelled task's get() is not asked; hpp_host.cpp checks that get()
 * throws canceled for a task cancelled through its token.
 *
 * usage: race_tasks [races [batch]]   (default 1,000,000 races, batches of 1,000)
 */
#include <coframe.hpp>

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>

#include "check.hpp"
#include "task_race.hpp"

namespace {

constexpr int TIMEOUT_MS = 20000;
constexpr long MAX_ANOMALY_REPORTS = 10;

struct Slot {
    std::atomic<std::uint64_t> token{ 0 }; // written by on_suspend
    std::atomic<int> root_dtors{ 0 };      // the spawned task's Counted
    std::atomic<int> child_dtors{ 0 };     // the child task's Counted (nested batches)
    std::atomic<int> ticket_dtors{ 0 };    // the live Ticket argument
    std::atomic<int> continued{ 0 };       // the body ran past its co_await suspend
    coframe::promise<int> promise;
    bool cancelled = false; // B consumed the promise with promise::cancel
    int resume_rc = 0, cancel_rc = 0;

    void reset()
    {
        token = 0;
        root_dtors = 0;
        child_dtors = 0;
        ticket_dtors = 0;
        continued = 0;
        promise = coframe::promise<int>();
        cancelled = false;
        resume_rc = cancel_rc = 0;
    }
};

Slot *slots;
int k = 1000;
std::atomic<int> suspended{ 0 };        // in the current batch
std::atomic<long> batch_dtors{ 0 };     // every counted destructor of the current batch
std::atomic<long> a_pos{ 0 }, b_pos{ 0 }; // lock step of A and B
pthread_barrier_t start_line, finish_line;
std::atomic<int> quit{ 0 };
long anomalies;

/*
 * Bumped (release) by main after it resets the slots and before it spawns a
 * batch; read (acquire) by on_suspend before it writes a slot: race.c's
 * batch_epoch, which makes that order visible to ThreadSanitizer in the
 * test's own code.
 */
std::atomic<long> batch_epoch{ 0 };

/* Counted, Ticket: task_race.hpp. */

/* The suspension: on_suspend hands the token to the poller A. */
auto hand_token_to_poller(Slot *s)
{
    return coframe::suspend([s](coframe::token t) {
        (void)batch_epoch.load(std::memory_order_acquire);
        s->token.store(t.release().id);
        suspended.fetch_add(1);
    });
}

/* Flat batches: the spawned task suspends itself. */
coframe::task<int> flat(int i, Ticket ticket)
{
    Counted local(slots[i].root_dtors, batch_dtors, i);
    co_await hand_token_to_poller(&slots[i]);
    slots[i].continued.store(1);
    co_return local.value() + ticket.value() - i + 1; // i + 1
}

/* Nested batches: the child suspends; the root awaits it. */
coframe::task<int> child(int i)
{
    Counted local(slots[i].child_dtors, batch_dtors, i);
    co_await hand_token_to_poller(&slots[i]);
    slots[i].continued.store(1);
    co_return local.value() + 1;
}

coframe::task<int> nested(int i, Ticket ticket)
{
    Counted local(slots[i].root_dtors, batch_dtors, i);
    int v = co_await child(i);
    co_return v + local.value() + ticket.value() - 2 * i; // i + 1
}

void *poller_a(void *)
{
    for (;;) {
        pthread_barrier_wait(&start_line);
        if (quit.load())
            return nullptr;
        for (long i = 0; i < k; i++) {
            lockstep_wait(&b_pos, i);
            coframe::token t(coro_token{ slots[i].token.load() });
            try {
                std::move(t).resume();
            } catch (const coframe::error &e) {
                slots[i].resume_rc = e.code().value();
            }
            a_pos.store(i + 1, std::memory_order_release);
        }
        pthread_barrier_wait(&finish_line);
    }
}

void *canceller_b(void *)
{
    for (;;) {
        pthread_barrier_wait(&start_line);
        if (quit.load())
            return nullptr;
        for (long i = 0; i < k; i++) {
            lockstep_wait(&a_pos, i);
            Slot *s = &slots[i];
            if (!s->continued.load()) {
                try {
                    s->promise.cancel();
                } catch (const coframe::error &e) {
                    s->cancel_rc = e.code().value();
                }
                s->cancelled = true;
            }
            b_pos.store(i + 1, std::memory_order_release);
        }
        pthread_barrier_wait(&finish_line);
    }
}

void anomaly(int i, const char *what, long value)
{
    if (anomalies++ < MAX_ANOMALY_REPORTS)
        std::fprintf(stderr, "race_tasks: task %d: %s (%ld)\n", i, what, value);
}

} // namespace

int main(int argc, char **argv)
{
    check_init("race_tasks");
    long total = argc > 1 ? std::atol(argv[1]) : 1000000;
    if (argc > 2)
        k = std::atoi(argv[2]);
    if (total < 1 || k < 1) {
        std::fprintf(stderr, "usage: %s [races [batch]]\n", argv[0]);
        return 2;
    }
    long batches = (total + k - 1) / k;
    auto slot_store = std::make_unique<Slot[]>(static_cast<std::size_t>(k));
    slots = slot_store.get();

    std::uint64_t frames_at_start = coro_live_frames();
    long races = 0, resume_won = 0, cancel_won = 0, cancel_late = 0, awaited = 0;
    long dtors_total = 0, dtors_expected = 0, tasks = 0, nested_tasks = 0, bad_spawn = 0;
    double elapsed = 0;
    {
        coframe::runtime rt;
        pthread_barrier_init(&start_line, nullptr, 3);
        pthread_barrier_init(&finish_line, nullptr, 3);
        pthread_t ta, tb;
        if (!CHECK(pthread_create(&ta, nullptr, poller_a, nullptr) == 0) ||
            !CHECK(pthread_create(&tb, nullptr, canceller_b, nullptr) == 0))
            return check_summary();

        double t0 = now_sec();
        for (long b = 0; b < batches && !quit.load(); b++) {
            for (int i = 0; i < k; i++)
                slots[i].reset();
            suspended = 0;
            batch_dtors = 0;
            a_pos = 0;
            b_pos = 0;
            batch_epoch.fetch_add(1, std::memory_order_release);
            const bool is_nested = b % 2 == 1;
            int spawned = 0;
            for (; spawned < k; spawned++) {
                try {
                    Ticket ticket(spawned, slots[spawned].ticket_dtors, batch_dtors);
                    slots[spawned].promise = is_nested ? coframe::spawn(rt, nested, spawned, std::move(ticket))
                                                       : coframe::spawn(rt, flat, spawned, std::move(ticket));
                } catch (const std::exception &e) {
                    std::fprintf(stderr, "race_tasks: spawn threw: %s\n", e.what());
                    check_cond_(false, __FILE__, __LINE__, "spawn threw");
                    bad_spawn++;
                    break;
                }
            }
            WAIT_UNTIL(suspended.load() == spawned, TIMEOUT_MS);
            if (spawned < k || !CHECK_EQ(suspended.load(), k)) {
                std::fprintf(stderr, "race_tasks: batch %ld: %d of %d tasks suspended; stopping\n", b,
                             suspended.load(), k);
                break;
            }
            tasks += k;
            nested_tasks += is_nested ? k : 0;
            const long per_task = is_nested ? 3 : 2; // Counted locals + the Ticket
            dtors_expected += per_task * k;

            pthread_barrier_wait(&start_line); /* A and B race through the batch */
            pthread_barrier_wait(&finish_line);
            races += k;

            /* Resumed tasks finish on the workers: wait for every destructor. */
            WAIT_UNTIL(batch_dtors.load() >= per_task * k, TIMEOUT_MS);
            if (!CHECK_EQ(batch_dtors.load(), per_task * k))
                std::fprintf(stderr, "race_tasks: batch %ld: %ld destructors ran for %d tasks\n", b,
                             batch_dtors.load(), k);
            long before = anomalies;
            for (int i = 0; i < k; i++) {
                Slot *s = &slots[i];
                if (s->root_dtors.load() != 1)
                    anomaly(i, "the task's local was not destroyed exactly once", s->root_dtors.load());
                if (s->child_dtors.load() != (is_nested ? 1 : 0))
                    anomaly(i, "the child task's local was not destroyed exactly once", s->child_dtors.load());
                if (s->ticket_dtors.load() != 1)
                    anomaly(i, "the task's argument was not destroyed exactly once", s->ticket_dtors.load());
                if (s->resume_rc != 0)
                    anomaly(i, "token::resume threw", s->resume_rc);
                if (s->cancelled && s->cancel_rc != 0)
                    anomaly(i, "promise::cancel threw", s->cancel_rc);
                if (s->continued.load()) {
                    resume_won++;
                    if (s->cancelled) {
                        cancel_late++;
                    } else {
                        try {
                            int v = s->promise.get();
                            if (v != i + 1)
                                anomaly(i, "promise::get gave a wrong result", v);
                        } catch (const std::exception &e) {
                            std::fprintf(stderr, "race_tasks: task %d: get() threw %s\n", i, e.what());
                            anomaly(i, "promise::get threw", 0);
                        }
                        awaited++;
                    }
                } else {
                    cancel_won++;
                    if (!s->cancelled)
                        anomaly(i, "never continued, yet nobody cancelled it", 0);
                }
            }
            dtors_total += batch_dtors.load();
            WAIT_UNTIL(coro_live_frames() == frames_at_start, TIMEOUT_MS);
            if (!CHECK_EQ(coro_live_frames(), frames_at_start))
                std::fprintf(stderr, "race_tasks: batch %ld: frames leaked\n", b);
            if (anomalies != before || check_failures() > 0)
                break; /* the first broken batch tells the story */
        }
        elapsed = now_sec() - t0;

        quit = 1;
        pthread_barrier_wait(&start_line);
        pthread_join(ta, nullptr);
        pthread_join(tb, nullptr);
        pthread_barrier_destroy(&start_line);
        pthread_barrier_destroy(&finish_line);
        for (int i = 0; i < k; i++)
            slots[i].reset(); /* a batch that broke off may hold promises */
        try {
            rt.shutdown();
        } catch (const std::exception &e) {
            std::fprintf(stderr, "race_tasks: shutdown threw: %s\n", e.what());
            check_cond_(false, __FILE__, __LINE__, "shutdown threw");
        }
    }
    CHECK_EQ(coro_live_frames(), frames_at_start);
    CHECK_EQ(bad_spawn, 0);
    CHECK_EQ(anomalies, 0);
    CHECK_EQ(races, batches * static_cast<long>(k));
    CHECK_EQ(dtors_total, dtors_expected); /* every destructor ran exactly once */
    CHECK_EQ(resume_won + cancel_won, tasks);

    std::printf("race_tasks: %ld races in %.2f s (%.0f races/s) on %d-task batches, %ld of the tasks nested\n",
                races, elapsed, elapsed > 0 ? static_cast<double>(races) / elapsed : 0.0, k, nested_tasks);
    std::printf("race_tasks: resume won %ld (then cancelled late %ld, awaited %ld), cancel won %ld\n", resume_won,
                cancel_late, awaited, cancel_won);
    std::printf("race_tasks: %ld destructors for %ld tasks%s\n", dtors_total, tasks,
                anomalies == 0 && dtors_total == dtors_expected ? ": every destructor ran exactly once" : "");
    return check_summary();
}
