// The kernels' thread pool (see threads.hpp).
#include "threads.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace et {

int os_threads() {
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
#endif
    const unsigned h = std::thread::hardware_concurrency();
    return h ? int(h) : 1;
}

std::int64_t thread_cpu_ns() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
    timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) return std::int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
#endif
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

namespace {

thread_local bool t_in_job = false;

// Spin this long for new work (or for the last workers) before sleeping: the next loop of a
// step usually starts within microseconds, but a waiter that keeps spinning takes the core
// another thread (ours or another process's) needs.
constexpr auto kSpin = std::chrono::microseconds(30);

static inline void cpu_relax() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#elif defined(__GNUC__) && defined(__aarch64__)
    asm volatile("yield");
#endif
}

// The loop state is one 64-bit word, so that a worker joins a loop only while it is open and
// counts itself in with one compare-and-swap: [generation:32][open:1][joined:15][active:16].
// A worker that wakes after the caller has closed the loop (it did every grain itself) stays
// out, so the caller never waits for a thread that has not started; it waits only for workers
// inside a grain.
constexpr std::uint64_t kActive = 1, kJoined = std::uint64_t(1) << 16, kOpen = std::uint64_t(1) << 31,
                        kGen = std::uint64_t(1) << 32;
inline std::uint64_t gen_of(std::uint64_t s) { return s >> 32; }
inline bool open_of(std::uint64_t s) { return (s & kOpen) != 0; }
inline int joined_of(std::uint64_t s) { return int((s >> 16) & 0x7fff); }
inline int active_of(std::uint64_t s) { return int(s & 0xffff); }

class Pool {
   public:
    int threads() {
        std::lock_guard<std::mutex> lk(cfg_mu_);
        return nthreads_ > 0 ? nthreads_ : os_threads();
    }
    void set_threads(int n) {
        std::lock_guard<std::mutex> lk(cfg_mu_);
        nthreads_ = n;
    }
    std::int64_t cpu_ns() const { return cpu_ns_.load(std::memory_order_relaxed); }

    void run(std::int64_t n, std::int64_t grain, int cap, detail::RangeFn fn, void* ctx) {
        const std::int64_t grains = (n + grain - 1) / grain;
        int want = threads();
        if (cap > 0 && cap < want) want = cap;
        if (grains < want) want = int(grains);
        if (want <= 1 || t_in_job) {  // inline: one grain's worth, a single thread, or a nested loop
            const bool outer = !t_in_job;
            t_in_job = true;
            fn(ctx, 0, n, 0);
            t_in_job = !outer;
            return;
        }
        std::lock_guard<std::mutex> one(run_mu_);  // one loop at a time (callers hold the kernel lock anyway)
        ensure_workers(want - 1);
        // no worker is inside a loop here (the last one ended with none active and none can join
        // a closed loop), so the job fields can be written
        job_fn_ = fn;
        job_ctx_ = ctx;
        job_n_ = n;
        job_grain_ = grain;
        job_helpers_.store(want - 1, std::memory_order_relaxed);
        next_.store(0, std::memory_order_relaxed);
        {
            std::lock_guard<std::mutex> lk(mu_);
            const std::uint64_t g = gen_of(state_.load(std::memory_order_relaxed)) + 1;
            state_.store((g << 32) | kOpen, std::memory_order_release);
        }
        cv_work_.notify_all();
        work(0);
        // close the loop (late workers stay out), then wait for the workers inside a grain: spin
        // briefly, then sleep (a descheduled worker needs a free core to finish, and a spinning
        // waiter would take it)
        std::uint64_t s = state_.fetch_and(~kOpen, std::memory_order_acq_rel) & ~kOpen;
        const auto t0 = std::chrono::steady_clock::now();
        while (active_of(s) != 0) {
            if (std::chrono::steady_clock::now() - t0 > kSpin) {
                std::unique_lock<std::mutex> lk(mu_);
                cv_done_.wait(lk, [&] { return active_of(state_.load(std::memory_order_acquire)) == 0; });
                break;
            }
            cpu_relax();
            s = state_.load(std::memory_order_acquire);
        }
    }

   private:
    void work(int tid) {
        const std::int64_t c0 = tid ? thread_cpu_ns() : 0;  // the workers' CPU time (the caller's is its own)
        t_in_job = true;
        for (;;) {
            const std::int64_t b = next_.fetch_add(job_grain_, std::memory_order_relaxed);
            if (b >= job_n_) break;
            const std::int64_t e = b + job_grain_ < job_n_ ? b + job_grain_ : job_n_;
            job_fn_(job_ctx_, b, e, tid);
        }
        t_in_job = false;
        if (tid) cpu_ns_.fetch_add(thread_cpu_ns() - c0, std::memory_order_relaxed);
    }

    // Join the loop of state s if it is open and has room; returns the thread id (0: stayed out).
    int try_join(std::uint64_t s) {
        while (open_of(s) && joined_of(s) < job_helpers_.load(std::memory_order_relaxed)) {
            if (state_.compare_exchange_weak(s, s + kJoined + kActive, std::memory_order_acq_rel))
                return joined_of(s) + 1;
        }
        return 0;
    }

    void worker() {
        std::uint64_t seen = gen_of(state_.load(std::memory_order_acquire));
        for (;;) {
            const auto t0 = std::chrono::steady_clock::now();
            std::uint64_t s;
            while (gen_of(s = state_.load(std::memory_order_acquire)) == seen) {
                if (std::chrono::steady_clock::now() - t0 > kSpin) {
                    std::unique_lock<std::mutex> lk(mu_);
                    cv_work_.wait(lk, [&] {
                        return gen_of(state_.load(std::memory_order_acquire)) != seen;
                    });
                    s = state_.load(std::memory_order_acquire);
                    break;
                }
                cpu_relax();
            }
            seen = gen_of(s);
            const int tid = try_join(s);
            if (!tid) continue;
            work(tid);
            const std::uint64_t after = state_.fetch_sub(kActive, std::memory_order_acq_rel) - kActive;
            if (active_of(after) == 0 && !open_of(after)) {
                std::lock_guard<std::mutex> lk(mu_);
                cv_done_.notify_one();
            }
        }
    }

    void ensure_workers(int n) {
        for (; nworkers_ < n; nworkers_++) std::thread([this] { worker(); }).detach();
    }

    std::mutex cfg_mu_, run_mu_, mu_;
    std::condition_variable cv_work_, cv_done_;
    int nworkers_ = 0;
    int nthreads_ = 0;
    std::atomic<std::uint64_t> state_{0};
    std::atomic<std::int64_t> next_{0};
    std::atomic<std::int64_t> cpu_ns_{0};
    // the loop (written while no worker is in one, read by workers that joined it)
    detail::RangeFn job_fn_ = nullptr;
    void* job_ctx_ = nullptr;
    std::int64_t job_n_ = 0, job_grain_ = 1;
    std::atomic<int> job_helpers_{0};
};

// Never destroyed (its workers are detached and may be waiting on it at exit). A child made by
// fork() has none of the parent's workers: it starts a pool of its own.
Pool* g_pool = nullptr;
std::once_flag g_pool_once;
Pool& pool() {
    std::call_once(g_pool_once, [] {
        g_pool = new Pool();
#if defined(__unix__) || defined(__APPLE__)
        pthread_atfork(nullptr, nullptr, [] { g_pool = new Pool(); });
#endif
    });
    return *g_pool;
}

}  // namespace

int pool_threads() { return pool().threads(); }

void set_pool_threads(int n) {
    pool().set_threads(n);
#ifdef _OPENMP
    omp_set_num_threads(n > 0 ? n : os_threads());  // the kernels that still use OpenMP (ops)
#endif
}

bool in_parallel() { return t_in_job; }

std::int64_t pool_worker_cpu_ns() { return pool().cpu_ns(); }

namespace detail {
void run_parallel(std::int64_t n, std::int64_t grain, int max_threads, RangeFn fn, void* ctx) {
    pool().run(n, grain, max_threads, fn, ctx);
}
}  // namespace detail

}  // namespace et

int edgetune_num_threads() { return et::pool_threads(); }
