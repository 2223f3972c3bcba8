// The accelerator on a ULX3S (Lattice ECP5 LFE5U-85F-6BG381C, 25 MHz oscillator): the host
// talks to device_top through the board's FT231X USB serial port at 921600 baud (27 clocks
// per bit: 925926 baud, 0.5% off, within a UART's tolerance). Reset: power-on, or the PWR
// button. LED 0 blinks while the clock runs; LED 7 lights if the control processor traps.
// The memories are sized to the part's 208 block RAMs (docs/HARDWARE.md, "On a board").
module ulx3s_top #(
    parameter L = 16,
    parameter LB = 4
) (
    input  wire       clk_25mhz,
    input  wire       ftdi_txd,      // host -> FPGA
    output wire       ftdi_rxd,      // FPGA -> host
    input  wire [0:0] btn,           // PWR button, low when pressed
    output wire [7:0] led,
    output wire       wifi_gpio0     // held high so the on-board ESP32 leaves the FPGA alone
);
    reg [15:0] por;
    initial por = 16'd0;
    always @(posedge clk_25mhz)
        if (!por[15]) por <= por + 1'b1;
    wire rst = !por[15] || !btn[0];

    wire       trap;
    wire [7:0] unused_byte;      // the byte port is for simulation; the board has its UART
    wire       unused_valid;
    device_top #(.CLKS_PER_BIT(27), .IDLE_CLKS(6250000), .MAX_PAYLOAD(1024), .BUF_AW(11), .STAGE_AW(13),
                 .RES_AW(14), .RAM_AW(14), .CLOCK_HZ(25000000), .L(L), .LB(LB), .WAW(11), .DAW(9), .LAW(12),
                 .PAW(7), .GAW(8), .CAW(4), .NMAX(32)) u_dev (
        .clk(clk_25mhz), .rst(rst), .uart_rx(ftdi_txd), .uart_tx(ftdi_rxd), .entropy(32'd0),
        .host_byte(8'd0), .host_valid(1'b0), .dev_byte(unused_byte), .dev_valid(unused_valid), .dev_ready(1'b0),
        .trap(trap));

    reg [24:0] beat;
    always @(posedge clk_25mhz) beat <= beat + 1'b1;
    assign led = {trap, 6'd0, beat[24]};
    assign wifi_gpio0 = 1'b1;
endmodule
