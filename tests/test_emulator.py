"""The emulated device, in process: protocol state machine, idempotency, resets, counters."""
import os

import numpy as np
import pytest

from edgetune.firmware_bridge import protocol as P
from edgetune.firmware_bridge.accel_model import PE_COLS, PE_ROWS
from edgetune.firmware_bridge.codecs import (decode_tensor_set, encode_batch, encode_model_descriptor,
                                             round_bf16, state_to_tensor_set, tensor_set_to_state)
from edgetune.firmware_bridge.device_core import EmulatedDevice
from edgetune.firmware_bridge.emulator import LinkSide, serve_main
from edgetune.firmware_bridge.faults import FaultInjector
from edgetune.firmware_bridge.framing import FrameDecoder, crc32, encode_frame
from edgetune.runtime import UsageError, load_model
from edgetune.runtime.engines import make_engine
from edgetune.runtime.optim import OptimizerConfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MLP = os.path.join(ROOT, "models", "digits_mlp.onnx")


class Host:
    """A minimal in-process host speaking to an EmulatedDevice frame by frame."""

    def __init__(self, dev):
        self.dev, self.seq, self.now = dev, 0, 100.0
        self.session = 0

    def raw(self, ftype, payload, seq=None, version=1):
        if seq is None:
            self.seq += 1
            seq = self.seq
        out = self.dev.receive(encode_frame(ftype, seq, payload, version), self.now)
        frames = FrameDecoder().feed(out)
        return frames[0] if frames else None

    def ok(self, ftype, payload, **kw):
        f = self.raw(ftype, payload, **kw)
        assert f is not None and f.type == ftype | 0x80, P.decode_error(f.payload) if f else "no answer"
        return f.payload

    def err(self, ftype, payload, **kw):
        f = self.raw(ftype, payload, **kw)
        assert f is not None and f.type == P.ERROR
        return P.decode_error(f.payload)[0]

    def hello(self):
        info = P.decode_hello_rsp(self.ok(P.HELLO, P.HELLO_REQ.pack(1, 0, 1024)))
        self.session = info["session_id"]
        return info

    def put(self, blob, data):
        room = 1024 - P.PUT_CHUNK_REQ.size
        for off in range(0, len(data), room):
            self.ok(P.PUT_CHUNK, P.PUT_CHUNK_REQ.pack(self.session, blob, len(data), off) + data[off:off + room])

    def commit(self, blob, data):
        self.put(blob, data)
        return self.ok(P.COMMIT, P.COMMIT_REQ.pack(self.session, blob, len(data), crc32(data)))

    def load(self, model, cfg=OptimizerConfig(lr=0.05)):
        self.hello()
        self.commit(P.BLOB_MODEL, encode_model_descriptor(model, model.trainable_names(), cfg, "cross_entropy"))
        self.commit(P.BLOB_STATE, state_to_tensor_set(model.params, None, 0))

    def train_req(self, x, y, step):
        b = encode_batch(x, y)
        self.put(P.BLOB_BATCH, b)
        return P.TRAIN_STEP_REQ.pack(self.session, step, len(b), crc32(b))

    def result(self, rsp):
        _loss, total, crc = P.RESULT_RSP.unpack_from(rsp)
        out = bytearray()
        while len(out) < total:
            r = self.ok(P.GET_CHUNK, P.GET_CHUNK_REQ.pack(self.session, P.BLOB_RESULT, len(out), 1000))
            out += r[P.GET_CHUNK_RSP.size:]
        assert crc32(out) == crc
        return bytes(out)


@pytest.fixture(scope="module")
def mlp():
    return load_model(MLP)


@pytest.fixture(scope="module")
def batch():
    d = np.load(os.path.join(ROOT, "models", "digits_source.npz"))
    return d["x"][:64].astype(np.float32), d["y"][:64]


def test_hello_capabilities():
    info = Host(EmulatedDevice()).hello()
    caps = info["caps"]
    assert info["proto"] == 1 and info["session_id"] != 0 and info["max_payload"] == 1024
    assert caps["pe_array"] == [PE_ROWS, PE_COLS] and caps["format"] == "fp32"
    assert {"conv", "gemm", "relu"} <= set(caps["ops"]) and caps["buffers"]["weight_bytes"] > 0


def test_train_step_matches_hosted_engine_and_duplicates_run_once(mlp, batch):
    x, y = batch
    dev = EmulatedDevice()
    h = Host(dev)
    h.load(mlp)
    ref = make_engine(dev.engine_name)
    ref.load(mlp, optimizer=OptimizerConfig(lr=0.05))
    req = h.train_req(x[:32], y[:32], 0)
    first = h.raw(P.TRAIN_STEP, req, seq=500)
    again = h.raw(P.TRAIN_STEP, req, seq=500)           # host retry: same seq, same bytes
    assert first == again and dev.step == 1 and dev.link["duplicates"] == 1
    r = ref.train_step(x[:32], y[:32])
    step, loss, correct, n, *_ = P.TRAIN_STEP_RSP.unpack_from(first.payload)
    assert (step, correct, n) == (0, r.correct, 32) and loss == r.loss
    # a new request for an old step is refused, never run twice
    assert h.err(P.TRAIN_STEP, req) == P.E_STEP and dev.step == 1
    params, opt, st = tensor_set_to_state(h.result(h.ok(P.READ_STATE, P.READ_STATE_REQ.pack(h.session, 1))))
    assert st == 1 and opt["t"] == 1
    for k, v in ref.get_params().items():
        np.testing.assert_array_equal(params[k], v)


def test_errors_are_coded(mlp, batch):
    dev = EmulatedDevice()
    h = Host(dev)
    h.hello()
    assert h.err(0x55, P.SESSION.pack(h.session)) == P.E_UNKNOWN_TYPE
    assert h.err(P.HELLO, b"", version=2) == P.E_VERSION
    assert h.err(P.PUT_CHUNK, P.PUT_CHUNK_REQ.pack(h.session ^ 1, P.BLOB_BATCH, 4, 0) + b"abcd") == P.E_SESSION
    assert h.err(P.PUT_CHUNK, P.PUT_CHUNK_REQ.pack(h.session, P.BLOB_BATCH, 4, 2) + b"abcd") == P.E_BAD_CHUNK
    assert h.err(P.TRAIN_STEP, P.TRAIN_STEP_REQ.pack(h.session, 0, 4, 0)) == P.E_NO_MODEL
    assert h.err(P.COMMIT, P.COMMIT_REQ.pack(h.session, P.BLOB_MODEL, 9, 0)) == P.E_BLOB_CRC
    assert h.err(P.GET_CHUNK, P.GET_CHUNK_REQ.pack(h.session, P.BLOB_RESULT, 0, 10)) == P.E_NO_RESULT
    assert h.err(P.READ_STATE, b"\x01") == P.E_BAD_PAYLOAD
    h.put(P.BLOB_MODEL, b'{"format":1}')
    code = h.err(P.COMMIT, P.COMMIT_REQ.pack(h.session, P.BLOB_MODEL, 12, crc32(b'{"format":1}')))
    assert code == P.E_BAD_DESCRIPTOR
    h.commit(P.BLOB_MODEL, encode_model_descriptor(mlp, mlp.trainable_names(), OptimizerConfig(), "mse"))
    bad_state = state_to_tensor_set({"fc1.weight": mlp.params["fc1.weight"]})
    h.put(P.BLOB_STATE, bad_state)
    assert h.err(P.COMMIT, P.COMMIT_REQ.pack(h.session, P.BLOB_STATE, len(bad_state), crc32(bad_state))) \
        == P.E_BAD_STATE
    h.commit(P.BLOB_STATE, state_to_tensor_set(mlp.params))
    x, y = batch
    wrong = np.zeros((2, 3, 8, 8), np.float32)
    b = encode_batch(wrong, y[:2])
    h.put(P.BLOB_BATCH, b)
    assert h.err(P.TRAIN_STEP, P.TRAIN_STEP_REQ.pack(h.session, 0, len(b), crc32(b))) == P.E_BAD_BATCH
    assert dev.step == 0


def test_garbage_resync_and_idle_timeout(mlp):
    dev = EmulatedDevice(idle_timeout=0.25)
    hello = encode_frame(P.HELLO, 1, P.HELLO_REQ.pack(1, 0, 1024))
    out = dev.receive(b"\x17\x99garbage\x00\x05\x05" + hello, 10.0)
    assert [f.seq for f in FrameDecoder().feed(out)] == [1]
    # half a frame, then silence longer than the idle timeout: the parser drops it
    dev.receive(hello[:7], 11.0)
    assert dev.decoder.in_frame
    dev.poll(11.1)
    assert dev.decoder.in_frame
    dev.poll(11.5)
    assert not dev.decoder.in_frame and dev.decoder.stats.idle_resets == 1
    # the rest of that frame alone is not accepted; the next full frame is
    assert dev.receive(hello[7:], 11.6) == b""
    assert len(FrameDecoder().feed(dev.receive(encode_frame(P.HELLO, 2, b""), 11.7))) == 1


def test_reset_after_n_steps_loses_state_and_changes_session(mlp, batch):
    x, y = batch
    dev = EmulatedDevice(reset_after=2)
    h = Host(dev)
    h.load(mlp)
    s1 = h.session
    assert h.raw(P.TRAIN_STEP, h.train_req(x[:8], y[:8], 0)) is not None
    assert h.raw(P.TRAIN_STEP, h.train_req(x[:8], y[:8], 1)) is None      # the device died before answering
    assert h.err(P.READ_STATE, P.READ_STATE_REQ.pack(s1, 1)) == P.E_SESSION
    assert h.hello()["session_id"] != s1 and dev.engine is None and dev.step == 0


def test_bf16_storage(mlp, batch):
    x, y = batch
    dev = EmulatedDevice(fmt="bf16")
    h = Host(dev)
    h.load(mlp)
    h.ok(P.TRAIN_STEP, h.train_req(x[:32], y[:32], 0))
    params, opt, _ = tensor_set_to_state(h.result(h.ok(P.READ_STATE, P.READ_STATE_REQ.pack(h.session, 1))))
    ref = make_engine("dense")
    ref.load(mlp, optimizer=OptimizerConfig(lr=0.05))
    ref.train_step(x[:32], y[:32])
    for k, v in params.items():
        np.testing.assert_array_equal(v, round_bf16(v))                  # stored as bf16
        np.testing.assert_allclose(v, ref.params[k], atol=0.02 * float(np.abs(ref.params[k]).max()))
    assert any(not np.array_equal(params[k], ref.params[k]) for k in params)


def test_accelerator_counters(mlp, batch):
    x, y = batch
    dev = EmulatedDevice()
    h = Host(dev)
    h.load(mlp)
    h.ok(P.TRAIN_STEP, h.train_req(x[:32], y[:32], 0))
    acc = dev.counters()["accelerator"]
    fc1, fc2 = acc["layers"][0], acc["layers"][1]
    # FP of fc1: every non-zero input pixel times the 128 outputs, exactly
    assert fc1["fp"]["executed_macs"] == int(np.count_nonzero(x[:32])) * 128
    assert fc1["fp"]["dense_macs"] == 32 * 64 * 128
    assert fc1["bp"]["dense_macs"] == 0                      # no error is propagated into the input
    for layer in acc["layers"]:
        for ph in ("fp", "bp", "wg"):
            r = layer[ph]
            # executed is the kernels' own count: at least the required (constraint) MACs; SIMD tail
            # lanes may make it exceed dense on a narrow layer (fc3: 10 outputs), so skipped can be < 0
            assert 0 <= r["required_macs"] <= r["executed_macs"] and r["required_macs"] <= r["dense_macs"]
            assert r["skipped_macs"] == r["dense_macs"] - r["executed_macs"]
        assert isinstance(layer["estimator"]["hidden"], bool)
    if dev.engine_name == "native":
        assert acc["counter_source"] == "hosted engine kernel counters"
    # ReLU after fc1 makes fc2's input sparse: something is skipped in FP, BP and WG
    assert all(fc2[ph]["skipped_macs"] > 0 for ph in ("fp", "bp", "wg"))
    assert acc["totals"]["cycles"] > 0 and acc["totals"]["skipped_macs"] > 0


def test_predict_and_loss_grads(mlp, batch):
    x, y = batch
    dev = EmulatedDevice()
    h = Host(dev)
    h.load(mlp)
    ref = make_engine(dev.engine_name)
    ref.load(mlp)
    b = encode_batch(x[:16], y[:16])
    h.put(P.BLOB_BATCH, b)
    logits = decode_tensor_set(h.result(h.ok(P.PREDICT, P.BATCH_REQ.pack(h.session, len(b), crc32(b)))))[1]
    np.testing.assert_array_equal(logits["logits"], ref.predict(x[:16]))
    rsp = h.ok(P.LOSS_GRADS, P.BATCH_REQ.pack(h.session, len(b), crc32(b)))
    loss, grads = ref.loss_and_grads(x[:16], y[:16])
    assert P.RESULT_RSP.unpack_from(rsp)[0] == loss
    got = decode_tensor_set(h.result(rsp))[1]
    assert set(got) == set(grads)


def test_link_side_faults_are_injected_but_order_kept():
    dev = EmulatedDevice()
    side = LinkSide(dev, FaultInjector(1.0, seed=3, max_delay=0.01))
    for i in range(40):
        side.on_bytes(encode_frame(P.HELLO, i + 1, b""), 0.0)
    side.pump(1.0)
    assert sum(side.faults.counts.values()) >= 40
    got = FrameDecoder().feed(bytes(side.tx_buf))
    seqs = [f.seq for f in got]
    assert seqs == sorted(seqs) and len(seqs) < 40     # some lost, none reordered


@pytest.mark.parametrize("kw", [dict(fmt="fp16"), dict(fault_rate=1.5), dict(reset_after=0),
                                dict(tcp="nonsense")])
def test_serve_main_rejects_bad_options(kw):
    args = dict(pty=True, tcp=None, fault_rate=0.0, fmt="fp32", reset_after=None, seed=0)
    args.update(kw)
    with pytest.raises(UsageError):
        serve_main(**args)


def test_accelerator_counters_conv(batch):
    cnn = load_model(os.path.join(ROOT, "models", "digits_cnn.onnx"))
    x, y = batch
    x = x[:8]
    dev = EmulatedDevice()
    h = Host(dev)
    h.load(cnn)
    h.ok(P.TRAIN_STEP, h.train_req(x, y[:8], 0))
    layers = {r["name"]: r for r in dev.counters()["accelerator"]["layers"]}
    conv1 = layers["/conv1/Conv"]
    # independent count: non-zero inputs under each 3x3 window (pad 1), times 16 output channels
    nz = np.pad(x[:, 0] != 0, ((0, 0), (1, 1), (1, 1)))
    window = sum(nz[:, r:r + 8, s:s + 8].sum() for r in range(3) for s in range(3))
    assert conv1["fp"]["executed_macs"] == conv1["fp"]["required_macs"] == int(window) * 16
    # dense work is every multiply with a real input (layer_table's definition): padding taps are
    # not multiplies, so a 3x3 pad-1 window over 8x8 has 8*8*9 - 4*8*3 + 4 = 484 taps, not 576
    inside = np.pad(np.ones((8, 8), bool), 1)
    taps = sum(inside[r:r + 8, s:s + 8].sum() for r in range(3) for s in range(3))
    assert taps == 484 and conv1["fp"]["dense_macs"] == 8 * 16 * int(taps)
    conv2 = layers["/conv2/Conv"]
    assert 0 < conv2["bp"]["executed_macs"] < conv2["bp"]["dense_macs"]
    assert 0 < conv2["wg"]["executed_macs"] < conv2["wg"]["dense_macs"]
