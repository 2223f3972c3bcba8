"""The RTL frame receiver and transmitter (cobs_rx.v, cobs_tx.v, uart_*.v) against the
golden vectors and, differentially, against firmware_bridge.framing.FrameDecoder.

pytest runs each cocotb test below on Verilator and on Icarus through cocotb's runner.
"""
from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

try:
    import cocotb
    from cocotb.triggers import ReadOnly, RisingEdge, Timer
except ImportError:  # pragma: no cover - the hw extra is part of the test extra
    cocotb = None

from edgetune.firmware_bridge import golden
from edgetune.firmware_bridge.framing import FrameDecoder, encode_body, encode_frame

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads(Path(golden.PATH).read_text())


def _tuple(t, s, p):
    return [int(t), int(s), bytes(p).hex()]


# ---------------------------------------------------------------------------------------------
# cocotb side
# ---------------------------------------------------------------------------------------------
if cocotb is not None:
    from edgetune.hardware.link_bridge import CLK_NS, LinkBench, read_mem
    from edgetune.hardware.sim import params_from_env

    def _monitor(dut, out):
        """Collect every frame the standalone receiver accepts."""
        async def run():
            while True:
                await RisingEdge(dut.sa_frame_ok)
                await ReadOnly()     # every register of that clock edge has settled
                n = int(dut.sa_len.value)
                body = read_mem(dut.u_sabuf.mem, 0, 6 + n)
                out.append([body[0], int(dut.sa_type.value), int(dut.sa_seq.value), body[6:].hex(),
                            int(dut.sa_pcrc.value)])
        return cocotb.start_soon(run())

    @cocotb.test()
    async def golden_decode_through_uart(dut):
        """Every golden frame and stream, driven bit by bit by an independent UART model."""
        from cocotbext.uart import UartSource

        p = params_from_env()
        bench = LinkBench(dut, p)
        await bench.reset()
        dut.ext_line_en.value = 1
        bit_ns = int(p["CLKS_PER_BIT"]) * CLK_NS
        src = UartSource(dut.ext_line, baud=1e9 / bit_ns)
        logging_off(src)
        got = []
        _monitor(dut, got)
        idle_ns = (int(p["IDLE_CLKS"]) + 50) * CLK_NS
        cases = [(r["name"], bytes.fromhex(r["wire"]), [r]) for r in GOLDEN["frames"]]
        frames = {f["name"]: f for f in GOLDEN["frames"]}
        cases += [(r["name"], bytes.fromhex(r["stream"]), [frames[n] for n in r["frames"]])
                  for r in GOLDEN["streams"]]
        for name, wire, want in cases:
            got.clear()
            await src.write(wire)
            await src.wait()
            await Timer(idle_ns, "ns")   # the idle timeout drops what a stream leaves open
            exp = [[1, w["type"], w["seq"], w["payload"]] for w in want]
            assert [g[:4] for g in got] == exp, name
            import zlib
            assert [g[4] for g in got] == [zlib.crc32(bytes.fromhex(w["payload"])) for w in want], name

    @cocotb.test()
    async def golden_encode_through_uart(dut):
        """The transmitter reproduces every golden `wire`, byte for byte, read back by a UART model."""
        from cocotbext.uart import UartSink

        p = params_from_env()
        bench = LinkBench(dut, p)
        await bench.reset()
        sink = UartSink(dut.enc_line, baud=1e9 / (int(p["CLKS_PER_BIT"]) * CLK_NS))
        logging_off(sink)
        for row in GOLDEN["frames"]:
            body = encode_body(row["type"], row["seq"], bytes.fromhex(row["payload"]))[:-4]
            for i, b in enumerate(body):
                dut.u_encbuf.mem[i].value = b
            dut.enc_len.value = len(body)
            dut.enc_start.value = 1
            await Timer(2 * CLK_NS, "ns")
            dut.enc_start.value = 0
            await Timer(2 * CLK_NS, "ns")
            while int(dut.enc_busy.value):
                await Timer(200 * CLK_NS, "ns")
            await Timer(30 * int(p["CLKS_PER_BIT"]) * CLK_NS, "ns")
            wire = bytes(sink.read_nowait(sink.count()))
            assert wire.hex() == row["wire"], row["name"]

    @cocotb.test()
    async def decoder_matches_framedecoder(dut):
        """Differential: streams from the framing tests' generators give the same frames and the
        same drop counts as FrameDecoder; idle gaps drop partial frames in both; no lock-up."""
        p = params_from_env()
        bench = LinkBench(dut, p)
        await bench.reset()
        got = []
        _monitor(dut, got)
        cases = json.loads(Path(os.environ["EDGETUNE_FUZZ_CASES"]).read_text())
        ref = FrameDecoder(max_payload=int(p["MAX_PAYLOAD"]))
        dec = dut.u_sadec
        for i, stream_hex in enumerate(cases):
            stream = bytes.fromhex(stream_hex)
            got.clear()
            bench.send(stream)
            while bench.line_busy():
                await bench.step(bench.byte_clks * 64)
            await Timer((int(p["IDLE_CLKS"]) + 20 * int(p["CLKS_PER_BIT"])) * CLK_NS, "ns")
            want = [[1, f.type, f.seq, f.payload.hex()] for f in ref.feed(stream)]
            ref.reset()     # the idle gap after each case
            assert [g[:4] for g in got] == want, f"case {i}: {stream_hex[:120]}"
            st = ref.stats
            rtl = [int(dec.cnt_bad_cobs.value), int(dec.cnt_bad_crc.value), int(dec.cnt_overruns.value),
                   int(dec.cnt_idle.value), int(dec.cnt_frames.value)]
            assert rtl == [st.bad_cobs, st.bad_crc, st.overruns, st.idle_resets, st.frames], f"case {i}"
        # the cases reached every drop path: overruns (bounded: the receiver stops writing at the
        # host decoder's segment bound and counts the segment), idle drops of partial frames,
        # bad COBS and bad CRC
        assert min(st.overruns, st.idle_resets, st.bad_cobs, st.bad_crc) > 0, st
        # after everything, a clean frame still gets through (no lock-up)
        got.clear()
        bench.send(encode_frame(0x30, 77, b"after"))
        while bench.line_busy():
            await bench.step(bench.byte_clks * 64)
        await Timer(40 * bench.byte_clks * CLK_NS, "ns")
        assert [g[:4] for g in got] == [[1, 0x30, 77, b"after".hex()]]

    def logging_off(x):
        import logging

        x.log.setLevel(logging.WARNING)


# ---------------------------------------------------------------------------------------------
# pytest side
# ---------------------------------------------------------------------------------------------
SIMS = ["verilator", "icarus"]


def _run(sim, testcase, env=None):
    from edgetune.hardware import sim as S

    S.run("link_tb", sim, "test_link_framing", S.LINK_PARAMS[sim], env=env, python_path=[HERE],
          testcase=testcase)


@pytest.mark.parametrize("sim", SIMS)
def test_rtl_decoder_golden_frames_and_streams(sim):
    _run(sim, "golden_decode_through_uart")


@pytest.mark.parametrize("sim", SIMS)
def test_rtl_encoder_golden_wire(sim):
    _run(sim, "golden_encode_through_uart")


def _fuzz_cases(n_examples: int, max_payload: int):
    """Streams built with the framing tests' generators (tests/test_framing.py)."""
    from hypothesis import HealthCheck, Phase, given, settings, strategies as st

    sys.path.insert(0, str(HERE.parents[1] / "tests"))
    from test_framing import frame_st, mutate

    small = st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=max_payload))
    mutation = st.sampled_from(["none", "flip", "drop", "dup", "truncate", "insert", "garbage"])
    cases = []

    @settings(max_examples=n_examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.one_of(small, frame_st.filter(lambda f: len(f[2]) <= max_payload)), min_size=1, max_size=3),
           mutation, st.data())
    def collect(frames, kind, data):
        wire = bytearray(b"".join(encode_frame(*f) for f in frames))
        mutate(wire, kind, data, 3)
        cases.append(bytes(wire).hex())

    collect()
    rng = random.Random(11)
    # fixed cases: an overrun (longer than the receive buffer) then a good frame; a frame cut
    # in the middle then continued after the idle gap; only delimiters
    cases.append((b"\x00" + bytes(rng.randrange(1, 256) for _ in range(4200)) + encode_frame(1, 2, b"ok")).hex())
    wire = encode_frame(0x10, 9, bytes(range(40)))
    cases += [wire[:20].hex(), wire[20:].hex(), wire.hex(), (b"\x00" * 30).hex()]
    # a data byte changed to another non-zero byte: valid COBS, wrong CRC (the random streams
    # reach that path only by chance)
    bad = bytearray(encode_frame(0x11, 5, b"abcdefgh"))
    bad[bad.index(ord("d"))] ^= 1
    cases.append(bytes(bad).hex())
    return cases


@pytest.mark.parametrize("sim,n", [("verilator", 150), ("icarus", 40)])
def test_rtl_decoder_differential_fuzz(sim, n, tmp_path):
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(_fuzz_cases(n, 96 if sim == "icarus" else 300)))
    _run(sim, "decoder_matches_framedecoder", env={"EDGETUNE_FUZZ_CASES": str(path)})
