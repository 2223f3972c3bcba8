// UART receiver, 8 data bits, no parity, 1 stop bit (8N1), LSB first.
// CLKS_PER_BIT clock cycles per bit; the line is sampled in the middle of each bit.
// A start bit that is not low at its middle is a glitch and is ignored; a stop bit
// that is not high raises frame_err for one cycle instead of valid (the byte is lost,
// the frame decoder above drops the frame when its CRC fails).
module uart_rx #(
    parameter CLKS_PER_BIT = 8
) (
    input  wire       clk,
    input  wire       rst,
    input  wire       rx,
    output reg  [7:0] data,
    output reg        valid,
    output reg        frame_err
);
    localparam CW = (CLKS_PER_BIT < 2) ? 1 : $clog2(CLKS_PER_BIT + 1);
    localparam S_IDLE = 2'd0, S_START = 2'd1, S_DATA = 2'd2, S_STOP = 2'd3;

    // two flops against metastability on a real pin
    reg rx_q1, rx_q2;
    always @(posedge clk) begin
        rx_q1 <= rst ? 1'b1 : rx;
        rx_q2 <= rst ? 1'b1 : rx_q1;
    end

    reg [1:0]    state;
    reg [CW-1:0] cnt;
    reg [2:0]    bitn;
    reg [7:0]    shift;

    always @(posedge clk) begin
        valid     <= 1'b0;
        frame_err <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
            cnt   <= 0;
            bitn  <= 0;
            shift <= 8'd0;
            data  <= 8'd0;
        end else begin
            case (state)
            S_IDLE: if (!rx_q2) begin
                state <= S_START;
                // the synchroniser delays the line by two cycles and this state by one more:
                // checking after CLKS_PER_BIT/2 - 1 cycles samples the middle of the start bit
                cnt   <= (CLKS_PER_BIT / 2 > 1) ? CLKS_PER_BIT / 2 - 1 : 1;
            end
            S_START: if (cnt > 1) cnt <= cnt - 1'b1;
                else if (!rx_q2) begin
                    state <= S_DATA;
                    cnt   <= CLKS_PER_BIT;
                    bitn  <= 3'd0;
                end else
                    state <= S_IDLE;
            S_DATA: if (cnt > 1) cnt <= cnt - 1'b1;
                else begin
                    shift <= {rx_q2, shift[7:1]};
                    cnt   <= CLKS_PER_BIT;
                    bitn  <= bitn + 1'b1;
                    if (bitn == 3'd7) state <= S_STOP;
                end
            S_STOP: if (cnt > 1) cnt <= cnt - 1'b1;
                else begin
                    // back to idle in the middle of the stop bit: the next start edge is caught on time
                    state <= S_IDLE;
                    if (rx_q2) begin
                        data  <= shift;
                        valid <= 1'b1;
                    end else
                        frame_err <= 1'b1;
                end
            endcase
        end
    end
endmodule
