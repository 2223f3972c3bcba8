// The ActInfo plan structures: views, lists derived from state bits, transposed lists for WG,
// dense copies, mode changes. (The epilogue that builds them is epilogue.cpp.)
#include "info.hpp"

#include <cmath>

namespace et {

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
        cnt += __builtin_popcount(m);
    }
    return cnt;
}

int count_row(const ActInfo& I, int which, i64 p, int c0, int n) {
    const i64 e0 = p * I.C + c0;
    int cnt = 0;
    for (int j = 0; j < n; j += 8) {
        unsigned m = mask8_at(I, which, e0 + j);
        if (n - j < 8) m &= (1u << (n - j)) - 1;
        cnt += __builtin_popcount(m);
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
    parallel_for(chunks, 1, [&](i64 c0, i64 c1, int) {
        std::vector<i32> last(C + 8);
        for (i64 ch = c0; ch < c1; ch++) {
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
    });
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
    parallel_each(P, [&](i64 p) {
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
    });
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
        parallel_each(P, [&](i64 p) {
            for (int g = 0; g < groups; g++) {
                int c = 0;
                for (int k = g * Cg; k < (g + 1) * Cg; k++) c += a[p * C + k] != 0.f;
                b[p * groups + g] = c;
            }
        });
    } else {
        parallel_each(P, [&](i64 p) {
            for (int g = 0; g < groups; g++) {
                int c = 0;
                for (int k = g * Cg; k < (g + 1) * Cg; k++) c += in_g_state(state(p * C + k));
                b[p * groups + g] = c;
            }
        });
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
    parallel_each(P, [&](i64 p) {
        if (I.a_all) {
            for (int k = 0; k < C; k++) {
                const i64 e = p * C + k;
                o[e] = HswishAct::a_of(I.vals[e], I.state(e));
            }
        } else {
            for (i64 j = I.a_ptr[p]; j < I.a_ptr[p + 1]; j++)
                o[j] = HswishAct::a_of(I.vals[j], I.state(p * C + I.a_idx[j]));
        }
    });
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
    parallel_each(P, [&](i64 p) {
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
    });
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
    parallel_for(nt, 1, [&](i64 t0, i64 t1, int) {
        std::vector<i64> cnt(C);
        std::vector<i32> rowbuf;
        for (i64 t = t0; t < t1; t++) {
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
    });
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

// Rebuild a z that reproduces the stored states (exact for the stored data): the traits' z_of
// of each element's stored value and state.
static void reconstruct_z(ActInfo& I, float* z) {
    const int K = I.C;
    for_act(I.act, [&](auto T) {
        using A = decltype(T);
        if (!I.a_all && !I.derived) {
            // stored values along the A lists (an element outside A stored nothing: 0)
            parallel_each(I.P, [&](i64 p) {
                i64 j = I.a_ptr[p];
                const i64 je = I.a_ptr[p + 1];
                for (int k = 0; k < K; k++) {
                    const i64 e = p * K + k;
                    const bool inA = j < je && I.a_idx[j] == k;
                    const float v = inA ? I.vals[j] : 0.f;
                    if (inA) j++;
                    z[e] = A::z_of(v, I.state(e));
                }
            });
            return;
        }
        // dense stored values, or ReLU/Clip lists derived from the bits (stored value = a)
        const float* v = I.a_all ? I.vals.data() : I.dense_values();
        parallel_each(I.P, [&](i64 p) {
            for (int k = 0; k < K; k++) z[p * K + k] = A::z_of(v[p * K + k], I.state(p * K + k));
        });
    });
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
    o->zero = in->zero;
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
