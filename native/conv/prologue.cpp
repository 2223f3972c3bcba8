// The d = grad_a * f'(z) prologue of a layer's backward (f' from the traits of its
// activation, act.hpp), shared by BP and WG: dense padded rows D for WG and the tiled BP, the
// values along the G lists for the BP walk, per-channel sums for db.
#include "internal.hpp"

namespace et {

void ConvLayer::grad_prologue(const float* grad_a, const RowView& GV, float* D, float* dvals, float* db) {
    ActInfo& O = *out;
    const i64 Pout = O.P;
    const bool need_wg = D != nullptr, need_bp = dvals != nullptr;
    const i64* gptr = GV.all ? nullptr : GV.ptr;
    const i32* gidx = GV.all ? nullptr : GV.idx;
    const bool g1 = groups == 1;
    const ActParams prm = O.params();
    // db is summed per chunk of rows in double, the chunks in order (no dependence on threads)
    const i64 ch = 64, nch = (Pout + ch - 1) / ch;
    std::vector<double> dbp((size_t)(nch * K), 0.0);
    struct Scratch {
        std::vector<float> fp, drow;
        std::vector<i32> gbuf;  // a G row decoded from the state bits (derived lists)
    };
    PerThread<Scratch> scratch;
    for_act(O.act, [&](auto T) {
        using A = decltype(T);
        // the stored value matters to f' inside G (hard-swish's curve) only where f' is not 1
        constexpr bool value_fprime = A::id == ACT_HSWISH;
        parallel_for(nch, 1, [&](i64 c0, i64 c1, int t) {
            Scratch& sc = scratch[t];
            sc.fp.resize(K);
            sc.drow.resize(K);
            sc.gbuf.resize((size_t)K + 8);
            for (i64 c = c0; c < c1; c++) {
                const i64 o0 = c * ch, o1 = std::min(Pout, o0 + ch);
                double* dbl = dbp.data() + c * K;
                // ReLU / ReLU6 with K % 8 == 0 (ungrouped, so D rows are unpadded): eight channels at a time
                if (g1 && Kp == K &&
                    grad_rows_fast(O, grad_a, o0, o1, need_wg ? D : nullptr, KpAll, need_bp ? dvals : nullptr, dbl))
                    continue;
                for (i64 o = o0; o < o1; o++) {
                    const float* ga = grad_a + o * K;
                    float* Dr = need_wg ? D + o * KpAll : nullptr;
                    if (gptr) {
                        // sparse: d only along the G list
                        if (Dr) std::memset(Dr, 0, sizeof(float) * KpAll);
                        // the stored values run along the A lists; G ⊇ A (an element of G outside
                        // A stored nothing: it reads as 0)
                        i64 ja = value_fprime ? O.a_ptr[o] : 0;
                        const i64 jae = value_fprime ? O.a_ptr[o + 1] : 0;
                        const i32* grow = gidx ? gidx + gptr[o] : sc.gbuf.data();
                        if (!gidx) decode_row(O, GV.which, o, 0, K, sc.gbuf.data());
                        for (i64 j = gptr[o]; j < gptr[o + 1]; j++) {
                            const int k = grow[j - gptr[o]];
                            float d = ga[k];
                            if (value_fprime) {
                                const bool inA = ja < jae && O.a_idx[ja] == k;
                                const float f = A::fprime(O.state(o * K + k), inA ? O.vals[ja] : 0.f, prm);
                                d = f != 0.f ? d * f : 0.f;
                                if (inA) ja++;
                            }
                            if (need_bp) dvals[j] = d;
                            if (Dr) Dr[g1 ? k : (k / Kg) * Kp + k % Kg] = d;  // no division when ungrouped
                            dbl[k] += d;
                        }
                    } else {
                        float* fp = sc.fp.data();
                        float* drow = sc.drow.data();
                        fprime_row(O, o, fp);
                        for (int k = 0; k < K; k++) {
                            const float d = fp[k] != 0.f ? ga[k] * fp[k] : 0.f;
                            drow[k] = d;
                            dbl[k] += d;
                        }
                        if (Dr)
                            for (int g = 0; g < groups; g++) {
                                std::memcpy(Dr + g * Kp, drow + g * Kg, sizeof(float) * Kg);
                                for (int kk = Kg; kk < Kp; kk++) Dr[g * Kp + kk] = 0.f;
                            }
                        if (need_bp) std::memcpy(dvals + o * K, drow, sizeof(float) * K);
                    }
                }
            }
        });
    });
    if (db) sum_chunks(dbp.data(), nch, db, K);
}

}  // namespace et
