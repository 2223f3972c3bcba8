/* The control processor's command loop: wait for the link controller to hand over a validated
   request (device_link.v already answered cache hits, PUT_CHUNK, GET_CHUNK and every link-level
   error), run it, write the answer's payload into the tx buffer and signal done. */
#include "fw.h"

#define HW_STAGE_AW REG32(0x6000001Cu)
#define HW_RES_AW   REG32(0x60000038u)
#define HW_IDLE     REG32(0x6000003Cu)

static u32 session_steps;

/* the board's configuration text: line 1 a JSON fragment for HELLO's capabilities, line 2 the
   number of steps after which to reset (the emulator's --reset-after; 0 = never) */
static int cfg_line(int which, char *out, int cap) {
    int line = 0, n = 0;
    for (u32 i = 0; i < 1024; i++) {
        char c = (char)rd8(BOOTCFG, i);
        if (!c) break;
        if (c == '\n') {
            if (line++ == which) break;
            continue;
        }
        if (line == which && n < cap - 1) out[n++] = c;
    }
    out[n] = 0;
    return n;
}

static u32 reset_after(void) {
    char b[16];
    u32 v = 0;
    cfg_line(1, b, sizeof(b));
    for (int i = 0; b[i] >= '0' && b[i] <= '9'; i++) v = v * 10 + (u32)(b[i] - '0');
    return v;
}

static void hello(out_t *o) {
    char extra[256];
    out_u8(o, 1);
    out_u8(o, 0);
    out_u16(o, 0);
    out_u32(o, DEVICE_ID);
    out_u32(o, LINK_SESSION);
    out_u16(o, LINK_MAXPAY);
    out_u16(o, 0);
    out_str(o, "{\"device\":\"edgetune-rtl\",\"compute\":\"rtl\",\"engine\":\"rtl\",\"format\":\"fp32\","
               "\"formats\":[\"fp32\"],\"max_payload\":");
    out_dec(o, LINK_MAXPAY);
    out_str(o, ",\"pe_array\":[1,");
    out_dec(o, HW_LANES);
    out_str(o, "],\"lanes\":");
    out_dec(o, HW_LANES);
    out_str(o, ",\"clock_hz\":");
    out_dec(o, HW_CLOCK);
    out_str(o, ",\"estimator_lanes\":");
    out_dec(o, HW_LANES);
    out_str(o, ",\"max_batch\":");
    out_dec(o, HW_NMAX);
    out_str(o, ",\"buffers\":{\"staging_bytes\":");
    out_dec(o, 1u << HW_STAGE_AW);
    out_str(o, ",\"result_bytes\":");
    out_dec(o, 1u << HW_RES_AW);
    out_str(o, ",\"weight_words\":");
    out_dec(o, 1u << REG32(0x60000020u));
    out_str(o, "},\"ops\":[\"gemm\",\"relu\",\"flatten\"],\"constraints\":{\"relu\":\"1-bit mask + packed non-zeros "
               "of a\",\"none\":\"dense\"},\"activation_link_format\":\"mask+nonzeros\",\"losses\":[\"cross_entropy\"],"
               "\"optimizers\":[\"sgd\"],\"schedules\":[\"constant\"],\"idle_timeout_clks\":");
    out_dec(o, HW_IDLE);
    if (cfg_line(0, extra, sizeof(extra))) {
        out_str(o, ",");
        out_str(o, extra);
    }
    out_str(o, "}");
}

static void phase(out_t *o, const char *name, u32 cycles, u32 exec, u32 dense, int comma) {
    out_str(o, comma ? ",\"" : "\"");
    out_str(o, name);
    out_str(o, "\":{\"cycles\":");
    out_dec(o, cycles);
    out_str(o, ",\"dense_macs\":");
    out_dec(o, dense);
    out_str(o, ",\"required_macs\":");
    out_dec(o, exec);
    out_str(o, ",\"executed_macs\":");
    out_dec(o, exec);
    out_str(o, ",\"skipped_macs\":");
    out_dec(o, dense - exec);
    out_str(o, "}");
}

static void step_counts(out_t *o, const stepcount_t *s) {
    out_str(o, "\"cycles\":");
    out_dec(o, s->total);
    out_str(o, ",\"update_cycles\":");
    out_dec(o, s->up);
    out_str(o, ",\"input_cycles\":");
    out_dec(o, s->input);
    out_str(o, ",\"loss_cycles\":");
    out_dec(o, s->loss);
    out_str(o, ",\"phases\":{");
    phase(o, "fp", s->fp, s->mac[0], s->dense[0], 0);
    phase(o, "bp", s->bp, s->mac[1], s->dense[1], 1);
    phase(o, "wg", s->wg, s->mac[2], s->dense[2], 1);
    out_str(o, "}");
}

static const char *const LINK_NAMES[10] = {"rx_frames", "tx_frames", "duplicates", "errors_sent", "bad_cobs",
                                           "bad_crc", "overruns", "idle_resets", "busy_drops", "uart_errors"};

static void counters(out_t *o) {
    out_str(o, "{\"engine\":\"rtl\",\"compute\":\"rtl\",\"format\":\"fp32\",\"session_id\":");
    out_dec(o, LINK_SESSION);
    out_str(o, ",\"boots\":");
    out_dec(o, BOOTS);
    out_str(o, ",\"step\":");
    out_dec(o, LINK_STEP);
    out_str(o, ",\"session_steps\":");
    out_dec(o, session_steps);
    out_str(o, ",\"link\":{");
    u32 resyncs = 0;
    for (int i = 0; i < 10; i++) {
        u32 v = LINK_CNT(i);
        if (i >= 4 && i <= 7) resyncs += v;
        out_str(o, i ? ",\"" : "\"");
        out_str(o, LINK_NAMES[i]);
        out_str(o, "\":");
        out_dec(o, v);
    }
    out_str(o, ",\"resyncs\":");
    out_dec(o, resyncs);
    out_str(o, "},\"accelerator\":{\"counter_source\":\"rtl array counters\",\"lanes\":");
    out_dec(o, HW_LANES);
    out_str(o, ",\"clock_hz\":");
    out_dec(o, HW_CLOCK);
    out_str(o, ",\"totals\":{\"steps\":");
    out_dec(o, steps_total);
    out_str(o, ",");
    step_counts(o, &totals);
    out_str(o, "},\"last_step\":{\"source\":\"rtl array counters\",");
    step_counts(o, &last_step);
    out_str(o, "}}}");
}

static void result_rsp(out_t *o, u32 loss_f32, u32 len, u32 crc) {
    u64 lf = f64_of_f32(loss_f32);
    out_u32(o, (u32)lf);
    out_u32(o, (u32)(lf >> 32));
    out_u32(o, len);
    out_u32(o, crc);
    LINK_SET_RES = len;
}

static int dispatch(u32 typ, u32 len, out_t *o, int *reset) {
    u32 step;
    int set;
    out_t res;
    u32 rlen = 0, loss = 0;
    int r;
    switch (typ) {
    case T_HELLO:
        hello(o);
        return 0;
    case T_COMMIT: {
        u32 blob = rd8(BUF_RX, 6 + 4), total = rd32(BUF_RX, 6 + 8);
        if (blob == 1) {
            r = model_commit(total);
            LINK_SET_STEP = 0;
            step = 0;
        } else {
            r = state_commit(total, &step, &set);
            if (!r && set) LINK_SET_STEP = step;
            if (!r && !set) step = LINK_STEP;
        }
        if (r) return r;
        out_u8(o, blob);
        out_u8(o, 0);
        out_u16(o, 0);
        out_u32(o, step);
        return 0;
    }
    case T_TRAIN:
        if (!M.ready) return fail(E_NO_MODEL, "no model and weights loaded in this session", 0, 0);
        r = cmd_train(rd32(BUF_RX, 6 + 8), o);
        if (!r) {
            session_steps++;
            *reset = reset_after() && session_steps >= reset_after();
        }
        return r;
    case T_PREDICT:
    case T_LOSS:
        if (!M.ready) return fail(E_NO_MODEL, "no model and weights loaded in this session", 0, 0);
        r = typ == T_PREDICT ? cmd_predict(rd32(BUF_RX, 6 + 4), &res, &rlen)
                             : cmd_loss_grads(rd32(BUF_RX, 6 + 4), &res, &rlen, &loss);
        if (r) return r;
        result_rsp(o, loss, rlen, out_crc(&res));
        return 0;
    case T_RSTATE:
        if (len < 8 || rd8(BUF_RX, 6 + 4) != 1) return fail(E_PAYLOAD, "unknown state selector", 0, 0);
        if (!M.ready) return fail(E_NO_MODEL, "no model and weights loaded in this session", 0, 0);
        out_init(&res, BUF_RESULT, 1u << HW_RES_AW);
        r = state_read(&res, LINK_STEP);
        if (r) return r;
        result_rsp(o, 0, res.pos, out_crc(&res));
        return 0;
    case T_RCOUNT:
        out_init(&res, BUF_RESULT, 1u << HW_RES_AW);
        counters(&res);
        if (res.overflow) return fail(E_TOO_LARGE, "counters exceed the result buffer", 0, 0);
        result_rsp(o, 0, res.pos, out_crc(&res));
        return 0;
    default:
        return fail(E_UNKNOWN, "unknown message type", 0, 0);
    }
}

int main(void) {
    for (;;) {
        while (!(LINK_REQ & 1)) {}
        rd_invalidate();
        u32 typ = LINK_TYPE, len = LINK_LEN;
        out_t o;
        out_init(&o, BUF_TX + 6, LINK_MAXPAY);
        int reset = 0;
        int code = dispatch(typ, len, &o, &reset);
        if (code) {
            out_init(&o, BUF_TX + 6, LINK_MAXPAY);
            out_u16(&o, (u32)code);
            out_mem(&o, err_text, (int)strlen(err_text));
        }
        if (reset) SOFT_RESET = 1;       /* the answer to this step is lost, as --reset-after asks */
        LINK_RSP_TYPE = code ? T_ERROR : typ | 0x80u;
        LINK_RSP_LEN = o.pos;
        LINK_SET_READY = (u32)M.ready;
        LINK_DONE = 1;
        while (LINK_REQ & 1) {}
    }
}
