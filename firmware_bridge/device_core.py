"""The emulated accelerator firmware: protocol state machine plus the hosted training engine.

It is transport-free: ``receive(bytes, now)`` returns the wire bytes to send
back. ``emulator.py`` puts it behind a pseudo-terminal or a TCP socket.
"""
from __future__ import annotations

import importlib.util
import json
import random
import sys
import time
import traceback
from typing import Optional

import numpy as np

from . import protocol as P
from .accel_model import AccelModel, capabilities as accel_caps
from .codecs import (decode_batch, decode_model_descriptor, encode_tensor_set, round_bf16,
                     state_to_tensor_set, tensor_set_to_state)
from .framing import FrameDecoder, crc32, encode_frame
from ..runtime import ops as _ops
from ..runtime.constraints import capabilities as constraint_caps

DEVICE_ID = 0xED6E7001
MAX_PAYLOAD = 4096
# every IR op that trains (runtime/ops): the hosted engine runs them all; Softmax/LogSoftmax are
# dropped at import and the import-only ops (Constant, Dropout/Identity) leave no IR node
SUPPORTED_OPS = tuple(op for op in _ops.OPS if op not in ("softmax", "logsoftmax", "constant", "dropout"))


def hosted_engine_name(requested: Optional[str] = None) -> str:
    """'native' when runtime/engines/native.py exists, else 'dense' (logged)."""
    if requested:
        return requested
    if importlib.util.find_spec("edgetune.runtime.engines.native") is not None:
        return "native"
    print("edgetune emulator: runtime/engines/native.py does not exist yet; hosting the dense engine",
          file=sys.stderr, flush=True)
    return "dense"


def make_hosted_engine(name: str):
    """The engine a device hosts, configured as the device configures it. The accelerator skips
    by its constraints everywhere, so the native engine's CPU dense planning is off; tests that
    compare a device's results with a local reference build the reference here too."""
    from ..runtime.engines import make_engine

    return make_engine(name, **({"auto_dense": False} if name == "native" else {}))


class DeviceFault(Exception):
    """Turns into an ERROR frame."""

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code, self.text = code, text


class EmulatedDevice:
    def __init__(self, fmt: str = "fp32", engine: Optional[str] = None, reset_after: Optional[int] = None,
                 seed: int = 0, max_payload: int = MAX_PAYLOAD, idle_timeout: float = 0.25):
        if fmt not in ("fp32", "bf16"):
            raise ValueError(f"format must be fp32 or bf16, got {fmt!r}")
        self.fmt, self.engine_name = fmt, hosted_engine_name(engine)
        self.reset_after, self.max_payload, self.idle_timeout = reset_after, max_payload, idle_timeout
        self.rng = random.Random(seed ^ 0x5EED)
        self.decoder = FrameDecoder(max_payload=max_payload)
        self.boots = 0
        self.fault_summary = None   # set by the link that injects faults (emulator.py)
        self.last_rx = time.monotonic()
        self.link = {"rx_bytes": 0, "tx_bytes": 0, "rx_frames": 0, "tx_frames": 0, "duplicates": 0,
                     "errors_sent": 0}
        self._boot()

    # -- state ---------------------------------------------------------------
    def _boot(self) -> None:
        """Power-on / reset: every piece of state is lost and the session id changes."""
        self.boots += 1
        self.session = self.rng.randrange(1, 1 << 32)
        self.staging: dict = {}
        self.result: Optional[bytes] = None
        self.engine = None
        self.accel: Optional[AccelModel] = None
        self.params_ready = False
        self.step = 0
        self.session_steps = 0
        self.cache = None
        self.decoder.reset()
        self.decoder.stats.idle_resets = 0
        self.step_seconds = {"fp": 0.0, "bp": 0.0, "wg": 0.0, "update": 0.0}

    def caps(self) -> dict:
        return {"device": "edgetune-emulator", "engine": self.engine_name, "format": self.fmt,
                "formats": ["fp32", "bf16"], "max_payload": self.max_payload, "ops": list(SUPPORTED_OPS),
                "constraints": constraint_caps(), "activation_link_format": "mask+nonzeros",
                "losses": ["cross_entropy", "mse"], "optimizers": ["sgd", "adamw"],
                "idle_timeout_ms": int(self.idle_timeout * 1000), **accel_caps()}

    # -- bytes in, bytes out ----------------------------------------------------
    def poll(self, now: float) -> None:
        """Idle timeout: drop a partial frame when the line has been quiet too long."""
        if self.decoder.in_frame and now - self.last_rx > self.idle_timeout:
            self.decoder.reset()

    def receive(self, data: bytes, now: float) -> bytes:
        self.poll(now)
        self.last_rx = now
        self.link["rx_bytes"] += len(data)
        out = bytearray()
        for frame in self.decoder.feed(data):
            self.link["rx_frames"] += 1
            wire = self.handle(frame)
            if wire:
                self.link["tx_frames"] += 1
                self.link["tx_bytes"] += len(wire)
                out += wire
        return bytes(out)

    def handle(self, frame) -> Optional[bytes]:
        key = (frame.seq, frame.type, crc32(frame.payload))
        if self.cache is not None and self.cache[0] == key:
            self.link["duplicates"] += 1
            return self.cache[1]
        if frame.version != P.PROTO_VERSION:
            rtype, payload = P.ERROR, P.encode_error(P.E_VERSION, f"protocol version {frame.version} "
                                                     f"is not supported; this device speaks {P.PROTO_VERSION}")
        else:
            try:
                rtype, payload = frame.type | P.RESPONSE_BIT, self.dispatch(frame.type, frame.payload)
            except DeviceFault as f:
                rtype, payload = P.ERROR, P.encode_error(f.code, f.text)
            except Exception as exc:  # noqa: BLE001 - firmware must answer, not die
                traceback.print_exc(file=sys.stderr)
                rtype, payload = P.ERROR, P.encode_error(P.E_INTERNAL, f"{type(exc).__name__}: {exc}")
        if rtype == P.ERROR:
            self.link["errors_sent"] += 1
        wire = encode_frame(rtype, frame.seq, payload)
        self.cache = (key, wire)
        if self.reset_after and self.session_steps >= self.reset_after:
            print(f"edgetune emulator: simulated reset after {self.session_steps} steps "
                  f"(the answer to step {self.step - 1} is lost)", file=sys.stderr, flush=True)
            self._boot()
            return None
        return wire

    # -- commands ----------------------------------------------------------------
    def dispatch(self, ftype: int, p: bytes) -> bytes:
        if ftype == P.HELLO:
            if len(p) >= P.HELLO_REQ.size:
                _ver, _flags, host_max = P.HELLO_REQ.unpack_from(p)
                self.max_payload = max(256, min(MAX_PAYLOAD, host_max or MAX_PAYLOAD))
            return P.encode_hello_rsp(DEVICE_ID, self.session, self.max_payload, self.caps())
        handler = {P.PUT_CHUNK: self._put_chunk, P.COMMIT: self._commit, P.TRAIN_STEP: self._train_step,
                   P.PREDICT: self._predict, P.LOSS_GRADS: self._loss_grads, P.READ_STATE: self._read_state,
                   P.GET_CHUNK: self._get_chunk, P.READ_COUNTERS: self._read_counters}.get(ftype)
        if handler is None:
            raise DeviceFault(P.E_UNKNOWN_TYPE, f"unknown message type 0x{ftype:02x}")
        if len(p) < 4:
            raise DeviceFault(P.E_BAD_PAYLOAD, "payload shorter than the session id")
        (session,) = P.SESSION.unpack_from(p)
        if session != self.session:
            raise DeviceFault(P.E_SESSION, f"session 0x{session:08x} is not the current 0x{self.session:08x}")
        return handler(p)

    @staticmethod
    def _unpack(st, p):
        if len(p) < st.size:
            raise DeviceFault(P.E_BAD_PAYLOAD, f"payload of {len(p)} bytes, need {st.size}")
        return st.unpack_from(p)

    def _put_chunk(self, p):
        _s, blob, total, offset = self._unpack(P.PUT_CHUNK_REQ, p)
        data = p[P.PUT_CHUNK_REQ.size:]
        if blob not in P.UPLOAD_BLOBS:
            raise DeviceFault(P.E_BAD_CHUNK, f"blob {blob} cannot be uploaded")
        if total > accel_caps()["buffers"]["staging_bytes"]:
            raise DeviceFault(P.E_TOO_LARGE, f"blob of {total} bytes exceeds the staging buffer")
        buf = self.staging.get(blob)
        if offset == 0 and (buf is None or len(buf) != total):
            buf = self.staging[blob] = bytearray(total)
        if buf is None or len(buf) != total or offset + len(data) > total:
            raise DeviceFault(P.E_BAD_CHUNK, f"chunk {offset}+{len(data)} does not fit blob {blob} of {total}")
        buf[offset:offset + len(data)] = data
        return P.PUT_CHUNK_RSP.pack(blob, offset, len(data))

    def _blob(self, blob, total, crc) -> bytes:
        buf = self.staging.get(blob)
        if buf is None or len(buf) != total or crc32(buf) != crc:
            raise DeviceFault(P.E_BLOB_CRC, f"blob {blob}: staged bytes do not match length {total} / crc")
        return bytes(buf)

    def _commit(self, p):
        _s, blob, total, crc = self._unpack(P.COMMIT_REQ, p)
        data = self._blob(blob, total, crc)
        if blob == P.BLOB_MODEL:
            self._load_model(data)
        elif blob == P.BLOB_STATE:
            self._load_state(data)
        else:
            raise DeviceFault(P.E_BAD_CHUNK, f"blob {blob} cannot be committed")
        return P.COMMIT_RSP.pack(blob, self.step)

    def _load_model(self, data):
        try:
            model, trainable, opt, loss = _from_descriptor(decode_model_descriptor(data))
        except Exception as exc:  # noqa: BLE001
            raise DeviceFault(P.E_BAD_DESCRIPTOR, f"unreadable descriptor: {exc}") from None
        bad = sorted({n.op for n in model.nodes} - set(SUPPORTED_OPS))
        if bad:
            raise DeviceFault(P.E_BAD_DESCRIPTOR, f"unsupported ops {', '.join(bad)}")
        eng = make_hosted_engine(self.engine_name)
        eng.load(model, trainable, opt, loss)
        self.engine, self.model, self.params_ready, self.step = eng, model, False, 0
        self.accel = AccelModel(model, trainable, elem_bytes=2 if self.fmt == "bf16" else 4)

    def _load_state(self, data):
        if self.engine is None:
            raise DeviceFault(P.E_NO_MODEL, "no model loaded in this session")
        try:
            params, opt, step = tensor_set_to_state(data)
        except Exception as exc:  # noqa: BLE001
            raise DeviceFault(P.E_BAD_STATE, f"unreadable tensor set: {exc}") from None
        if not self.params_ready and set(params) != set(self.model.params):
            missing = sorted(set(self.model.params) - set(params))[:5]
            raise DeviceFault(P.E_BAD_STATE, f"the first state must hold every parameter; missing {missing}")
        try:
            if self.fmt == "bf16":
                params = {k: round_bf16(v) for k, v in params.items()}
            self.engine.set_params(params)
            if opt is not None:
                self.engine.set_optimizer_state(self._round_opt(opt))
        except (KeyError, ValueError) as exc:
            raise DeviceFault(P.E_BAD_STATE, str(exc)) from None
        self.params_ready = True
        if step is not None:
            self.step = int(step)

    def _round_opt(self, opt):
        if self.fmt != "bf16":
            return opt
        return {k: ({n: round_bf16(a) for n, a in v.items()} if isinstance(v, dict) else v) for k, v in opt.items()}

    def _batch(self, total, crc, need_y):
        if self.engine is None or not self.params_ready:
            raise DeviceFault(P.E_NO_MODEL, "no model and weights loaded in this session")
        try:
            x, y = decode_batch(self._blob(P.BLOB_BATCH, total, crc))
        except DeviceFault:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DeviceFault(P.E_BAD_BATCH, f"unreadable batch: {exc}") from None
        want = self.model.input_shape[1:]
        if x.ndim != len(self.model.input_shape) or any(w is not None and w != s for w, s in zip(want, x.shape[1:])):
            raise DeviceFault(P.E_BAD_BATCH, f"input shape {x.shape} does not fit {self.model.input_shape}")
        if need_y and (y is None or len(y) != len(x)):
            raise DeviceFault(P.E_BAD_BATCH, "labels missing or not one per sample")
        return (round_bf16(x) if self.fmt == "bf16" else x), y

    def _train_step(self, p):
        _s, step, total, crc = self._unpack(P.TRAIN_STEP_REQ, p)
        if self.engine is None or not self.params_ready:
            raise DeviceFault(P.E_NO_MODEL, "no model and weights loaded in this session")
        if step != self.step:
            raise DeviceFault(P.E_STEP, f"step {step} requested, the device is at step {self.step}")
        x, y = self._batch(total, crc, True)
        analytic = self.accel.before_step(self.engine, x, y)   # None when the engine counts in its kernels
        r = self.engine.train_step(x, y)
        try:   # the step has run: a counting problem must not turn it into an error (the host would retry)
            counts = analytic if analytic is not None else self.accel.kernel_step(self.engine)
            cycles = self.accel.account(counts)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
            self.accel.account_error(exc)
            cycles = 0
        if self.fmt == "bf16":
            self.engine.set_params({k: round_bf16(v) for k, v in self.engine.get_params().items()})
            self.engine.set_optimizer_state(self._round_opt(self.engine.optimizer_state()))
        self.step += 1
        self.session_steps += 1
        ph = {k: float(r.phase_seconds.get(k, 0.0)) for k in ("fp", "bp", "wg", "update")}
        for k, v in ph.items():
            self.step_seconds[k] += v
        return P.TRAIN_STEP_RSP.pack(step, float(r.loss), int(r.correct), int(r.batch),
                                     ph["fp"], ph["bp"], ph["wg"], ph["update"], cycles)

    def _set_result(self, data: bytes, loss: float = 0.0) -> bytes:
        self.result = data
        return P.RESULT_RSP.pack(loss, len(data), crc32(data))

    def _predict(self, p):
        _s, total, crc = self._unpack(P.BATCH_REQ, p)
        x, _ = self._batch(total, crc, False)
        return self._set_result(encode_tensor_set({"logits": self.engine.predict(x)}))

    def _loss_grads(self, p):
        _s, total, crc = self._unpack(P.BATCH_REQ, p)
        x, y = self._batch(total, crc, True)
        loss, grads = self.engine.loss_and_grads(x, y)
        return self._set_result(encode_tensor_set(grads), float(loss))

    def _read_state(self, p):
        _s, what = self._unpack(P.READ_STATE_REQ, p)
        if self.engine is None or not self.params_ready:
            raise DeviceFault(P.E_NO_MODEL, "no model and weights loaded in this session")
        if what != P.STATE_ALL:
            raise DeviceFault(P.E_BAD_PAYLOAD, f"unknown state selector {what}")
        return self._set_result(state_to_tensor_set(self.engine.get_params(), self.engine.optimizer_state(),
                                                    self.step))

    def _get_chunk(self, p):
        _s, blob, offset, max_len = self._unpack(P.GET_CHUNK_REQ, p)
        if blob != P.BLOB_RESULT or self.result is None:
            raise DeviceFault(P.E_NO_RESULT, "no result to read")
        if offset > len(self.result):
            raise DeviceFault(P.E_BAD_CHUNK, f"offset {offset} beyond result of {len(self.result)}")
        n = min(max_len, self.max_payload - P.GET_CHUNK_RSP.size, len(self.result) - offset)
        return P.GET_CHUNK_RSP.pack(offset, len(self.result)) + self.result[offset:offset + n]

    def counters(self) -> dict:
        hosted = {}
        if self.engine is not None:
            try:
                hosted = self.engine.counters()
            except Exception as exc:  # noqa: BLE001
                hosted = {"error": str(exc)}
        return {"engine": self.engine_name, "format": self.fmt, "session_id": self.session,
                "boots": self.boots, "step": self.step, "session_steps": self.session_steps,
                "link": {**self.link, "resyncs": self.decoder.stats.resyncs,
                         "idle_resets": self.decoder.stats.idle_resets},
                "engine_seconds": dict(self.step_seconds),
                "accelerator": self.accel.report() if self.accel else None,
                "hosted_engine_counters": _plain(hosted),
                "link_faults": self.fault_summary() if self.fault_summary else None}

    def _read_counters(self, p):
        return self._set_result(json.dumps(self.counters(), separators=(",", ":")).encode())


def _from_descriptor(d: dict):
    """(Model with zero parameters, trainable names, OptimizerConfig, loss) of a decoded MODEL descriptor."""
    from ..runtime.ir import Model, Node
    from ..runtime.optim import OptimizerConfig

    tup = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731
    nodes = [Node(name=n["name"], op=n["op"], inputs=list(n["inputs"]), output=n["output"],
                  params=dict(n["params"]), attrs={k: tup(v) for k, v in n["attrs"].items()},
                  onnx_op=n.get("onnx_op", "")) for n in d["nodes"]]
    params = {p["name"]: np.zeros(p["shape"], np.float32) for p in d["params"]}
    model = Model(nodes=nodes, params=params, input_name=d["input_name"],
                  input_shape=tuple(d["input_shape"]), output_name=d["output_name"], source="device")
    opt = dict(d["optimizer"])
    if "betas" in opt:
        opt["betas"] = tuple(opt["betas"])
    return model, list(d["trainable"]), OptimizerConfig(**opt), d["loss"]


def _plain(v):
    """Counters as JSON-safe values."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v
