/* Freestanding helpers: memory, link buffer access, CRC-32, output writers. */
#include "fw.h"

void *memset(void *d, int c, size_t n) {
    u8 *p = d;
    while (n--) *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n) {
    u8 *p = d;
    const u8 *q = s;
    while (n--) *p++ = *q++;
    return d;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

int mem_eq(const char *a, const char *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

/* The bus gathers four bytes per word read of a link buffer: keep the last word. */
static u32 cache_addr = 1, cache_word;

void rd_invalidate(void) { cache_addr = 1; }

static u32 word_at(u32 a);

u8 rd8(u32 base, u32 off) { return (u8)(word_at(base + (off & ~3u)) >> (8 * (off & 3))); }

static u32 word_at(u32 a) {
    if (a != cache_addr) {
        cache_word = REG32(a);
        cache_addr = a;
    }
    return cache_word;
}

u32 rd32(u32 base, u32 off) {
    u32 a = base + (off & ~3u), sh = 8 * (off & 3);
    u32 lo = word_at(a);
    if (!sh) return lo;
    return (lo >> sh) | word_at(a + 4) << (32 - sh);      /* two aligned words, the next one cached */
}

/* RESULT bytes are summed by the bus's CRC unit as they are written; TX payloads need no CRC
   (the link computes the frame's) */
void out_init(out_t *o, u32 base, u32 limit) {
    o->base = base;
    o->pos = 0;
    o->crc = 0xFFFFFFFFu;
    o->limit = limit;
    o->overflow = 0;
    if (base == BUF_RESULT) LINK_OUT_CRC = 0;
}

u32 out_crc(const out_t *o) { return ~LINK_OUT_CRC; }

void out_u8(out_t *o, u32 b) {
    if (o->pos >= o->limit) {
        o->overflow = 1;
        return;
    }
    *(volatile u8 *)(o->base + o->pos) = (u8)b;
    o->pos++;
}

void out_u16(out_t *o, u32 v) {
    out_u8(o, v);
    out_u8(o, v >> 8);
}

void out_u32(out_t *o, u32 v) {
    if (((o->base + o->pos) & 3) == 0 && o->pos + 4 <= o->limit) {   /* one word: the bus writes its four bytes */
        REG32(o->base + o->pos) = v;
        o->pos += 4;
        return;
    }
    out_u16(o, v);
    out_u16(o, v >> 16);
}

void out_mem(out_t *o, const char *s, int n) {
    for (int i = 0; i < n; i++) out_u8(o, (u8)s[i]);
}

void out_str(out_t *o, const char *s) { out_mem(o, s, (int)strlen(s)); }

static int dec(char *buf, u64 v) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
    return n;
}

void out_dec(out_t *o, u32 v) {
    char b[24];
    out_mem(o, b, dec(b, v));
}

void txt_mem(txt_t *t, const char *s, int n) {
    for (int i = 0; i < n; i++)
        if (t->pos < t->cap) t->buf[t->pos++] = s[i];
}

void txt_str(txt_t *t, const char *s) { txt_mem(t, s, (int)strlen(s)); }

void txt_dec(txt_t *t, u32 v) {
    char b[24];
    txt_mem(t, b, dec(b, v));
}

void txt_dec64(txt_t *t, u64 v) {
    char b[24];
    txt_mem(t, b, dec(b, v));
}
