/*
 * echo_tasks.cpp: the echo server of c-examples/, written with C++20
 * coroutines: coframe::task<> running on coframe's workers and poller
 * (<coframe.hpp>, docs/CPP.md).
 *
 *   the accept loop   a task: co_await coframe::accept(listener), which
 *                     gives a coframe::unique_fd. One task per connection:
 *                     spawn(rt, handle_connection, connection, srv).
 *   a connection      a task: co_await coframe::recv_some(fd, ...), then
 *                     co_await coframe::send(fd, ...) of what came (the
 *                     blocking-style I/O of <coframe.hpp>: each tries the
 *                     system call and waits only when it would block). Its
 *                     parameter, a `connection`, owns the socket: its
 *                     destructor closes it however the task ends (the peer
 *                     left, an error, or a cancel, which destroys the frame
 *                     where it is suspended, or before it first ran).
 *   the shutdown      cancelling the accept loop's promise destroys its
 *                     frame: its listener closes and a guard in it cancels
 *                     every live connection task (their promises are kept
 *                     in a connection_set), whose frames are destroyed in
 *                     turn, destructors included. Shutting the runtime down
 *                     instead does the same.
 *
 * The demo (main): the server on a runtime of 2 workers, client tasks on a
 * second runtime (1 worker), each making an exact number of round trips
 * over loopback TCP. A tenth more clients then leave (their connection
 * tasks end by themselves and detach their promises); the others stay, and
 * the accept loop's promise is cancelled with all their connections open.
 * Then a second, smaller server is ended by its runtime's shutdown
 * instead. The destructors are counted; the open descriptors
 * (/proc/self/fd) and coro_live_frames() must be back to what they were.
 *
 * usage: echo_tasks [connections [round_trips]]     (default 200, 500)
 * Exits non-zero if a round trip, a destructor, a descriptor or a frame is
 * missing, or anything failed.
 */
#include <coframe.hpp>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using coframe::task;

namespace {

constexpr std::size_t msg_size = 64;
constexpr auto io_timeout = 10s; // the clients' waits: a server that stops answering

[[noreturn]] void throw_errno(const char *what)
{
    throw std::system_error(errno, std::generic_category(), what);
}

using coframe::unique_fd;

// The peer left: end of file before all bytes (EPIPE), or a reset.
bool peer_gone(const coframe::error &e) noexcept
{
    return e.code() == coframe::errc::io && (e.os_error() == ECONNRESET || e.os_error() == EPIPE);
}

// ---------------------------------------------------------------------
// The server

struct server_stats {
    std::atomic<long> accepted{ 0 };
    std::atomic<long> open{ 0 };             // connection sockets open now
    std::atomic<long> closed_ended{ 0 };     // closed by a task that ended by itself
    std::atomic<long> closed_cancelled{ 0 }; // closed by the frame's destruction (a cancel)
    std::atomic<long> cancelled{ 0 };        // connection tasks cancelled by the accept loop's end
    std::atomic<long> bytes{ 0 };
    std::atomic<long> errors{ 0 };
    std::atomic<long> emfile{ 0 };           // accept out of descriptors (then backed off)
};

// A server connection: the connection task's parameter, so its frame owns
// the socket from the moment the task exists. The destructor closes it and
// counts how the task ended: a cancelled task's frame is destroyed wherever
// it is suspended (or before its first run), and this runs then.
class connection {
public:
    connection(unique_fd fd, server_stats *st) noexcept : fd_(std::move(fd)), st_(st) { st_->open++; }
    connection(connection &&) noexcept = default;
    connection &operator=(connection &&) = delete;
    ~connection()
    {
        if (!fd_)
            return; // moved from
        fd_.reset();
        st_->open--;
        (ended_ ? st_->closed_ended : st_->closed_cancelled)++;
    }
    int fd() const noexcept { return fd_.get(); }
    void ended() noexcept { ended_ = true; }

private:
    unique_fd fd_;
    server_stats *st_;
    bool ended_ = false;
};

// The live connection tasks' promises, by coroutine id, so that the server
// can cancel them all. A connection that ends by itself takes its promise
// out and detaches it (its frame is freed once it has finished);
// cancel_all() cancels the others. Called from tasks on any worker: the
// std::mutex is held for a few instructions, never across a co_await, and
// coframe::lock_guard tells coframe so: a co_await while it is held would
// throw errc::lock_held, naming this line (CP.52).
class connection_set {
public:
    void add(coframe::promise<void> p)
    {
        {
            coframe::lock_guard lk(mu_);
            if (ended_early_.erase(p.id()) == 0) {
                const auto id = p.id();
                live_.emplace(id, std::move(p));
                return;
            }
        }
        p.detach(); // it ended before the accept loop got here
    }

    // In a connection task that ended by itself.
    void ended(std::uint64_t id)
    {
        coframe::promise<void> p;
        {
            coframe::lock_guard lk(mu_);
            auto it = live_.find(id);
            if (it == live_.end()) {
                if (!closing_)
                    ended_early_.insert(id);
                return;
            }
            p = std::move(it->second);
            live_.erase(it);
        }
        p.detach();
    }

    // Cancels every live connection; returns how many. Outside the lock: a
    // suspended task is destroyed right here, on this thread.
    long cancel_all() noexcept
    {
        std::unordered_map<std::uint64_t, coframe::promise<void>> live;
        {
            coframe::lock_guard lk(mu_);
            closing_ = true;
            live.swap(live_);
            ended_early_.clear();
        }
        long n = 0;
        for (auto &[id, p] : live) {
            try {
                p.cancel();
                n++;
            } catch (const coframe::error &) {
                // a runtime shutting down cancelled it first
            }
        }
        return n;
    }

    std::size_t size()
    {
        std::lock_guard lk(mu_);
        return live_.size() + ended_early_.size();
    }

private:
    std::mutex mu_;
    std::unordered_map<std::uint64_t, coframe::promise<void>> live_;
    std::unordered_set<std::uint64_t> ended_early_; // ended before add()
    bool closing_ = false;
};

// Outlives the runtime that serves it (its tasks point to it).
struct server {
    coframe::runtime *rt = nullptr;
    server_stats stats;
    connection_set conns;
};

// One connection: echoes until the peer leaves. The socket is closed by
// `conn`'s destructor when the frame goes, cancelled or not.
task<> handle_connection(connection conn, server *srv)
{
    const std::uint64_t id = coframe::this_coro::id();
    char buf[4096];
    try {
        // 0: end of file, the peer left.
        while (const std::size_t n = co_await coframe::recv_some(conn.fd(), buf, sizeof buf)) {
            co_await coframe::send(conn.fd(), buf, n);
            srv->stats.bytes += static_cast<long>(n);
        }
    } catch (const coframe::error &e) {
        if (!peer_gone(e)) {
            std::fprintf(stderr, "echo_tasks: connection %llu: %s\n", static_cast<unsigned long long>(id), e.what());
            srv->stats.errors++;
        }
    }
    conn.ended();
    srv->conns.ended(id);
}

task<> accept_loop(unique_fd listener, server *srv)
{
    // However this frame ends (in practice: destroyed by a cancel), the
    // connections go with it.
    struct cancel_connections {
        server *srv;
        ~cancel_connections() { srv->stats.cancelled += srv->conns.cancel_all(); }
    } on_exit{ srv };

    for (;;) {
        bool out_of_fds = false;
        try {
            unique_fd fd = co_await coframe::accept(listener.get()); // non-blocking, close-on-exec
            int one = 1;
            (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            connection conn(std::move(fd), &srv->stats);
            srv->stats.accepted++;
            srv->conns.add(coframe::spawn(*srv->rt, handle_connection, std::move(conn), srv));
        } catch (const coframe::error &e) {
            if (e.code() != coframe::errc::io || (e.os_error() != EMFILE && e.os_error() != ENFILE))
                throw;
            srv->stats.emfile++;
            out_of_fds = true;
        }
        if (out_of_fds)
            co_await coframe::sleep_for(5ms); // the connections it has are served meanwhile
    }
}

// A non-blocking listener on 127.0.0.1, port chosen by the kernel.
unique_fd listen_on_loopback(sockaddr_in &addr)
{
    unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd)
        throw_errno("socket");
    addr = sockaddr_in{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 || ::listen(fd.get(), 1024) != 0 ||
        ::getsockname(fd.get(), reinterpret_cast<sockaddr *>(&addr), &len) != 0)
        throw_errno("bind/listen");
    return fd;
}

// ---------------------------------------------------------------------
// The clients

struct client_stats {
    std::atomic<long> connected{ 0 };
    std::atomic<long> done{ 0 };      // made every round trip
    std::atomic<long> failed{ 0 };
    std::atomic<long> saw_close{ 0 }; // then saw the server close the connection
};

// Connects, makes `round_trips` exact round trips of msg_size bytes (each
// echo checked byte for byte), then leaves (closes its socket) if `leave`,
// else waits for the server to close the connection. Returns the round
// trips made.
task<long> client(sockaddr_in addr, int id, long round_trips, bool leave, client_stats *st)
{
    try {
        unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        if (!fd)
            throw_errno("socket");
        co_await coframe::connect(fd.get(), reinterpret_cast<const sockaddr *>(&addr), sizeof addr,
                                  coframe::clock::now() + io_timeout);
        int one = 1;
        (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        st->connected++;

        char out[msg_size], in[msg_size];
        long made = 0;
        for (; made < round_trips; made++) {
            std::memset(out, 'a' + static_cast<int>(made % 26), sizeof out);
            std::memcpy(out, &id, sizeof id);
            std::memcpy(out + sizeof id, &made, sizeof made);
            // All the bytes each way, or coframe::error (EPIPE: the
            // server closed the connection).
            const auto deadline = coframe::clock::now() + io_timeout;
            co_await coframe::send(fd.get(), out, sizeof out, deadline);
            co_await coframe::recv(fd.get(), in, sizeof in, deadline);
            if (std::memcmp(in, out, sizeof out) != 0)
                throw std::runtime_error("the echo differs from the request");
        }
        st->done++;
        if (leave)
            co_return made;

        // The server's end: end of file (or a reset) at the next read.
        bool closed = false;
        try {
            closed = co_await coframe::recv_some(fd.get(), in, sizeof in, coframe::clock::now() + io_timeout) == 0;
        } catch (const coframe::error &e) {
            if (!peer_gone(e))
                throw;
            closed = true;
        }
        if (!closed)
            throw std::runtime_error("expected the server to close the connection");
        st->saw_close++;
        co_return made;
    } catch (...) {
        st->failed++;
        throw;
    }
}

// ---------------------------------------------------------------------
// The demo

int failures = 0;

void expect(bool ok, const char *what)
{
    if (!ok) {
        std::printf("  !! unexpected: %s\n", what);
        failures++;
    }
}

double now_s() { return std::chrono::duration<double>(coframe::clock::now().time_since_epoch()).count(); }

// Waits (polling) until done() or `limit` passes.
template <class F>
void wait_until(F done, std::chrono::milliseconds limit = 10s)
{
    const auto end = coframe::clock::now() + limit;
    while (!done() && coframe::clock::now() < end)
        std::this_thread::sleep_for(1ms);
}

// Descriptors open in this process (not counting the listing's own).
int count_fds()
{
    DIR *d = ::opendir("/proc/self/fd");
    if (d == nullptr)
        return -1;
    int n = 0;
    while (const dirent *e = ::readdir(d))
        if (e->d_name[0] != '.')
            n++;
    ::closedir(d);
    return n - 1;
}

enum class ending { cancel, shutdown };

// One server; `connections` clients that stay and `leavers` that leave,
// each making `round_trips`; then the server ended by `how` while the
// stayers' connections are open.
void run(int connections, int leavers, long round_trips, ending how)
{
    server srv; // outlives both runtimes: the tasks point to it
    client_stats cs;
    coframe::runtime srv_rt(2), cli_rt(1);
    srv.rt = &srv_rt;

    sockaddr_in addr{};
    auto listener = listen_on_loopback(addr);
    const int lfd = listener.get();
    auto accept = coframe::spawn(srv_rt, accept_loop, std::move(listener), &srv);
    const bool verbose = how == ending::cancel;
    if (verbose)
        std::printf("task echo server on 127.0.0.1:%d (server runtime: 2 workers): an accept-loop task, one "
                    "task per connection\n",
                    ntohs(addr.sin_port));

    const int clients_n = connections + leavers;
    const double t0 = now_s();
    std::vector<coframe::promise<long>> clients;
    for (int i = 0; i < clients_n; i++)
        clients.push_back(coframe::spawn(cli_rt, client, addr, i, round_trips, i < leavers, &cs));
    wait_until([&] { return cs.done + cs.failed >= clients_n; }, 20s);
    const double secs = now_s() - t0;
    const long expected = clients_n * round_trips;
    // The leavers' connection tasks end by themselves (EOF).
    wait_until([&] { return srv.stats.closed_ended >= leavers; });
    // A connection task counts its bytes once its send returned; the
    // client may have read them and finished before that task runs again.
    wait_until([&] { return srv.stats.bytes >= expected * static_cast<long>(msg_size); });
    if (verbose) {
        std::printf("%ld client tasks (client runtime: 1 worker) connected and made %ld round trips of %zu bytes "
                    "each:\n",
                    cs.connected.load(), round_trips, msg_size);
        std::printf("  round trips        %ld in %.0f ms, connecting included\n", cs.done * round_trips, secs * 1e3);
        std::printf("  round trips/s      %.0f\n", secs > 0 ? static_cast<double>(cs.done * round_trips) / secs : 0.0);
        std::printf("  server             %ld connections accepted, %ld bytes echoed\n", srv.stats.accepted.load(),
                    srv.stats.bytes.load());
        char label[32];
        std::snprintf(label, sizeof label, "%d clients left", leavers);
        std::printf("  %-18s their connection tasks ended by themselves: ~connection() ran %ld times, their "
                    "promises were detached\n",
                    label, srv.stats.closed_ended.load());
        std::snprintf(label, sizeof label, "%d stayed", connections);
        std::printf("  %-18s %ld connections open, %zu promises in the server's connection set\n", label,
                    srv.stats.open.load(), srv.conns.size());
    }
    expect(cs.done == clients_n, "every client should make every round trip");
    expect(srv.stats.accepted == clients_n, "every client should be accepted");
    expect(srv.stats.closed_ended == leavers, "the leavers' connection tasks should end by themselves");
    expect(srv.stats.open == connections, "the stayers' connections should be open");
    expect(srv.conns.size() == static_cast<std::size_t>(connections), "the connection set should hold the stayers");
    expect(srv.stats.bytes == expected * static_cast<long>(msg_size), "every byte should be echoed once");

    const double tc = now_s();
    if (how == ending::cancel) {
        accept.cancel(); // destroys the accept loop's frame on this thread, and with it the connections
    } else {
        srv_rt.shutdown(); // cancels every coroutine of the runtime, the accept loop included
    }
    const double cancel_ms = (now_s() - tc) * 1e3;
    const long at_return = srv.stats.closed_cancelled;
    const bool listener_closed = ::fcntl(lfd, F_GETFD) == -1 && errno == EBADF; // nothing opens one meanwhile
    wait_until([&] { return srv.stats.closed_cancelled >= connections; });

    // Every stayer sees the server close its connection, then returns.
    long total = 0;
    for (auto &p : clients) {
        try {
            total += p.get();
        } catch (const std::exception &e) {
            std::printf("  client: %s\n", e.what());
            failures++;
        }
    }
    cli_rt.shutdown();
    if (how == ending::cancel)
        srv_rt.shutdown();

    if (verbose) {
        std::printf("\naccept.cancel() with %d connections open took %.1f ms: it destroyed the accept loop's "
                    "frame, whose guard cancelled every connection task\n",
                    connections, cancel_ms);
        std::printf("  connection tasks cancelled   %ld\n", srv.stats.cancelled.load());
        std::printf("  ~connection() ran            %ld times (%ld before cancel() returned); server sockets open: "
                    "%ld; listener %s\n",
                    srv.stats.closed_cancelled.load(), at_return, srv.stats.open.load(),
                    listener_closed ? "closed" : "OPEN");
        std::printf("  the clients saw the close    %ld of %d\n", cs.saw_close.load(), connections);
        std::printf("  round trips, all clients     %ld (exactly %d x %ld)\n", total, clients_n, round_trips);
    } else {
        std::printf("a second server, ended by its runtime's shutdown instead, %d connections open: "
                    "~connection() ran %ld times, server sockets open: %ld, listener %s; %ld of %d clients saw "
                    "the close, round trips %ld (%d x %ld)\n",
                    connections, srv.stats.closed_cancelled.load(), srv.stats.open.load(),
                    listener_closed ? "closed" : "OPEN", cs.saw_close.load(), connections, total, clients_n,
                    round_trips);
    }
    if (how == ending::cancel)
        expect(srv.stats.cancelled == connections, "the accept loop's end should cancel every connection");
    expect(srv.stats.closed_cancelled == connections, "every connection's destructor should run once, by the cancel");
    expect(srv.stats.closed_ended == leavers, "no other connection should end by itself");
    expect(srv.stats.open == 0, "no server socket should stay open");
    expect(listener_closed, "the listener should be closed");
    expect(total == expected, "the round trips should be exact");
    expect(cs.saw_close == connections, "every client that stayed should see its connection closed");
    expect(cs.failed == 0, "no client should fail");
    expect(srv.stats.errors == 0 && srv.stats.emfile == 0, "the server should see no error");
    expect(srv.conns.size() == 0, "the connection set should be empty");
}

} // namespace

int main(int argc, char **argv)
{
    const int connections = argc > 1 ? std::atoi(argv[1]) : 200;
    const long round_trips = argc > 2 ? std::atol(argv[2]) : 500;
    if (connections < 1 || connections > 400 || round_trips < 1) {
        std::fprintf(stderr, "usage: %s [connections (1..400) [round_trips]]\n", argv[0]);
        return 2;
    }
    std::setvbuf(stdout, nullptr, _IOLBF, 0);

    const int fds_before = count_fds();
    const std::uint64_t frames_before = coro_live_frames();
    std::printf("echo_tasks: the echo server as C++20 tasks (coframe::task<>, <coframe.hpp>)\n");
    std::printf("before: %d open descriptors, %llu live frames\n\n", fds_before,
                static_cast<unsigned long long>(frames_before));
    try {
        run(connections, std::max(1, connections / 10), round_trips, ending::cancel);
        std::printf("\n");
        run(std::min(connections, 20), 2, 10, ending::shutdown);
    } catch (const std::exception &e) {
        std::printf("  !! %s\n", e.what());
        failures++;
    }
    const int fds_after = count_fds();
    const std::uint64_t frames_after = coro_live_frames();
    std::printf("\nafter: %d open descriptors (%d before), %llu live frames (%llu before): %s\n", fds_after,
                fds_before, static_cast<unsigned long long>(frames_after),
                static_cast<unsigned long long>(frames_before),
                fds_after == fds_before && frames_after == frames_before ? "nothing leaked" : "LEAKED");
    expect(fds_after == fds_before, "descriptors leaked");
    expect(frames_after == frames_before, "frames leaked");
    std::printf("%s\n", failures ? "echo_tasks: something went wrong (see !! above)" : "echo_tasks: all as promised");
    return failures ? 1 : 0;
}
