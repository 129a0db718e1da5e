/*
 * poll_race_tasks.cpp: poll_race.c's event-vs-cancel race (DESIGN.md
 * section 1, with a real epoll event) with C++20 tasks of <coframe.hpp>,
 * which run as foreign frames.
 *
 * A batch of K tasks each holds RAII locals (a Counted: its destructor
 * counts, per task, and owns a heap block, so a missed destructor is a leak
 * under ASan and a second one a double free) and a move-only by-value
 * argument (a Ticket, counted when its live copy dies), and does
 * co_await coframe::readable(fd) on its own socketpair. Then, for each task
 * in turn, two threads are released together:
 *
 *   thread A  writes one byte to the other end of the pair, so the task's
 *             worker gets an epoll event and resumes the task;
 *   thread B  cancels the task through its promise (promise::cancel),
 *             unless it has already woken (a "cancel it if it is not done
 *             yet" timeout).
 *
 * A and B walk the batch in lock step, and B first waits a random 0..2D ns
 * (yielding the CPU meanwhile), D adapting from batch to batch so that
 * about half the tasks wake first (poll_race.c's jitter; `jitter 0` turns
 * it off). Odd batches are nested: the spawned root task co_awaits a child
 * task<int>, which holds its own Counted and does the wait, so cancelling
 * the parked root destroys the child's frame and its locals too.
 *
 * Every task must end one of two ways:
 *
 *   woke       its co_await returned (never early: the byte is there), it
 *              read the byte and returned i + 1, which promise::get() gives
 *              (or B's cancel came after it woke: "cancelled late")
 *   cancelled  its body never continued past the co_await (a cancelled task
 *              is destroyed, not resumed), and the byte is still in the
 *              socket (the main thread drains it)
 *
 * and for each: every Counted local and the Ticket were destroyed exactly
 * once (per-task counters and a batch total), coro_live_frames() comes back
 * to where it started, and after every batch the poller's epoll holds only
 * its waker (every wait, woken or cancelled, was deregistered:
 * /proc/self/fdinfo, through poll_util.h). At the end the process has the
 * descriptors it had before the runtime existed.
 *
 * poll_race.c's CORO_SPAWN_CANCEL_RETURNS and CORO_KEEP batches have no
 * counterpart: <coframe.hpp> spawns tasks in the default mode (a cancelled
 * task is destroyed) and readable() waits without CORO_KEEP.
 *
 * usage: poll_race_tasks [races [batch [jitter]]]
 *        (default 1,000,000 races, batches of 1,000, jitter 1: on)
 */
#include <coframe.hpp>

#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <utility>

#include "check.hpp"
#include "task_race.hpp"
#include "poll_util.h"

namespace {

constexpr int TIMEOUT_MS = 20000;
constexpr long MAX_ANOMALY_REPORTS = 10;

struct Slot {
    std::atomic<int> root_dtors{ 0 };   // the spawned task's Counted
    std::atomic<int> child_dtors{ 0 };  // the child task's Counted (nested batches)
    std::atomic<int> ticket_dtors{ 0 }; // the live Ticket argument
    std::atomic<int> woke{ 0 };         // the co_await readable returned
    std::atomic<int> wait_rc{ 0 };      // the error code if it threw
    std::atomic<int> read_n{ 0 };       // what recv returned (or -errno)
    coframe::promise<int> promise;
    bool cancelled = false; // B consumed the promise with promise::cancel
    int cancel_rc = 0, write_n = 0;

    void reset()
    {
        root_dtors = 0;
        child_dtors = 0;
        ticket_dtors = 0;
        woke = 0;
        wait_rc = 0;
        read_n = 0;
        promise = coframe::promise<int>();
        cancelled = false;
        cancel_rc = write_n = 0;
    }
};

Slot *slots;
int (*pairs)[2]; /* [0]: the task waits on it; [1]: A writes to it */
int k = 1000;
int jitter = 1;
std::atomic<long> delay_ns{ 0 };          // D: B's mean delay before it cancels
std::atomic<int> waiting{ 0 };            // tasks of this batch about to wait
std::atomic<long> batch_dtors{ 0 };       // every counted destructor of this batch
std::atomic<long> a_pos{ 0 }, b_pos{ 0 }; // lock step of A and B
pthread_barrier_t start_line, finish_line;
std::atomic<int> quit{ 0 };
long anomalies;

/* Counted, Ticket: task_race.hpp. */

/* The wait and the read: i + 1 if it woke and read its byte, else -1. */
coframe::task<int> wait_and_read(int i, std::atomic<int> *dtors)
{
    Counted local(*dtors, batch_dtors, i);
    Slot *s = &slots[i];
    waiting.fetch_add(1);
    try {
        co_await coframe::readable(pairs[i][0]);
    } catch (const coframe::error &e) {
        s->wait_rc = e.code().value(); /* reported by the collector */
        co_return -1;
    }
    s->woke.store(1);
    char c;
    ssize_t n = recv(pairs[i][0], &c, 1, 0);
    s->read_n.store(n >= 0 ? static_cast<int>(n) : -errno);
    co_return local.value() + 1;
}

/* Flat batches: the spawned task waits itself. */
coframe::task<int> flat(int i, Ticket ticket)
{
    Counted local(slots[i].root_dtors, batch_dtors, i);
    Slot *s = &slots[i];
    waiting.fetch_add(1);
    try {
        co_await coframe::readable(pairs[i][0]);
    } catch (const coframe::error &e) {
        s->wait_rc = e.code().value();
        co_return -1;
    }
    s->woke.store(1);
    char c;
    ssize_t n = recv(pairs[i][0], &c, 1, 0);
    s->read_n.store(n >= 0 ? static_cast<int>(n) : -errno);
    co_return local.value() + ticket.value() - i + 1; // i + 1
}

/* Nested batches: the child waits; the root awaits it. */
coframe::task<int> nested(int i, Ticket ticket)
{
    Counted local(slots[i].root_dtors, batch_dtors, i);
    int v = co_await wait_and_read(i, &slots[i].child_dtors);
    co_return v + local.value() + ticket.value() - 2 * i; // i + 1
}

void *writer_a(void *)
{
    for (;;) {
        pthread_barrier_wait(&start_line);
        if (quit.load())
            return nullptr;
        for (long i = 0; i < k; i++) {
            lockstep_wait(&b_pos, i);
            slots[i].write_n = static_cast<int>(write(pairs[i][1], "x", 1));
            a_pos.store(i + 1, std::memory_order_release);
        }
        pthread_barrier_wait(&finish_line);
    }
}

void *canceller_b(void *)
{
    std::uint64_t rnd = 88172645463325252ULL;
    for (;;) {
        pthread_barrier_wait(&start_line);
        if (quit.load())
            return nullptr;
        for (long i = 0; i < k; i++) {
            lockstep_wait(&a_pos, i);
            Slot *s = &slots[i];
            long d = delay_ns.load(std::memory_order_relaxed);
            if (d > 0) {
                rnd ^= rnd << 13;
                rnd ^= rnd >> 7;
                rnd ^= rnd << 17;
                std::int64_t until = coro_now() + static_cast<std::int64_t>(rnd % static_cast<std::uint64_t>(2 * d + 1));
                while (coro_now() < until)
                    sched_yield(); /* the poller may need this CPU */
            }
            if (!s->woke.load()) {
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
        std::fprintf(stderr, "poll_race_tasks: task %d: %s (%ld)\n", i, what, value);
}

} // namespace

int main(int argc, char **argv)
{
    check_init("poll_race_tasks");
    long total = argc > 1 ? std::atol(argv[1]) : 1000000;
    if (argc > 2)
        k = std::atoi(argv[2]);
    if (argc > 3)
        jitter = std::atoi(argv[3]);
    if (total < 1 || k < 1) {
        std::fprintf(stderr, "usage: %s [races [batch [jitter]]]\n", argv[0]);
        return 2;
    }
    long fit = (raise_nofile(2L * k + 64) - 64) / 2;
    if (fit < k) {
        std::fprintf(stderr, "poll_race_tasks: the open-file limit allows batches of %ld, not %d\n", fit, k);
        k = static_cast<int>(fit);
    }
    long batches = (total + k - 1) / k;
    auto slot_store = std::make_unique<Slot[]>(static_cast<std::size_t>(k));
    auto pair_store = std::make_unique<int[][2]>(static_cast<std::size_t>(k));
    slots = slot_store.get();
    pairs = pair_store.get();

    int fds_at_start = count_fds();
    for (int i = 0; i < k; i++)
        if (!CHECK(nb_socketpair(pairs[i]) == 0))
            return check_summary();
    std::uint64_t frames_at_start = coro_live_frames();
    epoll_snapshot_t eps;
    epoll_snapshot(&eps);

    long races = 0, woke = 0, cancel_won = 0, cancel_late = 0, awaited = 0;
    long delay_sum = 0, batches_run = 0, nested_tasks = 0;
    long dtors_total = 0, dtors_expected = 0, tasks = 0, bad_regs = 0, bad_spawn = 0;
    double elapsed = 0;
    {
        coframe::runtime rt;
        epoll_set_t pollers;
        epoll_find_new(&eps, &pollers);
        int idle_regs = epoll_count(&pollers); /* the waker */
        if (pollers.n <= 0 || idle_regs < 0)
            std::printf("poll_race_tasks: cannot read the poller's registrations; not checking them\n");

        pthread_barrier_init(&start_line, nullptr, 3);
        pthread_barrier_init(&finish_line, nullptr, 3);
        pthread_t ta, tb;
        if (!CHECK(pthread_create(&ta, nullptr, writer_a, nullptr) == 0) ||
            !CHECK(pthread_create(&tb, nullptr, canceller_b, nullptr) == 0))
            return check_summary();

        double t0 = now_sec();
        for (long b = 0; b < batches; b++) {
            for (int i = 0; i < k; i++)
                slots[i].reset();
            waiting = 0;
            batch_dtors = 0;
            a_pos = 0;
            b_pos = 0;
            const bool is_nested = b % 2 == 1;
            int spawned = 0;
            for (; spawned < k; spawned++) {
                try {
                    Ticket ticket(spawned, slots[spawned].ticket_dtors, batch_dtors);
                    slots[spawned].promise = is_nested ? coframe::spawn(rt, nested, spawned, std::move(ticket))
                                                       : coframe::spawn(rt, flat, spawned, std::move(ticket));
                } catch (const std::exception &e) {
                    std::fprintf(stderr, "poll_race_tasks: spawn threw: %s\n", e.what());
                    check_cond_(false, __FILE__, __LINE__, "spawn threw");
                    bad_spawn++;
                    break;
                }
            }
            if (spawned < k)
                break;
            /* Every task registered its wait: parked, or about to. */
            WAIT_UNTIL(waiting.load() == k, TIMEOUT_MS);
            if (idle_regs >= 0)
                WAIT_UNTIL(epoll_count(&pollers) == idle_regs + k, TIMEOUT_MS);
            if (!CHECK_EQ(waiting.load(), k)) {
                std::fprintf(stderr, "poll_race_tasks: batch %ld: %d of %d tasks waiting; stopping\n", b,
                             waiting.load(), k);
                break;
            }
            tasks += k;
            nested_tasks += is_nested ? k : 0;
            const long per_task = is_nested ? 3 : 2; // Counted locals + the Ticket
            dtors_expected += per_task * k;

            pthread_barrier_wait(&start_line); /* A and B race through the batch */
            pthread_barrier_wait(&finish_line);
            races += k;

            /* Woken tasks finish on the workers: wait for every destructor. */
            WAIT_UNTIL(batch_dtors.load() >= per_task * k, TIMEOUT_MS);
            if (!CHECK_EQ(batch_dtors.load(), per_task * k))
                std::fprintf(stderr, "poll_race_tasks: batch %ld: %ld destructors ran for %d tasks\n", b,
                             batch_dtors.load(), k);
            long before = anomalies, woke_before = woke;
            for (int i = 0; i < k; i++) {
                Slot *s = &slots[i];
                if (s->root_dtors.load() != 1)
                    anomaly(i, "the task's local was not destroyed exactly once", s->root_dtors.load());
                if (s->child_dtors.load() != (is_nested ? 1 : 0))
                    anomaly(i, "the child task's local was not destroyed exactly once", s->child_dtors.load());
                if (s->ticket_dtors.load() != 1)
                    anomaly(i, "the task's argument was not destroyed exactly once", s->ticket_dtors.load());
                if (s->write_n != 1)
                    anomaly(i, "A's write did not write 1 byte", s->write_n);
                if (s->cancelled && s->cancel_rc != 0)
                    anomaly(i, "promise::cancel threw", s->cancel_rc);
                if (s->wait_rc.load() != 0)
                    anomaly(i, "co_await readable threw", s->wait_rc.load());
                char c;
                ssize_t left = recv(pairs[i][0], &c, 1, 0); /* drain for the next batch */
                if (s->woke.load()) {
                    woke++;
                    if (s->read_n.load() != 1)
                        anomaly(i, "woke, but the byte was not there", s->read_n.load());
                    if (left != -1)
                        anomaly(i, "woke and read, yet a byte was left", static_cast<long>(left));
                    if (s->cancelled) {
                        cancel_late++;
                    } else {
                        try {
                            int v = s->promise.get();
                            if (v != i + 1)
                                anomaly(i, "promise::get gave a wrong result", v);
                        } catch (const std::exception &e) {
                            std::fprintf(stderr, "poll_race_tasks: task %d: get() threw %s\n", i, e.what());
                            anomaly(i, "promise::get threw", 0);
                        }
                        awaited++;
                    }
                } else {
                    cancel_won++;
                    if (!s->cancelled)
                        anomaly(i, "never woke, yet nobody cancelled it", 0);
                    if (left != 1)
                        anomaly(i, "cancelled, yet its byte is gone", static_cast<long>(left));
                }
            }
            dtors_total += batch_dtors.load();
            /* Aim at half woken, half cancelled. */
            delay_sum += delay_ns.load();
            batches_run++;
            if (jitter) {
                long woke_now = woke - woke_before, d = delay_ns.load();
                if (woke_now * 5 < static_cast<long>(k) * 2)
                    d = d + d / 4 + 500; /* under 40% woke: wait longer */
                else if (woke_now * 5 > static_cast<long>(k) * 3)
                    d = d - d / 4; /* over 60% woke: wait less */
                delay_ns.store(d > 200000 ? 200000 : d);
            }
            if (idle_regs >= 0) {
                int regs = epoll_count(&pollers);
                if (regs != idle_regs) {
                    bad_regs++;
                    anomaly(-1, "registrations left in the poller's epoll after the batch", regs - idle_regs);
                }
            }
            WAIT_UNTIL(coro_live_frames() == frames_at_start, TIMEOUT_MS);
            if (!CHECK_EQ(coro_live_frames(), frames_at_start))
                std::fprintf(stderr, "poll_race_tasks: batch %ld: frames leaked\n", b);
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
            std::fprintf(stderr, "poll_race_tasks: shutdown threw: %s\n", e.what());
            check_cond_(false, __FILE__, __LINE__, "shutdown threw");
        }
    }
    for (int i = 0; i < k; i++) {
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
    CHECK_EQ(coro_live_frames(), frames_at_start);
    CHECK_EQ(bad_spawn, 0);
    CHECK_EQ(anomalies, 0);
    CHECK_EQ(bad_regs, 0);
    CHECK_EQ(races, batches * static_cast<long>(k));
    CHECK_EQ(dtors_total, dtors_expected); /* every destructor ran exactly once */
    CHECK_EQ(woke + cancel_won, tasks);
    CHECK_EQ(count_fds(), fds_at_start); /* the runtime's own descriptors too */

    std::printf("poll_race_tasks: %ld races in %.2f s (%.0f races/s) on %d-task batches, %ld of the tasks nested, "
                "%s\n",
                races, elapsed, elapsed > 0 ? static_cast<double>(races) / elapsed : 0.0, k, nested_tasks,
                jitter ? "B's delay adapted to even out the outcomes" : "no delay for B");
    if (jitter)
        std::printf("poll_race_tasks: B's mean delay before cancelling: %.1f us over all batches, %.1f us at the "
                    "end\n",
                    batches_run ? static_cast<double>(delay_sum) / static_cast<double>(batches_run) / 1e3 : 0.0,
                    static_cast<double>(delay_ns.load()) / 1e3);
    std::printf("poll_race_tasks: woke %ld (then cancelled late %ld, awaited %ld), cancel won %ld\n", woke,
                cancel_late, awaited, cancel_won);
    std::printf("poll_race_tasks: %ld destructors for %ld tasks%s\n", dtors_total, tasks,
                anomalies == 0 && dtors_total == dtors_expected ? ": every destructor ran exactly once" : "");
    return check_summary();
}
