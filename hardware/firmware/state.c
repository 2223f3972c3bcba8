/* COMMIT STATE and READ_STATE: tensor sets (PROTOCOL.md 7.3) to and from the array's weight
   memory. A weight W (K x C) lives twice: row c of the FP layout holds W[., c] over the K lanes,
   row k of the BP layout W[k, .] over the C lanes; the bias is row C of the FP layout. The
   momentum buffer has the FP layout. Lanes beyond K (or C) are kept zero. */
#include "fw.h"

#define HDR_MAX 4096
static char hdr[HDR_MAX];

#define HS(i) (hdr + toks[i].start)
#define HLEN(i) (toks[i].end - toks[i].start)

/* which parameter a tensor name (after its prefix) is: layer*2 + (0 W, 1 B), or -1 */
static int which(const char *s, int n) {
    for (int l = 0; l < M.nl; l++) {
        if (n == M.l[l].wlen && mem_eq(s, M.l[l].w, n)) return 2 * l;
        if (M.l[l].has_bias && n == M.l[l].blen && mem_eq(s, M.l[l].b, n)) return 2 * l + 1;
    }
    return -1;
}

/* write a (K x C) weight, or a (K) bias when c_or_bias < 0, into the FP-layout rows at fbase
   and, for a weight with bb != ~0, the BP-layout rows at bb; values at staging data offset */
static void put_weight(const layer_t *L, u32 fbase, u32 bb, int is_bias, u32 base, u32 off) {
    u32 kt = tiles((u32)L->k), ct = tiles((u32)L->c), lanes = M.lanes;
    if (is_bias) {
        for (u32 k = 0; k < kt * lanes; k++)
            set_lane(0, fbase + (u32)L->c * kt + (k >> M.lb), (k & (lanes - 1)), k < (u32)L->k ? rd32(base, off + 4 * k) : 0);
        return;
    }
    for (u32 k = 0; k < (u32)L->k; k++)
        for (u32 c = 0; c < (u32)L->c; c++) {
            u32 v = rd32(base, off + 4 * (k * (u32)L->c + c));
            set_lane(0, fbase + c * kt + (k >> M.lb), (k & (lanes - 1)), v);
            if (bb != ~0u) set_lane(0, bb + k * ct + (c >> M.lb), (c & (lanes - 1)), v);
        }
    for (u32 c = 0; c < (u32)L->c; c++)           /* zero lanes past K */
        for (u32 k = (u32)L->k; k < kt * lanes; k++) set_lane(0, fbase + c * kt + (k >> M.lb), (k & (lanes - 1)), 0);
    if (bb != ~0u)
        for (u32 k = 0; k < (u32)L->k; k++)
            for (u32 c = (u32)L->c; c < ct * lanes; c++) set_lane(0, bb + k * ct + (c >> M.lb), (c & (lanes - 1)), 0);
}

int state_commit(u32 total, u32 *step_out, int *step_set) {
    if (!M.loaded) return fail(E_NO_MODEL, "no model loaded in this session", 0, 0);
    u32 base = stage_base(2);
    if (total < 4) return fail(E_STATE, "tensor set shorter than its header length", 0, 0);
    u32 hl = rd32(base, 0);
    if (hl > total - 4 || hl > HDR_MAX) return fail(E_STATE, "tensor set header too long", 0, 0);
    for (u32 i = 0; i < hl; i++) hdr[i] = (char)rd8(base, 4 + i);
    int hlen = (int)hl;
    while (hlen > 0 && hdr[hlen - 1] == ' ') hlen--;
    if (json_parse(hdr, hlen, toks, MAX_TOK) < 0) return fail(E_STATE, "unreadable tensor set header", 0, 0);
    int meta = json_key(hdr, toks, 0, "meta"), tens = json_key(hdr, toks, 0, "tensors");
    if (tens < 0 || toks[tens].type != J_ARR) return fail(E_STATE, "tensor set without tensors", 0, 0);
    u32 data = 4 + hl, dsize = total - data;
    u32 have = 0, bufs = 0;       /* bit 2l+r: parameter / its momentum present */
    for (int i = 0; i < toks[tens].size; i++) {
        int e = json_item(toks, tens, i);
        int nm = json_key(hdr, toks, e, "name"), dt = json_key(hdr, toks, e, "dtype");
        int sh = json_key(hdr, toks, e, "shape");
        u32 off, nb;
        if (nm < 0 || sh < 0 || toks[sh].type != J_ARR || !json_is(hdr, toks, dt, "f32") ||
            !json_u32(hdr, toks, json_key(hdr, toks, e, "offset"), &off) ||
            !json_u32(hdr, toks, json_key(hdr, toks, e, "nbytes"), &nb))
            return fail(E_STATE, "malformed tensor entry", 0, 0);
        int opt = HLEN(nm) > 8 && mem_eq(HS(nm), "opt/buf/", 8);
        int par = HLEN(nm) > 6 && mem_eq(HS(nm), "param/", 6);
        int w = opt ? which(HS(nm) + 8, HLEN(nm) - 8) : par ? which(HS(nm) + 6, HLEN(nm) - 6) : -1;
        if (w < 0) return fail(E_STATE, "unknown tensor ", HS(nm), HLEN(nm));
        const layer_t *L = &M.l[w / 2];
        u32 d0 = 0, d1 = 0;
        int nd = toks[sh].size;
        json_u32(hdr, toks, json_item(toks, sh, 0), &d0);
        if (nd == 2) json_u32(hdr, toks, json_item(toks, sh, 1), &d1);
        int ok = (w & 1) ? (nd == 1 && d0 == (u32)L->k) : (nd == 2 && d0 == (u32)L->k && d1 == (u32)L->c);
        u32 count = (w & 1) ? (u32)L->k : (u32)(L->k * L->c);
        if (!ok) return fail(E_STATE, "wrong shape for ", HS(nm), HLEN(nm));
        if (nb != 4 * count || off > dsize || nb > dsize - off || (off & 3))
            return fail(E_STATE, "bad size or offset for ", HS(nm), HLEN(nm));
        if (opt) bufs |= 1u << w;
        else have |= 1u << w;
    }
    u32 all = 0;
    for (int l = 0; l < M.nl; l++) all |= (1u << (2 * l)) | (M.l[l].has_bias ? 1u << (2 * l + 1) : 0);
    if (!M.ready && have != all) return fail(E_STATE, "the first state must hold every parameter", 0, 0);
    int mopt = json_key(hdr, toks, meta, "opt");
    u32 step;
    *step_set = json_u32(hdr, toks, json_key(hdr, toks, meta, "step"), &step);
    if (*step_set) *step_out = step;
    if (mopt >= 0) {         /* the optimizer state is replaced as a whole */
        u32 t = 0;
        json_u32(hdr, toks, json_key(hdr, toks, mopt, "t"), &t);
        M.t = t;
        for (int l = 0; l < M.nl; l++) {
            M.l[l].wbuf = (bufs >> (2 * l)) & 1;
            M.l[l].bbuf = (bufs >> (2 * l + 1)) & 1;
        }
    }
    for (int i = 0; i < toks[tens].size; i++) {
        int e = json_item(toks, tens, i), nm = json_key(hdr, toks, e, "name");
        u32 off;
        json_u32(hdr, toks, json_key(hdr, toks, e, "offset"), &off);
        int opt = mem_eq(HS(nm), "opt/", 4);
        int w = which(HS(nm) + (opt ? 8 : 6), HLEN(nm) - (opt ? 8 : 6)), l = w / 2;
        const layer_t *L = &M.l[l];
        if (opt && mopt < 0) continue;             /* momentum tensors count only with meta.opt */
        put_weight(L, opt ? M.mf[l] : M.wf[l], (!opt && l > 0) ? M.wb[l] : ~0u, w & 1, base, data + off);
    }
    M.ready = 1;
    return 0;
}

static void tensor_entry(txt_t *t, const char *pre, const char *name, int nlen, const layer_t *L, int bias,
                         u32 *off) {
    u32 count = bias ? (u32)L->k : (u32)(L->k * L->c);
    if (*off) txt_str(t, ",");
    txt_str(t, "{\"name\":\"");
    txt_str(t, pre);
    txt_mem(t, name, nlen);
    txt_str(t, "\",\"dtype\":\"f32\",\"shape\":[");
    txt_dec(t, (u32)L->k);
    if (!bias) {
        txt_str(t, ",");
        txt_dec(t, (u32)L->c);
    }
    txt_str(t, "],\"offset\":");
    txt_dec(t, *off);
    txt_str(t, ",\"nbytes\":");
    txt_dec(t, 4 * count);
    txt_str(t, "}");
    *off += 4 * count;
}

static void out_weight(out_t *o, const layer_t *L, u32 fbase, int bias) {
    u32 kt = tiles((u32)L->k), lanes = M.lanes;
    if (bias) {
        for (u32 k = 0; k < (u32)L->k; k++) out_u32(o, get_lane(0, fbase + (u32)L->c * kt + (k >> M.lb), (k & (lanes - 1))));
        return;
    }
    for (u32 k = 0; k < (u32)L->k; k++)
        for (u32 c = 0; c < (u32)L->c; c++) out_u32(o, get_lane(0, fbase + c * kt + (k >> M.lb), (k & (lanes - 1))));
}

/* one tensor set of the parameters and the momentum buffers: header, then the data */
int state_read(out_t *o, u32 step) {
    txt_t t = {hdr, 0, HDR_MAX};
    u32 off = 0;
    txt_str(&t, "{\"meta\":{\"step\":");
    txt_dec(&t, step);
    txt_str(&t, ",\"opt\":{\"t\":");
    txt_dec(&t, M.t);
    txt_str(&t, ",\"_groups\":[\"buf\"]}},\"tensors\":[");
    for (int l = 0; l < M.nl; l++) {
        tensor_entry(&t, "param/", M.l[l].w, M.l[l].wlen, &M.l[l], 0, &off);
        if (M.l[l].has_bias) tensor_entry(&t, "param/", M.l[l].b, M.l[l].blen, &M.l[l], 1, &off);
    }
    for (int l = 0; l < M.nl; l++) {
        if (M.l[l].wbuf) tensor_entry(&t, "opt/buf/", M.l[l].w, M.l[l].wlen, &M.l[l], 0, &off);
        if (M.l[l].bbuf) tensor_entry(&t, "opt/buf/", M.l[l].b, M.l[l].blen, &M.l[l], 1, &off);
    }
    txt_str(&t, "]}");
    while (t.pos % 4) txt_str(&t, " ");
    if (t.pos >= HDR_MAX) return fail(E_INTERNAL, "state header too long", 0, 0);
    out_u32(o, (u32)t.pos);
    out_mem(o, hdr, t.pos);
    for (int l = 0; l < M.nl; l++) {
        out_weight(o, &M.l[l], M.wf[l], 0);
        if (M.l[l].has_bias) out_weight(o, &M.l[l], M.wf[l], 1);
    }
    for (int l = 0; l < M.nl; l++) {
        if (M.l[l].wbuf) out_weight(o, &M.l[l], M.mf[l], 0);
        if (M.l[l].bbuf) out_weight(o, &M.l[l], M.mf[l], 1);
    }
    return o->overflow ? fail(E_TOO_LARGE, "state exceeds the result buffer", 0, 0) : 0;
}
