"""cocotb-side glue of the whole device (hardware/tb/device_tb.v): Python moves host bytes into the
simulated serial line and the device's answers out of it, and advances simulated time. Nothing
here computes: every answer comes from device_top.v (link, control processor and its firmware,
training array). Before reset the bench writes the boot configuration text, as a board's
bitstream carries its config ROM."""
from __future__ import annotations

from typing import List

from cocotb.triggers import Timer

from edgetune.firmware_bridge.framing import FrameDecoder, encode_frame

from .firmware import bootcfg_words

CLK_NS = 10        # device_tb's clock period
MB_SIZE = 1 << 14  # device_tb MB_AW


class DeviceBench:
    """The host end of the simulated line of device_tb."""

    def __init__(self, dut, params: dict):
        self.dut, self.params = dut, params
        self.h2d_wr = 0
        self.d2h_rd = 0
        self.pending = bytearray()

    async def reset(self, entropy: int = 0x1234567, fault_rate: int = 0, fault_seed: int = 1,
                    caps: str = "", reset_after: int = 0) -> None:
        d = self.dut
        d.rst.value = 1
        d.h2d_wr.value = 0
        d.fault_rate.value = fault_rate
        d.fault_seed.value = fault_seed
        d.entropy.value = entropy
        for i, w in enumerate(bootcfg_words(caps, reset_after)):
            d.u_dev.bootcfg[i].value = w
        await Timer(10 * CLK_NS, "ns")
        d.rst.value = 0
        await Timer(2 * CLK_NS, "ns")
        self.h2d_wr = self.d2h_rd = 0
        self.pending.clear()

    @property
    def byte_clks(self) -> int:
        """Clocks per byte on the line: the wide link's BYTE_CLKS, or ten UART bit times."""
        if int(self.params.get("BYTE_PORT", 0)):
            return int(self.params["BYTE_CLKS"])
        return 10 * int(self.params["CLKS_PER_BIT"])

    def send(self, data: bytes) -> None:
        """Queue host bytes for the line (they go out as mailbox room allows)."""
        self.pending += data

    def _push(self) -> None:
        if not self.pending:
            return
        room = MB_SIZE - 1 - (self.h2d_wr - int(self.dut.h2d_rd.value))
        n = min(room, len(self.pending))
        if n <= 0:
            return
        mem = self.dut.h2d_mem
        for i in range(n):
            mem[(self.h2d_wr + i) % MB_SIZE].value = self.pending[i]
        del self.pending[:n]
        self.h2d_wr += n
        self.dut.h2d_wr.value = self.h2d_wr & 0xFFFFFFFF

    def _pull(self) -> bytes:
        wr = int(self.dut.d2h_wr.value)
        n = wr - self.d2h_rd
        if n > MB_SIZE:
            raise RuntimeError("d2h mailbox overflowed: the glue polled too rarely")
        out = bytes(int(self.dut.d2h_mem[(self.d2h_rd + i) % MB_SIZE].value) for i in range(n))
        self.d2h_rd = wr
        return out

    def line_busy(self) -> bool:
        return bool(self.pending) or int(self.dut.h2d_rd.value) != self.h2d_wr

    def device_busy(self) -> bool:
        """A request is being answered (the link holds its receive buffer)."""
        return bool(int(self.dut.u_dev.u_link.hold.value))

    async def step(self, clks: int) -> bytes:
        """Advance `clks` cycles; returns the bytes the host received."""
        self._push()
        await Timer(clks * CLK_NS, "ns")
        if int(self.dut.trap.value):
            raise RuntimeError("the device's processor trapped (firmware fault)")
        return self._pull()

    async def exchange(self, wire: bytes, limit_clks: int = 400_000_000) -> List:
        """Send wire bytes and run until the answer has arrived and the line is quiet."""
        self.send(wire)
        out, quiet, spent = bytearray(), 0, 0
        chunk = max(self.byte_clks * 64, 2048)
        while spent < limit_clks:
            got = await self.step(chunk)
            spent += chunk
            out += got
            busy = self.line_busy() or self.device_busy()
            quiet = 0 if (got or busy) else quiet + chunk
            if quiet >= self.byte_clks * 40:
                break
        return FrameDecoder().feed(bytes(out))

    async def request(self, ftype: int, seq: int, payload: bytes = b""):
        frames = await self.exchange(encode_frame(ftype, seq, payload))
        return frames[0] if frames else None
