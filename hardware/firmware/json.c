/* A small JSON tokenizer (descriptors and tensor-set headers): tokens keep text spans, strings
   stay escaped (names are compared and echoed as the host wrote them). Numbers become f32 the
   way the host reads them, float(text) rounded to float32: exact when the decimal has at most
   19 significant digits and 10^|exp| <= 10^22 (one correctly rounded double operation, then one
   rounding to float); other numbers are refused. */
#include "fw.h"

typedef struct {
    const char *s;
    int len, pos, n, max, depth;
    tok_t *t;
} parser_t;

static void ws(parser_t *p) {
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r' ||
                               p->s[p->pos] == '\t'))
        p->pos++;
}

static int value(parser_t *p);

static int new_tok(parser_t *p, int type) {
    if (p->n >= p->max) return -1;
    tok_t *t = &p->t[p->n];
    t->type = (u8)type;
    t->start = (u16)p->pos;
    t->size = 0;
    return p->n++;
}

static int string(parser_t *p) {
    p->pos++;                                  /* opening quote */
    int i = new_tok(p, J_STR);
    if (i < 0) return -1;
    p->t[i].start = (u16)p->pos;
    while (p->pos < p->len && p->s[p->pos] != '"') {
        if (p->s[p->pos] == '\\') p->pos++;
        p->pos++;
    }
    if (p->pos >= p->len) return -1;
    p->t[i].end = (u16)p->pos;
    p->pos++;
    p->t[i].next = (u16)p->n;
    return i;
}

static int container(parser_t *p, int type, char close) {
    int i = new_tok(p, type);
    if (i < 0 || ++p->depth > 32) return -1;
    p->pos++;
    ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
    } else {
        for (;;) {
            ws(p);
            if (type == J_OBJ) {
                if (p->pos >= p->len || p->s[p->pos] != '"' || string(p) < 0) return -1;
                ws(p);
                if (p->pos >= p->len || p->s[p->pos] != ':') return -1;
                p->pos++;
                ws(p);
            }
            if (value(p) < 0) return -1;
            p->t[i].size++;
            ws(p);
            if (p->pos >= p->len) return -1;
            if (p->s[p->pos] == ',') {
                p->pos++;
                continue;
            }
            if (p->s[p->pos] != close) return -1;
            p->pos++;
            break;
        }
    }
    p->depth--;
    p->t[i].end = (u16)p->pos;
    p->t[i].next = (u16)p->n;
    return i;
}

static int value(parser_t *p) {
    ws(p);
    if (p->pos >= p->len) return -1;
    char c = p->s[p->pos];
    if (c == '{') return container(p, J_OBJ, '}');
    if (c == '[') return container(p, J_ARR, ']');
    if (c == '"') return string(p);
    int i = new_tok(p, J_PRIM);
    if (i < 0) return -1;
    while (p->pos < p->len && p->s[p->pos] != ',' && p->s[p->pos] != '}' && p->s[p->pos] != ']' &&
           p->s[p->pos] != ' ' && p->s[p->pos] != '\n' && p->s[p->pos] != '\r' && p->s[p->pos] != '\t')
        p->pos++;
    if (p->pos == p->t[i].start) return -1;
    p->t[i].end = (u16)p->pos;
    p->t[i].next = (u16)p->n;
    return i;
}

int json_parse(const char *s, int len, tok_t *t, int max) {
    parser_t p = {s, len, 0, 0, max, 0, t};
    if (len > 65535 || value(&p) < 0) return -1;
    ws(&p);
    return p.pos == len ? p.n : -1;
}

int json_is(const char *s, const tok_t *t, int i, const char *lit) {
    int n = (int)strlen(lit);
    return i >= 0 && t[i].end - t[i].start == n && mem_eq(s + t[i].start, lit, n);
}

int json_key(const char *s, const tok_t *t, int obj, const char *key) {
    if (obj < 0 || t[obj].type != J_OBJ) return -1;
    int i = obj + 1;
    for (int k = 0; k < t[obj].size; k++) {
        if (json_is(s, t, i, key) && t[i].type == J_STR) return i + 1;
        i = t[i + 1].next;
    }
    return -1;
}

int json_item(const tok_t *t, int arr, int n) {
    if (arr < 0 || t[arr].type != J_ARR || n >= t[arr].size) return -1;
    int i = arr + 1;
    while (n--) i = t[i].next;
    return i;
}

int json_null(const char *s, const tok_t *t, int i) { return i >= 0 && t[i].type == J_PRIM && json_is(s, t, i, "null"); }

int json_u32(const char *s, const tok_t *t, int i, u32 *out) {
    if (i < 0 || t[i].type != J_PRIM) return 0;
    u32 v = 0;
    int a = t[i].start, b = t[i].end;
    if (a == b) return 0;
    for (int k = a; k < b; k++) {
        if (s[k] < '0' || s[k] > '9' || v > 429496728u) return 0;
        v = v * 10 + (u32)(s[k] - '0');
    }
    *out = v;
    return 1;
}

static const double P10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

int json_f32(const char *s, const tok_t *t, int i, u32 *out) {
    if (i < 0 || t[i].type != J_PRIM) return 0;
    int k = t[i].start, b = t[i].end, neg = 0, digits = 0, exp10 = 0, any = 0;
    u64 m = 0;
    if (k < b && s[k] == '-') {
        neg = 1;
        k++;
    }
    for (; k < b && s[k] >= '0' && s[k] <= '9'; k++, any = 1)
        if (m || s[k] != '0') {
            if (++digits > 19) return 0;
            m = m * 10 + (u64)(s[k] - '0');
        }
    if (k < b && s[k] == '.')
        for (k++; k < b && s[k] >= '0' && s[k] <= '9'; k++, any = 1) {
            if (m || s[k] != '0') {
                if (++digits > 19) return 0;
                m = m * 10 + (u64)(s[k] - '0');
            }
            exp10--;
        }
    if (!any) return 0;
    if (k < b && (s[k] == 'e' || s[k] == 'E')) {
        int eneg = 0, e = 0, ed = 0;
        k++;
        if (k < b && (s[k] == '+' || s[k] == '-')) eneg = s[k++] == '-';
        for (; k < b && s[k] >= '0' && s[k] <= '9'; k++, ed = 1)
            if ((e = e * 10 + (s[k] - '0')) > 1000) return 0;
        if (!ed) return 0;
        exp10 += eneg ? -e : e;
    }
    if (k != b) return 0;
    union { float f; u32 u; } r;
    if (m == 0) {
        r.f = 0.0f;
    } else {
        if (m >= (1ull << 53) || exp10 > 22 || exp10 < -22) return 0;
        double d = (double)m;
        d = exp10 >= 0 ? d * P10[exp10] : d / P10[-exp10];
        r.f = (float)d;
    }
    *out = r.u | (neg ? 0x80000000u : 0);
    return 1;
}
