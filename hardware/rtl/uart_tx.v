// UART transmitter, 8N1, LSB first, CLKS_PER_BIT clock cycles per bit.
// A byte is taken when valid && ready; ready stays low until its stop bit has lasted a full bit time.
module uart_tx #(
    parameter CLKS_PER_BIT = 8
) (
    input  wire       clk,
    input  wire       rst,
    input  wire [7:0] data,
    input  wire       valid,
    output wire       ready,
    output reg        tx
);
    localparam CW = $clog2(CLKS_PER_BIT + 1);

    reg          busy;
    reg [8:0]    rest;    // data bits then the stop bit, shifted out LSB first
    reg [3:0]    bitn;    // bit on the line: 0 start, 1..8 data, 9 stop
    reg [CW-1:0] cnt;

    assign ready = !busy;

    always @(posedge clk) begin
        if (rst) begin
            tx   <= 1'b1;
            busy <= 1'b0;
            rest <= 9'h1ff;
            bitn <= 4'd0;
            cnt  <= 0;
        end else if (!busy) begin
            if (valid) begin
                tx   <= 1'b0;
                rest <= {1'b1, data};
                busy <= 1'b1;
                bitn <= 4'd0;
                cnt  <= CLKS_PER_BIT - 1;
            end
        end else if (cnt != 0)
            cnt <= cnt - 1'b1;
        else if (bitn == 4'd9)
            busy <= 1'b0;
        else begin
            tx   <= rest[0];
            rest <= {1'b1, rest[8:1]};
            bitn <= bitn + 1'b1;
            cnt  <= CLKS_PER_BIT - 1;
        end
    end
endmodule
