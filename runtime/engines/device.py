"""The `device` engine: training steps run on the accelerator (a board or the emulator).

A thin adapter of the engine seam onto firmware_bridge.session.DeviceSession, which owns the
protocol, the last good copy and the replay after a device reset (PROTOCOL.md section 10).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from .base import Engine, StepResult
from ..errors import UsageError
from ..optim import OptimizerConfig, make_optimizer
from ...firmware_bridge.client import (DEFAULT_GIVE_UP, DEFAULT_MAX_TIMEOUT, DEFAULT_RETRIES, DEFAULT_TIMEOUT,
                                       DeviceClient)
from ...firmware_bridge.codecs import encode_model_descriptor
from ...firmware_bridge.emulator_process import EmulatorProcess
from ...firmware_bridge.errors import DeviceError
from ...firmware_bridge.session import DeviceSession, DeviceState
from ...firmware_bridge.transport import SerialTransport

F32 = np.float32


class DeviceEngine(Engine):
    """Engine whose steps run on the device at `device` (pyserial URL, pty path, or "emulator",
    which spawns one; fault_rate, fmt, reset_after, seed and emulator_engine configure it)."""

    name = "device"
    options = ("device", "baudrate", "timeout", "retries", "max_timeout", "give_up_after", "snapshot_every",
               "max_recoveries", "fault_rate", "fmt", "reset_after", "seed", "emulator_engine", "max_payload",
               "timeout_scale")

    def __init__(self, device: str = "emulator", baudrate: int = 921600, timeout: float = DEFAULT_TIMEOUT,
                 retries: Optional[int] = DEFAULT_RETRIES, max_timeout: float = DEFAULT_MAX_TIMEOUT,
                 give_up_after: float = DEFAULT_GIVE_UP, snapshot_every: int = 32,
                 max_recoveries: int = 4, fault_rate: float = 0.0, fmt: str = "fp32",
                 reset_after: Optional[int] = None, seed: int = 0, emulator_engine: Optional[str] = None,
                 max_payload: int = 4096, timeout_scale: Optional[float] = None):
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be at least 1")
        self.device, self.emulator, self.transport = device, None, None
        if device in (None, "", "emulator"):
            self.emulator = EmulatorProcess(fault_rate=fault_rate, fmt=fmt, reset_after=reset_after,
                                            seed=seed, engine=emulator_engine)
        self.url = self.emulator.path if self.emulator else device
        self.transport = SerialTransport(self.url, baudrate=baudrate)
        try:
            self.transport.open()
        except DeviceError:
            self.close()
            raise
        self.client = DeviceClient(self.transport, timeout=timeout, retries=retries, max_timeout=max_timeout,
                                   baudrate=baudrate, max_payload=max_payload, give_up_after=give_up_after,
                                   timeout_scale=timeout_scale)
        self.session = DeviceSession(self.client, snapshot_every, max_recoveries, where=self.url,
                                     log_tail=self.emulator.log_tail if self.emulator else None)
        self.model = None
        self._device_counters: dict = {}

    # -- engine seam ---------------------------------------------------------------
    def load(self, model, trainable=None, optimizer: Optional[OptimizerConfig] = None,
             loss: str = "cross_entropy") -> None:
        self.model = model
        self.trainable = list(model.trainable_names() if trainable is None else trainable)
        self.opt_cfg = optimizer or OptimizerConfig()
        self.loss_name = loss
        state = DeviceState({k: np.array(v, F32) for k, v in model.params.items()},
                            make_optimizer(self.opt_cfg).state_dict(), 0)
        self.session.start(encode_model_descriptor(model, self.trainable, self.opt_cfg, loss), state)

    def train_step(self, x, y) -> StepResult:
        r = self.session.train_step(x, y)
        return StepResult(loss=float(r.loss), correct=r.correct, batch=r.batch, phase_seconds=r.phase_seconds)

    def set_grad_hook(self, hook) -> None:
        """Refused: the device applies the optimizer update itself, so the host never holds the
        gradients between backward and update (FedProx's proximal term needs exactly that)."""
        if hook is not None:
            raise UsageError("the device engine runs the optimizer update on the device, so a gradient hook "
                             "(FedProx's proximal term) cannot be applied; use FedAvg, or the native or dense engine")

    def predict(self, x) -> np.ndarray:
        return self.session.predict(x)

    def loss_and_grads(self, x, y):
        return self.session.loss_and_grads(x, y)

    def get_params(self) -> Dict[str, np.ndarray]:
        return self.session.read_state().params

    def optimizer_state(self) -> dict:
        return self.session.read_state().optimizer

    def set_params(self, params: Dict[str, np.ndarray]) -> None:
        self._check_params(params)
        self.session.write_state(params=params)

    def set_optimizer_state(self, state: dict) -> None:
        self.session.write_state(optimizer=state)

    def counters(self) -> dict:
        """{"link": host-side link and session counters, "device": the device's own counters}."""
        try:
            self._device_counters = self.session.read_counters()
        except DeviceError as exc:
            self._device_counters = {**self._device_counters, "error": str(exc)}
        return {"link": self.session.link_counters(), "device": self._device_counters}

    def link_health(self) -> dict:
        return self.session.link_health()

    def measure_step(self, x, y) -> Optional[dict]:
        """The device cannot run a step that does not train: the counts of its last training step."""
        macs = self.session.last_step_macs()
        if macs is None:
            return None
        return {"macs_dense": macs["dense"], "macs_required": macs["required"], "macs_executed": macs["executed"],
                "layers": macs.get("layers", []), "activation_bytes": macs.get("activation_bytes"),
                "batch": macs["batch"], "scope": "last_step",
                "source": "device counters (accelerator.last_step: the last training step)"}

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.emulator is not None:
            self.emulator.close()
            self.emulator = None
