// Boost.Context fibers (Debian's libboost-context-dev), the C++ peer.
//
//   fiber yield [--iters N] [--reps R]   one resume round trip: main resumes
//                                        the fiber, the fiber resumes main
//   fiber spawn [--iters N] [--reps R]   create a fiber on a pooled stack,
//                                        run it to its end, destroy it
//
// Prints one JSON line, like the other benches.
#include <boost/context/fiber.hpp>
#include <boost/context/pooled_fixedsize_stack.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace ctx = boost::context;

static unsigned long long now_ns()
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

static void report(const char *bench, unsigned long long iters, std::vector<double> s)
{
    std::vector<double> sorted = s;
    std::sort(sorted.begin(), sorted.end());
    size_t n = sorted.size();
    double med = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    std::printf("{\"bench\":\"%s\",\"iters\":%llu,\"ns_per_op\":%.4f,\"samples\":[", bench, iters, med);
    for (size_t i = 0; i < n; i++)
        std::printf("%s%.3f", i ? "," : "", s[i]);
    std::printf("]}\n");
}

// Keeps the optimiser from folding the loop away.
static volatile unsigned long long sink;

static void yield(unsigned long long iters, int reps)
{
    ctx::fiber f{[](ctx::fiber &&main) {
        for (;;) {
            sink = sink + 1;
            main = std::move(main).resume();
        }
        return std::move(main);
    }};
    std::vector<double> s;
    for (int r = -1; r < reps; r++) {
        unsigned long long t0 = now_ns();
        for (unsigned long long i = 0; i < iters; i++)
            f = std::move(f).resume();
        double ns = double(now_ns() - t0) / double(iters);
        if (r >= 0 || reps == 1)
            s.push_back(ns);
        if (reps == 1)
            break;
    }
    report("yield_boost", iters, s);
    // The fiber never finishes: leave without unwinding it.
    std::fflush(stdout);
    std::_Exit(0);
}

static void spawn(unsigned long long iters, int reps)
{
    ctx::pooled_fixedsize_stack pool(64 * 1024);
    std::vector<double> s;
    for (int r = -1; r < reps; r++) {
        unsigned long long t0 = now_ns();
        for (unsigned long long i = 0; i < iters; i++) {
            ctx::fiber f{std::allocator_arg, pool, [](ctx::fiber &&main) {
                             sink = sink + 1;
                             return std::move(main);
                         }};
            f = std::move(f).resume();
        }
        double ns = double(now_ns() - t0) / double(iters);
        if (r >= 0 || reps == 1)
            s.push_back(ns);
        if (reps == 1)
            break;
    }
    report("spawn_boost", iters, s);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: fiber yield|spawn [--iters N] [--reps R]\n");
        return 2;
    }
    unsigned long long iters = 100000;
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
    std::string m = argv[1];
    if (m == "yield")
        yield(iters, reps);
    else if (m == "spawn")
        spawn(iters, reps);
    else {
        std::fprintf(stderr, "fiber: unknown mode %s\n", argv[1]);
        return 2;
    }
    return 0;
}
