// FP by the register-tiled IGEMM micro-kernels (native/ukernels/igemm.hpp): tiles of MR output
// pixels x NR vectors of output channels, the input rows reached through an indirection table
// (one pointer per pixel and tap; a zero row outside the image), the reduction cut into passes
// of taps and channels whose weight panel fits half the L1d (read at run time). Each chunk of
// output pixels runs every pass and block, then the fused activation epilogue on its rows.
#include "../cpu.hpp"
#include "tiled.hpp"

namespace et {

namespace {
// output pixels per chunk: a multiple of every tile_mr (6, 8, 12)
constexpr int kChunk = 48;
}  // namespace

// A zero row long enough for any channel offset of a layer with C channels (+ slack).
static const float* zero_row(i64 n) {
    static std::mutex mu;
    static std::vector<float>* z = nullptr;
    std::lock_guard<std::mutex> lk(mu);
    if (!z || (i64)z->size() < n + 64) {
        z = new std::vector<float>((size_t)std::max<i64>(n + 64, 4096), 0.f);  // never freed (pointers stay valid)
    }
    return z->data();
}

void ConvLayer::fp_tiled(const InfoPtr& x, Epi& E) {
    const float* X = x_dense ? x_dense : x->dense_values();
    const i32* reqc = x->group_counts(0, groups);
    const float* Z0 = zero_row((i64)C + (i64)R * S * Cg + kMaxMR);
    const int RS = R * S;
    const i64 Pout = (i64)N * OH * OW;
    const NrBlocks kb(Kp / VW);
    // first conv (few input channels): each pixel's taps are gathered into one im2col row, one
    // segment of R*S*Cg steps
    const bool im2col = groups == 1 && RS > 1 && RS * Cg <= IM2COL_MAX;
    const int OHW = OH * OW;
    // passes: taps per pass and channels per pass so that a pass's panel (rows x widest block)
    // fits half the L1d
    const int rows_budget = std::max(8, cache_sizes().l1d / 2 / (kMaxNR * VW * 4));
    const int cstep = im2col ? RS * Cg : std::min(Cg, rows_budget);
    const int tstep = im2col ? 1 : std::max(1, rows_budget / std::max(cstep, 1));
    const int nseg_tot = im2col ? 1 : RS;
    const i64 lda = kChunk + kMaxMR;
    struct Scratch {
        ABuf<float> z, col;
        std::vector<const float*> ptr;
        std::vector<const float*> wseg;
    };
    PerThread<Scratch> scratch;
    // valid taps per output row and column (their product: per pixel), and the taps reaching each
    // input row and column: the constraint count sum over (o, valid tap) of |A(p) ∩ g| is
    // sum over p of |A(p) ∩ g| times the outputs that read p
    std::vector<int> cover_h(OH, 0), cover_w(OW, 0), reach_h(H, 0), reach_w(W, 0);
    for (int oh = 0; oh < OH; oh++)
        for (int r = 0; r < R; r++) {
            const int ih = oh * sh - pt + r * dh;
            if ((unsigned)ih < (unsigned)H) { cover_h[oh]++; reach_h[ih]++; }
        }
    for (int ow = 0; ow < OW; ow++)
        for (int s = 0; s < S; s++) {
            const int iw = ow * sw - pl + s * dw;
            if ((unsigned)iw < (unsigned)W) { cover_w[ow]++; reach_w[iw]++; }
        }
    E.begin_chunks(kChunk);
    ThreadCounts cnt;
    parallel_for(E.nchunks, 1, [&](i64 q0, i64 q1, int tid) {
        Scratch& sc = scratch[tid];
        if (!sc.z.size()) {
            sc.z.reset((size_t)(kChunk + kMaxMR) * KpAll + VW);
            sc.ptr.resize((size_t)nseg_tot * lda);
            sc.wseg.resize((size_t)RS);
            if (im2col) sc.col.reset((size_t)(kChunk + kMaxMR) * RS * Cg + VW, true);
        }
        for (i64 q = q0; q < q1; q++) {
            const i64 o0 = q * kChunk, n_px = std::min<i64>(kChunk, Pout - o0);
            // indirection: row base of the input pixel each output pixel reads at each tap
            i64 pairs = 0;
            // (n, oh, ow) stepped along, not divided out per pixel
            int n = int(o0 / OHW), oh = int(o0 % OHW) / OW, ow = int(o0 % OHW) % OW;
            for (i64 i = 0; i < lda; i++) {
                if (i > 0 && i < n_px && ++ow == OW) { ow = 0; if (++oh == OH) { oh = 0; n++; } }  // padding repeats the last pixel
                if (i < n_px) pairs += (i64)cover_h[oh] * cover_w[ow];
                if (im2col) {
                    if (i >= n_px) {  // tile padding: the last pixel's row again
                        sc.ptr[i] = sc.ptr[i - 1];
                        continue;
                    }
                    float* row = sc.col.data() + i * RS * Cg;
                    const int ih0 = oh * sh - pt, iw0 = ow * sw - pl;
                    if (dw == 1 && ih0 >= 0 && ih0 + (R - 1) * dh < H && iw0 >= 0 && iw0 + S - 1 < W) {
                        // every tap inside: each kernel row is S*Cg contiguous floats
                        for (int r = 0; r < R; r++) {
                            const float* src = X + (((i64)n * H + ih0 + r * dh) * W + iw0) * C;
                            for (int j = 0; j < S * Cg; j++) row[r * S * Cg + j] = src[j];
                        }
                    } else {
                        for (int r = 0, t = 0; r < R; r++)
                            for (int s = 0; s < S; s++, t++) {
                                const int ih = ih0 + r * dh, iw = iw0 + s * dw;
                                const bool in_img = (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
                                const float* src = in_img ? X + (((i64)n * H + ih) * W + iw) * C : Z0;
                                for (int c = 0; c < Cg; c++) row[t * Cg + c] = src[c];
                            }
                    }
                    sc.ptr[i] = row;
                    continue;
                }
                const int ih0 = oh * sh - pt, iw0 = ow * sw - pl;
                for (int r = 0, t = 0; r < R; r++) {
                    const int ih = ih0 + r * dh;
                    const bool row_in = (unsigned)ih < (unsigned)H;
                    const float* xrow = X + ((i64)n * H + ih) * W * C;
                    for (int s = 0; s < S; s++, t++) {
                        const int iw = iw0 + s * dw;
                        sc.ptr[t * lda + i] = row_in && (unsigned)iw < (unsigned)W ? xrow + (i64)iw * C : Z0;
                    }
                }
            }
            float* z = sc.z.data();
            ChunkPasses P;
            P.groups = groups;
            P.blocks = &kb;
            P.panels = Wt.data();
            P.panel_group = (i64)RS * Cg * Kp;
            P.panel_rows = (i64)RS * Cg;
            P.red = im2col ? RS * Cg : Cg;
            P.nseg = nseg_tot;
            P.seg_step = tstep;
            P.red_step = cstep;
            P.ptr = sc.ptr.data();
            P.lda = lda;
            P.a_group = im2col ? 0 : Cg;
            P.out = z;
            P.ldc = KpAll;
            P.out_group = Kp;
            P.init = bias.data();
            run_chunk_passes(P, n_px, sc.wseg);
            // executed: the dense products of the chunk's pixels and valid taps, vector lanes
            // included (tile padding rows and the zero rows of taps outside the image are the
            // kernel's overhead, like a loop's, and not counted)
            cnt[tid].executed += pairs * Cg * KpAll;
            for (i64 i = 0; i < n_px; i++) {
                const float* zr = z + i * KpAll;
                if (groups > 1) {  // compact the groups' padded blocks into one row (the tile's slack row)
                    float* row = z + (kChunk + kMaxMR - 1) * KpAll;
                    for (int g = 0; g < groups; g++) std::memmove(row + g * Kg, zr + g * Kp, sizeof(float) * Kg);
                    zr = row;
                }
                E.row(tid, o0 + i, zr);
            }
        }
    });
    cfp = cnt.total();
    i64 rq = 0;
    for (i64 p = 0; p < (i64)N * H * W; p++) {
        const int rem = int(p % ((i64)H * W)), ih = rem / W, iw = rem - ih * W;
        const i64 reach = (i64)reach_h[ih] * reach_w[iw];
        if (!reach) continue;
        i64 a = 0;
        for (int g = 0; g < groups; g++) a += reqc[p * groups + g];
        rq += a * reach;
    }
    cfp.required = rq * Kg;
}

}  // namespace et
