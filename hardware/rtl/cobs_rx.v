// Streaming frame receiver (PROTOCOL.md section 2.3): COBS decoding, length and CRC-32
// checks, overrun and idle-timeout handling, in one pass over the incoming bytes.
//
// Decoded body bytes are written to a buffer (wr_*) as they arrive; at the closing 0x00
// a good frame raises frame_ok for one cycle with its header fields and the CRC-32 of
// its payload (the response-cache key). A bad segment is dropped and counted. The
// segment bound is the host decoder's (framing.FrameDecoder) so both drop the same
// segments: SEG_MAX stuffed bytes for MAX_PAYLOAD.
//
// hold: the buffer still holds the previous frame (the controller is answering it);
// a segment that sees hold is received but discarded and counted in cnt_busy.
module cobs_rx #(
    parameter MAX_PAYLOAD = 4096,
    parameter AW          = 13,           // buffer address bits: 2**AW >= SEG_MAX
    parameter IDLE_CLKS   = 100000        // quiet cycles that drop a partial frame
) (
    input  wire          clk,
    input  wire          rst,
    input  wire [7:0]    in_data,
    input  wire          in_valid,
    input  wire          hold,
    output reg  [AW-1:0] wr_addr,
    output reg  [7:0]    wr_data,
    output reg           wr_en,
    output reg           frame_ok,
    output reg  [7:0]    f_ver,
    output reg  [7:0]    f_type,
    output reg  [15:0]   f_seq,
    output reg  [15:0]   f_len,
    output reg  [31:0]   f_pcrc,
    output reg  [31:0]   cnt_frames,
    output reg  [31:0]   cnt_bad_cobs,
    output reg  [31:0]   cnt_bad_crc,
    output reg  [31:0]   cnt_overruns,
    output reg  [31:0]   cnt_idle,
    output reg  [31:0]   cnt_busy
);
    localparam BODY_MAX = MAX_PAYLOAD + 10;
    localparam integer SEG_MAX_I = BODY_MAX + BODY_MAX / 254 + 3;   // framing.max_encoded_size
    localparam [15:0]  SEG_MAX   = SEG_MAX_I[15:0];
    localparam RESIDUE  = 32'hDEBB20E3;
    localparam IW       = $clog2(IDLE_CLKS + 1);

    reg          in_seg;      // a non-empty segment is open
    reg          overrun;
    reg          discard;
    reg          first_blk;
    reg          blk_ff;      // the open block's code was 0xFF (no implied zero after it)
    reg [7:0]    blk_left;    // data bytes left in the open block; 0: next byte is a code
    reg [15:0]   seg_len;     // stuffed bytes of the segment
    reg [15:0]   idx;         // decoded body bytes so far
    reg [31:0]   crc, pcrc;
    reg [31:0]   dly;         // the last four body bytes: payload CRC runs four bytes behind
    reg [15:0]   len_field;
    reg [IW-1:0] quiet;

    // the byte this cycle adds to the body, if any
    wire       is_code = (blk_left == 8'd0);
    wire       emit    = in_valid && in_data != 8'd0 && !overrun && !discard && !hold &&
                         seg_len < SEG_MAX && (!is_code || (!first_blk && !blk_ff));
    wire [7:0] ebyte   = is_code ? 8'd0 : in_data;

    wire [31:0] crc_next, pcrc_next;
    crc32_byte u_crc  (.crc_in(crc),  .data(ebyte),     .crc_out(crc_next));
    crc32_byte u_pcrc (.crc_in(pcrc), .data(dly[7:0]),  .crc_out(pcrc_next));

    task seg_reset;
        begin
            in_seg    <= 1'b0;
            overrun   <= 1'b0;
            discard   <= 1'b0;
            first_blk <= 1'b1;
            blk_ff    <= 1'b0;
            blk_left  <= 8'd0;
            seg_len   <= 16'd0;
            idx       <= 16'd0;
            crc       <= 32'hFFFFFFFF;
            pcrc      <= 32'hFFFFFFFF;
            quiet     <= 0;
        end
    endtask

    always @(posedge clk) begin
        wr_en    <= 1'b0;
        frame_ok <= 1'b0;
        if (rst) begin
            seg_reset;
            cnt_frames <= 0; cnt_bad_cobs <= 0; cnt_bad_crc <= 0;
            cnt_overruns <= 0; cnt_idle <= 0; cnt_busy <= 0;
            wr_addr <= 0; wr_data <= 8'd0;
            f_ver <= 8'd0; f_type <= 8'd0; f_seq <= 16'd0; f_len <= 16'd0; f_pcrc <= 32'd0;
            len_field <= 16'd0; dly <= 32'd0;
        end else if (in_valid && in_data == 8'd0) begin
            // delimiter: judge the segment
            if (in_seg) begin
                if (overrun)                        cnt_overruns <= cnt_overruns + 1;
                else if (discard)                   cnt_busy     <= cnt_busy + 1;
                else if (blk_left != 8'd0)          cnt_bad_cobs <= cnt_bad_cobs + 1;
                else if (idx < 16'd10 || len_field != idx - 16'd10 || crc != RESIDUE)
                                                    cnt_bad_crc  <= cnt_bad_crc + 1;
                else begin
                    cnt_frames <= cnt_frames + 1;
                    frame_ok   <= 1'b1;
                    f_len      <= len_field;
                    f_pcrc     <= ~pcrc;
                end
            end
            seg_reset;
        end else if (in_valid) begin
            in_seg <= 1'b1;
            quiet  <= 0;
            if (hold) discard <= 1'b1;
            if (seg_len >= SEG_MAX) overrun <= 1'b1;
            else seg_len <= seg_len + 1'b1;
            if (!overrun && !discard && !hold && seg_len < SEG_MAX) begin
                if (is_code) begin
                    blk_left  <= in_data - 1'b1;
                    blk_ff    <= (in_data == 8'hFF);
                    first_blk <= 1'b0;
                end else
                    blk_left <= blk_left - 1'b1;
            end
            if (emit) begin
                wr_addr <= idx[AW-1:0];
                wr_data <= ebyte;
                wr_en   <= 1'b1;
                idx     <= idx + 1'b1;
                crc     <= crc_next;
                dly     <= {ebyte, dly[31:8]};
                if (idx >= 16'd10) pcrc <= pcrc_next;   // body byte idx-4 is payload while idx-4 >= 6
                case (idx)
                16'd0: f_ver  <= ebyte;
                16'd1: f_type <= ebyte;
                16'd2: f_seq[7:0]  <= ebyte;
                16'd3: f_seq[15:8] <= ebyte;
                16'd4: len_field[7:0]  <= ebyte;
                16'd5: len_field[15:8] <= ebyte;
                default: ;
                endcase
            end
        end else if (in_seg) begin
            if (quiet >= IDLE_CLKS[IW-1:0]) begin
                cnt_idle <= cnt_idle + 1;
                seg_reset;
            end else
                quiet <= quiet + 1'b1;
        end
    end
endmodule
