// Depthwise convolutions (one channel per group): FP, BP and WG keep a block of channels in
// registers across the taps (dw_block); their input is read densely.
#include "internal.hpp"

namespace et {

// z[0..C) = bias + sum over the taps of x[tp[i]] * w[i], four vectors of channels at a time in
// registers, then one (the taps are the inner loop, so z is written once per pixel).
static void dw_block(float* ET_RESTRICT z, const float* bias, const float* X, int C, const i64* tp,
                     const float* const* tw, int taps) {
    int c0 = 0;
    for (; c0 + 4 * VW <= C; c0 += 4 * VW) {
        vf acc[4];
        ET_UNROLL
        for (int v = 0; v < 4; v++) acc[v] = loadu(bias + c0 + v * VW);
        for (int i = 0; i < taps; i++) {
            const float* xr = X + tp[i] * C + c0;
            const float* wr = tw[i] + c0;
            ET_UNROLL
            for (int v = 0; v < 4; v++) acc[v] += loadu(xr + v * VW) * loadu(wr + v * VW);
        }
        ET_UNROLL
        for (int v = 0; v < 4; v++) storeu(z + c0 + v * VW, acc[v]);
    }
    for (; c0 + VW <= C; c0 += VW) {  // one vector at a time (C < 4 vectors at wide ISAs)
        vf acc = loadu(bias + c0);
        for (int i = 0; i < taps; i++) acc += loadu(X + tp[i] * C + c0) * loadu(tw[i] + c0);
        storeu(z + c0, acc);
    }
    for (int c = c0; c < C; c++) {
        float a = bias[c];
        for (int i = 0; i < taps; i++) a += X[tp[i] * C + c] * tw[i][c];
        z[c] = a;
    }
}

void ConvLayer::fp_depthwise(const InfoPtr& x, Epi& E) {
    const float* X = x_dense ? x_dense : x->dense_values();
    const bool skip = !x->all;  // sparse mode skips all-zero input pixels
    const i32* ac = x->acnt.data();
    const int Cpad = round_up(C, VW);
    const i64 Pout = (i64)N * OH * OW;
    ThreadCounts cnt;
    PerThread<ABuf<float>> zrows;
    const int OHW = OH * OW;
    E.begin_chunks(std::max<i64>(8, 8192 / std::max(C, 1)));
    parallel_for(E.nchunks, 1, [&](i64 c0, i64 c1, int t) {
        const i64 p0 = c0 * E.chunk_px, p1 = std::min(Pout, c1 * E.chunk_px);
        ABuf<float>& zrow = zrows[t];
        zrow.ensure(Cpad);
        i64 ex = 0, rq = 0;
        // (n, oh, ow) stepped along, not divided out per pixel
        int n = int(p0 / OHW), oh = int(p0 % OHW) / OW, ow = int(p0 % OHW) % OW;
        for (i64 o = p0; o < p1; o++) {
            float* ET_RESTRICT z = zrow.data();
            int taps = 0;
            i64 tp[32];
            const float* tw[32];
            each_tap(n, oh, ow, [&](int r, int s, i64 p) {
                rq += ac[p];
                if (skip && ac[p] == 0) return;
                ex += C;
                const float* wr = Wf.data() + (size_t)(r * S + s) * Cpad;
                if (taps < 32) {
                    tp[taps] = p;
                    tw[taps++] = wr;
                    return;
                }
                const float* ET_RESTRICT xr = X + p * C;  // kernels larger than 32 taps
                if (taps == 32) { dw_block(z, bias.data(), X, C, tp, tw, taps); taps = 33; }
                for (int c = 0; c < C; c++) z[c] += xr[c] * wr[c];
            });
            if (taps <= 32) dw_block(z, bias.data(), X, C, tp, tw, taps);
            E.row(t, o, z);
            if (++ow == OW) { ow = 0; if (++oh == OH) { oh = 0; n++; } }
        }
        cnt[t].executed += ex;
        cnt[t].required += rq;
    });
    cfp = cnt.total();
}
// ------------------------------------------------------------------ depthwise BP/WG
// 0/1 byte mask of G (from the traits, through a table of the four state codes).
static void g_mask(ActInfo& I, u8* m) {
    const i64 ne = I.P * (i64)I.C;
    const bool con = I.kind == KD_RELU || I.kind == KD_CLIP0 || I.kind == KD_HSWISH;
    if (!con || I.bpe == 0) {
        std::memset(m, 1, (size_t)ne);
        return;
    }
    u8 lut[4];
    for (int s = 0; s < 4; s++) lut[s] = u8(I.in_g_state(s));
    const u64* bits = I.bits.data();
    const int bpe = I.bpe, per = 64 / bpe;
    const u64 msk = (u64(1) << bpe) - 1;
    const i64 nw = (ne + per - 1) / per;
    parallel_each(nw, [&](i64 w) {
        const u64 b = bits[w];
        const int n = int(std::min<i64>(per, ne - w * per));
        u8* ET_RESTRICT mr = m + w * per;
        for (int j = 0; j < n; j++) mr[j] = lut[(b >> (bpe * j)) & msk];
    }, 64);
}

// number of positions where both 0/1 byte masks are set (8 bytes per popcount)
static inline int and_count(const u8* a, const u8* b, int n) {
    int q = 0, c = 0;
    for (; c + 8 <= n; c += 8) {
        u64 x, y;
        std::memcpy(&x, a + c, 8);
        std::memcpy(&y, b + c, 8);
        q += __builtin_popcountll(x & y);
    }
    for (; c < n; c++) q += a[c] & b[c];
    return q;
}

void ConvLayer::bwd_depthwise(const float* grad_a, float* g_in, const ActInfo* prevG, float* dW, float* db) {
    const double t0 = now_ms();
    const CpuClock c0;
    kern_bp = g_in ? "depthwise" : "";
    kern_wg = dW ? "depthwise" : "";
    ActInfo& O = *out;
    const i64 Pout = O.P, Pin = in->P;
    const int RS = R * S;
    ABuf<float> D;
    D.reset((size_t)Pout * C);
    {
        // d = grad_a * f'(z), db per chunk of rows in double, summed in chunk order
        const i64 ch = 64, nch = (Pout + ch - 1) / ch;
        std::vector<double> dbp((size_t)nch * C, 0.0);
        parallel_for(nch, 1, [&](i64 c0, i64 c1, int) {
            std::vector<float> fp(C);
            for (i64 c = c0; c < c1; c++) {
                const i64 o0 = c * ch, o1 = std::min(Pout, o0 + ch);
                double* dbl = dbp.data() + (size_t)c * C;
                if (grad_rows_fast(O, grad_a, o0, o1, D.data(), C, nullptr, dbl)) continue;
                for (i64 o = o0; o < o1; o++) {
                    fprime_row(O, o, fp.data());
                    const float* ga = grad_a + o * C;
                    float* d = D.data() + o * C;
                    for (int k = 0; k < C; k++) {
                        d[k] = fp[k] != 0.f ? ga[k] * fp[k] : 0.f;
                        dbl[k] += d[k];
                    }
                }
            }
        });
        if (db) sum_chunks(dbp.data(), nch, db, C);
    }
    // constraint masks for pair-level counting
    ABuf<u8> mg;
    mg.reset((size_t)Pout * C);
    g_mask(O, mg.data());
    const i32* gc = O.gcnt.data();
    const i64 dmacs = dense_macs();
    const int Cpad = round_up(C, VW);
    const int OHW = OH * OW;
    cbp = Counts();
    cwg = Counts();
    const double t1 = now_ms(), c1 = c0.ms();
    const CpuClock cb;
    if (g_in) {
        cbp.dense = dmacs;
        ActInfo* pg = const_cast<ActInfo*>(prevG);
        const bool con = pg && (pg->kind == KD_RELU || pg->kind == KD_CLIP0 || pg->kind == KD_HSWISH);
        ABuf<u8> mp;
        mp.reset((size_t)Pin * C);
        const std::vector<float> zeros(C, 0.f);
        if (con) g_mask(*pg, mp.data());
        else std::memset(mp.data(), 1, (size_t)Pin * C);
        const bool skip = !dense;
        ThreadCounts cnt;
        parallel_for(Pin, grain_for(Pin, pool_threads(), 8, 16), [&](i64 q0, i64 q1, int t) {
            i64 ex = 0, rq = 0;
            for (i64 p = q0; p < q1; p++) {
                float* ET_RESTRICT gr = g_in + p * C;
                for (int c = 0; c < C; c++) gr[c] = 0.f;
                if (skip && con && pg->gcnt[p] == 0) continue;
                const int n = int(p / (H * W)), rem = int(p % (H * W)), ih = rem / W, iw = rem % W;
                const u8* mpr = mp.data() + p * C;
                int taps = 0;  // up to 32 taps go through dw_block (registers), the rest add in place
                i64 tpo[32];
                const float* twt[32];
                for (int r = 0; r < R; r++) {
                    int th = ih + pt - r * dh;
                    if (th < 0) continue;
                    if (sh == 2) { if (th & 1) continue; th >>= 1; }
                    else { if (th % sh) continue; th /= sh; }
                    if (th >= OH) continue;
                    for (int s = 0; s < S; s++) {
                        int tw = iw + pl - s * dw;
                        if (tw < 0) continue;
                        if (sw == 2) { if (tw & 1) continue; tw >>= 1; }
                        else { if (tw % sw) continue; tw /= sw; }
                        if (tw >= OW) continue;
                        const i64 o = (i64)n * OHW + (i64)th * OW + tw;
                        const u8* mgr = mg.data() + o * C;
                        rq += and_count(mgr, mpr, C);
                        if (skip && gc[o] == 0) continue;
                        ex += C;
                        const float* ET_RESTRICT w = Wf.data() + (size_t)(r * S + s) * Cpad;
                        if (taps < 32) {
                            tpo[taps] = o;
                            twt[taps++] = w;
                            continue;
                        }
                        if (taps == 32) { dw_block(gr, zeros.data(), D.data(), C, tpo, twt, taps); taps = 33; }
                        const float* ET_RESTRICT d = D.data() + o * C;
                        for (int c = 0; c < C; c++) gr[c] += d[c] * w[c];
                    }
                }
                if (taps <= 32) dw_block(gr, zeros.data(), D.data(), C, tpo, twt, taps);
                if (con)
                    for (int c = 0; c < C; c++) gr[c] = mpr[c] ? gr[c] : 0.f;
            }
            cnt[t].executed += ex;
            cnt[t].required += rq;
        });
        const Counts c = cnt.total();
        cbp.executed += c.executed;
        cbp.required += c.required;
    }
    const double t2 = now_ms(), c2 = cb.ms();
    const CpuClock cw;
    if (dW) {
        cwg.dense = dmacs;
        const float* X = in->dense_values();  // materialised for this WG only (dropped below)
        ABuf<u8> ma;
        ma.reset((size_t)Pin * C);
        {
            const bool con = in->a_constrained;
            u8* m = ma.data();
            parallel_each(Pin, [&](i64 p) {
                for (int c = 0; c < C; c++) m[p * C + c] = con ? (u8)(X[p * C + c] != 0.f) : (u8)1;
            });
        }
        const i32* ac = in->acnt.data();
        const bool skip = !dense;
        // chunks of output pixels, each with its own double total (two-level sum: float partials
        // over <= 64 pixels, added to the chunk's total; the totals are summed in chunk order)
        const i64 ch = 512, nch = (Pout + ch - 1) / ch;
        std::vector<double> part((size_t)nch * RS * C, 0.0);
        ThreadCounts cnt;
        parallel_for(nch, 1, [&](i64 c0, i64 c1, int t) {
            std::vector<float> acc((size_t)RS * C, 0.f);
            i64 ex = 0, rq = 0;
            for (i64 c = c0; c < c1; c++) {
                double* total = part.data() + (size_t)c * RS * C;
                int pending = 0;
                auto flush = [&]() {
                    for (size_t i = 0; i < acc.size(); i++) { total[i] += acc[i]; acc[i] = 0.f; }
                    pending = 0;
                };
                for (i64 o = c * ch; o < std::min(Pout, (c + 1) * ch); o++) {
                    if (pending == 64) flush();
                    if (skip && gc[o] == 0) continue;
                    pending++;
                    const int n = int(o / OHW), rem = int(o % OHW), oh = rem / OW, ow = rem % OW;
                    const float* ET_RESTRICT d = D.data() + o * C;
                    const u8* mgr = mg.data() + o * C;
                    each_tap(n, oh, ow, [&](int r, int s, i64 p) {
                        rq += and_count(mgr, ma.data() + p * C, C);
                        if (skip && ac[p] == 0) return;
                        ex += C;
                        const float* ET_RESTRICT x = X + p * C;
                        float* ET_RESTRICT a = acc.data() + (size_t)(r * S + s) * C;
                        for (int k = 0; k < C; k++) a[k] += d[k] * x[k];
                    });
                }
                flush();
            }
            cnt[t].executed += ex;
            cnt[t].required += rq;
        });
        const Counts c = cnt.total();
        cwg.executed += c.executed;
        cwg.required += c.required;
        std::vector<float> packed((size_t)RS * C);  // [rs][c]
        sum_chunks(part.data(), nch, packed.data(), packed.size());
        for (int k = 0; k < C; k++)
            for (int rs = 0; rs < RS; rs++) dW[(size_t)k * RS + rs] = packed[(size_t)rs * C + k];
    }
    in->drop_caches();  // a dense copy of the input made for this layer's BP/WG
    phase_times(t0, t1, t2, now_ms(), g_in != nullptr);
    cpu_bp = c2 + (g_in ? c1 : 0.0);
    cpu_wg = cw.ms() + (g_in ? 0.0 : c1);
}

}  // namespace et
