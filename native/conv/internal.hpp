// What the conv layer's phase files share (native/conv/*.cpp): block sizes, per-thread
// scratch, ordered sums, the clock.
#pragma once
#include <chrono>
#include <memory>

#include "../conv.hpp"

namespace et {

static constexpr int KB = 8 * VW;  // channels per register block of the list walks
static constexpr int TPIX = 32;    // pixels per FP/BP tile of the list walks
// first convs (R*S*Cg input terms per output at most this) join all their taps into one list
static constexpr int IM2COL_MAX = 64;
#ifndef ET_TILE_BYTES
#define ET_TILE_BYTES 16384
#endif

// Which kernel family the phases run (tests and benchmarks force one; auto chooses per layer
// and phase from the operand's measured density, see layer.cpp).
enum KernelPolicy { KP_AUTO = 0, KP_TILED = 1, KP_WALK = 2 };
KernelPolicy& kernel_policy();

// Density below which a phase walks the element lists rather than running the tiled kernels.
// The tiled kernels run every product at 35-47 GMAC/s on one Zen 4 core; the walks run only the
// listed products (one operand skipped), at 20-30 GMAC/s of those: they win when the operand
// they skip on is sparser than about half. Measured per layer by native/bench_layers.py. The
// engine plans an activation densely (no lists) when its consumers would not walk it.
constexpr double kWalkDensity = 0.45;

inline double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One T per pool thread, made on first use by that thread (a thread only touches its own slot).
template <class T>
struct PerThread {
    std::vector<std::unique_ptr<T>> slots;
    PerThread() : slots((size_t)std::max(1, pool_threads())) {}
    T& operator[](int tid) {
        auto& s = slots[(size_t)tid];
        if (!s) s.reset(new T());
        return *s;
    }
    template <class F>
    void each(F&& f) {
        for (auto& s : slots)
            if (s) f(*s);
    }
};

// MAC counts of the threads of one loop, summed afterwards.
struct ThreadCounts {
    std::vector<Counts> c;
    ThreadCounts() : c((size_t)std::max(1, pool_threads())) {}
    Counts& operator[](int tid) { return c[(size_t)tid]; }
    Counts total() const {
        Counts s;
        for (const auto& x : c) s += x;
        return s;
    }
};

// out[i] = sum over chunks of part[chunk][i] in chunk order, in double (so the result does not
// depend on the thread count); part is nchunks x n.
inline void sum_chunks(const double* part, i64 nchunks, float* out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (i64 c = 0; c < nchunks; c++) s += part[(size_t)c * n + i];
        out[i] = (float)s;
    }
}

}  // namespace et
