// Recycler of large aligned blocks (see common.hpp).
#include <mutex>

#include "common.hpp"

namespace et {

namespace {
constexpr size_t kMinPooled = size_t(1) << 16;     // 64 KiB
constexpr size_t kMaxCached = size_t(256) << 20;  // keep at most this many bytes idle
constexpr int kClasses = 40;

struct Pool {
    std::mutex mu;
    std::vector<void*> free_[kClasses];
    size_t cached = 0;
    ~Pool() {
        for (auto& v : free_)
            for (void* p : v) std::free(p);
    }
};
Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: buffers may be freed during interpreter shutdown
    return *p;
}
int size_class(size_t bytes) {
    int c = 16;
    while ((size_t(1) << c) < bytes) c++;
    return c;
}
}  // namespace

void* big_alloc(size_t bytes, size_t& cap) {
    if (bytes < kMinPooled) {
        void* p = std::aligned_alloc(64, bytes);
        if (!p) throw std::bad_alloc();
        cap = bytes;
        return p;
    }
    const int c = size_class(bytes);
    if (c >= kClasses) throw std::bad_alloc();
    cap = size_t(1) << c;
    Pool& P = pool();
    {
        std::lock_guard<std::mutex> lk(P.mu);
        if (!P.free_[c].empty()) {
            void* p = P.free_[c].back();
            P.free_[c].pop_back();
            P.cached -= cap;
            return p;
        }
    }
    void* p = std::aligned_alloc(64, cap);
    if (!p) throw std::bad_alloc();
    return p;
}

void big_free(void* p, size_t cap) {
    if (!p) return;
    if (cap < kMinPooled) { std::free(p); return; }
    Pool& P = pool();
    {
        std::lock_guard<std::mutex> lk(P.mu);
        if (P.cached + cap <= kMaxCached) {
            P.free_[size_class(cap)].push_back(p);
            P.cached += cap;
            return;
        }
    }
    std::free(p);
}

size_t release_cached() {
    Pool& P = pool();
    std::lock_guard<std::mutex> lk(P.mu);
    size_t n = P.cached;
    for (auto& v : P.free_) {
        for (void* p : v) std::free(p);
        v.clear();
    }
    P.cached = 0;
    return n;
}

}  // namespace et
