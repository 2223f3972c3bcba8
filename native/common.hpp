// Shared helpers for the edgetune kernels: portable vector type, aligned
// buffers, thread-pool shims, MAC counters. Pure C++17; the vector type uses the
// GCC/Clang vector extension (lowered to AVX/AVX-512/NEON by the compiler) and
// falls back to a plain array elsewhere.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "threads.hpp"

namespace et {

using i64 = std::int64_t;
using i32 = std::int32_t;
using u64 = std::uint64_t;
using u32 = std::uint32_t;
using u8 = std::uint8_t;
using u16 = std::uint16_t;

// Floats per vector: the width of the ISA the compiler targets (one source for every width;
// ET_VW overrides it, for tests of a width the machine cannot run).
#if defined(ET_VW)
constexpr int VW = ET_VW;
#elif defined(__AVX512F__)
constexpr int VW = 16;
#elif defined(__AVX__)
constexpr int VW = 8;
#else
constexpr int VW = 4;  // SSE2, NEON (128-bit) and anything else
#endif
static_assert(VW == 4 || VW == 8 || VW == 16, "ET_VW must be 4, 8 or 16");

// The instruction set the vectors are compiled for, as reported by edgetune bench / info.
constexpr const char* simd_isa() {
#if defined(__AVX512F__)
    return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
    return "avx2";
#elif defined(__AVX__)
    return "avx";
#elif defined(__ARM_NEON) || defined(__ARM_NEON__)
    return "neon";
#else
    return "baseline";
#endif
}

#if defined(__GNUC__) || defined(__clang__)
typedef float vf __attribute__((vector_size(VW * sizeof(float))));
// The activation epilogue works on 8 lanes at every width (its lane-permutation tables have
// 2^8 entries); the compiler splits or widens these as the target needs.
typedef float vf8 __attribute__((vector_size(32)));
static inline vf vzero() { return vf{} ; }
static inline vf loadu(const float* p) { vf r; std::memcpy(&r, p, sizeof r); return r; }
static inline void storeu(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
static inline vf8 vzero8() { return vf8{}; }
static inline vf8 loadu8(const float* p) { vf8 r; std::memcpy(&r, p, sizeof r); return r; }
static inline void storeu8(float* p, vf8 v) { std::memcpy(p, &v, sizeof v); }
#define ET_RESTRICT __restrict__
#define ET_UNROLL _Pragma("GCC unroll 8")
#else
struct vf {
    float v[VW];
    float& operator[](int i) { return v[i]; }
    float operator[](int i) const { return v[i]; }
};
static inline vf vzero() { vf r; for (int i = 0; i < VW; i++) r.v[i] = 0.f; return r; }
static inline vf operator*(float a, const vf& b) { vf r; for (int i = 0; i < VW; i++) r.v[i] = a * b.v[i]; return r; }
static inline vf operator*(const vf& a, const vf& b) { vf r; for (int i = 0; i < VW; i++) r.v[i] = a.v[i] * b.v[i]; return r; }
static inline vf operator+(const vf& a, const vf& b) { vf r; for (int i = 0; i < VW; i++) r.v[i] = a.v[i] + b.v[i]; return r; }
static inline vf& operator+=(vf& a, const vf& b) { for (int i = 0; i < VW; i++) a.v[i] += b.v[i]; return a; }
static inline vf loadu(const float* p) { vf r; std::memcpy(&r, p, sizeof r); return r; }
static inline void storeu(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
#define ET_RESTRICT
#define ET_UNROLL
#endif

static inline const vf* vptr(const float* p) { return reinterpret_cast<const vf*>(p); }
static inline vf* vptr(float* p) { return reinterpret_cast<vf*>(p); }

static inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

// Limits every entry point checks before it allocates or indexes: sizes stay far from int and
// size_t overflow however a caller (a fuzzed model, a bad binding call) sets them.
constexpr i64 kMaxDim = i64(1) << 24;        // one channel count, spatial size or batch
constexpr i64 kMaxGeometry = i64(1) << 15;   // one kernel size, stride, dilation or pad
constexpr i64 kMaxElems = i64(1) << 34;      // elements of one tensor (64 GiB of floats)
static inline void check_range(i64 v, i64 lo, i64 hi, const std::string& what) {
    if (v < lo || v > hi)
        throw std::invalid_argument(what + " is " + std::to_string(v) + ", outside " + std::to_string(lo) + ".." +
                                    std::to_string(hi));
}

// Large-block recycler: buffers of >= 64 KiB are kept (by power-of-two size
// class, up to a cap) when freed and handed out again, so that a training
// step does not mmap/munmap (page faults, TLB shootdowns) its activations.
void* big_alloc(size_t bytes, size_t& cap);
void big_free(void* p, size_t cap);
size_t release_cached();  // free every idle block, returns bytes released
// Bytes of the kernels' buffers (everything big_alloc hands out): in use now, the high-water
// mark of that since the last reset_peak(), and freed blocks kept for reuse.
struct MemStats {
    size_t live = 0, peak = 0, cached = 0;
};
MemStats mem_stats();
void reset_peak();

// Owner of a recycled block handed to Python (numpy base object): returns the
// block to the recycler when the array dies, so per-step output arrays do not
// page-fault fresh memory every call.
struct PooledBlock {
    void* p = nullptr;
    size_t cap = 0;
};

// Uninitialised, 64-byte aligned buffer (no zero-fill cost unless asked).
template <class T>
struct ABuf {
    T* p = nullptr;
    size_t n = 0;
    size_t cap = 0;  // bytes actually held
    ABuf() = default;
    ABuf(const ABuf&) = delete;
    ABuf& operator=(const ABuf&) = delete;
    ABuf(ABuf&& o) noexcept : p(o.p), n(o.n), cap(o.cap) { o.p = nullptr; o.n = 0; o.cap = 0; }
    ABuf& operator=(ABuf&& o) noexcept { std::swap(p, o.p); std::swap(n, o.n); std::swap(cap, o.cap); return *this; }
    ~ABuf() { big_free(p, cap); }
    void reset(size_t count, bool zero = false) {
        big_free(p, cap);
        p = nullptr;
        cap = 0;
        n = count;
        // + 64 bytes of slack, also for an empty buffer: vector loops may read one vector past
        // the end of a list
        size_t bytes = (count * sizeof(T) + 63) / 64 * 64 + 64;
        p = static_cast<T*>(big_alloc(bytes, cap));
        std::memset(static_cast<void*>(zero ? p : reinterpret_cast<T*>(reinterpret_cast<char*>(p) + bytes - 64)), 0,
                    zero ? bytes : 64);
    }
    // give the memory back (to the block recycler)
    void clear() {
        big_free(p, cap);
        p = nullptr;
        n = 0;
        cap = 0;
    }
    // grow only (keeps no data); used for per-thread scratch
    void ensure(size_t count) { if (count > n) reset(count); }
    T* data() { return p; }
    const T* data() const { return p; }
    size_t size() const { return n; }
    T& operator[](size_t i) { return p[i]; }
    const T& operator[](size_t i) const { return p[i]; }
};

// Threads the kernels use (the pool's, native/threads.hpp).
inline int max_threads() { return pool_threads(); }

// Even split of [0, n) into t parts: part i is [split(n,t,i), split(n,t,i+1)).
inline i64 split(i64 n, int t, int i) { return n * i / t; }

// MAC counters of one phase. dense: what a dense direct kernel multiplies
// (valid taps only); required: products whose both operands may be non-zero
// under the position constraints; executed: products the kernel performed
// (vector lanes included).
struct Counts {
    i64 dense = 0, required = 0, executed = 0;
    Counts& operator+=(const Counts& o) { dense += o.dense; required += o.required; executed += o.executed; return *this; }
};

}  // namespace et
