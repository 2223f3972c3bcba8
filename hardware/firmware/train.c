/* TRAIN_STEP, PREDICT and LOSS_GRADS on the training array: the batch blob is checked, its
   samples go through the position-estimation unit into the input lists, then FP of every layer,
   the loss on the scalar FPU, and BP/WG (with the fused SGD update, or gradients out) from the
   last layer down. The registers per phase are hardware/core_layout.py's. */
#include "fw.h"

enum { R_CMD = 0x00, R_N, R_C, R_K, R_CT, R_KT, R_NMAX, R_FLAGS, R_ACT, R_P_IN, R_G_IN, R_CNT_IN, R_P_G, R_WF, R_WB,
       R_MF, R_GR, R_D_IN, R_D_OUT, R_S_IN, R_S_OUT, R_P_OUT, R_L_OUT, R_G_OUT, R_CNT_OUT, R_SE_OUT, R_Z_OUT,
       R_LR = 0x1C, R_MOM, R_WD, R_PUSH = 0x20, R_CLEAR = 0x21 };
enum { R_CYC_FP = 0x30, R_CYC_BP, R_CYC_WG, R_CYC_UP, R_MAC_FP, R_MAC_BP, R_MAC_WG };
enum { F_BIAS = 1, F_TRAIN_W = 2, F_TRAIN_B = 4, F_WB = 8, F_GRAD = 16, F_WD = 32, F_MOM = 64, F_WBUF = 128,
       F_BBUF = 256 };
#define Z_EN 16
#define HW_RES_AW REG32(0x60000038u)

stepcount_t last_step, totals;
u32 steps_total;

void core_set(int reg, u32 v) { CORE_REG(reg) = v; }

void core_run(int mode) {
    CORE_REG(R_CMD) = 1u | (u32)mode << 1;
    while (CORE_REG(R_CMD) & 0xF) {}
}

static void core_wait(void) {
    while (CORE_REG(R_CMD) & 0xF) {}
}

/* -- the batch blob (PROTOCOL.md 7.2) ---------------------------------------------------------- */
typedef struct {
    u32 base, n, count, vals, mask;
    int kind;
    i32 y[256];
    int has_y;
    u32 bit, vpos;        /* streaming cursors */
} batch_t;
static batch_t B;

static int popcount8(u32 v) {
    int c = 0;
    while (v) {
        c += v & 1;
        v >>= 1;
    }
    return c;
}

static int batch_parse(u32 total, int need_y, u32 nlimit) {
    u32 base = stage_base(3), pos = 4;
    B.base = base;
    if (total < 4) return fail(E_BATCH, "unreadable batch: too short", 0, 0);
    B.kind = rd8(base, 0);
    int ndim = rd8(base, 1);
    if (ndim != M.in_ndim || total < 4 + 4 * (u32)ndim) return fail(E_BATCH, "input shape does not fit the model", 0, 0);
    B.n = rd32(base, pos);
    for (int i = 1; i < ndim; i++)
        if (rd32(base, pos + 4 * (u32)i) != M.in_dims[i]) return fail(E_BATCH, "input shape does not fit the model", 0, 0);
    pos += 4 * (u32)ndim;
    if (B.n == 0 || B.n > nlimit) return fail(E_BATCH, "batch size 0 or larger than this device takes", 0, 0);
    B.count = B.n * (u32)M.feats;
    if (B.kind == 0) {
        B.vals = pos;
        pos += 4 * B.count;
    } else if (B.kind == 1 || B.kind == 2) {
        u32 mb = (B.count + 7) / 8;
        if (pos + mb + 4 > total) return fail(E_BATCH, "unreadable batch: truncated mask", 0, 0);
        B.mask = pos;
        u32 ones = 0;
        for (u32 i = 0; i < mb; i++) ones += (u32)popcount8(rd8(base, pos + i));
        pos += mb;
        if (rd32(base, pos) != ones) return fail(E_BATCH, "unreadable batch: mask and non-zero count disagree", 0, 0);
        pos += 4;
        B.vals = pos;
        pos += ones * (B.kind == 1 ? 4u : 2u);
    } else {
        return fail(E_BATCH, "unreadable batch: unknown activation format", 0, 0);
    }
    if (pos + 4 > total) return fail(E_BATCH, "unreadable batch: truncated", 0, 0);
    int yk = rd8(base, pos), yn = rd8(base, pos + 1);
    pos += 4;
    B.has_y = 0;
    if (yk == 1) {
        if (yn != 1 || pos + 4 > total || rd32(base, pos) != B.n) return fail(E_BATCH, "labels missing or not one per sample", 0, 0);
        pos += 4;
        if (pos + 4 * B.n > total) return fail(E_BATCH, "unreadable batch: truncated labels", 0, 0);
        for (u32 i = 0; i < B.n; i++) {
            u32 v = rd32(base, pos + 4 * i);
            if (v >= (u32)M.l[M.nl - 1].k) return fail(E_BATCH, "label outside the model's classes", 0, 0);
            if (i < 256) B.y[i] = (i32)v;
        }
        pos += 4 * B.n;
        B.has_y = 1;
    } else if (yk == 2) {
        return fail(E_BATCH, "float targets are not supported (class labels only)", 0, 0);
    } else if (yk != 0) {
        return fail(E_BATCH, "unreadable batch: unknown label format", 0, 0);
    } else {
        pos += 4 * (u32)yn;
    }
    if (need_y && !B.has_y) return fail(E_BATCH, "labels missing or not one per sample", 0, 0);
    if (pos != total) return fail(E_BATCH, "unreadable batch: trailing bytes after batch", 0, 0);
    B.bit = 0;
    B.vpos = B.vals;
    return 0;
}

/* the next element of the input, in order (dense batches) */
static u32 next_dense(void) {
    u32 v = rd32(B.base, B.vpos);
    B.vpos += 4;
    return v;
}

/* the next n <= 16 mask bits */
static u32 next_mask(u32 n) {
    u32 byte = B.mask + B.bit / 8, sh = B.bit % 8;
    u32 w = rd8(B.base, byte) | (u32)rd8(B.base, byte + 1) << 8 | (u32)rd8(B.base, byte + 2) << 16;
    B.bit += n;
    return (w >> sh) & ((1u << n) - 1);
}

static u32 next_nonzero(void) {
    u32 v;
    if (B.kind == 1) {
        v = rd32(B.base, B.vpos);
        B.vpos += 4;
    } else {
        v = (u32)(rd8(B.base, B.vpos) | rd8(B.base, B.vpos + 1) << 8) << 16;
        B.vpos += 2;
    }
    return v;
}

/* the next `n` samples through the estimator into activation region 0: per tile the input word is
   cleared and only its non-zero lanes are written (the batch's mask says which) */
static void push_input(u32 n) {
    u32 kt = tiles((u32)M.feats), lanes = M.lanes;
    core_set(R_N, n);
    core_set(R_K, (u32)M.feats);
    core_set(R_KT, kt);
    core_set(R_NMAX, M.nmax);
    core_set(R_ACT, 2);
    core_set(R_P_OUT, M.p[0]);
    core_set(R_L_OUT, M.lst[0]);
    core_set(R_G_OUT, M.g[0]);
    core_set(R_CNT_OUT, M.cnt[0]);
    core_set(R_SE_OUT, M.sd[0]);
    core_set(R_Z_OUT, 0);
    for (u32 p = 0; p < n; p++)
        for (u32 t = 0; t < kt; t++) {
            u32 nl = (u32)M.feats - t * lanes < lanes ? (u32)M.feats - t * lanes : lanes;
            core_set(R_CLEAR, 0);
            if (B.kind == 0) {
                for (u32 j = 0; j < nl; j++) {
                    u32 v = next_dense();
                    if (v) set_lane(2, 0, j, v);
                }
            } else {
                u32 m = next_mask(nl);
                for (u32 j = 0; m; j++, m >>= 1)
                    if (m & 1) set_lane(2, 0, j, next_nonzero());
            }
            core_set(R_PUSH, p | t << 8 | (t + 1 == kt ? 1u << 16 : 0));
            core_wait();
        }
}

static void shape_regs(int i, u32 n) {
    const layer_t *L = &M.l[i];
    core_set(R_N, n);
    core_set(R_C, (u32)L->c);
    core_set(R_K, (u32)L->k);
    core_set(R_CT, tiles((u32)L->c));
    core_set(R_KT, tiles((u32)L->k));
    core_set(R_NMAX, M.nmax);
}

static void forward(u32 n) {
    for (int i = 0; i < M.nl; i++) {
        const layer_t *L = &M.l[i];
        shape_regs(i, n);
        core_set(R_FLAGS, L->has_bias ? F_BIAS : 0);
        core_set(R_ACT, (L->relu ? 0u : 1u) | (i == M.nl - 1 ? Z_EN : 0u));
        core_set(R_P_IN, M.p[i]);
        core_set(R_WF, M.wf[i]);
        core_set(R_P_OUT, M.p[i + 1]);
        core_set(R_L_OUT, M.lst[i + 1]);
        core_set(R_G_OUT, M.g[i + 1]);
        core_set(R_CNT_OUT, M.cnt[i + 1]);
        core_set(R_SE_OUT, M.sd[i + 1]);
        core_set(R_Z_OUT, M.sd[i + 1]);
        core_run(0);
    }
}

static void bp(int i, u32 n) {
    shape_regs(i, n);
    core_set(R_P_G, M.p[i + 1]);
    core_set(R_WB, M.wb[i]);
    core_set(R_D_IN, M.sd[i + 1]);
    core_set(R_D_OUT, M.sd[i]);
    core_set(R_S_IN, M.sd[i]);
    core_run(1);
}

static void wg(int i, u32 n, int grad) {
    const layer_t *L = &M.l[i];
    u32 fl = (L->has_bias ? F_BIAS : 0) | (L->train_w ? F_TRAIN_W : 0) | (L->train_b ? F_TRAIN_B : 0) |
             (i > 0 && M.need_bp[i] ? F_WB : 0) | (grad ? F_GRAD : 0) | (M.wd ? F_WD : 0) | (M.mom ? F_MOM : 0) |
             (L->wbuf ? F_WBUF : 0) | (L->bbuf ? F_BBUF : 0);
    shape_regs(i, n);
    core_set(R_FLAGS, fl);
    core_set(R_G_IN, M.g[i]);
    core_set(R_CNT_IN, M.cnt[i]);
    core_set(R_D_IN, M.sd[i + 1]);
    core_set(R_S_OUT, M.sd[i + 1]);
    core_set(R_WF, M.wf[i]);
    core_set(R_MF, M.mf[i]);
    core_set(R_WB, M.wb[i]);
    core_set(R_GR, M.gr);
    core_set(R_LR, M.lr_neg);
    core_set(R_MOM, M.mom);
    core_set(R_WD, M.wd);
    core_run(2);
}

static void read_counters(u32 *c) {
    for (int i = 0; i < 7; i++) c[i] = CORE_REG(R_CYC_FP + i);
}

static void dense_macs(stepcount_t *s, u32 n) {
    for (int i = 0; i < 3; i++) s->dense[i] = 0;
    for (int i = 0; i < M.nl; i++) {
        u32 d = n * (u32)M.l[i].c * (u32)M.l[i].k;
        s->dense[0] += d;
        if (i > 0 && M.need_bp[i]) s->dense[1] += d;
        if (M.l[i].train_w) s->dense[2] += d;
    }
}

/* FP, loss, BP and WG of one batch of at most nmax samples; grads: gradients to `res` (LOSS_GRADS) */
static void step(u32 n, int grad, out_t *res, u32 *loss, int *correct, stepcount_t *sc) {
    u32 c0[7], c1[7];
    read_counters(c0);
    u32 t0 = CYCLES_LO;
    push_input(n);
    forward(n);
    u32 t1 = CYCLES_LO;
    u32 kl = (u32)M.l[M.nl - 1].k;
    loss_xent((int)n, (int)kl, M.sd[M.nl], tiles(kl), B.y, loss, correct);
    u32 t2 = CYCLES_LO;
    for (int i = M.nl - 1; i >= 0; i--) {
        if (i > 0 && M.need_bp[i]) bp(i, n);
        if (M.l[i].train_w || (M.l[i].train_b && M.l[i].has_bias)) wg(i, n, grad);
        if (grad) {
            const layer_t *L = &M.l[i];
            u32 kt = tiles((u32)L->k), lanes = M.lanes;
            if (L->train_w)
                for (u32 k = 0; k < (u32)L->k; k++)
                    for (u32 c = 0; c < (u32)L->c; c++) out_u32(res, get_lane(0, M.gr + c * kt + (k >> M.lb), (k & (lanes - 1))));
            if (L->train_b && L->has_bias)
                for (u32 k = 0; k < (u32)L->k; k++) out_u32(res, get_lane(0, M.gr + (u32)L->c * kt + (k >> M.lb), (k & (lanes - 1))));
        }
    }
    u32 t3 = CYCLES_LO;
    read_counters(c1);
    sc->fp = c1[0] - c0[0];
    sc->bp = c1[1] - c0[1];
    sc->wg = c1[2] - c0[2];
    sc->up = c1[3] - c0[3];
    sc->input = (t1 - t0) - sc->fp;      /* the push, the registers and the estimator's tail */
    sc->loss = t2 - t1;
    sc->total = t3 - t0;
    for (int i = 0; i < 3; i++) sc->mac[i] = c1[4 + i] - c0[4 + i];
    dense_macs(sc, n);
}

int cmd_train(u32 total, out_t *o) {
    int r = batch_parse(total, 1, M.nmax);
    if (r) return r;
    u32 loss;
    int correct;
    step(B.n, 0, 0, &loss, &correct, &last_step);
    M.t++;
    for (int l = 0; l < M.nl; l++) {      /* torch's SGD keeps a buffer for every parameter it stepped */
        if (M.mom && M.l[l].train_w) M.l[l].wbuf = 1;
        if (M.mom && M.l[l].train_b) M.l[l].bbuf = 1;
    }
    steps_total++;
    totals.fp += last_step.fp;
    totals.bp += last_step.bp;
    totals.wg += last_step.wg;
    totals.up += last_step.up;
    totals.input += last_step.input;
    totals.loss += last_step.loss;
    totals.total += last_step.total;
    for (int i = 0; i < 3; i++) {
        totals.mac[i] += last_step.mac[i];
        totals.dense[i] += last_step.dense[i];
    }
    u64 lf = f64_of_f32(loss);
    out_u32(o, LINK_STEP);
    out_u32(o, (u32)lf);
    out_u32(o, (u32)(lf >> 32));
    out_u32(o, (u32)correct);
    out_u32(o, B.n);
    /* device seconds: FP with the input push, BP with the loss; WG and the update are the array's */
    out_u32(o, seconds_f32(last_step.input + last_step.fp));
    out_u32(o, seconds_f32(last_step.loss + last_step.bp));
    out_u32(o, seconds_f32(last_step.wg));
    out_u32(o, seconds_f32(last_step.up));
    out_u32(o, last_step.total);
    out_u32(o, 0);
    return 0;
}

static void set_header(out_t *res, const char *head, int n) {
    out_u32(res, (u32)n);
    out_mem(res, head, n);
}

int cmd_predict(u32 total, out_t *res, u32 *res_len) {
    int r = batch_parse(total, 0, 1u << 20);
    if (r) return r;
    u32 kl = (u32)M.l[M.nl - 1].k, kt = tiles(kl), lanes = M.lanes;
    char head[160];
    txt_t t = {head, 0, (int)sizeof(head)};
    txt_str(&t, "{\"meta\":{},\"tensors\":[{\"name\":\"logits\",\"dtype\":\"f32\",\"shape\":[");
    txt_dec(&t, B.n);
    txt_str(&t, ",");
    txt_dec(&t, kl);
    txt_str(&t, "],\"offset\":0,\"nbytes\":");
    txt_dec(&t, 4 * B.n * kl);
    txt_str(&t, "}]}");
    while (t.pos % 4) txt_str(&t, " ");
    out_init(res, BUF_RESULT, 1u << HW_RES_AW);
    set_header(res, head, t.pos);
    for (u32 s = 0; s < B.n; s += M.nmax) {
        u32 n = B.n - s < M.nmax ? B.n - s : M.nmax;
        push_input(n);
        forward(n);
        for (u32 p = 0; p < n; p++)
            for (u32 k = 0; k < kl; k++) out_u32(res, get_lane(1, M.sd[M.nl] + p * kt + (k >> M.lb), (k & (lanes - 1))));
    }
    if (res->overflow) return fail(E_TOO_LARGE, "result exceeds the result buffer", 0, 0);
    *res_len = res->pos;
    return 0;
}

int cmd_loss_grads(u32 total, out_t *res, u32 *res_len, u32 *loss) {
    int r = batch_parse(total, 1, M.nmax);
    if (r) return r;
    static char head[2048];
    txt_t t = {head, 0, (int)sizeof(head)};
    u32 off = 0;
    txt_str(&t, "{\"meta\":{},\"tensors\":[");
    for (int i = M.nl - 1; i >= 0; i--) {
        const layer_t *L = &M.l[i];
        for (int b = 0; b < 2; b++) {
            if (b ? !(L->train_b && L->has_bias) : !L->train_w) continue;
            u32 count = b ? (u32)L->k : (u32)(L->k * L->c);
            if (off) txt_str(&t, ",");
            txt_str(&t, "{\"name\":\"");
            txt_mem(&t, b ? L->b : L->w, b ? L->blen : L->wlen);
            txt_str(&t, "\",\"dtype\":\"f32\",\"shape\":[");
            txt_dec(&t, (u32)L->k);
            if (!b) {
                txt_str(&t, ",");
                txt_dec(&t, (u32)L->c);
            }
            txt_str(&t, "],\"offset\":");
            txt_dec(&t, off);
            txt_str(&t, ",\"nbytes\":");
            txt_dec(&t, 4 * count);
            txt_str(&t, "}");
            off += 4 * count;
        }
    }
    txt_str(&t, "]}");
    while (t.pos % 4) txt_str(&t, " ");
    out_init(res, BUF_RESULT, 1u << HW_RES_AW);
    set_header(res, head, t.pos);
    int correct;
    stepcount_t sc;
    step(B.n, 1, res, loss, &correct, &sc);
    if (res->overflow) return fail(E_TOO_LARGE, "result exceeds the result buffer", 0, 0);
    *res_len = res->pos;
    return 0;
}
