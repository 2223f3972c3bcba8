// Frame transmitter (PROTOCOL.md section 2): reads a frame body (header and payload,
// body_len bytes) from a buffer, appends its CRC-32 and sends 0x00 COBS(body+crc) 0x00.
//
// The buffer is left untouched, so sending the same body again gives byte-identical
// wire bytes: the response cache replays an answer by starting this module again.
// rd_data must be the buffer byte at rd_addr one cycle later (block RAM).
module cobs_tx #(
    parameter AW = 13
) (
    input  wire          clk,
    input  wire          rst,
    input  wire          start,
    input  wire [15:0]   body_len,
    output wire [AW-1:0] rd_addr,
    input  wire [7:0]    rd_data,
    output reg  [7:0]    out_data,
    output reg           out_valid,
    input  wire          out_ready,
    output wire          busy
);
    localparam S_IDLE = 4'd0, S_CRC_REQ = 4'd1, S_CRC_WAIT = 4'd2, S_CRC_ACC = 4'd3,
               S_DELIM0 = 4'd4, S_SCAN_REQ = 4'd5, S_SCAN_WAIT = 4'd6, S_SCAN_CHK = 4'd7,
               S_CODE = 4'd8, S_DATA_REQ = 4'd9, S_DATA_WAIT = 4'd10, S_DATA_OUT = 4'd11,
               S_NEXT = 4'd12, S_DELIM1 = 4'd13, S_OUT = 4'd14;

    reg [3:0]  state, after_out;
    reg [15:0] n, total;     // body bytes in the buffer; with the CRC
    reg [15:0] ra;           // virtual byte index being read
    reg [15:0] p;            // start of the open COBS block
    reg [8:0]  run;          // non-zero bytes found in the open block
    reg [8:0]  sent;         // of which already sent
    reg [31:0] crc;
    reg        last;

    assign rd_addr = ra[AW-1:0];
    assign busy    = (state != S_IDLE);

    wire [31:0] crc_next;
    crc32_byte u_crc (.crc_in(crc), .data(rd_data), .crc_out(crc_next));

    // byte `ra` of body+crc: the buffer below n, the (final) CRC above
    wire [15:0] ci    = ra - n;
    wire [1:0]  cb    = ci[1:0];
    wire [31:0] fcrc  = ~crc;
    wire [7:0]  vbyte = (ra < n) ? rd_data : fcrc[{cb, 3'b000} +: 8];

    task put(input [7:0] b, input [3:0] next);
        begin
            out_data  <= b;
            out_valid <= 1'b1;
            after_out <= next;
            state     <= S_OUT;
        end
    endtask

    always @(posedge clk) begin
        if (rst) begin
            state <= S_IDLE; after_out <= S_IDLE;
            out_valid <= 1'b0; out_data <= 8'd0;
            n <= 0; total <= 0; ra <= 0; p <= 0; run <= 0; sent <= 0; crc <= 32'hFFFFFFFF; last <= 1'b0;
        end else case (state)
        S_IDLE: if (start) begin
            n     <= body_len;
            total <= body_len + 16'd4;
            crc   <= 32'hFFFFFFFF;
            ra    <= 16'd0;
            state <= (body_len == 0) ? S_DELIM0 : S_CRC_REQ;
        end
        S_CRC_REQ:  state <= S_CRC_WAIT;
        S_CRC_WAIT: state <= S_CRC_ACC;
        S_CRC_ACC: begin
            crc <= crc_next;
            ra  <= ra + 1'b1;
            state <= (ra + 1'b1 == n) ? S_DELIM0 : S_CRC_REQ;
        end
        S_DELIM0: begin
            p <= 16'd0;
            put(8'h00, S_SCAN_REQ);
        end
        // find the run of non-zero bytes starting at p (at most 254)
        S_SCAN_REQ: begin
            ra    <= p;
            run   <= 9'd0;
            state <= (p == total) ? S_CODE : S_SCAN_WAIT;
        end
        S_SCAN_WAIT: state <= S_SCAN_CHK;
        S_SCAN_CHK:
            if (vbyte != 8'd0 && run < 9'd253 && ra + 1'b1 < total) begin
                run   <= run + 1'b1;
                ra    <= ra + 1'b1;
                state <= S_SCAN_WAIT;
            end else begin
                if (vbyte != 8'd0) run <= run + 1'b1;
                state <= S_CODE;
            end
        S_CODE: begin
            // a block ends the frame when it stops at the end of the data, short of 254 bytes
            last <= (run != 9'd254) && (p + {7'd0, run} == total);
            sent <= 9'd0;
            put((run == 9'd254) ? 8'hFF : run[7:0] + 8'd1, (run == 0) ? S_NEXT : S_DATA_REQ);
        end
        S_DATA_REQ: begin
            ra    <= p + {7'd0, sent};
            state <= S_DATA_WAIT;
        end
        S_DATA_WAIT: state <= S_DATA_OUT;
        S_DATA_OUT: begin
            sent <= sent + 1'b1;
            put(vbyte, (sent + 1'b1 == run) ? S_NEXT : S_DATA_REQ);
        end
        S_NEXT:
            if (last) state <= S_DELIM1;
            else begin
                p     <= p + {7'd0, run} + ((run == 9'd254) ? 16'd0 : 16'd1);   // skip the zero the block stands for
                state <= S_SCAN_REQ;
            end
        S_DELIM1: put(8'h00, S_IDLE);
        S_OUT: if (out_ready) begin
            out_valid <= 1'b0;
            state     <= after_out;
        end
        default: state <= S_IDLE;
        endcase
    end
endmodule
