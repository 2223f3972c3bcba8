// ActInfo: what the fused activation (end of FP) keeps for BP and WG.
//
//  * compressed storage (counted by stored_bytes):
//      ReLU      1-bit mask + packed non-zeros of a
//      ReLU6/Clip(0,hi)  2-bit state (0 zero, 1 linear, 2 saturated) + packed a
//      hard-swish 2-bit region (0: z<=-3, 1: curved, 2: z>=3) + one float
//                 per non-zero of a, packed along the A lists: z where the
//                 function is curved (a = z*(z+3)/6 is recomputed from it,
//                 bit-exactly, see hswish_a), a (= z) in the identity region.
//                 Curved elements with a == 0 (z == 0 up to underflow) keep
//                 nothing: f' = 1/2 there.
//      others    dense a (+1-bit sign mask for LeakyReLU, 2-bit state for Clip(lo!=0))
//  * plan (counted by plan_bytes, built during FP, never by searching for
//    zeros except in analyze_input): per-pixel lists of non-zero channels of a
//    (CSR, aligned with the packed values), per-pixel lists of channels in G,
//    per-pixel/per-channel counts, the zero structure, and (built by
//    a trainable consumer's FP) per-tile per-channel pixel lists for WG.
//
// "all" (dense) mode: the same structures with every index listed (lists are
// implicit iota, values dense) so that kernels run the same code densely.
#pragma once
#include <map>
#include <memory>
#include <mutex>

#include "act.hpp"

namespace et {

const i32* iota_ptr(int n);  // 0..n-1, stable pointer

// Zero structure of an activation, measured by the epilogue that made it: whole pixels and
// whole channel blocks (VW consecutive channels, the vector width) that are zero in A (a == 0)
// and outside G. Skipping by rows or blocks is what a register-tiled kernel can do; element
// sparsity alone does not tell how much of that there is.
struct ZeroStructure {
    bool measured = false;  // rows wider than kMaxRowChannels are not measured
    i64 zero_px_a = 0, zero_px_g = 0;    // pixels with no channel in A / in G
    i64 zero_blk_a = 0, zero_blk_g = 0;  // channel blocks with no channel in A / in G
    i64 blocks = 0;                      // channel blocks in all (P * ceil(C / VW))
};
constexpr int kMaxRowChannels = 8192;

struct ActInfo;

// One row (pixel) restricted to a channel group: count, and offset into the
// value array; ix points at the (absolute) channel indices.
struct RowView {
    bool all = true;
    int C = 0, Cg = 0, groups = 1;
    const i64* ptr = nullptr;
    const i32* idx = nullptr;   // stored lists (null when derived)
    const i32* gofs = nullptr;  // [P][groups+1] offsets relative to row start (groups>1)
    const i32* iota = nullptr;
    const ActInfo* info = nullptr;  // derived lists: decoded from this info's state bits
    int which = 0;                  // derived lists: 0 = A, 1 = G
    // Row p restricted to group g: its count; ix its (absolute) channel indices, off the offset
    // of its first value. Derived lists are decoded into scratch (Cg + 8 entries).
    inline int row(i64 p, int g, const i32*& ix, i64& off, i32* scratch) const;
};

// Channels in [c0, c0 + n) of pixel p that are in A (which 0) or G (which 1) of an info whose
// lists are derived from its state bits, as absolute indices into out (n + 8 entries); returns
// their count. count_row only counts.
int decode_row(const ActInfo& I, int which, i64 p, int c0, int n, i32* out);
int count_row(const ActInfo& I, int which, i64 p, int c0, int n);

// Lists derived from state bits, decoded once for one kernel call: FP and BP visit every row
// once per tap (9 times for a 3x3 conv), and decoding a row costs about what walking it does.
// Points V at the decoded lists in buf (freed by the caller after the call); no-op for stored
// or all-dense lists.
void materialize(RowView& V, ABuf<i32>& buf);

// Geometry of the consumer of a Transposed (stride-1 convs): an entry's pix
// then holds (q << R*S) | tap bits, with q = ih*OW + iw and bit r*S+s set when
// that tap's output is in range, so WG finds o = n*OH*OW + q + (pt - r*dh)*OW
// + (pl - s*dw) with one load and one bit test.
struct TGeo {
    int R = 0, S = 0, pt = 0, pl = 0, dh = 1, dw = 1, OH = 0, OW = 0;
    bool operator==(const TGeo& o) const {
        return R == o.R && S == o.S && pt == o.pt && pl == o.pl && dh == o.dh && dw == o.dw && OH == o.OH && OW == o.OW;
    }
};

// Per-tile, per-channel pixel lists of a (the transpose of the CSR), for WG.
struct Transposed {
    bool pointwise = false;  // entries hold global pixel index (1x1/stride1/pad0 consumers)
    bool has_geo = false;    // entries hold q and the tap bits (see TGeo)
    TGeo geo;
    int tile_px = 0;
    i64 ntiles = 0;
    std::vector<i64> tp0, tp1;
    std::vector<i32> tn;  // image of the tile (non-pointwise)
    ABuf<i64> ptr;        // [ntiles*C + 1]
    ABuf<i32> pix;        // (ih<<16)|iw, global pixel (pointwise), or (q << R*S) | taps (geo)
    ABuf<float> val;
};

struct ActInfo {
    int N = 0, H = 0, W = 0, C = 0;
    i64 P = 0;
    int act = ACT_INPUT;
    float alpha = 0.01f, lo = 0.f, hi = 6.f;
    int kind = KD_INPUT;
    bool all = false;    // dense mode (iterate everything)
    bool a_all = false;  // A iterated as "all" (dense mode or no constraint)
    bool g_all = false;  // G iterated as "all"
    bool g_same = false; // G lists == A lists (ReLU)
    bool a_constrained = true;  // zeros of a are structural (lists meaningful)
    // ReLU and ReLU6 keep no index lists: the state bits are the lists (A = state != 0, G =
    // state 1), decoded where a kernel walks a row; only the value offsets (a_ptr, g_ptr) are kept
    bool derived = false;
    // false when no consumer reads this activation's values from its plan (a max-pool or an add
    // reads the dense array FP hands it; the layer's own BP needs only the state bits): then only
    // the bits, counts and value offsets are kept
    bool has_values = true;
    int bpe = 0;
    ABuf<u64> bits;
    i64 nwords = 0;
    // stored values, packed along the A lists (sparse) or dense (a_all):
    // a, except hard-swish (z where curved, a elsewhere). Kernels that need a
    // read a_values() / dense_values().
    ABuf<float> vals;
    i64 nvals = 0;
    ABuf<i64> a_ptr;
    ABuf<i32> a_idx;
    ABuf<i64> g_ptr;
    ABuf<i32> g_idx;
    i64 nnz_g = 0;
    ABuf<i32> acnt, gcnt;  // constraint counts per pixel (|A(p)|, |G(p)|)
    i64 nnz_a = 0, cnt_g = 0;
    std::vector<i64> chan_nnz;  // |A| per channel
    ZeroStructure zero;         // measured by the epilogue (activate_rows / a layer's FP)

    std::mutex mu;
    std::map<std::pair<int, int>, ABuf<i32>> gofs_cache;    // (which, groups)
    std::map<std::pair<int, int>, ABuf<i32>> gcount_cache;  // (which, groups) -> [P][groups]
    // Recomputable scratch materialised on demand by the kernels (not what FP
    // keeps, hence not counted by stored_bytes/plan_bytes).
    std::unique_ptr<ABuf<float>> dense_cache;
    std::unique_ptr<ABuf<float>> a_cache;  // hard-swish: a aligned with vals

    // state code of element e (0 when bpe == 0)
    inline int state(i64 e) const {
        if (bpe == 1) return int((bits[e >> 6] >> (e & 63)) & 1);
        if (bpe == 2) return int((bits[e >> 5] >> ((e & 31) * 2)) & 3);
        return 0;
    }
    // is element (with state s) in the constraint set G
    inline bool in_g_state(int s) const { return in_g_code(act, kind, s); }
    ActParams params() const { return ActParams{alpha, lo, hi}; }

    RowView view_a(int groups);
    RowView view_g(int groups);
    const i32* gofs(int which, int groups);          // which: 0 = A lists, 1 = G lists
    const i32* group_counts(int which, int groups);  // [P][groups] constraint counts
    // Per-tile, per-channel pixel lists (the transpose of the A lists) for a consumer's WG. Built
    // just before that WG and freed after it: kept from FP to WG, every layer's would be alive at
    // once and double the plan memory.
    std::unique_ptr<Transposed> transposed(bool pointwise, int tile_px, const TGeo* geo = nullptr);
    const float* dense_values();  // dense a (materialised once if sparse or hard-swish)
    const float* a_values();      // a aligned with vals (== vals except hard-swish)
    void drop_caches();           // free what dense_values()/a_values() materialised

    i64 stored_bytes() const;
    i64 plan_bytes() const;
    i64 dense_bytes() const { return P * (i64)C * 4; }
};

inline int RowView::row(i64 p, int g, const i32*& ix, i64& off, i32* scratch) const {
    if (all) {
        off = p * C + (i64)g * Cg;
        ix = iota + g * Cg;
        return Cg;
    }
    const i32 before = groups == 1 ? 0 : gofs[p * (groups + 1) + g];
    off = ptr[p] + before;
    if (info) {
        ix = scratch;
        return decode_row(*info, which, p, g * Cg, Cg, scratch);
    }
    ix = idx + off;
    return groups == 1 ? int(ptr[p + 1] - off) : gofs[p * (groups + 1) + g + 1] - before;
}

using InfoPtr = std::shared_ptr<ActInfo>;

// Fused activation epilogue: rows of z are turned into a, state bits, lists, counts and the
// zero structure (epilogue.cpp). Usage: begin(info, a_out, chunk); the pixels are cut into
// chunks of `chunk` rows; inside a parallel_for each chunk's rows are given by one thread, in
// order: row(tid, p, z); then finish() packs the chunks' lists in chunk order (the result does
// not depend on which thread ran which chunk).
struct EpiChunk {
    i32* ai = nullptr;    // this chunk's list segments
    float* av = nullptr;
    i32* gi = nullptr;
    i64 na = 0, ng = 0;   // entries so far
    i64 wfirst = 0, wlast = 0;  // state-bit words shared with neighbouring chunks
};
struct EpiThread;
struct Epi {
    ActInfo* I = nullptr;
    float* aout = nullptr;  // optional dense a output (stride K)
    int K = 0;
    bool listA = false, listG = false;
    bool store_idx = false;  // listA and the info keeps index lists (not derived from its bits)
    bool store_vals = true;  // the info keeps its values (see ActInfo::has_values)
    i64 chunk_px = 1, nchunks = 0;
    Epi();
    ~Epi();
    void init(ActInfo* info, float* a_out) { I = info; aout = a_out; }
    void begin_chunks(i64 chunk);  // after init: the kernel's chunk of rows
    void begin(ActInfo* info, float* a_out, i64 chunk) { init(info, a_out); begin_chunks(chunk); }
    void row(int tid, i64 p, const float* z);
    void finish();

   private:
    i64 seg = 0;
    ABuf<i32> sai, sgi;
    ABuf<float> sav;
    std::vector<EpiChunk> chunks;
    std::vector<std::unique_ptr<EpiThread>> threads;
};

InfoPtr make_info(int N, int H, int W, int C, int act, float alpha, float lo, float hi, bool dense);
// Runs the activation over z (P x K rows) in parallel; z may alias a_out.
InfoPtr activate_rows(const float* z, float* a_out, int N, int H, int W, int C, int act, float alpha,
                      float lo, float hi, bool dense);
// d = grad_a * f'(z) (dense, zero outside G).
void grad_z_dense(ActInfo& I, const float* grad_a, float* d);
// f'(z) of row p, from the stored state (and the stored value where f' needs it).
void fprime_row(ActInfo& I, i64 p, float* fp);
// The same for output rows [o0, o1) of a ReLU / Clip(0, hi) info with C % 8 == 0,
// eight channels at a time: dense rows into D (row stride ldd; null: skipped),
// the values along the G lists (dense rows in dense mode) into dvals (null:
// skipped), per-channel sums added to dbl. Returns false (nothing written)
// when the info does not qualify.
bool grad_rows_fast(ActInfo& O, const float* grad_a, i64 o0, i64 o1, float* D, int ldd, float* dvals, double* dbl);
// Zero the elements of row p (C floats) outside the G of I (no-op for an unconstrained I).
void mask_by_g(const ActInfo& I, i64 p, float* row);
// G of elements e..e+7 (e % 8 == 0, C % 8 == 0) of a ReLU / Clip(0, hi) / hard-swish info as 8 bits.
unsigned g_bits8(const ActInfo& I, i64 e);
// Convert any info to dense mode (or back: sparse mode of a dense info is a
// discovery pass, used in tests).
InfoPtr to_mode(const InfoPtr& in, bool dense);
InfoPtr flatten_info(const InfoPtr& in);

}  // namespace et
