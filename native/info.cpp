// Fused activation epilogue and the ActInfo plan structures.
#include "info.hpp"

#include <cmath>

namespace et {

int kind_of(int act, float lo, float hi) {
    switch (act) {
        case ACT_INPUT: return KD_INPUT;
        case ACT_RELU: return KD_RELU;
        case ACT_CLIP: return (lo == 0.f && hi > 0.f) ? KD_CLIP0 : KD_DENSE;
        case ACT_HSWISH: return KD_HSWISH;
        case ACT_NONE: case ACT_LEAKY: case ACT_SIGMOID: return KD_DENSE;
        default: throw std::invalid_argument("unknown activation code " + std::to_string(act));
    }
}

int bits_per_elem(int act) {
    switch (act) {
        case ACT_RELU: case ACT_LEAKY: return 1;
        case ACT_CLIP: case ACT_HSWISH: return 2;  // hswish: 0 z<=-3, 1 curved, 2 z>=3
        default: return 0;
    }
}

const i32* iota_ptr(int n) {
    static std::mutex mu;
    static i32* cur = nullptr;  // older arrays are leaked on purpose (pointers stay valid)
    static int cap = 0;
    std::lock_guard<std::mutex> lk(mu);
    if (n > cap) {
        int c = std::max(n, 4096);
        i32* a = new i32[c + 64];  // + slack: vector loops read one vector past a row
        for (int i = 0; i < c + 64; i++) a[i] = i;
        cur = a;
        cap = c;
    }
    return cur;
}

// ---------------------------------------------------------------- bits
// ---------------------------------------------------------------- scratch
namespace {
struct Scratch {
    ABuf<i32> ai, gi;
    ABuf<float> av;
    ABuf<u8> st, st2;  // state bit planes (s & 1, s >> 1)
    ABuf<float> arow, vrow;  // vrow: stored values (hard-swish)
    int stride = -1;
    ABuf<u8> nzb, gb;  // padded to a multiple of 64 with zeros
    i64 na = 0, ng = 0;
    std::vector<i64> chan;
    ABuf<i32> ch32;  // per-channel non-zero counts of the fast rows (K padded to 8)
    i64 p0 = 0, p1 = 0;
};
std::vector<std::unique_ptr<Scratch>>& pool() {
    static std::vector<std::unique_ptr<Scratch>> p;
    return p;
}
}  // namespace

// kNaNRule. A NaN pre-activation (an overflowing input, a NaN weight) lies in the region that
// passes values and errors: a = NaN, in A and in G. The state bits and the non-zero test of a
// must agree on every element, because ReLU and ReLU6 lists are decoded from the bits while the
// value offsets count non-zero a: a NaN with state "zero" but a != 0 made the two disagree and
// the kernels read past a row (a segfault in `edgetune info` on a NaN bias). Passing NaN on, as
// the dense engine does, also lets the trainer see a non-finite loss instead of a masked one.
//
// Branch-free element functions (vectorisable; random signs must not cost
// branch mispredictions). s is the state code stored in the bits.
template <int ACT>
static inline float actf(float z, float alpha, float lo, float hi, int& s) {
    if constexpr (ACT == ACT_RELU) {
        s = z > 0.f;
        return std::max(z, 0.f);
    } else if constexpr (ACT == ACT_CLIP) {
        s = int(z > lo) + int(z >= hi);
        return std::min(std::max(z, lo), hi);
    } else if constexpr (ACT == ACT_HSWISH) {
        s = int(z > -3.f) + int(z >= 3.f);  // torch: f'(-3) = 0, f'(3) = 1
        return hswish_a(z);
    } else if constexpr (ACT == ACT_LEAKY) {
        s = z > 0.f;
        return z > 0.f ? z : z * alpha;
    } else if constexpr (ACT == ACT_SIGMOID) {
        s = 0;
        return 1.f / (1.f + std::exp(-z));
    } else {
        (void)alpha; (void)lo; (void)hi;
        s = 0;
        return z;
    }
}

template <int ACT>
static inline int in_g(int s, bool clip0) {
    if constexpr (ACT == ACT_RELU) return s;
    else if constexpr (ACT == ACT_CLIP) return clip0 ? int(s == 1) : 1;
    else if constexpr (ACT == ACT_HSWISH) return int(s != 0);
    else { (void)s; (void)clip0; return 1; }
}

static inline int ctz64(u64 m) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(m);
#else
    int n = 0;
    while (!(m & 1)) { m >>= 1; n++; }
    return n;
#endif
}
static inline int popc64(u64 m) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_popcountll(m);
#else
    int n = 0;
    while (m) { m &= m - 1; n++; }
    return n;
#endif
}

// OR nb bits of v into the bit array at bit position pos; the first/last word
// of a row may be shared with another thread's row (atomic), others are not.
static inline void or_bits(u64* bits, i64 pos, u64 v, int nb, i64 wfirst, i64 wlast) {
    if (!nb) return;
    if (nb < 64) v &= (~0ull >> (64 - nb));
    const i64 wi = pos >> 6;
    const int sh = int(pos & 63);
    auto put = [&](i64 w, u64 x) {
        if (!x) return;
        if (w == wfirst || w == wlast) {
#if defined(__GNUC__) || defined(__clang__)
            __atomic_fetch_or(&bits[w], x, __ATOMIC_RELAXED);
#else
#pragma omp atomic
            bits[w] |= x;
#endif
        } else {
            bits[w] |= x;
        }
    };
    put(wi, v << sh);
    if (sh && sh + nb > 64) put(wi + 1, v >> (64 - sh));
}

// 32 bits -> 64 bits with a zero between each (bit i -> bit 2i).
static inline u64 spread32(u64 x) {
    x &= 0xffffffffull;
    x = (x | (x << 16)) & 0x0000FFFF0000FFFFull;
    x = (x | (x << 8)) & 0x00FF00FF00FF00FFull;
    x = (x | (x << 4)) & 0x0F0F0F0F0F0F0F0Full;
    x = (x | (x << 2)) & 0x3333333333333333ull;
    x = (x | (x << 1)) & 0x5555555555555555ull;
    return x;
}

// 64 bytes (each 0 or 1) -> 64-bit mask (bit j = byte j); multiply trick.
static inline u64 pack_bytes64(const u8* b) {
    u64 m = 0;
    for (int i = 0; i < 8; i++) {
        u64 x;
        std::memcpy(&x, b + 8 * i, 8);
        m |= ((x * 0x0102040810204080ull) >> 56) << (8 * i);
    }
    return m;
}

template <int ACT, bool LA, bool LG>
static void row_t(Epi& E, Scratch& S, i64 p, const float* ET_RESTRICT z) {
    ActInfo& I = *E.I;
    const int K = E.K;
    float* ET_RESTRICT arow = S.arow.data();
    u8* ET_RESTRICT s1 = S.st.data();
    u8* ET_RESTRICT s2 = S.st2.data();
    u8* ET_RESTRICT nzb = S.nzb.data();
    u8* ET_RESTRICT gb = S.gb.data();
    i64* ET_RESTRICT ch = S.chan.data();
    const float alpha = I.alpha, lo = I.lo, hi = I.hi;
    const bool clip0 = I.kind == KD_CLIP0;
    const bool dense_kind = I.kind == KD_DENSE;
    // pass 1: simple loops the compiler vectorises: a, state planes, A/G bytes, counts
    for (int k = 0; k < K; k++) {
        int sd;
        arow[k] = actf<ACT>(z[k], alpha, lo, hi, sd);
    }
    if constexpr (ACT == ACT_CLIP || ACT == ACT_HSWISH) {
        const float t0 = ACT == ACT_CLIP ? lo : -3.f, t1 = ACT == ACT_CLIP ? hi : 3.f;
        for (int k = 0; k < K; k++) {
            const float zk = z[k];
            s1[k] = (u8)!((zk <= t0) | (zk >= t1));  // NaN: the pass-through region (see kNaNRule)
            s2[k] = (u8)(zk >= t1);
        }
        if constexpr (ACT == ACT_HSWISH) {
            // stored value: z where curved (a is recomputed from it), a elsewhere
            float* ET_RESTRICT vrow = S.vrow.data();
            for (int k = 0; k < K; k++) vrow[k] = s1[k] ? z[k] : arow[k];
        }
    } else if constexpr (ACT == ACT_LEAKY) {
        for (int k = 0; k < K; k++) s1[k] = (u8)(z[k] > 0.f);
    }
    for (int k = 0; k < K; k++) nzb[k] = (u8)(arow[k] != 0.f);
    int acount = 0, gcount = 0;
    for (int k = 0; k < K; k++) acount += nzb[k];
    for (int k = 0; k < K; k++) ch[k] += nzb[k];
    const u8* gsrc = nullptr;  // G bytes
    if constexpr (ACT == ACT_RELU) gsrc = nzb;
    else if constexpr (ACT == ACT_CLIP || ACT == ACT_HSWISH) {
        if (ACT == ACT_HSWISH || clip0) {
            for (int k = 0; k < K; k++) gb[k] = (u8)(s1[k] | s2[k]);
            if (ACT == ACT_CLIP) gsrc = s1;  // Clip(0,hi): G = linear region
            else gsrc = gb;                  // hard-swish: G = curved | identity
        }
    }
    if (gsrc) for (int k = 0; k < K; k++) gcount += gsrc[k];
    else gcount = K;
    if (E.aout) std::memcpy(E.aout + p * K, arow, sizeof(float) * K);
    const float* ET_RESTRICT srow = ACT == ACT_HSWISH ? S.vrow.data() : arow;  // stored values
    if (!LA && E.store_vals) std::memcpy(I.vals.data() + p * K, srow, sizeof(float) * K);
    const int nw = (K + 63) >> 6;
    if (I.bpe == 1) {
        // state bit: ReLU a > 0 (= nzb), LeakyReLU z > 0 (= st)
        const u8* sb = ACT == ACT_RELU ? nzb : s1;
        const i64 bit0 = p * K;
        const i64 wfirst = bit0 >> 6, wlast = (bit0 + K - 1) >> 6;
        for (int w = 0; w < nw; w++) {
            const int base = w << 6;
            or_bits(I.bits.data(), bit0 + base, pack_bytes64(sb + base), std::min(64, K - base), wfirst, wlast);
        }
    } else if (I.bpe == 2) {
        const i64 bit0 = p * K * 2;
        const i64 wfirst = bit0 >> 6, wlast = (bit0 + 2 * (i64)K - 1) >> 6;
        for (int w = 0; w < nw; w++) {
            const int base = w << 6;
            const u64 a = pack_bytes64(s1 + base), b = pack_bytes64(s2 + base);
            const u64 lo = spread32(a) | (spread32(b) << 1), hi = spread32(a >> 32) | (spread32(b >> 32) << 1);
            or_bits(I.bits.data(), bit0 + 2 * base, lo, std::min(64, 2 * (K - base)), wfirst, wlast);
            if (K - base > 32) or_bits(I.bits.data(), bit0 + 2 * (base + 32), hi, std::min(64, 2 * (K - base - 32)), wfirst, wlast);
        }
    }
    // compaction by iterating set bits (cost ~ nnz, no mispredicted branches)
    i64 na = S.na, ng = S.ng;
    if (LA) {
        i32* ET_RESTRICT ai = S.ai.data();
        float* ET_RESTRICT av = S.av.data();
        for (int w = 0; w < nw; w++)
            for (u64 m = pack_bytes64(nzb + (w << 6)); m; m &= m - 1) {
                const int k = (w << 6) + ctz64(m);
                if (E.store_idx) ai[na] = k;
                if (E.store_vals) av[na] = srow[k];
                na++;
            }
    }
    if (LG) {
        i32* ET_RESTRICT gi = S.gi.data();
        for (int w = 0; w < nw; w++)
            for (u64 m = pack_bytes64(gsrc + (w << 6)); m; m &= m - 1) gi[ng++] = (w << 6) + ctz64(m);
    }
    if (!I.a_constrained) acount = K;
    if (dense_kind) gcount = K;
    I.acnt[p] = acount;
    I.gcnt[p] = gcount;
    if (LA) I.a_ptr[p + 1] = na - S.na;
    if (LG) I.g_ptr[p + 1] = ng - S.ng;
    S.na = na; S.ng = ng;
}

// ---------------------------------------------------------------- fast ReLU / ReLU6 rows
// One pass over 8-lane vectors when K % 8 == 0 (every row then starts on a byte
// of the state bits): a, the state bits written as whole bytes, the counts, and
// the lists compacted branch-free with a permutation table (GCC vector
// extension; lowered to vpermps on AVX2, tbl on NEON).
#if defined(__GNUC__) && !defined(__clang__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && !defined(ET_PORTABLE_EPILOGUE)
#define ET_FAST_EPI 1
typedef i32 vi __attribute__((vector_size(32)));

struct Compact8 {
    vi perm[256];  // lanes of the set bits of m first, in order
    u16 spread[256];  // bit i -> bit 2i
    u8 even[256];     // bits 0, 2, 4, 6 -> bits 0..3 (state bit 0 of four 2-bit codes)
    Compact8() {
        for (int b = 0; b < 256; b++) even[b] = u8((b & 1) | (b >> 1 & 2) | (b >> 2 & 4) | (b >> 3 & 8));
        for (int m = 0; m < 256; m++) {
            int n = 0;
            vi v = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int i = 0; i < 8; i++)
                if (m >> i & 1) v[n++] = i;
            perm[m] = v;
            u16 sp = 0;
            for (int i = 0; i < 8; i++) sp |= u16((m >> i & 1) << (2 * i));
            spread[m] = sp;
        }
    }
};
static const Compact8 kC8;

static inline unsigned mask8(vi c) {  // lane i of c is -1 or 0 -> bit i
#if defined(__AVX__)
    return (unsigned)__builtin_ia32_movmskps256((__attribute__((vector_size(32))) float)c);
#else
    unsigned m = 0;
    for (int i = 0; i < 8; i++) m |= unsigned(c[i] & 1) << i;
    return m;
#endif
}

template <int ACT, bool LA, bool LG>
static void row_fast(Epi& E, Scratch& S, i64 p, const float* ET_RESTRICT z) {
    ActInfo& I = *E.I;
    const int K = E.K;
    const float lo = I.lo, hi = I.hi;
    const vf8 vlo = vzero8() + lo, vhi = vzero8() + hi, v0 = vzero8();
    u8* bytes = reinterpret_cast<u8*>(I.bits.data());
    float* aout = E.aout ? E.aout + p * K : nullptr;
    float* vout = LA || !E.store_vals ? nullptr : I.vals.data() + p * K;
    i32* ET_RESTRICT ai = S.ai.data();
    float* ET_RESTRICT av = S.av.data();
    i32* ET_RESTRICT gi = S.gi.data();
    vi* ch = reinterpret_cast<vi*>(S.ch32.data());
    i64 na = S.na, ng = S.ng;
    int acount = 0, gcount = 0;
    for (int j = 0; j < K; j += 8) {
        const vf8 zv = loadu8(z + j);
        vf8 a, sv;
        unsigned mnz, mg, m2 = 0;
        if constexpr (ACT == ACT_NONE) {  // network input / unconstrained output: A = non-zeros, no state
            const vi c = zv != v0;
            a = zv;
            mnz = mask8(c);
            mg = 0xffu;
            ch[j >> 3] -= c;
        } else if constexpr (ACT == ACT_RELU) {
            const vi c = ~(zv <= v0);  // NaN in A, a = NaN (see kNaNRule)
            a = c ? zv : v0;
            mnz = mg = mask8(c);
            ch[j >> 3] -= c;
            bytes[(p * K + j) >> 3] = (u8)mnz;
        } else if constexpr (ACT == ACT_HSWISH) {  // state 1 curved, 2 identity; G = both
            const vf8 v3 = vzero8() + 3.f, v6 = vzero8() + 6.f;
            const vi c1 = ~((zv <= -v3) | (zv >= v3)), c2 = zv >= v3;  // NaN: curved (kNaNRule)
            // hswish_a, operation for operation (std::max/std::min as selects): bit-identical
            vf8 t = zv + v3;
            t = t < v0 ? v0 : t;
            t = v6 < t ? v6 : t;
            a = zv * t / v6;
            sv = c1 ? zv : a;  // stored: z where curved (a is recomputed from it), a elsewhere
            const vi cn = a != v0;
            mnz = mask8(cn);
            const unsigned m1 = mask8(c1);
            m2 = mask8(c2);
            mg = m1 | m2;
            ch[j >> 3] -= cn;
            const u16 st = u16(kC8.spread[m1] | (kC8.spread[m2] << 1));
            std::memcpy(bytes + ((p * K + j) >> 2), &st, 2);
        } else {  // Clip(0, hi): state 1 linear (G), 2 saturated
            const vi c1 = ~((zv <= vlo) | (zv >= vhi)), c2 = zv >= vhi;  // NaN: linear (kNaNRule)
            a = zv < vlo ? vlo : zv;
            a = a > vhi ? vhi : a;
            const vi cn = a != v0;
            mnz = mask8(cn);
            mg = mask8(c1);
            m2 = mask8(c2);
            ch[j >> 3] -= cn;
            const u16 st = u16(kC8.spread[mg] | (kC8.spread[m2] << 1));
            std::memcpy(bytes + ((p * K + j) >> 2), &st, 2);
        }
        if constexpr (ACT != ACT_HSWISH) sv = a;
        if (aout) storeu8(aout + j, a);
        if (vout) storeu8(vout + j, sv);
        acount += __builtin_popcount(mnz);
        gcount += __builtin_popcount(mg);
        if (LA) {
            const vi pm = kC8.perm[mnz];
            if (E.store_vals) storeu8(av + na, __builtin_shuffle(sv, pm));
            if (E.store_idx) {
                const vi ix = pm + j;
                std::memcpy(ai + na, &ix, sizeof ix);
            }
            na += __builtin_popcount(mnz);
        }
        if (LG) {
            const vi ix = kC8.perm[mg] + j;
            std::memcpy(gi + ng, &ix, sizeof ix);
            ng += __builtin_popcount(mg);
        }
    }
    I.acnt[p] = I.a_constrained ? acount : K;
    I.gcnt[p] = gcount;
    if (LA) I.a_ptr[p + 1] = na - S.na;
    if (LG) I.g_ptr[p + 1] = ng - S.ng;
    S.na = na;
    S.ng = ng;
}

bool grad_rows_fast(ActInfo& O, const float* grad_a, i64 o0, i64 o1, float* D, int ldd, float* dvals,
                    double* dbl) {
    const int K = O.C;
    if (K % 8 || !(O.kind == KD_RELU || O.kind == KD_CLIP0)) return false;
    const u8* bytes = reinterpret_cast<const u8*>(O.bits.data());
    const bool lists = !O.g_all;
    const i64* gptr = O.g_same ? O.a_ptr.data() : O.g_ptr.data();
    const vi lane = {0, 1, 2, 3, 4, 5, 6, 7};
    float tmp[8];
    float* const dv_end = dvals ? dvals + (lists ? gptr[o1] : o1 * K) : nullptr;
    for (i64 o = o0; o < o1; o++) {
        const float* ga = grad_a + o * K;
        float* dv = dvals ? dvals + (lists ? gptr[o] : o * K) : nullptr;
        for (int j = 0; j < K; j += 8) {
            const i64 e = o * K + j;
            unsigned m;
            if (O.bpe == 1) {
                m = bytes[e >> 3];
            } else {  // Clip(0, hi): G = the linear state (bit 0 of each 2-bit code)
                u16 st;
                std::memcpy(&st, bytes + (e >> 2), 2);
                m = unsigned(kC8.even[st & 0xff]) | (unsigned(kC8.even[st >> 8]) << 4);
            }
            const vi in_g = ((vi{} + int(m)) >> lane & 1) != 0;
            const vf8 d = in_g ? loadu8(ga + j) : vzero8();
            if (D) storeu8(D + o * ldd + j, d);
            if (dv) {
                if (lists) {
                    const vf8 packed = __builtin_shuffle(d, kC8.perm[m]);
                    // A whole-vector store spills up to 8 floats past this row's entries; later rows of
                    // this range overwrite the spill, but nothing may land past the range's own end
                    // (the next range belongs to another thread, and a short last row does not cover it).
                    if (dv + 8 <= dv_end) {
                        storeu8(dv, packed);
                    } else {
                        storeu8(tmp, packed);
                        std::memcpy(dv, tmp, sizeof(float) * __builtin_popcount(m));
                    }
                    dv += __builtin_popcount(m);
                } else {
                    storeu8(dv + j, d);
                }
            }
            storeu8(tmp, d);
            for (int i = 0; i < 8; i++) dbl[j + i] += tmp[i];
        }
    }
    return true;
}

unsigned g_bits8(const ActInfo& I, i64 e) {
    const u8* bytes = reinterpret_cast<const u8*>(I.bits.data());
    if (I.bpe == 1) return bytes[e >> 3];
    u16 st;
    std::memcpy(&st, bytes + (e >> 2), 2);
    if (I.kind == KD_HSWISH) st = u16((st | (st >> 1)) & 0x5555);  // G = curved or identity
    return unsigned(kC8.even[st & 0xff]) | (unsigned(kC8.even[st >> 8]) << 4);
}
#else
bool grad_rows_fast(ActInfo&, const float*, i64, i64, float*, int, float*, double*) { return false; }

unsigned g_bits8(const ActInfo& I, i64 e) {
    unsigned m = 0;
    for (int i = 0; i < 8; i++) m |= unsigned(I.in_g_state(I.state(e + i))) << i;
    return m;
}
#endif

template <int ACT>
static inline void row_dispatch(Epi& E, Scratch& S, i64 p, const float* z) {
#ifdef ET_FAST_EPI
    if constexpr (ACT == ACT_RELU || ACT == ACT_CLIP || ACT == ACT_NONE || ACT == ACT_HSWISH) {
        if (E.K % 8 == 0 && (ACT != ACT_CLIP || E.I->kind == KD_CLIP0)) {
            if (E.listA) {
                if (E.listG) row_fast<ACT, true, true>(E, S, p, z);
                else row_fast<ACT, true, false>(E, S, p, z);
            } else {
                row_fast<ACT, false, false>(E, S, p, z);
            }
            return;
        }
    }
#endif
    if (E.listA) {
        if (E.listG) row_t<ACT, true, true>(E, S, p, z);
        else row_t<ACT, true, false>(E, S, p, z);
    } else {
        row_t<ACT, false, false>(E, S, p, z);
    }
}

void Epi::begin(ActInfo* info, float* a_out, int maxthreads) {
    I = info;
    aout = a_out;
    K = I->C;
    listA = !I->a_all;
    listG = !I->g_all && !I->g_same && !I->derived;
    store_idx = listA && !I->derived;
    store_vals = I->has_values;
    const i64 P = I->P;
    if (listA) { I->a_ptr.reset(P + 1); I->a_ptr[0] = 0; }
    if (listG) { I->g_ptr.reset(P + 1); I->g_ptr[0] = 0; }
    if (I->bpe) {
        I->nwords = (P * K * I->bpe + 63) / 64;
        I->bits.reset(I->nwords, true);
    }
    if (!listA && store_vals) { I->vals.reset(P * K); I->nvals = P * K; }
    I->acnt.reset(P);
    I->gcnt.reset(P);
    auto& pl = pool();
    while ((int)pl.size() < maxthreads) pl.emplace_back(new Scratch());
    nthreads = maxthreads;
    for (int t = 0; t < maxthreads; t++) {
        Scratch& S = *pl[t];
        S.chan.assign(K, 0);
        S.ch32.reset((size_t)round_up(std::max(K, 1), 8), true);  // read as 8-lane int vectors
        S.na = S.ng = 0;
        S.p0 = S.p1 = 0;
    }
}

void Epi::start(int tid, i64 p0, i64 p1) {
    Scratch& S = *pool()[tid];
    S.p0 = p0;
    S.p1 = p1;
    size_t n = (size_t)std::max<i64>(p1 - p0, 0) * K;
    // + slack: the fast rows store whole 8-lane vectors past the list end
    if (store_idx) S.ai.ensure(n + 8);
    if (listA && store_vals) S.av.ensure(n + 8);
    if (listG) S.gi.ensure(n + 8);
    S.arow.ensure(K);
    S.vrow.ensure(K);
    const size_t K64 = (size_t)(K + 63) / 64 * 64;
    if (S.nzb.size() < K64 || S.stride != K) {
        S.nzb.reset(K64, true);
        S.gb.reset(K64, true);
        S.st.reset(K64, true);
        S.st2.reset(K64, true);
        S.stride = K;
    }
}

void Epi::row(int tid, i64 p, const float* z) {
    Scratch& S = *pool()[tid];
    switch (I->act) {
        case ACT_RELU: row_dispatch<ACT_RELU>(*this, S, p, z); break;
        case ACT_CLIP: row_dispatch<ACT_CLIP>(*this, S, p, z); break;
        case ACT_HSWISH: row_dispatch<ACT_HSWISH>(*this, S, p, z); break;
        case ACT_LEAKY: row_dispatch<ACT_LEAKY>(*this, S, p, z); break;
        case ACT_SIGMOID: row_dispatch<ACT_SIGMOID>(*this, S, p, z); break;
        default: row_dispatch<ACT_NONE>(*this, S, p, z); break;
    }
}

void Epi::finish() {
    auto& pl = pool();
    std::vector<Scratch*> rs;
    for (int t = 0; t < nthreads; t++)
        if (pl[t]->p1 > pl[t]->p0) rs.push_back(pl[t].get());
    std::sort(rs.begin(), rs.end(), [](Scratch* a, Scratch* b) { return a->p0 < b->p0; });
    i64 cover = 0;
    for (Scratch* s : rs) {
        if (s->p0 != cover) throw std::logic_error("epilogue ranges do not tile the pixels");
        cover = s->p1;
    }
    if (cover != I->P) throw std::logic_error("epilogue ranges do not cover the pixels");
    const int nr = (int)rs.size();
    std::vector<i64> oa(nr + 1, 0), og(nr + 1, 0);
    for (int i = 0; i < nr; i++) {
        oa[i + 1] = oa[i] + rs[i]->na;
        og[i + 1] = og[i] + rs[i]->ng;
    }
    if (store_idx) I->a_idx.reset(oa[nr]);
    if (listA && store_vals) { I->vals.reset(oa[nr]); I->nvals = oa[nr]; }
    if (listG) { I->g_idx.reset(og[nr]); I->nnz_g = og[nr]; }
    const int K = this->K;
    ActInfo* In = I;
    const bool lA = listA, lG = listG, li = store_idx, lv = store_vals;
#pragma omp parallel for schedule(static, 1)
    for (int i = 0; i < nr; i++) {
        Scratch& S = *rs[i];
        i64 ca = oa[i], cg = og[i];
        for (i64 p = S.p0; p < S.p1; p++) {
            if (lA) { ca += In->a_ptr[p + 1]; In->a_ptr[p + 1] = ca; }
            if (lG) { cg += In->g_ptr[p + 1]; In->g_ptr[p + 1] = cg; }
        }
        if (li && S.na) std::memcpy(In->a_idx.data() + oa[i], S.ai.data(), S.na * sizeof(i32));
        if (lA && lv && S.na) std::memcpy(In->vals.data() + oa[i], S.av.data(), S.na * sizeof(float));
        if (lG && S.ng) std::memcpy(In->g_idx.data() + og[i], S.gi.data(), S.ng * sizeof(i32));
    }
    I->chan_nnz.assign(K, 0);
    for (Scratch* s : rs)
        for (int k = 0; k < K; k++) I->chan_nnz[k] += s->chan[k] + s->ch32[k];
    if (!I->a_constrained) std::fill(I->chan_nnz.begin(), I->chan_nnz.end(), I->P);
    i64 na = 0, ng = 0;
    for (i64 p = 0; p < I->P; p++) { na += I->acnt[p]; ng += I->gcnt[p]; }
    I->nnz_a = na;
    I->cnt_g = ng;
    if (I->g_same) I->nnz_g = na;
    if (I->derived && !I->g_same && !I->g_all) {  // G's value offsets, from its counts
        I->g_ptr.reset(I->P + 1);
        I->g_ptr[0] = 0;
        for (i64 p = 0; p < I->P; p++) I->g_ptr[p + 1] = I->g_ptr[p] + I->gcnt[p];
        I->nnz_g = ng;
    }
    int T = max_threads();
    if (listA) I->part = balanced_split(I->a_ptr.data(), I->P, T);
    else { I->part.resize(T + 1); for (int t = 0; t <= T; t++) I->part[t] = split(I->P, T, t); }
    // the lists are in their final arrays now: the per-thread copies go back to the recycler
    // (kept, they would hold the largest layer's lists twice for the whole step)
    for (Scratch* sc : rs) {
        sc->ai.clear();
        sc->av.clear();
        sc->gi.clear();
    }
}

InfoPtr make_info(int N, int H, int W, int C, int act, float alpha, float lo, float hi, bool dense) {
    auto I = std::make_shared<ActInfo>();
    I->N = N; I->H = H; I->W = W; I->C = C;
    I->P = (i64)N * H * W;
    I->act = act; I->alpha = alpha; I->lo = lo; I->hi = hi;
    I->kind = kind_of(act, lo, hi);
    I->all = dense;
    I->a_constrained = I->kind != KD_DENSE;
    I->a_all = dense || I->kind == KD_DENSE;
    I->g_all = dense || I->kind == KD_DENSE || I->kind == KD_INPUT;
    I->g_same = !I->g_all && I->kind == KD_RELU;
    I->derived = !dense && (I->kind == KD_RELU || I->kind == KD_CLIP0);
    I->bpe = bits_per_elem(act);
    return I;
}

InfoPtr activate_rows(const float* z, float* a_out, int N, int H, int W, int C, int act, float alpha,
                      float lo, float hi, bool dense) {
    InfoPtr I = make_info(N, H, W, C, act, alpha, lo, hi, dense);
    Epi E;
    const int T = max_threads();
    E.begin(I.get(), a_out, T);
    const i64 P = I->P;
#pragma omp parallel num_threads(T)
    {
        int t = thread_id(), nt = team_size();
        i64 p0 = split(P, nt, t), p1 = split(P, nt, t + 1);
        E.start(t, p0, p1);
        for (i64 p = p0; p < p1; p++) E.row(t, p, z + p * C);
    }
    E.finish();
    return I;
}

// ---------------------------------------------------------------- derived lists
namespace {
struct Perm8 {
    u8 idx[256][8];  // positions of the set bits of m, in order
    u8 even[256];    // bits 0, 2, 4, 6 -> bits 0..3
    Perm8() {
        for (int m = 0; m < 256; m++) {
            int n = 0;
            for (int i = 0; i < 8; i++) {
                idx[m][i] = 0;
                if (m >> i & 1) idx[m][n++] = u8(i);
            }
            even[m] = u8((m & 1) | (m >> 1 & 2) | (m >> 2 & 4) | (m >> 3 & 8));
        }
    }
};
const Perm8 kPerm8;

// nb (<= 32) bits of the bit array starting at bit `bit` (the array has a word of slack)
inline u64 bits_at(const u64* w, i64 bit, int nb) {
    const i64 wi = bit >> 6;
    const int sh = int(bit & 63);
    u64 v = w[wi] >> sh;
    if (sh && sh + nb > 64) v |= w[wi + 1] << (64 - sh);
    return v & ((u64(1) << nb) - 1);
}

// membership in A (which 0) or G (which 1) of the 8 elements from e, as 8 bits
inline unsigned mask8_at(const ActInfo& I, int which, i64 e) {
    if (I.bpe == 1) return unsigned(bits_at(I.bits.data(), e, 8));  // ReLU: the state bit is A = G
    const u64 st = bits_at(I.bits.data(), 2 * e, 16);                // ReLU6: 0 zero, 1 linear, 2 saturated
    const u64 sel = which == 0 ? ((st | (st >> 1)) & 0x5555) : (st & 0x5555);
    return unsigned(kPerm8.even[sel & 0xff]) | (unsigned(kPerm8.even[(sel >> 8) & 0xff]) << 4);
}
}  // namespace

int decode_row(const ActInfo& I, int which, i64 p, int c0, int n, i32* out) {
    const i64 e0 = p * I.C + c0;
    int cnt = 0;
    for (int j = 0; j < n; j += 8) {
        unsigned m = mask8_at(I, which, e0 + j);
        if (n - j < 8) m &= (1u << (n - j)) - 1;
        const u8* pm = kPerm8.idx[m];
        for (int i = 0; i < 8; i++) out[cnt + i] = c0 + j + pm[i];  // fixed trip count: no branch per entry
        cnt += popc64(m);
    }
    return cnt;
}

int count_row(const ActInfo& I, int which, i64 p, int c0, int n) {
    const i64 e0 = p * I.C + c0;
    int cnt = 0;
    for (int j = 0; j < n; j += 8) {
        unsigned m = mask8_at(I, which, e0 + j);
        if (n - j < 8) m &= (1u << (n - j)) - 1;
        cnt += popc64(m);
    }
    return cnt;
}

void materialize(RowView& V, ABuf<i32>& buf) {
    if (V.all || !V.info) return;
    const ActInfo& I = *V.info;
    const i64 P = I.P;
    const int C = I.C, which = V.which;
    const i64* ptr = V.ptr;
    buf.reset((size_t)ptr[P]);
    i32* out = buf.data();
    constexpr i64 kRows = 256;
    const i64 chunks = (P + kRows - 1) / kRows;
#pragma omp parallel
    {
        std::vector<i32> last(C + 8);
#pragma omp for schedule(static)
        for (i64 ch = 0; ch < chunks; ch++) {
            const i64 p0 = ch * kRows, p1 = std::min(P, p0 + kRows);
            // rows in order: decode_row writes whole groups of 8, and each row overwrites the
            // overrun of the rows before it; a row whose overrun could reach past the chunk
            // (into rows another thread owns; short rows in between do not cover it) goes
            // through scratch
            const i64 end = ptr[p1], span = (C + 7) / 8 * 8;
            for (i64 p = p0; p < p1; p++) {
                if (ptr[p] + span <= end) {
                    decode_row(I, which, p, 0, C, out + ptr[p]);
                } else {
                    const int n = decode_row(I, which, p, 0, C, last.data());
                    std::memcpy(out + ptr[p], last.data(), sizeof(i32) * n);
                }
            }
        }
    }
    V.idx = out;
    V.info = nullptr;
}

// ---------------------------------------------------------------- views
RowView ActInfo::view_a(int groups) {
    RowView v;
    v.all = a_all;
    v.C = C;
    v.groups = groups;
    v.Cg = C / groups;
    v.iota = iota_ptr(C);
    if (!a_all) {
        v.ptr = a_ptr.data();
        v.idx = derived ? nullptr : a_idx.data();
        if (derived) v.info = this, v.which = 0;
        if (groups > 1) v.gofs = gofs(0, groups);
    }
    return v;
}

RowView ActInfo::view_g(int groups) {
    RowView v;
    v.all = g_all;
    v.C = C;
    v.groups = groups;
    v.Cg = C / groups;
    v.iota = iota_ptr(C);
    if (!g_all) {
        v.ptr = g_same ? a_ptr.data() : g_ptr.data();
        v.idx = derived ? nullptr : g_same ? a_idx.data() : g_idx.data();
        if (derived) v.info = this, v.which = g_same ? 0 : 1;
        if (groups > 1) v.gofs = gofs(1, groups);
    }
    return v;
}

const i32* ActInfo::gofs(int which, int groups) {
    std::lock_guard<std::mutex> lk(mu);
    auto key = std::make_pair(which, groups);
    auto it = gofs_cache.find(key);
    if (it != gofs_cache.end()) return it->second.data();
    const bool useA = which == 0 || g_same;
    const i64* ptr = useA ? a_ptr.data() : g_ptr.data();
    const i32* idx = useA ? a_idx.data() : g_idx.data();
    ABuf<i32> buf;
    buf.reset(P * (groups + 1));
    const int Cg = C / groups;
    i32* b = buf.data();
    const ActInfo& I = *this;
    const int w = useA ? 0 : 1;
#pragma omp parallel for schedule(static)
    for (i64 p = 0; p < P; p++) {
        const i64 s = ptr[p], e = ptr[p + 1];
        i32* go = b + p * (groups + 1);
        if (I.derived) {
            i32 acc = 0;
            for (int g = 0; g < groups; g++) {
                go[g] = acc;
                acc += count_row(I, w, p, g * Cg, Cg);
            }
        } else {
            i64 j = s;
            for (int g = 0; g < groups; g++) {
                go[g] = i32(j - s);
                const int lim = (g + 1) * Cg;
                while (j < e && idx[j] < lim) j++;
            }
        }
        go[groups] = i32(e - s);
    }
    auto res = gofs_cache.emplace(key, std::move(buf));
    return res.first->second.data();
}

const i32* ActInfo::group_counts(int which, int groups) {
    if (groups == 1) return which == 0 ? acnt.data() : gcnt.data();
    {
        std::lock_guard<std::mutex> lk(mu);
        auto it = gcount_cache.find({which, groups});
        if (it != gcount_cache.end()) return it->second.data();
    }
    ABuf<i32> buf;
    buf.reset(P * groups);
    const int Cg = C / groups;
    i32* b = buf.data();
    const bool constrained = which == 0 ? a_constrained : (kind != KD_DENSE && kind != KD_INPUT);
    if (!constrained) {
        for (i64 i = 0; i < P * groups; i++) b[i] = Cg;
    } else if (which == 0) {
        const float* a = dense_values();
#pragma omp parallel for schedule(static)
        for (i64 p = 0; p < P; p++)
            for (int g = 0; g < groups; g++) {
                int c = 0;
                for (int k = g * Cg; k < (g + 1) * Cg; k++) c += a[p * C + k] != 0.f;
                b[p * groups + g] = c;
            }
    } else {
#pragma omp parallel for schedule(static)
        for (i64 p = 0; p < P; p++)
            for (int g = 0; g < groups; g++) {
                int c = 0;
                for (int k = g * Cg; k < (g + 1) * Cg; k++) c += in_g_state(state(p * C + k));
                b[p * groups + g] = c;
            }
    }
    std::lock_guard<std::mutex> lk(mu);
    auto res = gcount_cache.emplace(std::make_pair(which, groups), std::move(buf));
    return res.first->second.data();
}

void ActInfo::drop_caches() {
    std::lock_guard<std::mutex> lk(mu);
    dense_cache.reset();
    a_cache.reset();
}

const float* ActInfo::a_values() {
    if (!has_values) throw std::logic_error("this activation's values were not kept (no consumer reads them)");
    if (act != ACT_HSWISH) return vals.data();
    std::lock_guard<std::mutex> lk(mu);
    if (a_cache) return a_cache->data();
    auto d = std::make_unique<ABuf<float>>();
    d->reset(std::max<i64>(nvals, 1));
    float* o = d->data();
    const ActInfo& I = *this;
#pragma omp parallel for schedule(static)
    for (i64 p = 0; p < P; p++) {
        if (I.a_all) {
            for (int k = 0; k < C; k++) {
                const i64 e = p * C + k;
                o[e] = hswish_from_stored(I.vals[e], I.state(e));
            }
        } else {
            for (i64 j = I.a_ptr[p]; j < I.a_ptr[p + 1]; j++)
                o[j] = hswish_from_stored(I.vals[j], I.state(p * C + I.a_idx[j]));
        }
    }
    a_cache = std::move(d);
    return a_cache->data();
}

const float* ActInfo::dense_values() {
    const float* av = a_values();
    if (a_all) return av;
    std::lock_guard<std::mutex> lk(mu);
    if (dense_cache) return dense_cache->data();
    auto d = std::make_unique<ABuf<float>>();
    d->reset(P * C);
    float* o = d->data();
#pragma omp parallel for schedule(static)
    for (i64 p = 0; p < P; p++) {
        float* r = o + p * C;
        std::fill(r, r + C, 0.f);
        const i32* ix = derived ? nullptr : a_idx.data() + a_ptr[p];
        std::vector<i32> buf;
        if (derived) {
            buf.resize((size_t)C + 8);
            decode_row(*this, 0, p, 0, C, buf.data());
            ix = buf.data();
        }
        for (i64 j = a_ptr[p]; j < a_ptr[p + 1]; j++) r[ix[j - a_ptr[p]]] = av[j];
    }
    dense_cache = std::move(d);
    return dense_cache->data();
}

std::unique_ptr<Transposed> ActInfo::transposed(bool pointwise, int tile_px, const TGeo* geo) {
    const float* av = a_values();
    if (pointwise) geo = nullptr;
    auto T = std::make_unique<Transposed>();
    T->pointwise = pointwise;
    T->tile_px = tile_px;
    if (geo) { T->has_geo = true; T->geo = *geo; }
    if (pointwise) {
        for (i64 p = 0; p < P; p += tile_px) {
            T->tp0.push_back(p);
            T->tp1.push_back(std::min<i64>(P, p + tile_px));
            T->tn.push_back(0);
        }
    } else {
        const int rows = std::max(1, tile_px / std::max(1, W));
        for (int n = 0; n < N; n++)
            for (int h = 0; h < H; h += rows) {
                i64 base = (i64)n * H * W;
                T->tp0.push_back(base + (i64)h * W);
                T->tp1.push_back(base + (i64)std::min(H, h + rows) * W);
                T->tn.push_back(n);
            }
    }
    const i64 nt = (i64)T->tp0.size();
    T->ntiles = nt;
    const i64 total = a_all ? P * C : a_ptr[P];
    T->ptr.reset(nt * C + 1);
    T->pix.reset(total);
    T->val.reset(total);
    const TGeo G = geo ? *geo : TGeo();
    T->ptr[nt * C] = total;
    const bool all_ = a_all;
    const int HW = H * W;
    // the code of a pixel depends on its (ih, iw) only: one table per call, not divisions per pixel
    std::vector<i32> codes(pointwise ? 0 : HW);
    for (int q = 0; q < (pointwise ? 0 : HW); q++) {
        const int ih = q / W, iw = q % W;
        if (geo) {
            u32 vm = 0;
            for (int r = 0; r < G.R; r++)
                for (int s = 0; s < G.S; s++) {
                    const int oh = ih + G.pt - r * G.dh, ow = iw + G.pl - s * G.dw;
                    if (oh >= 0 && oh < G.OH && ow >= 0 && ow < G.OW) vm |= 1u << (r * G.S + s);
                }
            codes[q] = i32((u32(ih * G.OW + iw) << (G.R * G.S)) | vm);
        } else {
            codes[q] = (ih << 16) | iw;
        }
    }
    const i32* codep = codes.data();
    Transposed* Tp = T.get();
    ActInfo* self = this;
#pragma omp parallel
    {
        std::vector<i64> cnt(C);
        std::vector<i32> rowbuf;
#pragma omp for schedule(dynamic, 4)
        for (i64 t = 0; t < nt; t++) {
            const i64 p0 = Tp->tp0[t], p1 = Tp->tp1[t];
            const i64 base = all_ ? p0 * C : self->a_ptr[p0];
            std::fill(cnt.begin(), cnt.end(), 0);
            // the tile's channel indices, decoded from the state bits where the info keeps no lists
            const i32* tix = nullptr;
            if (!all_) {
                if (self->derived) {
                    const i64 n = self->a_ptr[p1] - self->a_ptr[p0];
                    if ((i64)rowbuf.size() < n + C + 8) rowbuf.resize(n + C + 8);
                    i64 k = 0;
                    for (i64 p = p0; p < p1; p++) k += decode_row(*self, 0, p, 0, C, rowbuf.data() + k);
                    tix = rowbuf.data();
                } else {
                    tix = self->a_idx.data() + self->a_ptr[p0];
                }
            }
            if (all_) {
                for (int c = 0; c < C; c++) cnt[c] = p1 - p0;
            } else {
                for (i64 j = 0; j < self->a_ptr[p1] - self->a_ptr[p0]; j++) cnt[tix[j]]++;
            }
            i64 acc = base;
            for (int c = 0; c < C; c++) {
                Tp->ptr[t * C + c] = acc;
                i64 n = cnt[c];
                cnt[c] = acc;
                acc += n;
            }
            const int n = Tp->tn[t];
            for (i64 p = p0; p < p1; p++) {
                const i32 code = pointwise ? (i32)p : codep[p - (i64)n * HW];
                if (all_) {
                    const float* v = av + p * C;
                    for (int c = 0; c < C; c++) {
                        i64 pos = cnt[c]++;
                        Tp->pix[pos] = code;
                        Tp->val[pos] = v[c];
                    }
                } else {
                    for (i64 j = self->a_ptr[p]; j < self->a_ptr[p + 1]; j++) {
                        i64 pos = cnt[tix[j - self->a_ptr[p0]]]++;
                        Tp->pix[pos] = code;
                        Tp->val[pos] = av[j];
                    }
                }
            }
        }
    }
    return T;
}

i64 ActInfo::stored_bytes() const {
    // state bits + one float per stored value (a_cache/dense_cache are
    // recomputable scratch of the kernels, not kept by FP)
    return nwords * 8 + nvals * 4;
}

i64 ActInfo::plan_bytes() const {
    i64 b = 0;
    b += (i64)a_ptr.size() * 8 + (i64)a_idx.size() * 4;
    b += (i64)g_ptr.size() * 8 + (i64)g_idx.size() * 4;
    b += (i64)acnt.size() * 4 + (i64)gcnt.size() * 4;
    b += (i64)chan_nnz.size() * 8;
    for (auto& kv : gofs_cache) b += (i64)kv.second.size() * 4;
    for (auto& kv : gcount_cache) b += (i64)kv.second.size() * 4;
    return b;
}

// ---------------------------------------------------------------- backward of f
void fprime_row(ActInfo& I, i64 p, float* fp);

void fprime_row(ActInfo& I, i64 p, float* fp) {
    const int K = I.C;
    const i64 e0 = p * K;
    switch (I.act) {
        case ACT_RELU:
            for (int k = 0; k < K; k++) fp[k] = (float)I.state(e0 + k);
            break;
        case ACT_CLIP:
            for (int k = 0; k < K; k++) fp[k] = I.state(e0 + k) == 1 ? 1.f : 0.f;
            break;
        case ACT_HSWISH: {
            // curved: z is the stored value; curved but outside A (a == 0): z == 0 up to underflow, f' = 1/2
            i64 j = I.a_all ? e0 : I.a_ptr[p];
            const i64 je = I.a_all ? e0 + K : I.a_ptr[p + 1];
            for (int k = 0; k < K; k++) {
                const int s = I.state(e0 + k);
                const bool inA = I.a_all || (j < je && I.a_idx[j] == k);
                const float zv = inA ? I.vals[j] : 0.f;
                if (inA) j++;
                fp[k] = s == 1 ? (zv / 3.f + 0.5f) : (s == 2 ? 1.f : 0.f);
            }
            break;
        }
        case ACT_LEAKY:
            for (int k = 0; k < K; k++) fp[k] = I.state(e0 + k) ? 1.f : I.alpha;
            break;
        case ACT_SIGMOID: {
            const float* a = I.vals.data() + e0;
            for (int k = 0; k < K; k++) fp[k] = (1.f - a[k]) * a[k];
            break;
        }
        default:
            for (int k = 0; k < K; k++) fp[k] = 1.f;
    }
}

void grad_z_dense(ActInfo& I, const float* grad_a, float* d) {
    const int K = I.C;
#pragma omp parallel
    {
        std::vector<float> fp(K);
#pragma omp for schedule(static)
        for (i64 p = 0; p < I.P; p++) {
            fprime_row(I, p, fp.data());
            const float* g = grad_a + p * K;
            float* o = d + p * K;
            for (int k = 0; k < K; k++) o[k] = fp[k] != 0.f ? g[k] * fp[k] : 0.f;
        }
    }
}

// Rebuild a z that reproduces the stored states (exact for the stored data).
static void reconstruct_z(ActInfo& I, float* z) {
    const int K = I.C;
    if (I.act == ACT_HSWISH) {
        // stored values: z where curved, a (= z) in the identity region
#pragma omp parallel for schedule(static)
        for (i64 p = 0; p < I.P; p++) {
            i64 j = I.a_all ? p * K : I.a_ptr[p];
            const i64 je = I.a_all ? (p + 1) * K : I.a_ptr[p + 1];
            for (int k = 0; k < K; k++) {
                const i64 e = p * K + k;
                const int s = I.state(e);
                const bool inA = I.a_all || (j < je && I.a_idx[j] == k);
                const float v = inA ? I.vals[j] : 0.f;
                if (inA) j++;
                z[e] = s == 0 ? -4.f : v;
            }
        }
        return;
    }
    const float* a = I.dense_values();
#pragma omp parallel for schedule(static)
    for (i64 e = 0; e < I.P * K; e++) z[e] = a[e];
}

static InfoPtr copy_dense_kind(const InfoPtr& in, bool dense, int N, int H, int W, int C) {
    InfoPtr o = make_info(N, H, W, C, in->act, in->alpha, in->lo, in->hi, dense);
    o->vals.reset(in->P * in->C);
    o->nvals = in->P * in->C;
    std::memcpy(o->vals.data(), in->vals.data(), o->nvals * 4);
    if (in->bpe) {
        o->nwords = in->nwords;
        o->bits.reset(in->nwords);
        std::memcpy(o->bits.data(), in->bits.data(), in->nwords * 8);
    }
    o->acnt.reset(o->P);
    o->gcnt.reset(o->P);
    for (i64 p = 0; p < o->P; p++) { o->acnt[p] = C; o->gcnt[p] = C; }
    o->nnz_a = o->cnt_g = o->P * C;
    o->chan_nnz.assign(C, o->P);
    int T = max_threads();
    o->part.resize(T + 1);
    for (int t = 0; t <= T; t++) o->part[t] = split(o->P, T, t);
    return o;
}

static InfoPtr rebuild(const InfoPtr& in, bool dense, int N, int H, int W, int C) {
    if (in->kind == KD_DENSE) return copy_dense_kind(in, dense, N, H, W, C);
    ABuf<float> z;
    z.reset(in->P * in->C);
    reconstruct_z(*in, z.data());
    int act = in->act;
    return activate_rows(z.data(), nullptr, N, H, W, C, act, in->alpha, in->lo, in->hi, dense);
}

InfoPtr to_mode(const InfoPtr& in, bool dense) {
    if (in->all == dense) return in;
    return rebuild(in, dense, in->N, in->H, in->W, in->C);
}

InfoPtr flatten_info(const InfoPtr& in) {
    return rebuild(in, in->all, in->N, 1, 1, in->H * in->W * in->C);
}

}  // namespace et
