"""device_link.v as a whole: the response cache, session/step/blob checks, staging, GET_CHUNK
and the idle timeout, with device_core as its compute core (both simulators)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

try:
    import cocotb
    from cocotb.triggers import Timer
except ImportError:  # pragma: no cover
    cocotb = None

from edgetune.firmware_bridge import protocol as P
from edgetune.firmware_bridge.framing import FrameDecoder, crc32, encode_frame

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

if cocotb is not None:
    from edgetune.firmware_bridge.codecs import (encode_batch, encode_model_descriptor, state_to_tensor_set,
                                                 tensor_set_to_state)
    from edgetune.hardware.link_bridge import CLK_NS, LinkBench, RtlCompute, RtlHostedDevice, read_mem
    from edgetune.hardware.sim import params_from_env
    from edgetune.runtime import load_model
    from edgetune.firmware_bridge.device_core import make_hosted_engine
    from edgetune.runtime.optim import OptimizerConfig

    class Host:
        """A host that talks frame by frame, keeping the raw answer bytes."""

        def __init__(self, bench):
            self.b, self.seq, self.session = bench, 100, 0

        async def raw(self, ftype, payload, seq=None, version=1):
            if seq is None:
                self.seq += 1
                seq = self.seq
            self.b.send(encode_frame(ftype, seq, payload, version))
            return await self.b.drain(quiet_clks=self.b.byte_clks * 40, limit_clks=5_000_000)

        async def frame(self, ftype, payload, **kw):
            frames = FrameDecoder().feed(await self.raw(ftype, payload, **kw))
            assert len(frames) == 1, f"{len(frames)} answers"
            return frames[0]

        async def ok(self, ftype, payload, **kw):
            f = await self.frame(ftype, payload, **kw)
            assert f.type == ftype | 0x80, P.decode_error(f.payload)
            return f.payload

        async def err(self, ftype, payload, **kw):
            f = await self.frame(ftype, payload, **kw)
            assert f.type == P.ERROR, hex(f.type)
            return P.decode_error(f.payload)[0]

        async def put(self, blob, data, room=4000):
            for off in range(0, len(data), room):
                rsp = await self.ok(P.PUT_CHUNK, P.PUT_CHUNK_REQ.pack(self.session, blob, len(data), off)
                                    + data[off:off + room])
                assert P.PUT_CHUNK_RSP.unpack_from(rsp) == (blob, off, len(data[off:off + room]))

        async def commit(self, blob, data):
            await self.put(blob, data)
            return await self.ok(P.COMMIT, P.COMMIT_REQ.pack(self.session, blob, len(data), crc32(data)))

        async def result(self, rsp):
            _loss, total, crc = P.RESULT_RSP.unpack_from(rsp)
            out = bytearray()
            while len(out) < total:
                r = await self.ok(P.GET_CHUNK, P.GET_CHUNK_REQ.pack(self.session, P.BLOB_RESULT, len(out), 3000))
                out += r[P.GET_CHUNK_RSP.size:]
            assert crc32(out) == crc
            return bytes(out)

    @cocotb.test()
    async def protocol_checks(dut):
        p = params_from_env()
        bench = LinkBench(dut, p)
        await bench.reset(entropy=0xC0FFEE)
        dev = RtlHostedDevice(bench, engine="native")
        core = RtlCompute(bench, dev)
        h = Host(bench)

        # nothing answers a request that never completes; the idle timeout drops it
        wire = encode_frame(P.HELLO, 1, P.HELLO_REQ.pack(1, 0, 4096))
        assert await bench.exchange(wire[:7]) == []
        await Timer((int(p["IDLE_CLKS"]) + 100) * CLK_NS, "ns")
        assert bench.counters()["idle_resets"] == 1
        info = P.decode_hello_rsp(await h.ok(P.HELLO, P.HELLO_REQ.pack(1, 0, 4096)))
        assert info["session_id"] == int(dut.session_id.value) != 0 and info["max_payload"] == 4096
        assert info["caps"]["device"] == "edgetune-rtl-sim"
        h.session = info["session_id"]

        calls = len(core.calls)
        assert await h.err(P.READ_COUNTERS, P.SESSION.pack(h.session ^ 0x40)) == P.E_SESSION
        assert await h.err(0x33, P.SESSION.pack(h.session)) == P.E_UNKNOWN_TYPE
        assert await h.err(P.READ_COUNTERS, P.SESSION.pack(h.session), version=2) == P.E_VERSION
        assert await h.err(P.PUT_CHUNK, P.SESSION.pack(h.session)) == P.E_BAD_PAYLOAD
        assert await h.err(P.GET_CHUNK, P.GET_CHUNK_REQ.pack(h.session, 8, 0, 100)) == P.E_NO_RESULT
        assert await h.err(P.PUT_CHUNK, P.PUT_CHUNK_REQ.pack(h.session, 7, 4, 0) + b"abcd") == P.E_BAD_CHUNK
        big = (1 << int(p["STAGE_AW"])) + 1
        assert await h.err(P.PUT_CHUNK, P.PUT_CHUNK_REQ.pack(h.session, 1, big, 0) + b"x") == P.E_TOO_LARGE
        assert await h.err(P.PUT_CHUNK, P.PUT_CHUNK_REQ.pack(h.session, 1, 8, 6) + b"xyz") == P.E_BAD_CHUNK
        assert await h.err(P.TRAIN_STEP, P.TRAIN_STEP_REQ.pack(h.session, 0, 4, 0)) == P.E_NO_MODEL
        assert len(core.calls) == calls, "the link answered these alone"

        # a tiny MLP (the Icarus staging memory is small) with plain SGD
        import sys
        sys.path.insert(0, str(ROOT / "tests"))
        from helpers import tiny_mlp

        path = tiny_mlp(Path(os.environ["EDGETUNE_TMP"]) / "tiny.onnx", hidden=8)
        model = load_model(str(path))
        cfg = OptimizerConfig(lr=0.05)
        desc = encode_model_descriptor(model, model.trainable_names(), cfg, "cross_entropy")
        await h.put(P.BLOB_MODEL, desc)
        assert read_mem(dut.u_dev.u_stage.mem, 0, len(desc)) == desc     # staged by the RTL alone
        bad = P.COMMIT_REQ.pack(h.session, P.BLOB_MODEL, len(desc), crc32(desc) ^ 1)
        assert await h.err(P.COMMIT, bad) == P.E_BLOB_CRC
        assert await h.ok(P.COMMIT, P.COMMIT_REQ.pack(h.session, P.BLOB_MODEL, len(desc), crc32(desc)))
        await h.commit(P.BLOB_STATE, state_to_tensor_set(model.params, None, 0))

        rng = np.random.default_rng(0)
        x = (rng.random((8, 1, 8, 8)) * (rng.random((8, 1, 8, 8)) > 0.5)).astype(np.float32)
        y = rng.integers(0, 10, 8)
        batch = encode_batch(x, y)
        await h.put(P.BLOB_BATCH, batch)
        req = P.TRAIN_STEP_REQ.pack(h.session, 0, len(batch), crc32(batch))
        assert await h.err(P.TRAIN_STEP, P.TRAIN_STEP_REQ.pack(h.session, 3, len(batch), crc32(batch))) == P.E_STEP
        calls = core.calls.count(P.TRAIN_STEP)
        first = await h.raw(P.TRAIN_STEP, req, seq=900)
        again = await h.raw(P.TRAIN_STEP, req, seq=900)        # a retry: same seq, same bytes
        assert first == again and len(FrameDecoder().feed(first)) == 1
        assert core.calls.count(P.TRAIN_STEP) == calls + 1, "the retry was executed"
        assert bench.counters()["duplicates"] == 1 and int(dut.step.value) == 1
        assert await h.err(P.TRAIN_STEP, req) == P.E_STEP        # a new request for a done step
        assert core.calls.count(P.TRAIN_STEP) == calls + 1

        ref = make_hosted_engine(dev.engine_name)      # the engine device_core hosts, as it configures it
        ref.load(model, optimizer=cfg)
        r = ref.train_step(x, y)
        step, loss, correct, n, *_ = P.TRAIN_STEP_RSP.unpack_from(FrameDecoder().feed(first)[0].payload)
        assert (step, loss, correct, n) == (0, r.loss, r.correct, 8)
        rsp = await h.ok(P.READ_STATE, P.READ_STATE_REQ.pack(h.session, 1))
        params, _opt, st = tensor_set_to_state(await h.result(rsp))
        assert st == 1
        for k, v in ref.get_params().items():
            np.testing.assert_array_equal(params[k], v)
        total = P.RESULT_RSP.unpack_from(rsp)[1]
        assert await h.err(P.GET_CHUNK, P.GET_CHUNK_REQ.pack(h.session, 8, total + 1, 10)) == P.E_BAD_CHUNK
        c = bench.counters()
        assert c["errors_sent"] >= 12 and c["bad_crc"] == 0 and c["busy_drops"] == 0


@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_rtl_device_link_cache_session_step_staging(sim, tmp_path):
    from edgetune.hardware import sim as S

    S.run("link_tb", sim, "test_device_link", S.LINK_PARAMS[sim], python_path=[HERE],
          env={"EDGETUNE_TMP": str(tmp_path)}, testcase="protocol_checks")
