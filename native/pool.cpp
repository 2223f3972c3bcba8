// Recycler of large aligned blocks (see common.hpp).
//
// A training step allocates and frees the same large buffers every step (activations, plans,
// scratch); handing freed blocks out again saves the page faults of fresh memory. What is kept
// idle counts against the process's memory as much as what is in use, so the recycler keeps at
// most what the step's own high-water mark of live buffers allows: live + idle never exceeds
// that mark (plus one block), and a miss returns idle blocks of other sizes to the system
// before mapping new memory. Size classes are quarter-octaves (at most 19% rounding waste).
#include <atomic>
#include <mutex>
#include <new>

#include "common.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define ET_MMAP 1
#endif

namespace et {

namespace {
constexpr size_t kMinPooled = size_t(1) << 16;  // 64 KiB
constexpr int kClasses = 4 * 48;

// bytes handed out by big_alloc and not yet freed, and their high-water mark
std::atomic<size_t> g_live{0}, g_peak{0}, g_peak_ever{0};

struct Pool {
    std::mutex mu;
    std::vector<void*> free_[kClasses];
    size_t cached = 0;
};
Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: buffers may be freed during interpreter shutdown
    return *p;
}

void* map_block(size_t cap) {
#ifdef ET_MMAP
    void* p = mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return p;  // page aligned
#else
    void* p = std::aligned_alloc(64, cap);
    if (!p) throw std::bad_alloc();
    return p;
#endif
}

void unmap_block(void* p, size_t cap) {
#ifdef ET_MMAP
    munmap(p, cap);
#else
    (void)cap;
    std::free(p);
#endif
}

// capacity of quarter-octave class c: 2^(16 + c/4) * (1 + (c%4 + 1)/4)
size_t class_cap(int c) {
    const int e = 16 + c / 4, q = c % 4 + 1;
    const size_t base = size_t(1) << e;
    return base + base * q / 4;
}

void note_alloc(size_t cap) {
    const size_t now = g_live.fetch_add(cap) + cap;
    for (auto* mark : {&g_peak, &g_peak_ever}) {
        size_t peak = mark->load();
        while (now > peak && !mark->compare_exchange_weak(peak, now)) {
        }
    }
}
}  // namespace

MemStats mem_stats() {
    MemStats m;
    m.live = g_live.load();
    m.peak = g_peak.load();
    std::lock_guard<std::mutex> lk(pool().mu);
    m.cached = pool().cached;
    return m;
}

void reset_peak() { g_peak.store(g_live.load()); }

void* big_alloc(size_t bytes, size_t& cap) {
#ifdef ET_SANITIZE  // sanitizer builds: every block exact-sized and really freed, so overruns are caught
    cap = bytes;
    note_alloc(cap);
    return ::operator new(bytes ? bytes : 1, std::align_val_t(64));
#endif
    if (bytes < kMinPooled) {
        void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!p) throw std::bad_alloc();
        cap = bytes;
        note_alloc(cap);
        return p;
    }
    // the class of `bytes`: the smallest quarter-octave capacity that holds it
    int c = 0;
    while (c < kClasses && class_cap(c) < bytes) c++;
    if (c >= kClasses) throw std::bad_alloc();
    cap = class_cap(c);
    Pool& P = pool();
    std::vector<std::pair<void*, size_t>> release;
    void* p = nullptr;
    {
        std::lock_guard<std::mutex> lk(P.mu);
        if (!P.free_[c].empty()) {
            p = P.free_[c].back();
            P.free_[c].pop_back();
            P.cached -= cap;
        } else {
            // a miss: give idle blocks back until live + idle + this one fit the high-water mark
            const size_t budget = std::max(g_peak_ever.load(), g_live.load() + cap);
            for (int k = kClasses - 1; k >= 0 && P.cached && g_live.load() + P.cached + cap > budget; k--)
                while (!P.free_[k].empty() && g_live.load() + P.cached + cap > budget) {
                    release.emplace_back(P.free_[k].back(), class_cap(k));
                    P.free_[k].pop_back();
                    P.cached -= class_cap(k);
                }
        }
    }
    for (auto& b : release) unmap_block(b.first, b.second);
    if (!p) p = map_block(cap);
    note_alloc(cap);
    return p;
}

void big_free(void* p, size_t cap) {
    if (!p) return;
    g_live.fetch_sub(cap);
#ifdef ET_SANITIZE
    ::operator delete(p, std::align_val_t(64));
    return;
#endif
    if (cap < kMinPooled) {
        std::free(p);
        return;
    }
    int c = 0;
    while (c < kClasses && class_cap(c) < cap) c++;
    Pool& P = pool();
    {
        std::lock_guard<std::mutex> lk(P.mu);
        // idle blocks never take the footprint past the high-water mark of live blocks
        if (c < kClasses && class_cap(c) == cap && g_live.load() + P.cached + cap <= g_peak_ever.load()) {
            P.free_[c].push_back(p);
            P.cached += cap;
            return;
        }
    }
    unmap_block(p, cap);
}

size_t release_cached() {
    Pool& P = pool();
    std::vector<std::pair<void*, size_t>> release;
    size_t n = 0;
    {
        std::lock_guard<std::mutex> lk(P.mu);
        n = P.cached;
        for (int k = 0; k < kClasses; k++) {
            for (void* p : P.free_[k]) release.emplace_back(p, class_cap(k));
            P.free_[k].clear();
        }
        P.cached = 0;
    }
    for (auto& b : release) unmap_block(b.first, b.second);
    return n;
}

}  // namespace et
