// The accelerator's link layer (PROTOCOL.md sections 2-4 and the section 13 checklist):
// UART, COBS framing with length and CRC checks, idle timeout, the response cache,
// session and step checks, the staging buffers of PUT_CHUNK/COMMIT and GET_CHUNK
// from the result buffer. Everything that needs arithmetic (HELLO's capabilities,
// COMMIT's parsing, TRAIN_STEP, PREDICT, LOSS_GRADS, READ_STATE, READ_COUNTERS) is
// handed to a compute core through the core_* port: a validated request in the rx
// buffer, the answer's payload written to the tx buffer at byte 6.
//
// Memories (byte wide, block RAM): rx buffer (one request body), tx buffer (the last
// answer's body: the response cache replays it), staging (three regions of
// 2**STAGE_AW bytes, for blobs 1 MODEL, 2 STATE, 3 BATCH) and the RESULT blob.
module device_link #(
    parameter CLKS_PER_BIT = 8,
    parameter IDLE_CLKS    = 100000,
    parameter MAX_PAYLOAD  = 4096,
    parameter BUF_AW       = 13,      // rx/tx buffers: 2**BUF_AW >= MAX_PAYLOAD + 10 + stuffing
    parameter STAGE_AW     = 12,      // bytes per staging region
    parameter RES_AW       = 12,      // bytes of the result buffer
    parameter BYTE_PORT    = 0        // 1: bytes through host_byte/dev_byte instead of the UART (simulation)
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        uart_rx_pin,
    output wire        uart_tx_pin,
    input  wire [31:0] entropy,       // mixed into the session id (a board: a TRNG or ring oscillator)
    // the line's bytes without the UART (BYTE_PORT = 1: a simulation's wide link; a board ties these off)
    input  wire [7:0]  host_byte,
    input  wire        host_valid,
    output wire [7:0]  dev_byte,
    output wire        dev_valid,
    input  wire        dev_ready,
    // compute core
    output wire        core_req,      // a request waits for the core (level)
    output wire [7:0]  core_type,
    output wire [15:0] core_len,      // its payload length; the payload is at rx buffer byte 6
    output reg  [31:0] session_id,
    output reg  [31:0] step,
    output reg  [15:0] max_payload,
    input  wire        core_done,     // pulse: the answer is in the tx buffer
    input  wire [7:0]  core_rsp_type,
    input  wire [15:0] core_rsp_len,
    input  wire        core_step_we,
    input  wire [31:0] core_step,
    input  wire        core_ready_we,  // model and weights loaded (TRAIN_STEP/PREDICT allowed)
    input  wire        core_ready,
    input  wire        core_result_we,
    input  wire [31:0] core_result_len,
    // core access to the buffers while core_req: 0 rx (read), 1 tx (write), 2 staging (read), 3 result (write)
    input  wire [1:0]  core_sel,
    input  wire [31:0] core_addr,
    input  wire [7:0]  core_wdata,
    input  wire        core_we,
    output wire [7:0]  core_rdata,
    // counters (PROTOCOL.md section 12 "link")
    output wire [31:0] cnt_rx_frames,
    output reg  [31:0] cnt_tx_frames,
    output reg  [31:0] cnt_duplicates,
    output reg  [31:0] cnt_errors_sent,
    output wire [31:0] cnt_bad_cobs,
    output wire [31:0] cnt_bad_crc,
    output wire [31:0] cnt_overruns,
    output wire [31:0] cnt_idle_resets,
    output wire [31:0] cnt_busy_drops,
    output reg  [31:0] cnt_uart_errors
);
    // -- message types and error codes (firmware_bridge/protocol.py) ---------------
    localparam T_HELLO = 8'h01, T_PUT = 8'h02, T_COMMIT = 8'h03, T_TRAIN = 8'h10, T_PREDICT = 8'h11,
               T_LOSS = 8'h12, T_RSTATE = 8'h20, T_GET = 8'h21, T_RCOUNT = 8'h22, T_ERROR = 8'hFF;
    localparam E_UNKNOWN = 8'h01, E_PAYLOAD = 8'h02, E_SESSION = 8'h03, E_NO_MODEL = 8'h04,
               E_TOO_LARGE = 8'h05, E_CHUNK = 8'h06, E_BLOB_CRC = 8'h07, E_STEP = 8'h09,
               E_NO_RESULT = 8'h0B, E_VERSION = 8'h0C;
    localparam [31:0] STAGE_SIZE  = 32'd1 << STAGE_AW;
    localparam [31:0] RESULT_SIZE = 32'd1 << RES_AW;

    // -- UART and framing -------------------------------------------------------------
    wire [7:0] u_byte;
    wire       u_valid, rx_ferr;
    uart_rx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_urx (.clk(clk), .rst(rst), .rx(uart_rx_pin),
        .data(u_byte), .valid(u_valid), .frame_err(rx_ferr));
    wire [7:0] rx_byte  = BYTE_PORT ? host_byte : u_byte;
    wire       rx_valid = BYTE_PORT ? host_valid : u_valid;

    reg               hold;
    wire [BUF_AW-1:0] rxw_addr;
    wire [7:0]        rxw_data;
    wire              rxw_en, frame_ok;
    wire [7:0]        f_ver, f_type;
    wire [15:0]       f_seq, f_len;
    wire [31:0]       f_pcrc;
    cobs_rx #(.MAX_PAYLOAD(MAX_PAYLOAD), .AW(BUF_AW), .IDLE_CLKS(IDLE_CLKS)) u_frx (
        .clk(clk), .rst(rst), .in_data(rx_byte), .in_valid(rx_valid), .hold(hold),
        .wr_addr(rxw_addr), .wr_data(rxw_data), .wr_en(rxw_en),
        .frame_ok(frame_ok), .f_ver(f_ver), .f_type(f_type), .f_seq(f_seq), .f_len(f_len), .f_pcrc(f_pcrc),
        .cnt_frames(cnt_rx_frames), .cnt_bad_cobs(cnt_bad_cobs), .cnt_bad_crc(cnt_bad_crc),
        .cnt_overruns(cnt_overruns), .cnt_idle(cnt_idle_resets), .cnt_busy(cnt_busy_drops));

    reg               tx_start;
    reg  [15:0]       tx_len;
    wire [BUF_AW-1:0] txr_addr;
    wire [7:0]        txr_data, enc_byte;
    wire              enc_valid, enc_ready, enc_busy;
    cobs_tx #(.AW(BUF_AW)) u_ftx (.clk(clk), .rst(rst), .start(tx_start), .body_len(tx_len),
        .rd_addr(txr_addr), .rd_data(txr_data), .out_data(enc_byte), .out_valid(enc_valid),
        .out_ready(enc_ready), .busy(enc_busy));
    wire       u_ready;
    uart_tx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_utx (.clk(clk), .rst(rst), .data(enc_byte),
        .valid(enc_valid && BYTE_PORT == 0), .ready(u_ready), .tx(uart_tx_pin));
    assign enc_ready = BYTE_PORT ? dev_ready : u_ready;
    assign dev_byte  = enc_byte;
    assign dev_valid = BYTE_PORT ? enc_valid : 1'b0;

    // -- controller state -----------------------------------------------------------------
    localparam S_IDLE = 5'd0, S_FETCH = 5'd1, S_DECIDE = 5'd2, S_PUT = 5'd3, S_COPYIN = 5'd4,
               S_BLOB = 5'd5, S_BLOB_WAIT = 5'd6, S_BLOB_ACC = 5'd7, S_BLOB_END = 5'd8,
               S_CORE = 5'd9, S_ERR = 5'd10, S_FIELDS = 5'd11, S_COPYOUT = 5'd12,
               S_HDR = 5'd13, S_SEND = 5'd14, S_SEND_WAIT = 5'd15, S_GET = 5'd16;
    localparam C_CORE = 1'b0, C_COMMIT = 1'b1;

    reg [4:0]   state;
    reg [7:0]   ver, typ;
    reg [15:0]  seq, plen;
    reg [31:0]  pcrc;
    reg [127:0] pf;             // the first 16 payload bytes, little-endian
    reg [4:0]   k;
    reg [31:0]  cnt, n;         // copy/check loop counter and its length
    reg [31:0]  crc;
    reg         cont;           // after a blob check: hand to the core, or finish COMMIT
    reg [7:0]   err;
    reg [7:0]   rsp_type;
    reg [15:0]  rsp_len;
    reg [95:0]  fields;         // fixed answer fields written by the link itself
    reg [3:0]   nfields;
    reg         copyout;
    reg         ready;
    reg         session_set;
    reg [31:0]  free_run;
    reg [31:0]  size1, size2, size3;
    reg [2:0]   size_ok;
    reg [31:0]  result_len;
    reg         result_ok;
    reg         cache_ok;
    reg [55:0]  cache_key;
    reg [15:0]  cache_len;

    // payload fields (PROTOCOL.md section 6)
    wire [31:0] p_session = pf[31:0];
    wire [7:0]  p_blob    = pf[39:32];
    wire [31:0] p_u32_4   = pf[63:32];
    wire [31:0] p_u32_8   = pf[95:64];
    wire [31:0] p_u32_12  = pf[127:96];
    wire [15:0] p_u16_2   = pf[31:16];
    wire [15:0] p_u16_12  = pf[111:96];

    // -- memories ---------------------------------------------------------------------------
    reg  [BUF_AW-1:0]     rx_ra;
    wire [7:0]            rx_rd;
    wire                  core_on = (state == S_CORE);
    ram_sdp #(.AW(BUF_AW)) u_rxbuf (.clk(clk), .we(rxw_en), .waddr(rxw_addr), .wdata(rxw_data),
        .raddr(core_on && core_sel == 2'd0 ? core_addr[BUF_AW-1:0] : rx_ra), .rdata(rx_rd));

    reg  [BUF_AW-1:0]     tx_wa;
    reg  [7:0]            tx_wd;
    reg                   tx_we;
    wire                  core_tx = core_on && core_sel == 2'd1 && core_we;
    ram_sdp #(.AW(BUF_AW)) u_txbuf (.clk(clk), .we(tx_we || core_tx),
        .waddr(core_tx ? core_addr[BUF_AW-1:0] : tx_wa), .wdata(core_tx ? core_wdata : tx_wd),
        .raddr(txr_addr), .rdata(txr_data));

    reg  [STAGE_AW+1:0]   st_wa, st_ra;
    reg  [7:0]            st_wd;
    reg                   st_we;
    wire [7:0]            st_rd;
    ram_sdp #(.AW(STAGE_AW + 2)) u_stage (.clk(clk), .we(st_we), .waddr(st_wa), .wdata(st_wd),
        .raddr(core_on && core_sel == 2'd2 ? core_addr[STAGE_AW+1:0] : st_ra), .rdata(st_rd));

    reg  [RES_AW-1:0]     rs_ra;
    wire [7:0]            rs_rd;
    wire                  core_rs = core_on && core_sel == 2'd3 && core_we;
    ram_sdp #(.AW(RES_AW)) u_result (.clk(clk), .we(core_rs), .waddr(core_addr[RES_AW-1:0]),
        .wdata(core_wdata), .raddr(rs_ra), .rdata(rs_rd));

    reg core_sel_q;
    always @(posedge clk) core_sel_q <= core_sel[1];
    assign core_rdata = core_sel_q ? st_rd : rx_rd;
    assign core_req   = core_on;
    assign core_type  = typ;
    assign core_len   = plen;

    wire [31:0] crc_next;
    crc32_byte u_bcrc (.crc_in(crc), .data(st_rd), .crc_out(crc_next));

    // -- error texts: fixed strings, the code is what the host acts on ------------------------
    function [8*40-1:0] err_text;
        input [7:0] code;
        case (code)
        E_UNKNOWN:   err_text = "unknown message type";
        E_PAYLOAD:   err_text = "payload too short";
        E_SESSION:   err_text = "session id is not the current one";
        E_NO_MODEL:  err_text = "no model and weights loaded";
        E_TOO_LARGE: err_text = "blob exceeds the staging buffer";
        E_CHUNK:     err_text = "chunk does not fit the blob";
        E_BLOB_CRC:  err_text = "staged blob length or crc mismatch";
        E_STEP:      err_text = "step index is not the device step";
        E_NO_RESULT: err_text = "no result to read";
        E_VERSION:   err_text = "protocol version is not 1";
        default:     err_text = "link error";
        endcase
    endfunction
    function [5:0] err_len;
        input [7:0] code;
        case (code)
        E_UNKNOWN: err_len = 20;  E_PAYLOAD: err_len = 17;  E_SESSION: err_len = 33;
        E_NO_MODEL: err_len = 27; E_TOO_LARGE: err_len = 31; E_CHUNK: err_len = 27;
        E_BLOB_CRC: err_len = 34; E_STEP: err_len = 33;     E_NO_RESULT: err_len = 17;
        E_VERSION: err_len = 25;  default: err_len = 10;
        endcase
    endfunction
    wire [8*40-1:0] etext = err_text(err);
    wire [5:0]      elen  = err_len(err);

    // blob size lookup
    function [31:0] blob_size;
        input [7:0] b;
        input [31:0] s1, s2, s3;
        blob_size = (b == 8'd1) ? s1 : (b == 8'd2) ? s2 : s3;
    endfunction
    wire        blob_known = (p_blob >= 8'd1 && p_blob <= 8'd3);
    wire [31:0] cur_size   = blob_size(p_blob, size1, size2, size3);
    wire        cur_ok     = blob_known && size_ok[p_blob[1:0] - 2'd1];
    wire [31:0] put_len    = {16'd0, plen} - 32'd16;
    wire [15:0] room       = max_payload - 16'd8;
    wire [31:0] res_left   = result_len - p_u32_8;
    wire [31:0] get_n0     = (p_u16_12 < room) ? {16'd0, p_u16_12} : {16'd0, room};
    wire [31:0] get_n      = (get_n0 < res_left) ? get_n0 : res_left;
    // blob 3 (BATCH) of TRAIN_STEP / PREDICT / LOSS_GRADS
    wire [31:0] batch_total = (typ == T_TRAIN) ? p_u32_8 : p_u32_4;
    wire [31:0] batch_crc   = (typ == T_TRAIN) ? p_u32_12 : p_u32_8;

    task fail(input [7:0] code);
        begin
            err   <= code;
            cnt   <= 0;
            state <= S_ERR;
        end
    endtask

    // start a length + CRC check of staged blob b; cont says what follows
    reg [1:0]  chk_region;
    reg [31:0] chk_crc;
    task check_blob(input [7:0] b, input [31:0] total, input [31:0] want_crc, input c);
        begin
            if (!(b >= 8'd1 && b <= 8'd3) || !size_ok[b[1:0] - 2'd1] ||
                    blob_size(b, size1, size2, size3) != total)
                fail(E_BLOB_CRC);
            else begin
                chk_region <= b[1:0] - 2'd1;
                chk_crc    <= want_crc;
                n          <= total;
                cnt        <= 0;
                crc        <= 32'hFFFFFFFF;
                cont       <= c;
                state      <= (total == 0) ? S_BLOB_END : S_BLOB;
            end
        end
    endtask

    always @(posedge clk) begin
        tx_we    <= 1'b0;
        st_we    <= 1'b0;
        tx_start <= 1'b0;
        free_run <= free_run + 32'h9E3779B9;
        if (rx_ferr) cnt_uart_errors <= cnt_uart_errors + 1;
        if (rst) begin
            state <= S_IDLE; hold <= 1'b0;
            ver <= 0; typ <= 0; seq <= 0; plen <= 0; pcrc <= 0; pf <= 0; k <= 0; cnt <= 0; n <= 0;
            crc <= 0; cont <= 0; err <= 0; rsp_type <= 0; rsp_len <= 0; fields <= 0; nfields <= 0;
            copyout <= 0; ready <= 0; session_set <= 0; session_id <= 32'd0; free_run <= 32'd1;
            step <= 0; max_payload <= MAX_PAYLOAD[15:0];
            size1 <= 0; size2 <= 0; size3 <= 0; size_ok <= 3'b000; result_len <= 0; result_ok <= 0;
            cache_ok <= 0; cache_key <= 0; cache_len <= 0; rx_ra <= 0; tx_wa <= 0; tx_wd <= 0;
            st_wa <= 0; st_ra <= 0; st_wd <= 0; rs_ra <= 0; tx_len <= 0; chk_region <= 0; chk_crc <= 0;
            cnt_tx_frames <= 0; cnt_duplicates <= 0; cnt_errors_sent <= 0; cnt_uart_errors <= 0;
        end else begin
            // a new random non-zero session id per boot, fixed at the first byte on the line
            if (!session_set && rx_valid) begin
                session_set <= 1'b1;
                session_id  <= ((free_run ^ entropy) == 32'd0) ? 32'd1 : (free_run ^ entropy);
            end
            case (state)
            S_IDLE: if (frame_ok) begin
                hold  <= 1'b1;
                ver   <= f_ver; typ <= f_type; seq <= f_seq; plen <= f_len; pcrc <= f_pcrc;
                rx_ra <= 6;
                k     <= 0;
                state <= S_FETCH;
            end
            S_FETCH: begin
                if (k != 0) pf[{k[3:0] - 4'd1, 3'b000} +: 8] <= rx_rd;
                rx_ra <= rx_ra + 1'b1;
                k     <= k + 1'b1;
                if (k == 5'd16) state <= S_DECIDE;
            end
            S_DECIDE: begin
                nfields <= 0;
                copyout <= 1'b0;
                if (cache_ok && cache_key == {seq, typ, pcrc}) begin
                    // a retry: the same answer, byte for byte, nothing executed again
                    cnt_duplicates <= cnt_duplicates + 1;
                    state <= S_SEND;
                end else if (ver != 8'd1)
                    fail(E_VERSION);
                else if (typ == T_HELLO) begin
                    if (plen >= 16'd4)
                        max_payload <= (p_u16_2 == 16'd0 || p_u16_2 >= MAX_PAYLOAD[15:0]) ? MAX_PAYLOAD[15:0] :
                                       (p_u16_2 < 16'd256) ? 16'd256 : p_u16_2;
                    state <= S_CORE;
                end else if (!(typ == T_PUT || typ == T_COMMIT || typ == T_TRAIN || typ == T_PREDICT ||
                               typ == T_LOSS || typ == T_RSTATE || typ == T_GET || typ == T_RCOUNT))
                    fail(E_UNKNOWN);
                else if (plen < 16'd4)
                    fail(E_PAYLOAD);
                else if (p_session != session_id)
                    fail(E_SESSION);
                else case (typ)
                T_PUT:
                    if (plen < 16'd16) fail(E_PAYLOAD);
                    else if (!blob_known) fail(E_CHUNK);
                    else if (p_u32_8 > STAGE_SIZE) fail(E_TOO_LARGE);
                    else begin
                        if (p_u32_12 == 32'd0) begin   // offset 0 (re)sizes the blob
                            case (p_blob[1:0])
                            2'd1: size1 <= p_u32_8;
                            2'd2: size2 <= p_u32_8;
                            default: size3 <= p_u32_8;
                            endcase
                            size_ok[p_blob[1:0] - 2'd1] <= 1'b1;
                        end
                        state <= S_PUT;
                    end
                T_COMMIT:
                    if (plen < 16'd16) fail(E_PAYLOAD);
                    else check_blob(p_blob, p_u32_8, p_u32_12, C_COMMIT);
                T_TRAIN:
                    if (plen < 16'd16) fail(E_PAYLOAD);
                    else if (!ready) fail(E_NO_MODEL);
                    else if (p_u32_4 != step) fail(E_STEP);
                    else check_blob(8'd3, batch_total, batch_crc, C_CORE);
                T_PREDICT, T_LOSS:
                    if (plen < 16'd12) fail(E_PAYLOAD);
                    else if (!ready) fail(E_NO_MODEL);
                    else check_blob(8'd3, batch_total, batch_crc, C_CORE);
                T_GET:
                    if (plen < 16'd16) fail(E_PAYLOAD);
                    else if (p_blob != 8'd8 || !result_ok) fail(E_NO_RESULT);
                    else if (p_u32_8 > result_len) fail(E_CHUNK);
                    else state <= S_GET;
                default: state <= S_CORE;   // READ_STATE, READ_COUNTERS
                endcase
            end
            // PUT_CHUNK: after the sizing above, check the chunk and copy it in
            S_PUT:
                if (!cur_ok || cur_size != p_u32_8 || p_u32_12 > p_u32_8 || p_u32_12 + put_len > p_u32_8)
                    fail(E_CHUNK);
                else begin
                    n        <= put_len;
                    cnt      <= 0;
                    rx_ra    <= 22;
                    fields   <= {put_len, p_u32_12, 24'd0, p_blob};   // blob, 3 reserved, offset, length
                    state    <= S_COPYIN;
                end
            S_COPYIN: begin
                // rx byte 22+cnt arrives one cycle after its address: write it one step behind
                if (cnt != 0) begin
                    st_we <= 1'b1;
                    st_wd <= rx_rd;
                    st_wa <= {p_blob[1:0] - 2'd1, p_u32_12[STAGE_AW-1:0] + cnt[STAGE_AW-1:0] - 1'b1};
                end
                rx_ra <= rx_ra + 1'b1;
                cnt   <= cnt + 1;
                if (cnt == n) begin
                    rsp_type <= T_PUT | 8'h80;
                    rsp_len  <= 16'd12;
                    nfields  <= 4'd12;
                    cnt      <= 0;
                    state    <= S_FIELDS;
                end
            end
            // staged blob length + CRC check, one byte per three cycles
            S_BLOB: begin
                st_ra <= {chk_region, cnt[STAGE_AW-1:0]};
                state <= S_BLOB_WAIT;
            end
            S_BLOB_WAIT: state <= S_BLOB_ACC;
            S_BLOB_ACC: begin
                crc <= crc_next;
                cnt <= cnt + 1;
                state <= (cnt + 1 == n) ? S_BLOB_END : S_BLOB;
            end
            S_BLOB_END:
                if (~crc != chk_crc) fail(E_BLOB_CRC);
                else if (cont == C_COMMIT && p_blob == 8'd3) fail(E_CHUNK);   // a BATCH is not committed
                else state <= S_CORE;
            S_CORE: if (core_done) begin
                rsp_type <= core_rsp_type;
                rsp_len  <= core_rsp_len;
                if (typ == T_TRAIN && core_rsp_type == (T_TRAIN | 8'h80)) step <= step + 1;
                if (core_step_we) step <= core_step;
                if (core_ready_we) ready <= core_ready;
                if (core_result_we) begin
                    result_len <= core_result_len;
                    result_ok  <= (core_result_len <= RESULT_SIZE);
                end
                cnt   <= 0;
                state <= S_HDR;
            end
            S_GET: begin
                n        <= get_n;
                fields   <= {32'd0, result_len, p_u32_8};
                rsp_type <= T_GET | 8'h80;
                rsp_len  <= 16'd8 + get_n[15:0];
                nfields  <= 4'd8;
                copyout  <= 1'b1;
                cnt      <= 0;
                state    <= S_FIELDS;
            end
            S_ERR: begin
                // payload: u16 code, then the text
                tx_we <= 1'b1;
                tx_wa <= 6 + cnt[BUF_AW-1:0];
                tx_wd <= (cnt == 0) ? err : (cnt == 1) ? 8'd0 : etext[8 * ({26'd0, elen} - (cnt - 2)) - 1 -: 8];
                cnt   <= cnt + 1;
                if (cnt == {26'd0, elen} + 1) begin
                    rsp_type <= T_ERROR;
                    rsp_len  <= {10'd0, elen} + 16'd2;
                    cnt_errors_sent <= cnt_errors_sent + 1;
                    cnt      <= 0;
                    state    <= S_HDR;
                end
            end
            S_FIELDS: begin
                tx_we <= 1'b1;
                tx_wa <= 6 + cnt[BUF_AW-1:0];
                tx_wd <= fields[{cnt[3:0], 3'b000} +: 8];
                cnt   <= cnt + 1;
                if (cnt + 1 == {28'd0, nfields}) begin
                    cnt   <= 0;
                    rs_ra <= p_u32_8[RES_AW-1:0];
                    state <= copyout ? S_COPYOUT : S_HDR;
                end
            end
            S_COPYOUT: begin
                // result byte offset+cnt-1 is on rs_rd now
                if (cnt != 0) begin
                    tx_we <= 1'b1;
                    tx_wa <= 6 + 8 + cnt[BUF_AW-1:0] - 1'b1;
                    tx_wd <= rs_rd;
                end
                rs_ra <= rs_ra + 1'b1;
                cnt   <= cnt + 1;
                if (cnt == n) begin
                    cnt   <= 0;
                    state <= S_HDR;
                end
            end
            S_HDR: begin
                tx_we <= 1'b1;
                tx_wa <= cnt[BUF_AW-1:0];
                case (cnt[2:0])
                3'd0: tx_wd <= 8'd1;
                3'd1: tx_wd <= rsp_type;
                3'd2: tx_wd <= seq[7:0];
                3'd3: tx_wd <= seq[15:8];
                3'd4: tx_wd <= rsp_len[7:0];
                default: tx_wd <= rsp_len[15:8];
                endcase
                cnt <= cnt + 1;
                if (cnt == 5) begin
                    cache_ok  <= 1'b1;
                    cache_key <= {seq, typ, pcrc};
                    cache_len <= 16'd6 + rsp_len;
                    state     <= S_SEND;
                end
            end
            S_SEND: begin
                tx_len   <= cache_len;
                tx_start <= 1'b1;
                cnt_tx_frames <= cnt_tx_frames + 1;
                state    <= S_SEND_WAIT;
            end
            S_SEND_WAIT: if (!tx_start && !enc_busy) begin
                hold  <= 1'b0;
                state <= S_IDLE;
            end
            default: state <= S_IDLE;
            endcase
        end
    end
endmodule
