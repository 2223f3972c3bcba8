"""The engine seam: the only interface the trainer talks to.

An engine holds one model at step granularity so a device can keep weights and
optimizer state resident. The dense engine is the reference every other engine
must equal (up to float summation order).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, Optional, Tuple

import numpy as np

from ..losses import loss_and_grad, count_correct
from ..optim import OptimizerConfig, make_optimizer


@dataclass
class StepResult:
    """Outcome of one training step: mean loss, number correct, batch size."""

    loss: float
    correct: int
    batch: int
    phase_seconds: Dict[str, float] = field(default_factory=dict)


class Engine:
    """Base class. Subclasses implement `_forward_backward` and `predict`.

    Contract:
      load(model, trainable, optimizer, loss) must be called first;
      loss_and_grads(x, y) -> (loss, {initializer_name: grad}) with grads in
      the initializer's ONNX shape, for the trainable parameters only;
      train_step(x, y) computes grads and applies one optimizer update;
      get_params()/set_params() move every float initializer by name.

    Optional measurement interface (the defaults say "not measured"; callers never probe for
    attributes): `has_step_counters`, `step_counters()`, `step_operands()`, `measure_step()`,
    `link_health()`. `options` names the keyword options the constructor takes; make_engine
    refuses any other (docs/ARCHITECTURE.md, "The engine seam").
    """

    name = "base"
    grad_hook = None
    options: ClassVar[Tuple[str, ...]] = ()
    has_step_counters: ClassVar[bool] = False   # step_counters()/step_operands() report each forward+backward

    def load(self, model, trainable=None, optimizer: Optional[OptimizerConfig] = None,
             loss: str = "cross_entropy") -> None:
        """Take ownership of `model`'s parameters and prepare to train `trainable`."""
        self.model = model
        self.params = {k: np.array(v, dtype=np.float32, copy=True) for k, v in model.params.items()}
        self.trainable = list(model.trainable_names() if trainable is None else trainable)
        self.loss_name = loss
        self.optimizer = make_optimizer(optimizer or OptimizerConfig())
        self._counters: Dict[str, float] = {}
        self.grad_hook = None
        self._prepare()

    def _prepare(self) -> None:
        """Hook for engines that pre-pack weights after load/set_params."""

    # -- to implement -----------------------------------------------------
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return the logits for a batch x (NCHW, float32)."""
        raise NotImplementedError

    def _forward_backward(self, x: np.ndarray, y: np.ndarray):
        """Return (loss, grads, logits, phase_seconds)."""
        raise NotImplementedError

    # -- shared behaviour -----------------------------------------------------
    def loss_and_grads(self, x: np.ndarray, y: np.ndarray):
        """Mean loss over the batch and gradients of the trainable parameters."""
        loss, grads, _, _ = self._forward_backward(x, y)
        return loss, grads

    def train_step(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        """One forward, backward and optimizer update."""
        import time

        loss, grads, logits, phases = self._forward_backward(x, y)
        t0 = time.perf_counter()
        if self.grad_hook is not None:
            self.grad_hook(self.params, grads)
        self.optimizer.step(self.params, grads)
        self._after_update(list(grads))
        phases = dict(phases)
        phases["update"] = phases.get("update", 0.0) + time.perf_counter() - t0
        return StepResult(loss=float(loss), correct=count_correct(logits, y), batch=len(x),
                          phase_seconds=phases)

    def set_grad_hook(self, hook) -> None:
        """Install `hook(params, grads)`, called in every `train_step` between the backward pass and the
        optimizer update; it may change `grads` in place (FedProx adds its proximal term this way).
        `None` removes it. It does not touch `loss_and_grads`, which stays the plain loss's gradient."""
        self.grad_hook = hook

    def _after_update(self, names) -> None:
        """Hook: engines holding packed weights refresh them here."""

    def get_params(self) -> Dict[str, np.ndarray]:
        """Copies of every parameter, keyed by ONNX initializer name."""
        return {k: v.copy() for k, v in self.params.items()}

    def set_params(self, params: Dict[str, np.ndarray]) -> None:
        """Overwrite parameters by name (shapes must match)."""
        self._check_params(params)
        for k, v in params.items():
            self.params[k][...] = v
        self._after_update(list(params))

    def _check_params(self, params: Dict[str, np.ndarray]) -> None:
        """KeyError for a name the model does not have, ValueError for a shape that differs."""
        for k, v in params.items():
            if k not in self.model.params:
                raise KeyError(f"unknown parameter {k!r}")
            if self.model.params[k].shape != np.shape(v):
                raise ValueError(f"parameter {k!r}: shape {np.shape(v)} != {self.model.params[k].shape}")

    def optimizer_state(self) -> dict:
        """The optimizer's state (step count, moments), as plain numpy arrays."""
        return self.optimizer.state_dict()

    def set_optimizer_state(self, state: dict) -> None:
        """Restore optimizer state saved by `optimizer_state()`."""
        self.optimizer.load_state_dict(state)

    def plan_state(self) -> dict:
        """Planning choices carried from one step to the next that change a step's float rounding
        (JSON-serialisable). A checkpoint keeps them so a resumed run repeats the same bits."""
        return {}

    def set_plan_state(self, state: dict) -> None:
        """Restore what `plan_state()` returned (engines without such state ignore it)."""

    def counters(self) -> dict:
        """Engine-specific counters (MACs, bytes, ...)."""
        return dict(self._counters)

    # -- optional measurement interface ------------------------------------------------
    def step_counters(self) -> Optional[dict]:
        """MACs its kernels counted in the most recent forward+backward: {"macs_dense",
        "macs_required", "macs_executed" (each {fp, bp, wg, total}), "layers" ([{name, fp|bp|wg:
        {dense, required, executed}}]), "activation_bytes" ({dense, stored})}; None when the
        engine does not count (then `has_step_counters` is False)."""
        return None

    def step_operands(self) -> Optional[dict]:
        """{Conv/Gemm layer name: (input SparseInfo, output SparseInfo)} of the most recent forward,
        the masks the kernels used; None when the engine keeps none."""
        return None

    def measure_step(self, x: np.ndarray, y: np.ndarray) -> Optional[dict]:
        """MACs of one forward+backward on (x, y) without an update, as `step_counters()` gives
        them, plus "source" and "scope": "batch"; or, for an engine that cannot run one on demand
        (a device), the counts of its last training step with "scope": "last_step" and its
        "batch". None when the engine counts nothing (every MAC of the dense reference runs)."""
        return None

    def link_health(self) -> dict:
        """Link trouble so far (retries, resyncs, timeouts, device resets), for engines behind a link."""
        return {}

    def close(self) -> None:
        """Release resources (devices, threads)."""

    def _loss(self, logits: np.ndarray, y: np.ndarray):
        return loss_and_grad(self.loss_name, logits, y)
