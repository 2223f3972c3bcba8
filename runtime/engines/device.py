"""The `device` engine: training steps run on the accelerator (a board or the emulator).

Weights and optimizer state stay resident on the device. The host keeps a
*snapshot* (state as of step s, downloaded every `snapshot_every` steps and
whenever the caller reads the parameters) plus the batches of the steps since
s. When the device resets (new session id), the host re-uploads the model and
the snapshot and replays the logged batches on the fresh device - the device
lost those steps, so nothing runs twice on the same state - then runs the step
that was pending. See firmware_bridge/PROTOCOL.md section 7.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

import numpy as np

from .base import Engine, StepResult
from ..optim import OptimizerConfig, make_optimizer
from ...firmware_bridge import protocol as P
from ...firmware_bridge.client import (DEFAULT_GIVE_UP, DEFAULT_MAX_TIMEOUT, DEFAULT_RETRIES, DEFAULT_TIMEOUT,
                                       DeviceClient)
from ...firmware_bridge.codecs import (decode_tensor_set, encode_batch, encode_model_descriptor,
                                       state_to_tensor_set, tensor_set_to_state)
from ...firmware_bridge.errors import (DeviceError, DeviceResetLoopError, SessionChangedError,
                                       TransportClosedError)
from ...firmware_bridge.transport import SerialTransport

F32 = np.float32


class EmulatorProcess:
    """`python -m edgetune.firmware_bridge.emulator --pty ...` as a child; path read from stdout."""

    def __init__(self, fault_rate=0.0, fmt="fp32", reset_after=None, seed=0, engine=None,
                 tcp: Optional[str] = None, start_timeout: float = 30.0):
        cmd = [sys.executable, "-m", "edgetune.firmware_bridge.emulator", "--exit-with-parent",
               "--fault-rate", str(fault_rate), "--format", fmt, "--seed", str(seed)]
        cmd += ["--tcp", tcp] if tcp else ["--pty"]
        if reset_after:
            cmd += ["--reset-after", str(int(reset_after))]
        if engine:
            cmd += ["--engine", engine]
        self.log = tempfile.NamedTemporaryFile(prefix="edgetune-emulator-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        import select

        r, _, _ = select.select([self.proc.stdout], [], [], start_timeout)
        line = self.proc.stdout.readline().decode().strip() if r else ""
        if not line:
            self.close()
            raise DeviceError(f"the emulator did not start within {start_timeout:.0f} s: {self.log_tail()}")
        self.path = line

    def log_tail(self, n: int = 3) -> str:
        try:
            with open(self.log.name, errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-n:])
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


class DeviceEngine(Engine):
    """Engine whose steps run on the device at `device` (pyserial URL, pty path, or "emulator")."""

    name = "device"

    def __init__(self, device: str = "emulator", baudrate: int = 921600, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, max_timeout: float = DEFAULT_MAX_TIMEOUT,
                 give_up_after: float = DEFAULT_GIVE_UP, snapshot_every: int = 32,
                 max_recoveries: int = 4, fault_rate: float = 0.0, fmt: str = "fp32",
                 reset_after: Optional[int] = None, seed: int = 0, emulator_engine: Optional[str] = None,
                 max_payload: int = 4096, timeout_scale: Optional[float] = None, **_ignored):
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be at least 1")
        self.device, self.snapshot_every, self.max_recoveries = device, snapshot_every, max_recoveries
        self.emulator: Optional[EmulatorProcess] = None
        if device in (None, "", "emulator"):
            self.emulator = EmulatorProcess(fault_rate=fault_rate, fmt=fmt, reset_after=reset_after,
                                            seed=seed, engine=emulator_engine)
            url = self.emulator.path
        else:
            url = device
        self.url = url
        self.transport = SerialTransport(url, baudrate=baudrate)
        try:
            self.transport.open()
        except DeviceError:
            self.close()
            raise
        self.client = DeviceClient(self.transport, timeout=timeout, retries=retries, max_timeout=max_timeout,
                                   baudrate=baudrate, max_payload=max_payload, give_up_after=give_up_after,
                                   timeout_scale=timeout_scale)
        self.model = None
        self.n = {"steps": 0, "device_resets": 0, "replayed_steps": 0, "snapshots": 0, "snapshot_bytes": 0,
                  "state_uploads": 0, "dense_input_bytes": 0, "batch_bytes_up": 0, "train_bytes_up": 0,
                  "modelled_cycles": 0}
        self._device_counters: dict = {}

    # -- engine seam ---------------------------------------------------------------
    def load(self, model, trainable=None, optimizer: Optional[OptimizerConfig] = None,
             loss: str = "cross_entropy") -> None:
        self.model = model
        self.trainable = list(model.trainable_names() if trainable is None else trainable)
        self.opt_cfg = optimizer or OptimizerConfig()
        self.loss_name = loss
        self.descriptor = encode_model_descriptor(model, self.trainable, self.opt_cfg, loss)
        self.step = 0
        self._snap = {"params": {k: np.array(v, F32) for k, v in model.params.items()},
                      "opt": make_optimizer(self.opt_cfg).state_dict(), "step": 0}
        self._log: List[tuple] = []
        self._recover()

    def train_step(self, x, y) -> StepResult:
        x = np.asarray(x, F32)
        y = np.asarray(y)
        batch = encode_batch(x, y, self._link_format())
        before = self.client.stats.bytes_up
        rsp = self._run(lambda: self._train_on_device(batch, self.step))
        self.n["train_bytes_up"] += self.client.stats.bytes_up - before
        self.n["dense_input_bytes"] += x.nbytes
        self.n["batch_bytes_up"] += len(batch)
        step, loss, correct, nb, fp, bp, wg, upd, cycles = rsp
        self._last_batch = int(nb)
        self._log.append((batch, loss))
        self.step += 1
        self.n["steps"] += 1
        self.n["modelled_cycles"] += cycles
        if len(self._log) >= self.snapshot_every:
            self._run(self._snapshot)
        return StepResult(loss=float(loss), correct=int(correct), batch=int(nb),
                          phase_seconds={"fp": fp, "bp": bp, "wg": wg, "update": upd})

    def set_grad_hook(self, hook) -> None:
        """Refused: the device applies the optimizer update itself, so the host never holds the
        gradients between backward and update (FedProx's proximal term needs exactly that)."""
        if hook is not None:
            from ..errors import UsageError

            raise UsageError("the device engine runs the optimizer update on the device, so a gradient hook "
                             "(FedProx's proximal term) cannot be applied; use FedAvg, or the native or dense engine")

    def predict(self, x) -> np.ndarray:
        batch = encode_batch(np.asarray(x, F32), None, self._link_format())
        _loss, blob = self._run(lambda: self._batch_command(P.PREDICT, batch))
        return decode_tensor_set(blob)[1]["logits"]

    def loss_and_grads(self, x, y):
        batch = encode_batch(np.asarray(x, F32), np.asarray(y), self._link_format())
        loss, blob = self._run(lambda: self._batch_command(P.LOSS_GRADS, batch))
        return float(loss), decode_tensor_set(blob)[1]

    def get_params(self) -> Dict[str, np.ndarray]:
        self._fresh_snapshot()
        return {k: v.copy() for k, v in self._snap["params"].items()}

    def optimizer_state(self) -> dict:
        self._fresh_snapshot()
        return _copy_state(self._snap["opt"])

    def _fresh_snapshot(self) -> None:
        """The last good copy equals the device state when no step ran since it was taken."""
        if self._log or self._snap["step"] != self.step:
            self._run(self._snapshot)

    def set_params(self, params: Dict[str, np.ndarray]) -> None:
        for k, v in params.items():
            if k not in self.model.params:
                raise KeyError(f"unknown parameter {k!r}")
            if self.model.params[k].shape != np.shape(v):
                raise ValueError(f"parameter {k!r}: shape {np.shape(v)} != {self.model.params[k].shape}")
        data = state_to_tensor_set({k: np.asarray(v, F32) for k, v in params.items()})
        self._run(lambda: self.client.commit(P.BLOB_STATE, data))
        self._run(self._snapshot)

    def set_optimizer_state(self, state: dict) -> None:
        data = state_to_tensor_set({}, state)
        self._run(lambda: self.client.commit(P.BLOB_STATE, data))
        self._run(self._snapshot)

    def counters(self) -> dict:
        link = self.client.link_stats()
        steps = max(1, self.n["steps"])
        link.update(self.n)
        link["bytes_up_per_step"] = self.n["train_bytes_up"] / steps
        link["dense_input_bytes_per_step"] = self.n["dense_input_bytes"] / steps
        link["up_vs_dense_input"] = (self.n["train_bytes_up"] / self.n["dense_input_bytes"]
                                     if self.n["dense_input_bytes"] else None)
        try:
            self._device_counters = self._run(self._read_counters)
        except DeviceError as exc:
            self._device_counters = {**self._device_counters, "error": str(exc)}
        return {"link": link, "device": self._device_counters}

    def link_health(self) -> dict:
        """Host-side link trouble so far (no I/O): retries, resyncs, timeouts, device resets."""
        s = self.client.link_stats()
        return {"retries": s["retries"], "resyncs": s["resyncs"], "timeouts": s["timeouts"],
                "device_resets": self.n["device_resets"]}

    def device_step_macs(self) -> Optional[dict]:
        """The device's own counts for its most recent training step (PROTOCOL.md section 12,
        `accelerator.last_step`): {"dense"|"required"|"executed": {fp, bp, wg, total}, "batch",
        "activation_bytes" (per step, averaged over the session)}; None when it reports none."""
        counters = self._run(self._read_counters)
        acc = counters.get("accelerator") or {}
        phases = (acc.get("last_step") or {}).get("phases")
        if not phases:
            return None
        out: dict = {}
        for kind in ("dense", "required", "executed"):
            per = {ph: int(phases[ph][f"{kind}_macs"]) for ph in ("fp", "bp", "wg")}
            per["total"] = sum(per.values())
            out[kind] = per
        out["batch"] = getattr(self, "_last_batch", None)
        totals = acc.get("totals") or {}
        store, steps = totals.get("activation_store_bytes"), totals.get("steps")
        if store and steps:
            out["activation_bytes"] = {k: int(round(v / steps)) for k, v in store.items()}
        return out

    def close(self) -> None:
        t = getattr(self, "transport", None)
        if t is not None:
            t.close()
        if self.emulator is not None:
            self.emulator.close()
            self.emulator = None

    # -- device operations ---------------------------------------------------------
    def _link_format(self) -> str:
        return self.client.info.get("caps", {}).get("format", "fp32") if self.client.info else "fp32"

    def _train_on_device(self, batch: bytes, step: int):
        self.client.put_blob(P.BLOB_BATCH, batch)
        rsp = self.client.request(P.TRAIN_STEP, P.TRAIN_STEP_REQ.pack(self.client.session, step, len(batch),
                                                                     _crc(batch)))
        out = P.TRAIN_STEP_RSP.unpack_from(rsp)
        if out[0] != step:
            raise DeviceError(f"device answered step {out[0]} for step {step}")
        return out

    def _batch_command(self, ftype: int, batch: bytes):
        self.client.put_blob(P.BLOB_BATCH, batch)
        return self.client.result_request(ftype, P.BATCH_REQ.pack(self.client.session, len(batch), _crc(batch)))

    def _read_state(self):
        _loss, blob = self.client.result_request(P.READ_STATE, P.READ_STATE_REQ.pack(self.client.session,
                                                                                    P.STATE_ALL))
        return blob

    def _read_counters(self) -> dict:
        import json

        _loss, blob = self.client.result_request(P.READ_COUNTERS, P.SESSION.pack(self.client.session))
        return json.loads(blob.decode())

    def _snapshot(self) -> None:
        """Download the device state: the new host-side last good copy; the replay log empties."""
        blob = self._read_state()
        params, opt, step = tensor_set_to_state(blob)
        if step != self.step:
            raise DeviceError(f"device state is at step {step}, the host expected {self.step}")
        self._snap = {"params": params, "opt": opt, "step": step}
        self._log = []
        self.n["snapshots"] += 1
        self.n["snapshot_bytes"] += len(blob)

    def _run(self, op):
        """Run `op`; on a device reset restore the device and run it again (bounded)."""
        failures = 0
        while True:
            try:
                return op()
            except SessionChangedError:
                failures += 1
                self.n["device_resets"] += 1
                if failures > self.max_recoveries:
                    raise DeviceResetLoopError(
                        f"the device at {self.url} reset {failures} times without progress; "
                        f"last good state is step {self._snap['step']}") from None
                self._recover()

    def _recover(self) -> None:
        """HELLO, upload the model and the last good state, replay the steps since then."""
        failures = 0
        while True:
            try:
                self.client.hello()
                self.client.commit(P.BLOB_MODEL, self.descriptor)
                snap = self._snap
                data = state_to_tensor_set(snap["params"], snap["opt"], snap["step"])
                dev_step = self.client.commit(P.BLOB_STATE, data)
                self.n["state_uploads"] += 1
                if dev_step != snap["step"]:
                    raise DeviceError(f"device took state of step {dev_step}, sent {snap['step']}")
                for i, (batch, loss) in enumerate(self._log):
                    rsp = self._train_on_device(batch, snap["step"] + i)
                    self.n["replayed_steps"] += 1
                    diff = abs(rsp[1] - loss)
                    self.n["replay_loss_max_diff"] = max(self.n.get("replay_loss_max_diff", 0.0), diff)
                    if not diff <= 1e-5 * max(1.0, abs(loss)):
                        raise DeviceError(f"replayed step {snap['step'] + i} gave loss {rsp[1]!r}, "
                                          f"originally {loss!r}: the device is not deterministic")
                if self._log or self._link_format() == "bf16":
                    self._snapshot()      # bf16: the device rounded what it was sent
                return
            except SessionChangedError:
                failures += 1
                self.n["device_resets"] += 1
                if failures > self.max_recoveries:
                    raise DeviceResetLoopError(f"the device at {self.url} kept resetting during recovery") from None
            except TransportClosedError as exc:
                raise DeviceError(f"lost the device at {self.url}: {exc}"
                                  + (f" (emulator log: {self.emulator.log_tail()})" if self.emulator else "")) from None


def _crc(b: bytes) -> int:
    from ...firmware_bridge.framing import crc32

    return crc32(b)


def _copy_state(state: dict) -> dict:
    return {k: ({n: a.copy() for n, a in v.items()} if isinstance(v, dict) else v) for k, v in state.items()}



