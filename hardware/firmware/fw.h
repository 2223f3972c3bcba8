/* Shared declarations of the device firmware (hardware/firmware/). The firmware runs on the
   control processor of hardware/rtl/device_top.v: it parses requests the link controller hands
   over, configures the training array phase by phase and writes the answers. Every arithmetic
   result it reports goes through the device's fp32 units (the array, the scalar FPU); the
   firmware itself only moves bits. */
#ifndef FW_H
#define FW_H
#include <stdint.h>
#include <stddef.h>
#include "mmio.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef int32_t i32;
typedef uint64_t u64;

/* protocol (firmware_bridge/PROTOCOL.md) */
enum { T_HELLO = 0x01, T_COMMIT = 0x03, T_TRAIN = 0x10, T_PREDICT = 0x11, T_LOSS = 0x12, T_RSTATE = 0x20,
       T_RCOUNT = 0x22, T_ERROR = 0xFF };
enum { E_UNKNOWN = 0x01, E_PAYLOAD = 0x02, E_NO_MODEL = 0x04, E_CHUNK = 0x06, E_DESCRIPTOR = 0x08,
       E_STATE = 0x0A, E_BATCH = 0x0D, E_TOO_LARGE = 0x05, E_INTERNAL = 0x7F };
#define DEVICE_ID 0xED6E7002u

/* -- util.c ------------------------------------------------------------------------------- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
size_t strlen(const char *s);
int mem_eq(const char *a, const char *b, int n);
u8 rd8(u32 base, u32 off);              /* link buffer byte (rx or staging), word-cached */
u32 rd32(u32 base, u32 off);            /* little-endian u32 at any offset */
void rd_invalidate(void);
u32 stage_base(int blob);

typedef struct {
    u32 base;       /* BUF_TX + 6 (the payload) or BUF_RESULT */
    u32 pos;
    u32 crc;
    u32 limit;
    int overflow;
} out_t;
void out_init(out_t *o, u32 base, u32 limit);
u32 out_crc(const out_t *o);        /* CRC-32 of a RESULT written so far (the bus computes it) */
void out_u8(out_t *o, u32 b);
void out_u16(out_t *o, u32 v);
void out_u32(out_t *o, u32 v);
void out_mem(out_t *o, const char *s, int n);
void out_str(out_t *o, const char *s);
void out_dec(out_t *o, u32 v);
/* text builder in RAM (JSON headers) */
typedef struct {
    char *buf;
    int pos, cap;
} txt_t;
void txt_str(txt_t *t, const char *s);
void txt_mem(txt_t *t, const char *s, int n);
void txt_dec(txt_t *t, u32 v);
void txt_dec64(txt_t *t, u64 v);

/* -- fpu.c: the scalar unit, on bit patterns ------------------------------------------------ */
u32 fmul(u32 a, u32 b);
u32 fadd(u32 a, u32 b);
u32 fdiv(u32 a, u32 b);
u32 f32_of_int(i32 v);
int f32_gt(u32 a, u32 b);               /* a > b (finite, -0 == +0 is not needed) */
u64 f64_of_f32(u32 f);
u32 seconds_f32(u32 cycles);            /* cycles at the device clock, as an f32 (soft float) */
void loss_xent(int n, int k, u32 dbase, u32 kt, const i32 *y, u32 *loss, int *correct);

/* -- json.c --------------------------------------------------------------------------------- */
enum { J_OBJ = 1, J_ARR = 2, J_STR = 3, J_PRIM = 4 };
typedef struct {
    u8 type;
    u16 start, end;     /* text span (strings without their quotes) */
    u16 next;           /* index of the token after this value's subtree */
    u16 size;           /* elements of an array, keys of an object */
} tok_t;
int json_parse(const char *s, int len, tok_t *t, int max);
int json_key(const char *s, const tok_t *t, int obj, const char *key);
int json_item(const tok_t *t, int arr, int i);
int json_is(const char *s, const tok_t *t, int i, const char *lit);
int json_u32(const char *s, const tok_t *t, int i, u32 *out);
int json_f32(const char *s, const tok_t *t, int i, u32 *out);
int json_null(const char *s, const tok_t *t, int i);

/* -- model.c -------------------------------------------------------------------------------- */
#define MAX_LAYERS 8
#define MAX_TOK 512
#define DESC_MAX 4096
typedef struct {
    const char *w, *b;  /* initializer names (raw JSON text) */
    int wlen, blen;
    int c, k, relu, has_bias, train_w, train_b;
    int wbuf, bbuf;     /* the optimizer holds a momentum buffer for W / B */
} layer_t;
typedef struct {
    int loaded, ready;
    int nl, feats, in_ndim;
    u32 in_dims[8];
    layer_t l[MAX_LAYERS];
    u32 lr_neg, mom, wd;    /* f32 bits */
    u32 t;                  /* optimizer steps */
    int need_bp[MAX_LAYERS];
    /* layout (hardware/core_layout.py) */
    u32 lanes, lb, nmax;
    u32 p[MAX_LAYERS + 1], lst[MAX_LAYERS + 1], g[MAX_LAYERS + 1], cnt[MAX_LAYERS + 1], sd[MAX_LAYERS + 1];
    u32 wf[MAX_LAYERS], mf[MAX_LAYERS], wb[MAX_LAYERS], gr, wmem_words;
} model_t;
extern model_t M;
extern char desc_buf[DESC_MAX];
extern tok_t toks[MAX_TOK];
extern char err_text[128];
int fail(int code, const char *a, const char *b, int blen);   /* sets err_text; returns code */
u32 tiles(u32 n);
int model_commit(u32 total);
int state_commit(u32 total, u32 *step_out, int *step_set);
int state_read(out_t *o, u32 step);
void put_row(u32 word_base, u32 count, u32 lane0, u32 v);
u32 get_lane(int sel, u32 word, u32 lane);
void set_lane(int sel, u32 word, u32 lane, u32 v);

/* -- train.c -------------------------------------------------------------------------------- */
typedef struct {
    u32 fp, bp, wg, up;             /* the array's cycles per class (train_seq's counters) */
    u32 input, loss, total;         /* the processor's input push and loss; the whole command */
    u32 mac[3], dense[3];
} stepcount_t;
extern stepcount_t last_step, totals;
extern u32 steps_total;
int cmd_train(u32 total, out_t *o);
int cmd_predict(u32 total, out_t *res, u32 *res_len);
int cmd_loss_grads(u32 total, out_t *res, u32 *res_len, u32 *loss);
void core_run(int mode);
void core_set(int reg, u32 v);

#endif
