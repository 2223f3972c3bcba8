"""The emulated device, in process: protocol state machine, idempotency, resets, counters."""
import os

import numpy as np
import pytest

from edgetune.firmware_bridge import protocol as P
from edgetune.firmware_bridge.accel_model import PE_COLS, PE_ROWS
from edgetune.firmware_bridge.client import DeviceClient
from edgetune.firmware_bridge.codecs import (encode_batch, encode_model_descriptor, round_bf16, state_to_tensor_set,
                                             tensor_set_to_state)
from edgetune.firmware_bridge.device_core import EmulatedDevice
from edgetune.firmware_bridge.errors import DeviceErrorResponse, SessionChangedError
from edgetune.firmware_bridge.loopback import LoopbackTransport
from edgetune.firmware_bridge.session import DeviceSession, DeviceState
from edgetune.firmware_bridge.emulator import LinkSide, serve_main
from edgetune.firmware_bridge.faults import FaultInjector
from edgetune.firmware_bridge.framing import FrameDecoder, crc32, encode_frame
from edgetune.runtime import UsageError, load_model
from edgetune.runtime.engines import make_engine
from edgetune.runtime.optim import OptimizerConfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MLP = os.path.join(ROOT, "models", "digits_mlp.onnx")


class LoseAnswers(LoopbackTransport):
    """The loopback link, losing the device's next `lose` answers on their way back."""

    lose = 0

    def write(self, data, timeout_sec):
        super().write(data, timeout_sec)
        if self.lose:
            self.lose -= 1
            self.side.tx_buf.clear()


def connect(dev, transport=None):
    """The real host client over the in-process loopback to `dev`, after HELLO."""
    c = DeviceClient((transport or LoopbackTransport(dev)).__enter__(), timeout=0.05, max_payload=1024)
    c.hello()
    return c


def start(dev, model, cfg=OptimizerConfig(lr=0.05), transport=None):
    """A DeviceSession with `model` and its parameters loaded on `dev` (what the device engine does)."""
    session = DeviceSession(connect(dev, transport))
    session.start(encode_model_descriptor(model, model.trainable_names(), cfg, "cross_entropy"),
                  DeviceState(dict(model.params), None, 0))
    return session


def error_code(call):
    """The code of the ERROR frame `call` gets back from the device."""
    with pytest.raises(DeviceErrorResponse) as err:
        call()
    return err.value.code


def batch_request(c, x, y, step):
    """Upload a batch with the client and return the TRAIN_STEP payload for it."""
    b = encode_batch(x, y)
    c.put_blob(P.BLOB_BATCH, b)
    return P.TRAIN_STEP_REQ.pack(c.session, step, len(b), crc32(b))


@pytest.fixture(scope="module")
def mlp():
    return load_model(MLP)


@pytest.fixture(scope="module")
def batch():
    d = np.load(os.path.join(ROOT, "models", "digits_source.npz"))
    return d["x"][:64].astype(np.float32), d["y"][:64]


def test_hello_capabilities():
    info = connect(EmulatedDevice()).info
    caps = info["caps"]
    assert info["proto"] == 1 and info["session_id"] != 0 and info["max_payload"] == 1024
    assert caps["pe_array"] == [PE_ROWS, PE_COLS] and caps["format"] == "fp32"
    assert {"conv", "gemm", "relu"} <= set(caps["ops"]) and caps["buffers"]["weight_bytes"] > 0


def test_train_step_matches_hosted_engine_and_duplicates_run_once(mlp, batch):
    x, y = batch
    dev = EmulatedDevice()
    link = LoseAnswers(dev)
    c = start(dev, mlp, transport=link).client
    ref = make_engine(dev.engine_name)
    ref.load(mlp, optimizer=OptimizerConfig(lr=0.05))
    req = batch_request(c, x[:32], y[:32], 0)
    link.lose = 1                                       # the answer is lost: the client retries, same seq and bytes
    retries = c.stats.retries
    first = c.request(P.TRAIN_STEP, req)
    assert c.stats.retries == retries + 1 and dev.step == 1 and dev.link["duplicates"] == 1
    r = ref.train_step(x[:32], y[:32])
    step, loss, correct, n, *_ = P.TRAIN_STEP_RSP.unpack_from(first)
    assert (step, correct, n) == (0, r.correct, 32) and loss == r.loss
    # a new request for an old step is refused, never run twice
    assert error_code(lambda: c.request(P.TRAIN_STEP, req)) == P.E_STEP and dev.step == 1
    _loss, blob = c.result_request(P.READ_STATE, P.READ_STATE_REQ.pack(c.session, 1))
    params, opt, st = tensor_set_to_state(blob)
    assert st == 1 and opt["t"] == 1
    for k, v in ref.get_params().items():
        np.testing.assert_array_equal(params[k], v)


def test_errors_are_coded(mlp, batch):
    dev = EmulatedDevice()
    c = connect(dev)
    ask = lambda ftype, payload: error_code(lambda: c.request(ftype, payload))  # noqa: E731
    assert ask(0x55, P.SESSION.pack(c.session)) == P.E_UNKNOWN_TYPE
    # the host speaks version 1 only: a version-2 frame goes to the device by hand
    answer = FrameDecoder().feed(dev.receive(encode_frame(P.HELLO, 7, b"", 2), 1.0))[0]
    assert answer.type == P.ERROR and P.decode_error(answer.payload)[0] == P.E_VERSION
    with pytest.raises(SessionChangedError):
        c.request(P.PUT_CHUNK, P.PUT_CHUNK_REQ.pack(c.session ^ 1, P.BLOB_BATCH, 4, 0) + b"abcd")
    assert ask(P.PUT_CHUNK, P.PUT_CHUNK_REQ.pack(c.session ^ 1, P.BLOB_BATCH, 4, 0) + b"abcd") == P.E_SESSION
    assert ask(P.PUT_CHUNK, P.PUT_CHUNK_REQ.pack(c.session, P.BLOB_BATCH, 4, 2) + b"abcd") == P.E_BAD_CHUNK
    assert ask(P.TRAIN_STEP, P.TRAIN_STEP_REQ.pack(c.session, 0, 4, 0)) == P.E_NO_MODEL
    assert ask(P.COMMIT, P.COMMIT_REQ.pack(c.session, P.BLOB_MODEL, 9, 0)) == P.E_BLOB_CRC
    assert ask(P.GET_CHUNK, P.GET_CHUNK_REQ.pack(c.session, P.BLOB_RESULT, 0, 10)) == P.E_NO_RESULT
    assert ask(P.READ_STATE, b"\x01") == P.E_BAD_PAYLOAD
    assert error_code(lambda: c.commit(P.BLOB_MODEL, b'{"format":1}')) == P.E_BAD_DESCRIPTOR
    c.commit(P.BLOB_MODEL, encode_model_descriptor(mlp, mlp.trainable_names(), OptimizerConfig(), "mse"))
    bad_state = state_to_tensor_set({"fc1.weight": mlp.params["fc1.weight"]})
    assert error_code(lambda: c.commit(P.BLOB_STATE, bad_state)) == P.E_BAD_STATE
    c.commit(P.BLOB_STATE, state_to_tensor_set(mlp.params))
    x, y = batch
    wrong = np.zeros((2, 3, 8, 8), np.float32)
    assert ask(P.TRAIN_STEP, batch_request(c, wrong, y[:2], 0)) == P.E_BAD_BATCH
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
    c = start(dev, mlp).client
    s1 = c.session
    c.request(P.TRAIN_STEP, batch_request(c, x[:8], y[:8], 0))
    # the device dies before answering step 1; the retry reaches the rebooted device, which
    # knows no session s1: the step is not run on the lost state
    with pytest.raises(SessionChangedError):
        c.request(P.TRAIN_STEP, batch_request(c, x[:8], y[:8], 1))
    assert dev.boots == 2 and dev.step == 0
    assert error_code(lambda: c.request(P.READ_STATE, P.READ_STATE_REQ.pack(s1, 1))) == P.E_SESSION
    assert c.hello()["session_id"] != s1 and dev.engine is None and dev.step == 0


def bf16_reference(model, cfg, batches, engine_name):
    """What a bf16 device must compute, run on the host: the engine the device hosts, with the
    parameters, optimizer state and inputs rounded to bf16 exactly where device_core rounds them."""
    ref = make_engine(engine_name, **({"auto_dense": False} if engine_name == "native" else {}))
    ref.load(model, optimizer=cfg)
    ref.set_params({k: round_bf16(v) for k, v in model.params.items()})
    for x, y in batches:
        ref.train_step(round_bf16(x), y)
        ref.set_params({k: round_bf16(v) for k, v in ref.get_params().items()})
        opt = ref.optimizer_state()
        ref.set_optimizer_state({k: ({n: round_bf16(a) for n, a in v.items()} if isinstance(v, dict) else v)
                                 for k, v in opt.items()})
    return ref.get_params()


def test_bf16_storage(mlp, batch):
    """The bf16 device's *updates* (p - p0) are those of a host run with the same rounding: an
    untrained device (round_bf16(p0)) or one that skips a step fails, which an absolute tolerance
    on p itself would not catch."""
    x, y = batch
    cfg = OptimizerConfig(lr=0.05, momentum=0.9)
    dev = EmulatedDevice(fmt="bf16")
    session = start(dev, mlp, cfg)
    steps = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    for xb, yb in steps:
        session.train_step(xb, yb)
    params = session.read_state().params
    want = bf16_reference(mlp, cfg, steps, dev.engine_name)
    for k, v in params.items():
        np.testing.assert_array_equal(v, round_bf16(v), err_msg=k)                  # stored as bf16
        p0 = round_bf16(mlp.params[k])
        upd, ref_upd = v - p0, want[k] - p0
        assert np.abs(ref_upd).max() > 0, k
        np.testing.assert_array_equal(upd, ref_upd, err_msg=k)


def test_accelerator_counters(mlp, batch):
    x, y = batch
    dev = EmulatedDevice()
    start(dev, mlp).train_step(x[:32], y[:32])
    acc = dev.counters()["accelerator"]
    fc1, fc2 = acc["layers"][0], acc["layers"][1]
    # FP of fc1: every non-zero input pixel times the 128 outputs, exactly
    assert fc1["fp"]["executed_macs"] == fc1["fp"]["required_macs"] == int(np.count_nonzero(x[:32])) * 128
    assert fc1["fp"]["dense_macs"] == 32 * 64 * 128
    assert fc1["bp"]["dense_macs"] == 0                      # no error is propagated into the input
    for layer in acc["layers"]:
        for ph in ("fp", "bp", "wg"):
            r = layer[ph]
            # the modelled array multiplies exactly the required pairs, whatever the host's CPU
            # kernels ran (their tiles may run dense, and pad a narrow layer beyond dense)
            assert 0 <= r["required_macs"] == r["executed_macs"] <= r["dense_macs"]
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
    session = start(dev, mlp)
    ref = make_engine(dev.engine_name)
    ref.load(mlp)
    np.testing.assert_array_equal(session.predict(x[:16]), ref.predict(x[:16]))
    got_loss, got = session.loss_and_grads(x[:16], y[:16])
    loss, grads = ref.loss_and_grads(x[:16], y[:16])
    assert got_loss == loss
    assert set(got) == set(grads)
    for k in grads:   # the same engine on the same bytes: the same bits, not only the same names
        np.testing.assert_array_equal(got[k], grads[k], err_msg=k)


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
    start(dev, cnn).train_step(x, y[:8])
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
