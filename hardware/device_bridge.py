"""cocotb-side glue of the whole device (hardware/tb/device_tb.v): Python moves host bytes into the
simulated serial line and the device's answers out of it, and advances simulated time. Nothing
here computes: every answer comes from device_top.v (link, control processor and its firmware,
training array). Before reset the bench writes the boot configuration text, as a board's
bitstream carries its config ROM."""
from __future__ import annotations

from typing import List

from cocotb.triggers import Timer

from edgetune.firmware_bridge import protocol as P
from edgetune.firmware_bridge.framing import FrameDecoder, crc32, encode_frame

from .firmware import bootcfg_words
from .link_bridge import CLK_NS, LinkBench   # device_tb has link_tb's clock and mailboxes



class DeviceBench(LinkBench):
    """The host end of the simulated line of device_tb (the mailboxes are link_tb's)."""

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


class BenchHost:
    """Just enough of the host side of the protocol, in the simulation (firmware_bridge.client does
    this over pyserial): requests, blob uploads, RESULT downloads."""

    def __init__(self, bench):
        self.bench, self.seq, self.session, self.max_payload = bench, 0, 0, 4096

    async def req(self, ftype, payload=b""):
        self.seq = (self.seq + 1) & 0xFFFF
        f = await self.bench.request(ftype, self.seq, payload)
        assert f is not None, f"no answer to 0x{ftype:02x}"
        assert f.seq == self.seq
        if f.type == P.ERROR:
            return P.decode_error(f.payload)
        assert f.type == ftype | 0x80, f"answer type 0x{f.type:02x}"
        return None, f.payload

    async def hello(self):
        _e, p = await self.req(P.HELLO, P.HELLO_REQ.pack(1, 0, 0))
        info = P.decode_hello_rsp(p)
        self.session, self.max_payload = info["session_id"], info["max_payload"]
        return info

    async def put(self, blob, data):
        room = self.max_payload - 16
        for off in range(0, max(1, len(data)), room):
            err, _p = await self.req(P.PUT_CHUNK, P.PUT_CHUNK_REQ.pack(self.session, blob, len(data), off)
                                     + data[off:off + room])
            assert err is None, err

    async def commit(self, blob, data):
        await self.put(blob, data)
        return await self.req(P.COMMIT, P.COMMIT_REQ.pack(self.session, blob, len(data), crc32(data)))

    async def train(self, step, batch):
        await self.put(P.BLOB_BATCH, batch)
        return await self.req(P.TRAIN_STEP, P.TRAIN_STEP_REQ.pack(self.session, step, len(batch), crc32(batch)))

    async def result(self, ftype, payload):
        err, p = await self.req(ftype, payload)
        if err is not None:
            return err, None
        loss, total, crc = P.RESULT_RSP.unpack_from(p)
        out = b""
        while len(out) < total:
            e2, q = await self.req(P.GET_CHUNK, P.GET_CHUNK_REQ.pack(self.session, P.BLOB_RESULT, len(out), 4000))
            assert e2 is None, e2
            out += q[P.GET_CHUNK_RSP.size:]
        assert crc32(out) == crc
        return loss, out

    async def batch_cmd(self, ftype, batch):
        await self.put(P.BLOB_BATCH, batch)
        return await self.result(ftype, P.BATCH_REQ.pack(self.session, len(batch), crc32(batch)))
