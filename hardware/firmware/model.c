/* COMMIT MODEL: the descriptor (PROTOCOL.md 7.4) becomes a chain of Gemm(+ReLU) layers and a
   memory layout of the training array (hardware/core_layout.py computes the same). The checks
   and their texts follow hardware/device_model.py's plan(). */
#include "fw.h"

model_t M;
char desc_buf[DESC_MAX];
tok_t toks[MAX_TOK];
char err_text[128];

int fail(int code, const char *a, const char *b, int blen) {
    txt_t t = {err_text, 0, (int)sizeof(err_text) - 1};
    txt_str(&t, a);
    if (b) txt_mem(&t, b, blen);
    err_text[t.pos] = 0;
    return code;
}

u32 tiles(u32 n) { return (n + M.lanes - 1) >> M.lb; }

u32 get_lane(int sel, u32 word, u32 lane) { return CORE_LANE(sel, word, lane); }

void set_lane(int sel, u32 word, u32 lane, u32 v) { CORE_LANE(sel, word, lane) = v; }

u32 stage_base(int blob) { return BUF_STAGE + ((u32)(blob - 1) << REG32(0x6000001Cu)); }

#define S(i) (desc_buf + toks[i].start)
#define LEN(i) (toks[i].end - toks[i].start)

static int str_eq_tok(int a, int b) { return LEN(a) == LEN(b) && mem_eq(S(a), S(b), LEN(a)); }

/* index of the "params" entry named like token `name`, or -1 */
static int param_entry(int params, int name) {
    for (int i = 0; i < toks[params].size; i++) {
        int e = json_item(toks, params, i), nm = json_key(desc_buf, toks, e, "name");
        if (nm >= 0 && str_eq_tok(nm, name)) return e;
    }
    return -1;
}

static int in_list(int arr, const char *s, int n) {
    for (int i = 0; i < toks[arr].size; i++) {
        int e = json_item(toks, arr, i);
        if (LEN(e) == n && mem_eq(S(e), s, n)) return 1;
    }
    return 0;
}

static u32 shape_dim(int entry, int i) {
    u32 v = 0;
    json_u32(desc_buf, toks, json_item(toks, json_key(desc_buf, toks, entry, "shape"), i), &v);
    return v;
}

static void layout(void) {
    u32 lp = 0, gp = 0, cp = 0, sp = 0, w = 0;
    for (int a = 0; a <= M.nl; a++) {
        u32 f = a == 0 ? (u32)M.feats : (u32)M.l[a - 1].k;
        M.p[a] = (u32)a * M.nmax;
        M.lst[a] = lp;
        M.g[a] = gp;
        M.cnt[a] = cp;
        M.sd[a] = sp;
        lp += M.nmax * f;
        gp += tiles(f) * M.nmax;
        cp += tiles(f);
        sp += M.nmax * tiles(f);
    }
    u32 grmax = 0;
    for (int i = 0; i < M.nl; i++) {
        M.wf[i] = w;
        w += (u32)(M.l[i].c + 1) * tiles(M.l[i].k);
    }
    for (int i = 0; i < M.nl; i++) {
        u32 sz = (u32)(M.l[i].c + 1) * tiles(M.l[i].k);
        M.mf[i] = w;
        w += sz;
        if (sz > grmax) grmax = sz;
    }
    for (int i = 0; i < M.nl; i++) {
        M.wb[i] = w;
        w += (u32)M.l[i].k * tiles(M.l[i].c);
    }
    M.gr = w;
    M.wmem_words = w + grmax;
}

/* memory limits of the array as built (device_top's parameters) */
#define HW_WAW  REG32(0x60000020u)
#define HW_DAW  REG32(0x60000024u)
#define HW_LAW  REG32(0x60000028u)
#define HW_PAW  REG32(0x6000002Cu)
#define HW_GAW  REG32(0x60000030u)
#define HW_CAW  REG32(0x60000034u)

static int fits(void) {
    u32 lp = M.lst[M.nl] + M.nmax * (u32)M.l[M.nl - 1].k, gp = M.g[M.nl] + tiles(M.l[M.nl - 1].k) * M.nmax;
    u32 cp = M.cnt[M.nl] + tiles(M.l[M.nl - 1].k), sp = M.sd[M.nl] + M.nmax * tiles(M.l[M.nl - 1].k);
    return M.wmem_words <= (1u << HW_WAW) && sp <= (1u << HW_DAW) && lp <= (1u << HW_LAW) &&
           (u32)(M.nl + 1) * M.nmax <= (1u << HW_PAW) && gp <= (1u << HW_GAW) && cp <= (1u << HW_CAW) &&
           M.l[M.nl - 1].k <= 64;
}

int model_commit(u32 total) {
    M.loaded = M.ready = 0;
    if (total > DESC_MAX) return fail(E_DESCRIPTOR, "descriptor larger than the device's 4096 bytes", 0, 0);
    u32 base = stage_base(1);
    for (u32 i = 0; i < total; i++) desc_buf[i] = (char)rd8(base, i);
    int n = json_parse(desc_buf, (int)total, toks, MAX_TOK);
    if (n < 0) return fail(E_DESCRIPTOR, "unreadable descriptor (JSON)", 0, 0);
    u32 fmt = 0;
    if (!json_u32(desc_buf, toks, json_key(desc_buf, toks, 0, "format"), &fmt) || fmt != 1)
        return fail(E_DESCRIPTOR, "descriptor format is not 1", 0, 0);
    int nodes = json_key(desc_buf, toks, 0, "nodes"), params = json_key(desc_buf, toks, 0, "params");
    int train = json_key(desc_buf, toks, 0, "trainable"), shape = json_key(desc_buf, toks, 0, "input_shape");
    int opt = json_key(desc_buf, toks, 0, "optimizer"), loss = json_key(desc_buf, toks, 0, "loss");
    if (nodes < 0 || params < 0 || train < 0 || shape < 0 || opt < 0 || loss < 0 || toks[nodes].type != J_ARR ||
        toks[params].type != J_ARR || toks[train].type != J_ARR || toks[shape].type != J_ARR)
        return fail(E_DESCRIPTOR, "descriptor lacks nodes/params/trainable/input_shape/optimizer/loss", 0, 0);
    M.feats = 1;
    M.in_ndim = toks[shape].size;
    if (M.in_ndim < 2 || M.in_ndim > 8) return fail(E_DESCRIPTOR, "input_shape must have 2 to 8 dimensions", 0, 0);
    for (int i = 1; i < M.in_ndim; i++) {
        u32 d;
        if (!json_u32(desc_buf, toks, json_item(toks, shape, i), &d) || d == 0)
            return fail(E_DESCRIPTOR, "input_shape needs fixed dimensions after the batch", 0, 0);
        M.in_dims[i] = d;
        M.feats *= (int)d;
    }
    M.nl = 0;
    int cur = M.feats;
    for (int i = 0; i < toks[nodes].size; i++) {
        int nd = json_item(toks, nodes, i);
        int op = json_key(desc_buf, toks, nd, "op"), name = json_key(desc_buf, toks, nd, "name");
        if (op < 0 || name < 0) return fail(E_DESCRIPTOR, "node without op or name", 0, 0);
        if (json_is(desc_buf, toks, op, "flatten")) {
            if (M.nl) return fail(E_DESCRIPTOR, "flatten is only supported before the first gemm: ", S(name), LEN(name));
        } else if (json_is(desc_buf, toks, op, "gemm")) {
            int at = json_key(desc_buf, toks, nd, "attrs"), pr = json_key(desc_buf, toks, nd, "params");
            u32 tb = 0, one = 0x3F800000u, al = one, be = one;
            json_u32(desc_buf, toks, json_key(desc_buf, toks, at, "transB"), &tb);
            int ka = json_key(desc_buf, toks, at, "alpha"), kb = json_key(desc_buf, toks, at, "beta");
            if (ka >= 0) json_f32(desc_buf, toks, ka, &al);
            if (kb >= 0) json_f32(desc_buf, toks, kb, &be);
            if (tb != 1 || al != one || be != one)
                return fail(E_DESCRIPTOR, "only gemm with transB=1, alpha=1, beta=1: ", S(name), LEN(name));
            if (M.nl == MAX_LAYERS) return fail(E_DESCRIPTOR, "more than 8 gemm layers", 0, 0);
            int w = json_key(desc_buf, toks, pr, "W"), b = json_key(desc_buf, toks, pr, "B");
            int we = w >= 0 ? param_entry(params, w) : -1, be_ = b >= 0 ? param_entry(params, b) : -1;
            if (we < 0 || (b >= 0 && be_ < 0)) return fail(E_DESCRIPTOR, "gemm parameter not listed: ", S(name), LEN(name));
            layer_t *L = &M.l[M.nl];
            L->w = S(w);
            L->wlen = LEN(w);
            L->b = b >= 0 ? S(b) : 0;
            L->blen = b >= 0 ? LEN(b) : 0;
            L->k = (int)shape_dim(we, 0);
            L->c = (int)shape_dim(we, 1);
            L->has_bias = b >= 0;
            L->relu = 0;
            L->train_w = in_list(train, L->w, L->wlen);
            L->train_b = L->has_bias && in_list(train, L->b, L->blen);
            L->wbuf = L->bbuf = 0;
            if (L->c != cur) return fail(E_DESCRIPTOR, "gemm input width does not match: ", S(name), LEN(name));
            if (L->has_bias && shape_dim(be_, 0) != (u32)L->k)
                return fail(E_DESCRIPTOR, "bias shape does not match: ", S(name), LEN(name));
            cur = L->k;
            M.nl++;
        } else if (json_is(desc_buf, toks, op, "relu")) {
            if (!M.nl || M.l[M.nl - 1].relu) return fail(E_DESCRIPTOR, "relu must follow a gemm: ", S(name), LEN(name));
            M.l[M.nl - 1].relu = 1;
        } else {
            return fail(E_DESCRIPTOR, "unsupported op (this device trains gemm/relu/flatten chains): ", S(op), LEN(op));
        }
    }
    if (!M.nl) return fail(E_DESCRIPTOR, "no gemm layer", 0, 0);
    /* every parameter must belong to a layer: READ_STATE returns them all */
    for (int i = 0; i < toks[params].size; i++) {
        int nm = json_key(desc_buf, toks, json_item(toks, params, i), "name"), found = 0;
        for (int l = 0; l < M.nl; l++)
            found |= (LEN(nm) == M.l[l].wlen && mem_eq(S(nm), M.l[l].w, M.l[l].wlen)) ||
                     (M.l[l].has_bias && LEN(nm) == M.l[l].blen && mem_eq(S(nm), M.l[l].b, M.l[l].blen));
        if (!found) return fail(E_DESCRIPTOR, "parameter is not a gemm weight or bias: ", S(nm), LEN(nm));
    }
    if (!json_is(desc_buf, toks, json_key(desc_buf, toks, opt, "name"), "sgd"))
        return fail(E_DESCRIPTOR, "optimizer is not supported (sgd only)", 0, 0);
    int sch = json_key(desc_buf, toks, opt, "schedule");
    if (sch >= 0 && !json_is(desc_buf, toks, sch, "constant"))
        return fail(E_DESCRIPTOR, "schedule is not supported (constant only)", 0, 0);
    if (!json_is(desc_buf, toks, loss, "cross_entropy"))
        return fail(E_DESCRIPTOR, "loss is not supported (cross_entropy only)", 0, 0);
    u32 lr = 0, mom = 0, wd = 0;
    int km = json_key(desc_buf, toks, opt, "momentum"), kw = json_key(desc_buf, toks, opt, "weight_decay");
    if (!json_f32(desc_buf, toks, json_key(desc_buf, toks, opt, "lr"), &lr) ||
        (km >= 0 && !json_f32(desc_buf, toks, km, &mom)) ||
        (kw >= 0 && !json_null(desc_buf, toks, kw) && !json_f32(desc_buf, toks, kw, &wd)))
        return fail(E_DESCRIPTOR, "optimizer numbers this device cannot read exactly", 0, 0);
    M.lr_neg = lr ^ 0x80000000u;
    M.mom = mom & 0x7FFFFFFFu ? mom : 0;
    M.wd = wd & 0x7FFFFFFFu ? wd : 0;
    M.t = 0;
    for (int i = 0; i < M.nl; i++) {
        M.need_bp[i] = 0;
        for (int j = 0; j < i; j++) M.need_bp[i] |= M.l[j].train_w || M.l[j].train_b;
    }
    M.lanes = HW_LANES;
    for (M.lb = 0; (1u << M.lb) < M.lanes; M.lb++) {}     /* lanes are a power of 2: shifts, not divisions */
    M.nmax = HW_NMAX;
    layout();
    if (!fits()) return fail(E_DESCRIPTOR, "model does not fit the array's memories (or more than 64 classes)", 0, 0);
    M.loaded = 1;
    return 0;
}
