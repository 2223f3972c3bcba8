// The kernels' own thread pool: dynamic chunking and passive waiting (docs/ARCHITECTURE.md,
// "Threads").
//
// An edge device always runs other work, so a thread of ours may be descheduled at any time.
// With a static split every other thread then waits for the slowest one; here the items of a
// loop are handed out in grains from one atomic counter, so a descheduled thread holds up at
// most the grain it is in, and the others take the rest. Threads that run out of work wait
// passively (after a short spin): a spinning waiter would take the very core the descheduled
// thread needs to finish.
//
// Results never depend on which thread ran an item: kernels write disjoint outputs per item and
// sum partials in item order, so a step gives the same bits at every thread count.
#pragma once
#include <cstdint>
#include <utility>

namespace et {

// Threads the kernels use: set_pool_threads(n), else what the OS gives the process (its CPU
// affinity mask, sched_getaffinity; the hardware thread count where there is none).
int pool_threads();
void set_pool_threads(int n);
int os_threads();

// Whether the calling thread is running an item of a parallel_for (a nested loop runs inline).
bool in_parallel();

// CPU time (ns) the pool's worker threads have spent in loop items so far (each thread's own
// CPU clock, so time the OS gave to other processes does not count).
std::int64_t pool_worker_cpu_ns();
// CPU time (ns) of the calling thread.
std::int64_t thread_cpu_ns();

// CPU time of a stretch of kernel code run by the calling thread: its own CPU time plus the
// workers' time in the loops it started.
struct CpuClock {
    std::int64_t t0 = thread_cpu_ns(), w0 = pool_worker_cpu_ns();
    double ms() const { return double(thread_cpu_ns() - t0 + pool_worker_cpu_ns() - w0) * 1e-6; }
};

namespace detail {
using RangeFn = void (*)(void* ctx, std::int64_t begin, std::int64_t end, int tid);
void run_parallel(std::int64_t n, std::int64_t grain, int max_threads, RangeFn fn, void* ctx);
}  // namespace detail

// f(begin, end, tid) over [0, n) in grains of `grain` items, on up to pool_threads() threads
// (at most max_threads when > 0; tid < that count). The caller takes part and returns when every
// item is done. Small loops (one grain) and nested calls run inline on the calling thread.
template <class F>
void parallel_for(std::int64_t n, std::int64_t grain, F&& f, int max_threads = 0) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    auto call = [](void* ctx, std::int64_t b, std::int64_t e, int tid) { (*static_cast<F*>(ctx))(b, e, tid); };
    detail::run_parallel(n, grain, max_threads, call, static_cast<void*>(&f));
}

// f(i) for every i in [0, n), in parallel (grains of at least min_grain items).
template <class F>
void parallel_each(std::int64_t n, F&& f, std::int64_t min_grain = 16) {
    const int t = pool_threads();
    std::int64_t g = n / (std::int64_t(t) * 8);
    if (g < min_grain) g = min_grain;
    parallel_for(n, g, [&](std::int64_t b, std::int64_t e, int) {
        for (std::int64_t i = b; i < e; i++) f(i);
    });
}

// Grain for n items so that each of t threads gets about `per_thread` grains (dynamic
// balancing needs several), never below min_grain.
inline std::int64_t grain_for(std::int64_t n, int t, int per_thread = 8, std::int64_t min_grain = 1) {
    const std::int64_t g = n / (std::int64_t(t) * per_thread);
    return g < min_grain ? min_grain : g;
}

}  // namespace et
