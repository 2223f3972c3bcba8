"""SGD (momentum, weight decay) and AdamW with torch's update rules, and the learning-rate schedule.

The schedule is part of the optimizer configuration and a function of the optimizer's own
step counter, so every engine applies it identically: the device engine sends the
configuration with the model and the device computes each step's rate itself (resets and
replays included), with no per-step message.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from typing import Dict, Optional

import numpy as np

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine")


@dataclass
class OptimizerConfig:
    """Hyper-parameters; weight_decay None means the optimizer's default."""

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: Optional[float] = None
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "constant"
    total_steps: int = 0          # cosine: steps over which the rate decays to min_lr
    min_lr: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def lr_at(self, t: int) -> float:
        """The learning rate of optimizer step t (1-based).

        cosine is torch's CosineAnnealingLR stepped once per optimizer step with
        T_max = total_steps and eta_min = min_lr, in closed form:
        min_lr + (lr - min_lr) * (1 + cos(pi * (t - 1) / total_steps)) / 2, held at min_lr after."""
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "cosine":
            if self.total_steps < 1:
                raise ValueError("the cosine schedule needs total_steps >= 1")
            done = min(t - 1, self.total_steps)
            return self.min_lr + (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * done / self.total_steps)) / 2
        raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")


class SGD:
    """torch.optim.SGD: buf = m*buf + (g + wd*p), p -= lr*buf (buf = g on the first step)."""

    def __init__(self, cfg: OptimizerConfig):
        self.cfg = cfg
        self.wd = 0.0 if cfg.weight_decay is None else cfg.weight_decay
        self.t = 0
        self.buf: Dict[str, np.ndarray] = {}

    def step(self, params: Dict[str, np.ndarray], grads: Dict[str, np.ndarray]) -> None:
        self.t += 1
        lr, m = np.float32(self.cfg.lr_at(self.t)), np.float32(self.cfg.momentum)
        for name, g in grads.items():
            p = params[name]
            d = g + np.float32(self.wd) * p if self.wd else g.astype(np.float32, copy=True)
            if m:
                if name in self.buf:
                    self.buf[name] = m * self.buf[name] + d
                else:
                    self.buf[name] = np.array(d, dtype=np.float32, copy=True)
                d = self.buf[name]
            p -= lr * d

    def state_dict(self) -> dict:
        return {"t": self.t, "buf": {k: v.copy() for k, v in self.buf.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self.buf = {k: np.array(v, dtype=np.float32) for k, v in state["buf"].items()}


class AdamW:
    """torch.optim.AdamW (decoupled weight decay, bias-corrected moments)."""

    def __init__(self, cfg: OptimizerConfig):
        self.cfg = cfg
        self.wd = 0.01 if cfg.weight_decay is None else cfg.weight_decay
        self.t = 0
        self.m: Dict[str, np.ndarray] = {}
        self.v: Dict[str, np.ndarray] = {}

    def step(self, params: Dict[str, np.ndarray], grads: Dict[str, np.ndarray]) -> None:
        self.t += 1
        b1, b2 = self.cfg.betas
        lr = self.cfg.lr_at(self.t)
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        for name, g in grads.items():
            p = params[name]
            p *= np.float32(1.0 - lr * self.wd)
            m = self.m.setdefault(name, np.zeros_like(p))
            v = self.v.setdefault(name, np.zeros_like(p))
            m *= np.float32(b1)
            m += np.float32(1.0 - b1) * g
            v *= np.float32(b2)
            v += np.float32(1.0 - b2) * g * g
            denom = np.sqrt(v) / np.float32(np.sqrt(c2)) + np.float32(self.cfg.eps)
            p -= np.float32(lr / c1) * m / denom

    def state_dict(self) -> dict:
        return {"t": self.t, "m": {k: v.copy() for k, v in self.m.items()},
                "v": {k: v.copy() for k, v in self.v.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self.m = {k: np.array(v, dtype=np.float32) for k, v in state["m"].items()}
        self.v = {k: np.array(v, dtype=np.float32) for k, v in state["v"].items()}


def make_optimizer(cfg: OptimizerConfig):
    """Build the optimizer named by cfg.name."""
    if cfg.name == "sgd":
        return SGD(cfg)
    if cfg.name == "adamw":
        return AdamW(cfg)
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose one of {', '.join(OPTIMIZERS)}")
