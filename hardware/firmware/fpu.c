/* The loss on the device: softmax cross-entropy and its gradient, every operation on the
   scalar FPU (fp32_mul/fp32_add/fp32_div, the array's rounding). hardware/device_model.py
   (exp_nonpos, ln_ge1, softmax_xent) is the same sequence in numpy. */
#include "fw.h"

u32 fmul(u32 a, u32 b) {
    FPU_A = a;
    FPU_B = b;
    return FPU_MUL;
}

u32 fadd(u32 a, u32 b) {
    FPU_A = a;
    FPU_B = b;
    return FPU_ADD;
}

u32 fdiv(u32 a, u32 b) {
    FPU_A = a;
    FPU_B = b;
    return FPU_DIV;
}

#define F_ONE 0x3F800000u
#define F_NEG_ONE 0xBF800000u
#define SIGN 0x80000000u

/* an exact small integer as f32 */
u32 f32_of_int(i32 v) {
    if (v == 0) return 0;
    u32 s = v < 0 ? SIGN : 0, m = (u32)(v < 0 ? -v : v);
    int e = 31;
    while (!(m & 0x80000000u)) {
        m <<= 1;
        e--;
    }
    return s | (u32)(e + 127) << 23 | ((m >> 8) & 0x7FFFFFu);
}

/* order of finite floats as unsigned keys */
static u32 key(u32 f) { return (f & SIGN) ? ~f : f | SIGN; }

int f32_gt(u32 a, u32 b) { return key(a) > key(b); }

u64 f64_of_f32(u32 f) {
    u64 s = (u64)(f >> 31) << 63;
    u32 e = (f >> 23) & 0xFF;
    if (e == 0) return s;                   /* zero (subnormals do not occur: FTZ) */
    return s | (u64)(e + 896) << 52 | (u64)(f & 0x7FFFFFu) << 29;
}

u32 seconds_f32(u32 cycles) {
    union { float f; u32 u; } r;
    r.f = (float)cycles / (float)HW_CLOCK;
    return r.u;
}

static const u32 EXP_POLY[8] = {0x39500D01u, 0x3AB60B61u, 0x3C088889u, 0x3D2AAAABu, 0x3E2AAAABu, 0x3F000000u,
                                0x3F800000u, 0x3F800000u};
static const u32 LN_POLY[6] = {0x3DBA2E8Cu, 0x3DE38E39u, 0x3E124925u, 0x3E4CCCCDu, 0x3EAAAAABu, 0x3F800000u};
#define LOG2E 0x3FB8AA3Bu
#define LN2_HI 0x3F317200u
#define LN2_LO 0x35BFBE8Eu
#define SQRT2 0x3FB504F3u
#define EXP_MIN 0xC2D00000u  /* -104 */

/* floor(|u| + 0.5) of a float up to a few hundred */
static int round_half_up(u32 u) {
    u &= ~SIGN;
    int e = (int)((u >> 23) & 0xFF) - 127;
    if (u == 0 || e < -1) return 0;
    u32 m = (u & 0x7FFFFFu) | 0x800000u;
    int shift = 23 - e;
    return (int)((m + (1u << (shift - 1))) >> shift);
}

/* exp(x) for x <= 0: x = k ln2 + r (Cody-Waite), a degree-7 polynomial in r, times 2^k */
static u32 exp_nonpos(u32 x) {
    if (f32_gt(EXP_MIN, x)) return 0;
    u32 t = fmul(x, LOG2E);
    int k = -round_half_up(t);
    u32 kf = f32_of_int(k);
    u32 r = fadd(x, fmul(kf, LN2_HI | SIGN));
    r = fadd(r, fmul(kf, LN2_LO | SIGN));
    u32 p = EXP_POLY[0];
    for (int i = 1; i < 8; i++) p = fadd(fmul(p, r), EXP_POLY[i]);
    int e = (int)((p >> 23) & 0xFF) + k;
    if (e <= 0) return 0;
    return (p & 0x807FFFFFu) | (u32)e << 23;
}

/* ln(s) for s >= 1: s = 2^e m, m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m-1)/(m+1)) */
static u32 ln_ge1(u32 s) {
    int e = (int)((s >> 23) & 0xFF) - 127;
    u32 m = (s & 0x7FFFFFu) | 0x3F800000u;
    if (m > SQRT2) {
        m = (s & 0x7FFFFFu) | 0x3F000000u;
        e++;
    }
    u32 t = fdiv(fadd(m, F_NEG_ONE), fadd(m, F_ONE));
    u32 t2 = fmul(t, t);
    u32 p = LN_POLY[0];
    for (int i = 1; i < 6; i++) p = fadd(fmul(p, t2), LN_POLY[i]);
    u32 u = fmul(t, p);
    u32 ef = f32_of_int(e);
    return fadd(fmul(ef, LN2_HI), fadd(fmul(ef, LN2_LO), fadd(u, u)));
}

#define KMAX 64
/* Logits (n x k) are in DMEM words dbase + p*kt + tile; the gradient dL/dz replaces them. */
void loss_xent(int n, int k, u32 dbase, u32 kt, const i32 *y, u32 *loss, int *correct) {
    u32 z[KMAX], e[KMAX];
    u32 total = 0, nf = f32_of_int(n);
    int ok = 0;
    for (int p = 0; p < n; p++) {
        for (int j = 0; j < k; j++) z[j] = get_lane(1, dbase + (u32)p * kt + ((u32)j >> M.lb), ((u32)j & (M.lanes - 1)));
        u32 m = z[0];
        int arg = 0;
        for (int j = 1; j < k; j++)
            if (f32_gt(z[j], m)) {
                m = z[j];
                arg = j;
            }
        ok += (arg == y[p]);
        u32 s = 0, xy = 0;
        for (int j = 0; j < k; j++) {
            u32 x = fadd(z[j], m ^ SIGN);
            if (j == y[p]) xy = x;
            e[j] = exp_nonpos(x);
            s = j == 0 ? e[0] : fadd(s, e[j]);
        }
        total = fadd(total, fadd(ln_ge1(s), xy ^ SIGN));
        for (int j = 0; j < k; j++) {
            u32 q = fdiv(e[j], s);
            if (j == y[p]) q = fadd(q, F_NEG_ONE);
            set_lane(1, dbase + (u32)p * kt + ((u32)j >> M.lb), ((u32)j & (M.lanes - 1)), fdiv(q, nf));
        }
    }
    *loss = fdiv(total, nf);
    *correct = ok;
}
