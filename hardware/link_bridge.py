"""cocotb-side glue of the link layer: drives hardware/tb/link_tb.v.

`LinkBench` moves host bytes through the simulated UART line (mailboxes in the
testbench, so Python handles byte strings, not bits) and advances simulated time.
`RtlCompute` is the compute core of device_link: for each validated request the RTL
hands over, it runs firmware_bridge.device_core (the emulator's compute: engines,
codecs, accounting) and writes the answer back. The protocol work (framing, CRC,
cache, session and step checks, staging, GET_CHUNK) is the RTL's alone.
"""
from __future__ import annotations

import sys
import traceback
from typing import Callable, List, Optional

from cocotb.triggers import Timer

from edgetune.firmware_bridge import protocol as P
from edgetune.firmware_bridge.device_core import DeviceFault, EmulatedDevice
from edgetune.firmware_bridge.framing import FrameDecoder, encode_frame

CLK_NS = 10        # link_tb's clock period
MB_SIZE = 1 << 14  # link_tb MB_AW


def read_mem(mem, start: int, n: int) -> bytes:
    """Backdoor read of a byte RAM (simulation only: a board's core uses the core_* port)."""
    return bytes(int(mem[start + i].value) & 0xFF for i in range(n))


def write_mem(mem, start: int, data: bytes) -> None:
    """Backdoor write of a byte RAM; lands before the next simulated clock edge."""
    for i, b in enumerate(data):
        mem[start + i].value = b


class LinkBench:
    """The host end of the simulated line plus the device's compute core."""

    def __init__(self, dut, params: dict):
        self.dut, self.params = dut, params
        self.h2d_wr = 0
        self.d2h_rd = 0
        self.pending = bytearray()
        self.compute: Optional[Callable] = None   # async callable run when the RTL asks the core

    async def reset(self, entropy: int = 0x1234567, fault_rate: int = 0, fault_seed: int = 1) -> None:
        d = self.dut
        d.rst.value = 1
        d.ext_line_en.value = 0
        d.ext_line.value = 1
        d.h2d_wr.value = 0
        d.fault_rate.value = fault_rate
        d.fault_seed.value = fault_seed
        d.entropy.value = entropy
        d.core_done.value = 0
        for name in ("core_rsp_type", "core_rsp_len", "core_step_we", "core_step", "core_ready_we", "core_ready",
                     "core_result_we", "core_result_len", "core_sel", "core_addr", "core_wdata", "core_we",
                     "enc_start", "enc_len"):
            getattr(d, name).value = 0
        await Timer(10 * CLK_NS, "ns")
        d.rst.value = 0
        await Timer(2 * CLK_NS, "ns")
        self.h2d_wr = self.d2h_rd = 0
        self.pending.clear()

    @property
    def byte_clks(self) -> int:
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

    async def step(self, clks: int) -> bytes:
        """Advance `clks` cycles (serving the core when asked); returns the bytes the host received."""
        self._push()
        await Timer(clks * CLK_NS, "ns")
        if int(self.dut.core_req.value) and self.compute is not None:
            await self.compute()
        return self._pull()

    async def drain(self, quiet_clks: int, limit_clks: int) -> bytes:
        """Run until the host line is empty and nothing arrived for `quiet_clks`; returns what arrived."""
        out, quiet, spent = bytearray(), 0, 0
        chunk = max(self.byte_clks * 8, 256)
        while spent < limit_clks:
            got = await self.step(chunk)
            spent += chunk
            out += got
            busy = self.line_busy() or int(self.dut.u_dev.hold.value)   # hold: a request is being answered
            quiet = 0 if (got or busy) else quiet + chunk
            if quiet >= quiet_clks:
                break
        return bytes(out)

    async def exchange(self, wire: bytes, limit_clks: int = 2_000_000) -> List:
        """Send wire bytes, wait for the answers; returns the decoded frames."""
        self.send(wire)
        got = await self.drain(quiet_clks=self.byte_clks * 40, limit_clks=limit_clks)
        return FrameDecoder().feed(got)

    async def request(self, ftype: int, seq: int, payload: bytes = b"", version: int = 1):
        frames = await self.exchange(encode_frame(ftype, seq, payload, version))
        return frames[0] if frames else None

    def counters(self) -> dict:
        """The RTL's own link counters (PROTOCOL.md section 12 `link`)."""
        d = self.dut.u_dev
        names = {"rx_frames": "cnt_rx_frames", "tx_frames": "cnt_tx_frames", "duplicates": "cnt_duplicates",
                 "errors_sent": "cnt_errors_sent", "bad_cobs": "cnt_bad_cobs", "bad_crc": "cnt_bad_crc",
                 "overruns": "cnt_overruns", "idle_resets": "cnt_idle_resets", "busy_drops": "cnt_busy_drops",
                 "uart_errors": "cnt_uart_errors"}
        out = {k: int(getattr(d, v).value) for k, v in names.items()}
        out["resyncs"] = out["bad_cobs"] + out["bad_crc"] + out["overruns"] + out["idle_resets"]
        return out


class RtlHostedDevice(EmulatedDevice):
    """device_core's compute, reporting the RTL link's parameters and counters."""

    def __init__(self, bench: LinkBench, **kw):
        self.bench = bench
        super().__init__(**kw)

    def caps(self) -> dict:
        c = super().caps()
        p = self.bench.params
        c.update({"device": "edgetune-rtl-sim", "link": "rtl (hardware/rtl/device_link.v, simulated)",
                  "max_payload": int(p["MAX_PAYLOAD"])})
        c["buffers"] = {**c["buffers"], "staging_bytes": 1 << int(p["STAGE_AW"]),
                        "result_bytes": 1 << int(p["RES_AW"])}
        extra = getattr(self.bench, "caps_extra", None)
        if extra:
            c.update(extra)
        return c

    def counters(self) -> dict:
        c = super().counters()
        rtl = self.bench.counters()
        c["link"] = {"rx_bytes": None, "tx_bytes": None, **rtl}
        c["link_faults"] = {"flips_h2d": int(self.bench.dut.flips_h2d.value),
                            "flips_d2h": int(self.bench.dut.flips_d2h.value)}
        return c


class RtlCompute:
    """Answers the RTL's core requests with device_core's compute."""

    def __init__(self, bench: LinkBench, device: EmulatedDevice):
        self.bench, self.dev = bench, device
        self.calls: List[int] = []          # request types handed to the core, in order
        bench.compute = self

    async def __call__(self) -> None:
        d, dev = self.bench.dut, self.dev
        u = d.u_dev
        typ, plen = int(d.core_type.value), int(d.core_len.value)
        self.calls.append(typ)
        payload = read_mem(u.u_rxbuf.mem, 6, plen)
        dev.session, dev.step = int(d.session_id.value), int(d.step.value)
        result_before = dev.result
        stage_aw = int(self.bench.params["STAGE_AW"])
        try:
            blob_total = self._staged_blob(typ, payload)
            if blob_total is not None:
                blob, total = blob_total
                dev.staging[blob] = bytearray(read_mem(u.u_stage.mem, (blob - 1) << stage_aw, total))
            rtype, out = typ | P.RESPONSE_BIT, dev.dispatch(typ, payload)
        except DeviceFault as f:
            rtype, out = P.ERROR, P.encode_error(f.code, f.text)
        except Exception as exc:  # noqa: BLE001 - firmware answers, it does not die
            traceback.print_exc(file=sys.stderr)
            rtype, out = P.ERROR, P.encode_error(P.E_INTERNAL, f"{type(exc).__name__}: {exc}")
        if len(out) > int(d.max_payload.value):
            rtype, out = P.ERROR, P.encode_error(P.E_INTERNAL, f"answer of {len(out)} bytes exceeds max_payload")
        result_we = dev.result is not None and dev.result is not result_before
        if result_we:
            if len(dev.result) > 1 << int(self.bench.params["RES_AW"]):
                rtype, out = P.ERROR, P.encode_error(P.E_TOO_LARGE, f"result of {len(dev.result)} bytes exceeds "
                                                                    "the result buffer")
                result_we = False
            else:
                write_mem(u.u_result.mem, 0, dev.result)
        write_mem(u.u_txbuf.mem, 6, out)
        d.core_rsp_type.value = rtype
        d.core_rsp_len.value = len(out)
        d.core_step_we.value = int(typ == P.COMMIT and rtype != P.ERROR)
        d.core_step.value = dev.step
        d.core_ready_we.value = 1
        d.core_ready.value = int(dev.engine is not None and dev.params_ready)
        d.core_result_we.value = int(result_we)
        d.core_result_len.value = len(dev.result) if result_we else 0
        d.core_done.value = 1
        await Timer(CLK_NS, "ns")
        d.core_done.value = 0
        d.core_step_we.value = 0
        d.core_ready_we.value = 0
        d.core_result_we.value = 0
        await Timer(CLK_NS, "ns")

    @staticmethod
    def _staged_blob(typ: int, payload: bytes):
        """(blob, total) the request reads from the staging memory, or None."""
        if typ == P.COMMIT and len(payload) >= P.COMMIT_REQ.size:
            _s, blob, total, _crc = P.COMMIT_REQ.unpack_from(payload)
            return blob, total
        if typ == P.TRAIN_STEP and len(payload) >= P.TRAIN_STEP_REQ.size:
            return P.BLOB_BATCH, P.TRAIN_STEP_REQ.unpack_from(payload)[2]
        if typ in (P.PREDICT, P.LOSS_GRADS) and len(payload) >= P.BATCH_REQ.size:
            return P.BLOB_BATCH, P.BATCH_REQ.unpack_from(payload)[1]
        return None
