"""A training session on one device: typed commands, the host's last good copy, replay on reset.

The device keeps the model, the weights and the optimizer state resident. The host keeps a
*snapshot* (the state as of step s, downloaded every `snapshot_every` steps and whenever the
caller reads the state) plus the batches of the steps run since s. When the device resets (new
session id), the session re-uploads the model and the snapshot and replays the logged batches on
the fresh device - the device lost those steps, so nothing runs twice on the same state - then
runs the command that was pending. PROTOCOL.md section 10 is the contract.

This module speaks numpy arrays and bytes only: the runtime's engine (runtime/engines/device.py)
adapts it to the engine seam.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from . import protocol as P
from .client import DeviceClient
from .codecs import decode_tensor_set, encode_batch, state_to_tensor_set, tensor_set_to_state
from .errors import DeviceError, DeviceResetLoopError, SessionChangedError, TransportClosedError
from .framing import crc32

F32 = np.float32
REPLAY_RTOL = 1e-5     # a replayed step must return its first loss (PROTOCOL.md section 10)


@dataclass
class DeviceState:
    """Parameters (by initializer name), optimizer state and step counter of the device."""

    params: Dict[str, np.ndarray]
    optimizer: Optional[dict]
    step: int

    def copy(self) -> "DeviceState":
        opt = None if self.optimizer is None else {
            k: ({n: a.copy() for n, a in v.items()} if isinstance(v, dict) else v) for k, v in self.optimizer.items()}
        return DeviceState({k: v.copy() for k, v in self.params.items()}, opt, self.step)


@dataclass
class StepReport:
    """The device's answer to one TRAIN_STEP (PROTOCOL.md section 6.3)."""

    step: int
    loss: float
    correct: int
    batch: int
    phase_seconds: Dict[str, float]
    cycles: int


# what keeping the session alive cost (PROTOCOL.md sections 10 and 12.1)
SESSION_COUNTERS = ("steps", "device_resets", "replayed_steps", "snapshots", "snapshot_bytes", "state_uploads",
                    "dense_input_bytes", "batch_bytes_up", "train_bytes_up", "modelled_cycles")


class DeviceSession:
    """One model trained on the device behind `client`; see the module docstring."""

    def __init__(self, client: DeviceClient, snapshot_every: int = 32, max_recoveries: int = 4,
                 where: str = "the device", log_tail: Optional[Callable[[], str]] = None):
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be at least 1")
        self.client, self.snapshot_every, self.max_recoveries = client, snapshot_every, max_recoveries
        self.where, self.log_tail = where, log_tail
        self.stats = dict.fromkeys(SESSION_COUNTERS, 0)
        self.step = 0
        self.descriptor: Optional[bytes] = None
        self._snap: Optional[DeviceState] = None
        self._log: List[Tuple[bytes, float]] = []     # (batch, loss) of the steps since the snapshot
        self.last_batch: Optional[int] = None

    # -- commands ----------------------------------------------------------------------
    def start(self, descriptor: bytes, state: DeviceState) -> None:
        """Load the model (a MODEL descriptor, PROTOCOL.md section 7.4) and its first state."""
        self.descriptor, self._snap, self._log, self.step = descriptor, state.copy(), [], state.step
        self._recover()

    def train_step(self, x, y) -> StepReport:
        """One training step on the device; the batch joins the replay log."""
        x = np.asarray(x, F32)
        batch = encode_batch(x, np.asarray(y), self.value_format)
        before = self.client.stats.bytes_up
        rsp = self._run(lambda: self._train_on_device(batch, self.step))
        self._count(train_bytes_up=self.client.stats.bytes_up - before, dense_input_bytes=x.nbytes,
                    batch_bytes_up=len(batch), steps=1, modelled_cycles=rsp.cycles)
        self._log.append((batch, rsp.loss))
        self.step += 1
        self.last_batch = rsp.batch
        if len(self._log) >= self.snapshot_every:
            self._run(self.snapshot)
        return rsp

    def predict(self, x) -> np.ndarray:
        """The logits of a batch (no state changes)."""
        batch = encode_batch(np.asarray(x, F32), None, self.value_format)
        _loss, blob = self._run(lambda: self._batch_command(P.PREDICT, batch))
        return decode_tensor_set(blob)[1]["logits"]

    def loss_and_grads(self, x, y) -> Tuple[float, Dict[str, np.ndarray]]:
        """Loss and gradients of the trainable parameters for a batch (no state changes)."""
        batch = encode_batch(np.asarray(x, F32), np.asarray(y), self.value_format)
        loss, blob = self._run(lambda: self._batch_command(P.LOSS_GRADS, batch))
        return float(loss), decode_tensor_set(blob)[1]

    def read_state(self) -> DeviceState:
        """The device's state now (a fresh snapshot unless none is older than the last step)."""
        if self._log or self._snap.step != self.step:
            self._run(self.snapshot)
        return self._snap.copy()

    def write_state(self, params: Optional[Dict[str, np.ndarray]] = None, optimizer: Optional[dict] = None) -> None:
        """Overwrite parameters by name and/or the optimizer state on the device, then snapshot."""
        data = state_to_tensor_set({k: np.asarray(v, F32) for k, v in (params or {}).items()}, optimizer)
        self._run(lambda: self.client.commit(P.BLOB_STATE, data))
        self._run(self.snapshot)

    def read_counters(self) -> dict:
        """The device's counters (PROTOCOL.md section 12)."""
        def read():
            _loss, blob = self.client.result_request(P.READ_COUNTERS, P.SESSION.pack(self.client.session))
            return json.loads(blob.decode())

        return self._run(read)

    def snapshot(self) -> None:
        """Download the device state: the new last good copy; the replay log empties."""
        _loss, blob = self.client.result_request(P.READ_STATE, P.READ_STATE_REQ.pack(self.client.session,
                                                                                   P.STATE_ALL))
        params, opt, step = tensor_set_to_state(blob)
        if step != self.step:
            raise DeviceError(f"device state is at step {step}, the host expected {self.step}")
        self._snap = DeviceState(params, opt, step)
        self._log = []
        self._count(snapshots=1, snapshot_bytes=len(blob))

    @property
    def value_format(self) -> str:
        """How batch values cross the link: the device's numeric format (fp32 or bf16)."""
        caps = self.client.info.get("caps", {}) if self.client.info else {}
        return caps.get("format", "fp32")

    # -- the wire side of the commands ----------------------------------------------------
    def _train_on_device(self, batch: bytes, step: int) -> StepReport:
        self.client.put_blob(P.BLOB_BATCH, batch)
        rsp = self.client.request(P.TRAIN_STEP, P.TRAIN_STEP_REQ.pack(self.client.session, step, len(batch),
                                                                     crc32(batch)))
        done, loss, correct, nb, fp, bp, wg, upd, cycles = P.TRAIN_STEP_RSP.unpack_from(rsp)
        if done != step:
            raise DeviceError(f"device answered step {done} for step {step}")
        return StepReport(done, loss, int(correct), int(nb), {"fp": fp, "bp": bp, "wg": wg, "update": upd},
                          int(cycles))

    def _batch_command(self, ftype: int, batch: bytes):
        self.client.put_blob(P.BLOB_BATCH, batch)
        return self.client.result_request(ftype, P.BATCH_REQ.pack(self.client.session, len(batch), crc32(batch)))

    # -- recovery ---------------------------------------------------------------------
    def _run(self, op):
        """Run `op`; on a device reset restore the device and run it again (bounded)."""
        failures = 0
        while True:
            try:
                return op()
            except SessionChangedError:
                failures += 1
                self._count(device_resets=1)
                if failures > self.max_recoveries:
                    raise DeviceResetLoopError(
                        f"the device at {self.where} reset {failures} times without progress; "
                        f"last good state is step {self._snap.step}") from None
                self._recover()

    def _recover(self) -> None:
        """HELLO, upload the model and the last good state, replay the steps since then."""
        failures = 0
        while True:
            try:
                self._restore()
                return
            except SessionChangedError:
                failures += 1
                self._count(device_resets=1)
                if failures > self.max_recoveries:
                    raise DeviceResetLoopError(f"the device at {self.where} kept resetting during recovery") from None
            except TransportClosedError as exc:
                tail = self.log_tail() if self.log_tail else ""
                raise DeviceError(f"lost the device at {self.where}: {exc}"
                                  + (f" (emulator log: {tail})" if tail else "")) from None

    def _restore(self) -> None:
        self.client.hello()
        self.client.commit(P.BLOB_MODEL, self.descriptor)
        snap = self._snap
        dev_step = self.client.commit(P.BLOB_STATE, state_to_tensor_set(snap.params, snap.optimizer, snap.step))
        self._count(state_uploads=1)
        if dev_step != snap.step:
            raise DeviceError(f"device took state of step {dev_step}, sent {snap.step}")
        for i, (batch, loss) in enumerate(self._log):
            rsp = self._train_on_device(batch, snap.step + i)
            diff = abs(rsp.loss - loss)
            self._count(replayed_steps=1)
            self.stats["replay_loss_max_diff"] = max(self.stats.get("replay_loss_max_diff", 0.0), diff)
            if not diff <= REPLAY_RTOL * max(1.0, abs(loss)):
                raise DeviceError(f"replayed step {snap.step + i} gave loss {rsp.loss!r}, "
                                  f"originally {loss!r}: the device is not deterministic")
        if self._log or self.value_format == "bf16":
            self.snapshot()      # bf16: the device rounded what it was sent

    def _count(self, **amounts) -> None:
        for k, v in amounts.items():
            self.stats[k] += v

    # -- what the device reports ---------------------------------------------------------
    def link_counters(self) -> dict:
        """Host-side link and session counters (PROTOCOL.md section 12.1)."""
        link = self.client.link_stats()
        st = self.stats
        steps = max(1, st["steps"])
        link.update(st)
        link["bytes_up_per_step"] = st["train_bytes_up"] / steps
        link["dense_input_bytes_per_step"] = st["dense_input_bytes"] / steps
        link["up_vs_dense_input"] = st["train_bytes_up"] / st["dense_input_bytes"] if st["dense_input_bytes"] else None
        return link

    def link_health(self) -> dict:
        """Link trouble so far (no I/O): retries, resyncs, timeouts, device resets."""
        s = self.client.link_stats()
        return {"retries": s["retries"], "resyncs": s["resyncs"], "timeouts": s["timeouts"],
                "device_resets": self.stats["device_resets"]}

    def last_step_macs(self) -> Optional[dict]:
        """The device's own counts of its most recent training step (PROTOCOL.md section 12,
        `accelerator.last_step`): {"dense"|"required"|"executed": {fp, bp, wg, total}, "batch",
        "layers" ([{name, fp|bp|wg: {dense, required, executed}, act_bytes}], when the device reports
        them), "activation_bytes" (of that step; from a device without it, the session's average per
        step)}; None when it reports none."""
        acc = self.read_counters().get("accelerator") or {}
        phases = (acc.get("last_step") or {}).get("phases")
        if not phases:
            return None
        out: dict = {}
        for kind in ("dense", "required", "executed"):
            per = {ph: int(phases[ph][f"{kind}_macs"]) for ph in ("fp", "bp", "wg")}
            per["total"] = sum(per.values())
            out[kind] = per
        out["batch"] = self.last_batch
        out["layers"] = [{"name": lay["name"], **{ph: {kind: int(lay[ph][f"{kind}_macs"])
                                                       for kind in ("dense", "required", "executed")}
                                                  for ph in ("fp", "bp", "wg")},
                          **({"act_bytes": lay["act_bytes"]} if lay.get("act_bytes") else {})}
                         for lay in acc["last_step"].get("layers") or []]
        if acc["last_step"].get("activation_store"):        # the same step as the MACs
            out["activation_bytes"] = dict(acc["last_step"]["activation_store"])
        else:                                               # a board that reports session totals only
            totals = acc.get("totals") or {}
            store, steps = totals.get("activation_store_bytes"), totals.get("steps")
            if store and steps:
                out["activation_bytes"] = {k: int(round(v / steps)) for k, v in store.items()}
        return out
