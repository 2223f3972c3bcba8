// One byte of CRC-32/ISO-HDLC (reflected polynomial 0xEDB88320), combinational.
// The register convention is the raw one: start from 32'hFFFFFFFF and invert at the end.
// Running it over a whole frame body, its CRC included, leaves the residue 32'hDEBB20E3.
module crc32_byte (
    input  wire [31:0] crc_in,
    input  wire [7:0]  data,
    output reg  [31:0] crc_out
);
    integer i;
    always @* begin
        crc_out = crc_in ^ {24'd0, data};
        for (i = 0; i < 8; i = i + 1)
            crc_out = crc_out[0] ? ((crc_out >> 1) ^ 32'hEDB88320) : (crc_out >> 1);
    end
endmodule
