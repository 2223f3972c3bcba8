// The fused activation epilogue (end of FP) and the d = grad_a * f'(z) prologue (start of BP),
// both written once over the activation traits (act.hpp).
//
// A row of z becomes, eight channels at a time: a, the stored values, the state bits, the
// pixel's A (and G) lists, its counts and its zero structure (all-zero pixel, all-zero channel
// blocks). Eight lanes are one vf8 where the compiler has vector extensions (the lists are
// compacted with a permutation table, lowered to vpermps on AVX2, tbl on NEON); the float path
// runs the same traits expressions one lane at a time.
#include "info.hpp"

namespace et {

namespace {

inline int popc(unsigned m) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_popcount(m);
#else
    int n = 0;
    for (; m; m &= m - 1) n++;
    return n;
#endif
}

// 8 bits -> 16 bits with a zero between each (bit i -> bit 2i)
struct Tables {
    u16 spread[256];
    u8 even[256];   // bits 0, 2, 4, 6 -> bits 0..3
    u8 idx[256][8]; // positions of the set bits of m, in order (then zeros)
    Tables() {
        for (int m = 0; m < 256; m++) {
            u16 sp = 0;
            int n = 0;
            for (int i = 0; i < 8; i++) {
                sp |= u16((m >> i & 1) << (2 * i));
                idx[m][i] = 0;
            }
            for (int i = 0; i < 8; i++)
                if (m >> i & 1) idx[m][n++] = u8(i);
            spread[m] = sp;
            even[m] = u8((m & 1) | (m >> 1 & 2) | (m >> 2 & 4) | (m >> 3 & 8));
        }
    }
};
const Tables kT;

#if defined(__GNUC__) && !defined(__clang__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && !defined(ET_PORTABLE_EPILOGUE)
#define ET_VEC_EPI 1  // vf8 lanes and __builtin_shuffle compaction
struct Perm {
    vi8 perm[256];  // lanes of the set bits of m first, in order
    vi8 live[8];    // lanes < n set
    Perm() {
        for (int n = 0; n < 8; n++)
            for (int i = 0; i < 8; i++) live[n][i] = i < n ? -1 : 0;
        for (int m = 0; m < 256; m++) {
            vi8 v = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int i = 0; i < 8; i++) v[i] = kT.idx[m][i];
            perm[m] = v;
        }
    }
};
const Perm kP;

inline unsigned mask8(vi8 c) {  // lane i of c is -1 or 0 -> bit i
#if defined(__AVX__)
    return (unsigned)__builtin_ia32_movmskps256((__attribute__((vector_size(32))) float)c);
#else
    unsigned m = 0;
    for (int i = 0; i < 8; i++) m |= unsigned(c[i] & 1) << i;
    return m;
#endif
}
#endif

// OR nb (<= 64) bits of v into the bit array at bit position pos; words another chunk may
// write too (wfirst, wlast) are updated atomically.
inline void or_bits(u64* bits, i64 pos, u64 v, int nb, i64 wfirst, i64 wlast) {
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
            bits[w] |= x;  // (no atomics: such builds run the pool with one thread per word)
#endif
        } else {
            bits[w] |= x;
        }
    };
    put(wi, v << sh);
    if (sh && sh + nb > 64) put(wi + 1, v >> (64 - sh));
}

// One group of up to eight channels [j, j + n) of a row, as the traits give it.
struct Group {
    float a[8], v[8];  // a, stored values
    unsigned nz = 0, s1 = 0, s2 = 0, g = 0;  // masks: a != 0, state planes, G
};

template <class T>
inline void group_scalar(const float* z, int n, const ActParams& prm, int kind, Group& G) {
    G.nz = G.s1 = G.s2 = G.g = 0;
    for (int l = 0; l < n; l++) {
        const float zl = z[l];
        const float a = T::template value<float>(zl, prm);
        const bool s1 = T::template s1<float>(zl, prm), s2 = T::template s2<float>(zl, prm);
        G.a[l] = a;
        G.v[l] = T::template stored<float>(zl, a, s1);
        G.nz |= unsigned(a != 0.f) << l;
        G.s1 |= unsigned(s1) << l;
        G.s2 |= unsigned(s2) << l;
        G.g |= unsigned(bool(T::template g<float>(s1, s2, kind))) << l;
    }
}

}  // namespace

// Per-thread row scratch and per-chunk list segments (see info.hpp, Epi).
struct EpiThread {
    std::vector<i64> chan;   // |A| per channel of the rows this thread ran
#ifdef ET_VEC_EPI
    std::vector<vi8> chan8;  // the same, eight channels per vector (the vector path; minus the masks)
#endif
    i64 zero_px_a = 0, zero_px_g = 0, zero_blk_a = 0, zero_blk_g = 0;
};

namespace {

// Zero channel blocks of one row: blocks of VW channels (the last one may be shorter) whose
// masks (nz or G) are all clear. masks[q] holds channels 8q..8q+7.
inline int zero_blocks(const u8* masks, int K) {
    int zb = 0;
    for (int c0 = 0; c0 < K; c0 += VW) {
        const int c1 = std::min(K, c0 + VW);
        unsigned any = 0;
        for (int c = c0; c < c1; c += 8) {
            unsigned m = masks[c >> 3];
            const int lo = c & 7, cnt = std::min(8 - lo, c1 - c);
            any |= (m >> lo) & ((1u << cnt) - 1);
        }
        zb += any == 0;
    }
    return zb;
}

template <class T, bool LA, bool LG>
void epi_row(Epi& E, EpiThread& S, EpiChunk& C, i64 p, const float* ET_RESTRICT z) {
    ActInfo& I = *E.I;
    const int K = E.K, kind = I.kind;
    const ActParams prm{I.alpha, I.lo, I.hi};
    float* aout = E.aout ? E.aout + p * K : nullptr;
    float* vout = LA || !E.store_vals ? nullptr : I.vals.data() + p * K;
    i32* ET_RESTRICT ai = C.ai;
    float* ET_RESTRICT av = C.av;
    i32* ET_RESTRICT gi = C.gi;
    i64* ET_RESTRICT ch = S.chan.data();
    i64 na = C.na, ng = C.ng;
    int acount = 0, gcount = 0;
    const int bpe = I.bpe;
    u8* bytes = reinterpret_cast<u8*>(I.bits.data());
    const bool aligned = (K & 7) == 0;
    u8 nzm[(kMaxRowChannels + 7) / 8], gm[(kMaxRowChannels + 7) / 8];
    const bool track = K <= kMaxRowChannels;  // zero structure (rows wider than this: not measured)
    for (int j = 0; j < K; j += 8) {
        const int n = std::min(8, K - j);
        const unsigned live = n == 8 ? 0xffu : (1u << n) - 1;
        Group G;
#ifdef ET_VEC_EPI
        if constexpr (T::lanes8) {
            vf8 zv;
            if (n == 8) {
                zv = loadu8(z + j);
            } else {
                float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                std::memcpy(t, z + j, sizeof(float) * n);
                zv = loadu8(t);
            }
            const vf8 a = T::template value<vf8>(zv, prm);
            const vi8 s1 = T::template s1<vf8>(zv, prm), s2 = T::template s2<vf8>(zv, prm);
            const vf8 sv = T::template stored<vf8>(zv, a, s1);
            G.nz = mask8(a != vzero8()) & live;
            G.s1 = mask8(s1) & live;
            G.s2 = mask8(s2) & live;
            G.g = mask8(T::template g<vf8>(s1, s2, kind)) & live;
            S.chan8[j >> 3] -= (a != vzero8()) & (n == 8 ? ~vi8{} : kP.live[n]);
            if (n == 8) {  // whole groups go straight to their rows
                if (aout) storeu8(aout + j, a);
                if (vout) storeu8(vout + j, sv);
            } else {
                storeu8(G.a, a);
                storeu8(G.v, sv);
            }
            if (LA) {
                const vi8 pm = kP.perm[G.nz];
                if (E.store_vals) storeu8(av + na, __builtin_shuffle(sv, pm));
                if (E.store_idx) {
                    const vi8 ix = pm + j;
                    std::memcpy(ai + na, &ix, sizeof ix);
                }
            }
            if (LG) {
                const vi8 ix = kP.perm[G.g] + j;
                std::memcpy(gi + ng, &ix, sizeof ix);
            }
        } else
#endif
        {
            group_scalar<T>(z + j, n, prm, kind, G);
            if (LA)
                for (int i = 0, m = int(G.nz); m; m &= m - 1, i++) {
                    const int l = kT.idx[G.nz][i];
                    if (E.store_idx) ai[na + i] = j + l;
                    if (E.store_vals) av[na + i] = G.v[l];
                }
            if (LG)
                for (int i = 0, m = int(G.g); m; m &= m - 1, i++) gi[ng + i] = j + kT.idx[G.g][i];
        }
#ifdef ET_VEC_EPI
        if (!T::lanes8 || n < 8)
#endif
        {
            if (aout) std::memcpy(aout + j, G.a, sizeof(float) * n);
            if (vout) std::memcpy(vout + j, G.v, sizeof(float) * n);
        }
        if (bpe == 1) {
            if (aligned) bytes[(p * K + j) >> 3] = u8(G.s1);
            else or_bits(I.bits.data(), p * K + j, G.s1, n, C.wfirst, C.wlast);
        } else if (bpe == 2) {
            const u16 st = u16(kT.spread[G.s1] | (kT.spread[G.s2] << 1));
            if (aligned) std::memcpy(bytes + ((p * K + j) >> 2), &st, 2);
            else or_bits(I.bits.data(), 2 * (p * K + j), st, 2 * n, C.wfirst, C.wlast);
        }
#ifdef ET_VEC_EPI
        if constexpr (!T::lanes8)
#endif
            for (unsigned m = G.nz; m; m &= m - 1) ch[j + kT.idx[m & -m][0]]++;
        const int ca = popc(G.nz), cg = popc(G.g);
        acount += ca;
        gcount += cg;
        if (LA) na += ca;
        if (LG) ng += cg;
        if (track) {
            nzm[j >> 3] = u8(G.nz);
            gm[j >> 3] = u8(G.g);
        }
    }
    if (!I.a_constrained) acount = K;
    if (kind == KD_DENSE) gcount = K;
    I.acnt[p] = acount;
    I.gcnt[p] = gcount;
    if (track) {
        S.zero_px_a += acount == 0;
        S.zero_px_g += gcount == 0;
        S.zero_blk_a += I.a_constrained ? zero_blocks(nzm, K) : 0;
        S.zero_blk_g += kind == KD_DENSE ? 0 : zero_blocks(gm, K);
    }
    if (LA) I.a_ptr[p + 1] = na - C.na;
    if (LG) I.g_ptr[p + 1] = ng - C.ng;
    C.na = na;
    C.ng = ng;
}

template <class T>
void epi_dispatch(Epi& E, EpiThread& S, EpiChunk& C, i64 p, const float* z) {
    if (E.listA) {
        if (E.listG) epi_row<T, true, true>(E, S, C, p, z);
        else epi_row<T, true, false>(E, S, C, p, z);
    } else {
        epi_row<T, false, false>(E, S, C, p, z);
    }
}

}  // namespace

Epi::Epi() = default;
Epi::~Epi() = default;

void Epi::begin_chunks(i64 chunk) {
    K = I->C;
    listA = !I->a_all;
    listG = !I->g_all && !I->g_same && !I->derived;
    store_idx = listA && !I->derived;
    store_vals = I->has_values;
    const i64 P = I->P;
    chunk_px = std::max<i64>(1, chunk);
    nchunks = (P + chunk_px - 1) / chunk_px;
    if (listA) { I->a_ptr.reset(P + 1); I->a_ptr[0] = 0; }
    if (listG) { I->g_ptr.reset(P + 1); I->g_ptr[0] = 0; }
    if (I->bpe) {
        I->nwords = (P * K * I->bpe + 63) / 64;
        I->bits.reset(I->nwords, true);
    }
    if (!listA && store_vals) { I->vals.reset(P * K); I->nvals = P * K; }
    I->acnt.reset(P);
    I->gcnt.reset(P);
    // each chunk's list entries go to its own segment (+ 8 slack: whole 8-lane stores), packed
    // in chunk order by finish()
    seg = chunk_px * K + 8;
    if (store_idx) sai.reset((size_t)(nchunks * seg));
    if (listA && store_vals) sav.reset((size_t)(nchunks * seg));
    if (listG) sgi.reset((size_t)(nchunks * seg));
    chunks.assign((size_t)nchunks, EpiChunk());
    const int bpe = I->bpe;
    for (i64 c = 0; c < nchunks; c++) {
        EpiChunk& C = chunks[c];
        C.ai = store_idx ? sai.data() + c * seg : nullptr;
        C.av = listA && store_vals ? sav.data() + c * seg : nullptr;
        C.gi = listG ? sgi.data() + c * seg : nullptr;
        const i64 p0 = c * chunk_px, p1 = std::min(P, p0 + chunk_px);
        C.wfirst = (p0 * K * bpe) >> 6;
        C.wlast = bpe ? ((p1 * K * bpe) - 1) >> 6 : 0;
    }
    threads.clear();
    const int T = std::max(1, pool_threads());
    for (int t = 0; t < T; t++) {
        threads.emplace_back(new EpiThread());
        threads.back()->chan.assign(K, 0);
#ifdef ET_VEC_EPI
        threads.back()->chan8.assign((size_t)(K + 7) / 8, vi8{});
#endif
    }
}

void Epi::row(int tid, i64 p, const float* z) {
    EpiThread& S = *threads[tid];
    EpiChunk& C = chunks[p / chunk_px];
    for_act(I->act, [&](auto T) { epi_dispatch<decltype(T)>(*this, S, C, p, z); });
}

void Epi::finish() {
    ActInfo& In = *I;
    const i64 P = In.P;
    std::vector<i64> oa(nchunks + 1, 0), og(nchunks + 1, 0);
    for (i64 c = 0; c < nchunks; c++) {
        oa[c + 1] = oa[c] + chunks[c].na;
        og[c + 1] = og[c] + chunks[c].ng;
    }
    if (store_idx) In.a_idx.reset(oa[nchunks]);
    if (listA && store_vals) { In.vals.reset(oa[nchunks]); In.nvals = oa[nchunks]; }
    if (listG) { In.g_idx.reset(og[nchunks]); In.nnz_g = og[nchunks]; }
    const bool lA = listA, lG = listG, li = store_idx, lv = store_vals;
    parallel_for(nchunks, grain_for(nchunks, pool_threads(), 4), [&](i64 c0, i64 c1, int) {
        for (i64 c = c0; c < c1; c++) {
            const EpiChunk& C = chunks[c];
            i64 ca = oa[c], cg = og[c];
            for (i64 p = c * chunk_px; p < std::min(P, (c + 1) * chunk_px); p++) {
                if (lA) { ca += In.a_ptr[p + 1]; In.a_ptr[p + 1] = ca; }
                if (lG) { cg += In.g_ptr[p + 1]; In.g_ptr[p + 1] = cg; }
            }
            if (li && C.na) std::memcpy(In.a_idx.data() + oa[c], C.ai, C.na * sizeof(i32));
            if (lA && lv && C.na) std::memcpy(In.vals.data() + oa[c], C.av, C.na * sizeof(float));
            if (lG && C.ng) std::memcpy(In.g_idx.data() + og[c], C.gi, C.ng * sizeof(i32));
        }
    });
    In.chan_nnz.assign(K, 0);
    ZeroStructure zs;
    zs.blocks = (i64)((K + VW - 1) / VW) * P;
    zs.measured = K <= kMaxRowChannels;
    for (auto& s : threads) {
        for (int k = 0; k < K; k++) In.chan_nnz[k] += s->chan[k];
#ifdef ET_VEC_EPI
        for (int k = 0; k < K; k++) In.chan_nnz[k] += s->chan8[k >> 3][k & 7];
#endif
        zs.zero_px_a += s->zero_px_a;
        zs.zero_px_g += s->zero_px_g;
        zs.zero_blk_a += s->zero_blk_a;
        zs.zero_blk_g += s->zero_blk_g;
    }
    In.zero = zs;
    if (!In.a_constrained) std::fill(In.chan_nnz.begin(), In.chan_nnz.end(), P);
    i64 na = 0, ng = 0;
    for (i64 p = 0; p < P; p++) { na += In.acnt[p]; ng += In.gcnt[p]; }
    In.nnz_a = na;
    In.cnt_g = ng;
    if (In.g_same) In.nnz_g = na;
    if (In.derived && !In.g_same && !In.g_all) {  // G's value offsets, from its counts
        In.g_ptr.reset(P + 1);
        In.g_ptr[0] = 0;
        for (i64 p = 0; p < P; p++) In.g_ptr[p + 1] = In.g_ptr[p] + In.gcnt[p];
        In.nnz_g = ng;
    }
    // the lists are in their final arrays now: the segments go back to the recycler (kept, they
    // would hold the largest layer's lists twice for the whole step)
    sai.clear();
    sav.clear();
    sgi.clear();
    chunks.clear();
    threads.clear();
}

InfoPtr activate_rows(const float* z, float* a_out, int N, int H, int W, int C, int act, float alpha, float lo,
                      float hi, bool dense) {
    InfoPtr I = make_info(N, H, W, C, act, alpha, lo, hi, dense);
    Epi E;
    const i64 P = I->P;
    const i64 chunk = std::max<i64>(1, std::min<i64>(1024, (16384 + C - 1) / std::max(C, 1)));
    E.begin(I.get(), a_out, chunk);
    parallel_for(E.nchunks, 1, [&](i64 c0, i64 c1, int tid) {
        for (i64 p = c0 * chunk; p < std::min(P, c1 * chunk); p++) E.row(tid, p, z + p * C);
    });
    E.finish();
    return I;
}

// ---------------------------------------------------------------- f' (the BP prologue)

void fprime_row(ActInfo& I, i64 p, float* fp) {
    const int K = I.C;
    const i64 e0 = p * K;
    const ActParams prm{I.alpha, I.lo, I.hi};
    for_act(I.act, [&](auto T) {
        using A = decltype(T);
        if (A::id == ACT_HSWISH || A::id == ACT_SIGMOID) {
            // f' reads the stored value: dense in dense mode, else along the A lists (an element
            // outside A stored nothing and reads as 0)
            i64 j = I.a_all ? e0 : I.a_ptr[p];
            const i64 je = I.a_all ? e0 + K : I.a_ptr[p + 1];
            for (int k = 0; k < K; k++) {
                const bool inA = I.a_all || (j < je && I.a_idx[j] == k);
                const float v = inA ? I.vals[j] : 0.f;
                if (inA) j++;
                fp[k] = A::fprime(I.state(e0 + k), v, prm);
            }
        } else {
            for (int k = 0; k < K; k++) fp[k] = A::fprime(I.state(e0 + k), 0.f, prm);
        }
    });
}

void grad_z_dense(ActInfo& I, const float* grad_a, float* d) {
    const int K = I.C;
    parallel_for(I.P, grain_for(I.P, pool_threads(), 8, 16), [&](i64 p0, i64 p1, int) {
        std::vector<float> fp(K);
        for (i64 p = p0; p < p1; p++) {
            fprime_row(I, p, fp.data());
            const float* g = grad_a + p * K;
            float* o = d + p * K;
            for (int k = 0; k < K; k++) o[k] = fp[k] != 0.f ? g[k] * fp[k] : 0.f;
        }
    });
}

// The two state planes of the 8 elements from e (e % 8 == 0: a whole byte or u16 of the bits).
static inline void planes8(const ActInfo& I, i64 e, unsigned& s1, unsigned& s2) {
    const u8* bytes = reinterpret_cast<const u8*>(I.bits.data());
    s2 = 0;
    if (I.bpe == 1) {
        s1 = bytes[e >> 3];
        return;
    }
    u16 st;
    std::memcpy(&st, bytes + (e >> 2), 2);
    s1 = unsigned(kT.even[st & 0xff]) | (unsigned(kT.even[st >> 8]) << 4);
    s2 = unsigned(kT.even[(st >> 1) & 0xff]) | (unsigned(kT.even[(st >> 9) & 0xff]) << 4);
}

// G of the 8 elements from e (e % 8 == 0, C % 8 == 0) as 8 bits, from the state planes.
unsigned g_bits8(const ActInfo& I, i64 e) {
    if (I.kind == KD_DENSE || I.kind == KD_INPUT || I.bpe == 0) return 0xffu;
    unsigned s1, s2;
    planes8(I, e, s1, s2);
    return for_act(I.act, [&](auto T) { return unsigned(decltype(T)::template g<unsigned>(s1, s2, I.kind)); }) & 0xffu;
}

// Zero the elements of row p (C floats) outside the G of I, eight channels per state lookup.
void mask_by_g(const ActInfo& I, i64 p, float* r) {
    const int C = I.C;
    if (I.kind == KD_DENSE || I.kind == KD_INPUT || I.bpe == 0) return;
    if (C % 8) {
        for (int c = 0; c < C; c++)
            if (!I.in_g_state(I.state(p * C + c))) r[c] = 0.f;
        return;
    }
    for_act(I.act, [&](auto T) {
        for (int c = 0; c < C; c += 8) {
            unsigned s1, s2;
            planes8(I, p * C + c, s1, s2);
            const unsigned m = unsigned(decltype(T)::template g<unsigned>(s1, s2, I.kind)) & 0xffu;
            if (m == 0xffu) continue;
#ifdef ET_VEC_EPI
            const vi8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
            const vi8 keep = ((vi8{} + int(m)) >> lane & 1) != 0;
            storeu8(r + c, keep ? loadu8(r + c) : vzero8());
#else
            for (int l = 0; l < 8; l++)
                if (!(m >> l & 1)) r[c + l] = 0.f;
#endif
        }
    });
}

// d for output rows [o0, o1) of a ReLU / Clip(0, hi) info (f' is 0 or 1: d = grad_a inside G)
// with C % 8 == 0, eight channels at a time (see info.hpp).
bool grad_rows_fast(ActInfo& O, const float* grad_a, i64 o0, i64 o1, float* D, int ldd, float* dvals, double* dbl) {
    const int K = O.C;
    if (K % 8 || !(O.kind == KD_RELU || O.kind == KD_CLIP0)) return false;
    const u8* bytes = reinterpret_cast<const u8*>(O.bits.data());
    const bool lists = !O.g_all;
    const i64* gptr = O.g_same ? O.a_ptr.data() : O.g_ptr.data();
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
                m = unsigned(kT.even[st & 0xff]) | (unsigned(kT.even[st >> 8]) << 4);
            }
#ifdef ET_VEC_EPI
            const vi8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
            const vi8 in_g = ((vi8{} + int(m)) >> lane & 1) != 0;
            const vf8 dv8 = in_g ? loadu8(ga + j) : vzero8();
            float d[8];
            storeu8(d, dv8);
            if (D) storeu8(D + o * ldd + j, dv8);
            if (dv) {
                if (lists) {
                    // packed along G (a whole-vector store may spill past this row's entries; later
                    // rows overwrite it, but nothing may land past the range's end: the next range is
                    // another chunk's)
                    const vf8 packed = __builtin_shuffle(dv8, kP.perm[m]);
                    if (dv + 8 <= dv_end) {
                        storeu8(dv, packed);
                    } else {
                        float tmp[8];
                        storeu8(tmp, packed);
                        std::memcpy(dv, tmp, sizeof(float) * popc(m));
                    }
                    dv += popc(m);
                } else {
                    storeu8(dv + j, dv8);
                }
            }
#else
            float d[8];
            for (int l = 0; l < 8; l++) d[l] = (m >> l & 1) ? ga[j + l] : 0.f;
            if (D) std::memcpy(D + o * ldd + j, d, sizeof d);
            if (dv) {
                if (lists) {
                    const int n = popc(m);
                    for (int i = 0; i < n; i++) dv[i] = d[kT.idx[m][i]];
                    dv += n;
                } else {
                    std::memcpy(dv + j, d, sizeof d);
                }
            }
#endif
            for (int l = 0; l < 8; l++) dbl[j + l] += d[l];
        }
    }
    return true;
}

}  // namespace et
