"""The model and data side of a fleet, without Flower imports (client_app.py and server_app.py
stay thin around it).

A node trains with edgetune's one training loop (`runtime.trainer.local_fit`) on whatever
engine it names; FedProx enters as a gradient hook on that engine (`ProximalTerm`), so no
second loop exists. The settings of a run travel as Flower's run config (hyphenated keys,
see `RunSettings`); the settings of one node (its data, engine, device) as its node config.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from edgetune.runtime.errors import DataError, UsageError

from . import packing
from .partition import parse_partition, shard

STRATEGIES = ("fedavg", "fedprox")


@dataclass
class RunSettings:
    """What every node and the server agree on for one run (Flower's run config)."""

    model: str = "digits_cnn"
    data: str = "digits_shifted"      # simulation: the data split across nodes; server: its validation data
    rounds: int = 3
    partition: str = "iid"
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.02
    optimizer: str = "sgd"
    train_layers: str = "all"
    strategy: str = "fedavg"
    proximal_mu: float = 0.0
    dp_clipping_norm: float = 0.0      # > 0 turns on client-side fixed clipping with central Gaussian noise
    dp_noise_multiplier: float = 0.0
    min_nodes: int = 2
    fraction_evaluate: float = 1.0    # share of the nodes that also score each round's model on their data
    engine: str = "native"            # the nodes' engine unless a node names its own
    client_threads: int = 0           # native engine threads per node (0: its default)
    seed: int = 0
    out: str = ""                     # server: write the final model here (ONNX, checked with onnxruntime)
    report: str = ""                  # server: write the JSON report here
    progress: str = ""                # server: append one JSON line per round here
    allow_client_failures: bool = False
    round_timeout: float = 600.0      # seconds the server waits for the replies of one round
    node_wait_timeout: float = 120.0  # seconds the server waits for min_nodes nodes to connect

    @classmethod
    def from_run_config(cls, run_config: Mapping) -> "RunSettings":
        """Read Flower's run config (keys with hyphens); unknown keys are ignored."""
        kw = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key in run_config:
                kw[f.name] = _typed(f.name, run_config[key], type(getattr(cls(), f.name)))
        return cls(**kw).checked()

    def to_run_config(self) -> Dict[str, object]:
        """The run config for Flower: {hyphenated-key: value}."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    def checked(self) -> "RunSettings":
        """Raise UsageError on the first bad value."""
        from edgetune.runtime.engines import ENGINES
        from edgetune.runtime.ir import parse_last_k
        from edgetune.runtime.optim import OPTIMIZERS

        parse_partition(self.partition)
        if self.train_layers != "all":
            parse_last_k(self.train_layers)
        for name, low in (("rounds", 1), ("local_epochs", 1), ("batch_size", 1), ("min_nodes", 1)):
            if getattr(self, name) < low:
                raise UsageError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.strategy == "fedprox" and not self.proximal_mu > 0:
            raise UsageError("--strategy fedprox needs --mu greater than 0 (mu 0 is FedAvg)")
        if self.strategy == "fedavg" and self.proximal_mu:
            raise UsageError("--mu applies to --strategy fedprox only")
        if self.proximal_mu < 0 or self.dp_clipping_norm < 0 or self.dp_noise_multiplier < 0:
            raise UsageError("--mu, --dp-clip and --dp-noise must not be negative")
        if self.dp_noise_multiplier and not self.dp_clipping_norm:
            raise UsageError("--dp-noise needs --dp-clip (the clipping norm the noise is scaled to)")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.engine not in ENGINES:
            raise UsageError(f"--engine must be one of {', '.join(ENGINES)}")
        if self.engine == "device" and self.strategy == "fedprox":
            raise UsageError("FedProx needs the gradients on the host, but the device engine updates the weights "
                             "on the device; use --strategy fedavg with --engine device")
        if not 0.0 <= self.fraction_evaluate <= 1.0:
            raise UsageError(f"--fraction-evaluate must be between 0 and 1, got {self.fraction_evaluate}")
        if self.round_timeout <= 0 or self.node_wait_timeout <= 0:
            raise UsageError("timeouts must be positive")
        return self


def _typed(name: str, value, kind):
    """Run-config values come from TOML or `--run-config`; convert, and reject what does not fit."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"run config {name.replace('_', '-')} must be true or false, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"run config {name.replace('_', '-')} must be a {kind.__name__}, got {value!r}") from None


class ProximalTerm:
    """FedProx's proximal term as an engine gradient hook: adds mu * (w - w_global) to the gradient
    of every trained tensor, i.e. the gradient of (mu / 2) * ||w - w_global||^2."""

    def __init__(self, mu: float, anchor: Mapping[str, np.ndarray]):
        self.mu = np.float32(mu)
        self.anchor = {k: np.array(v, dtype=np.float32, copy=True) for k, v in anchor.items()}

    def __call__(self, params: Dict[str, np.ndarray], grads: Dict[str, np.ndarray]) -> None:
        for name, g in grads.items():
            grads[name] = g + self.mu * (params[name] - self.anchor[name])


@lru_cache(maxsize=4)
def load_model_cached(spec: str):
    """The IR model for `spec` (a bundled name or a path on this node); cached across rounds."""
    from edgetune.runtime.onnx_import import load_model

    return load_model(spec)


def model_spec(settings: RunSettings, node_config: Mapping) -> str:
    """The model a node loads: its own `model` (a path on the node) if given, else the run's."""
    return str(node_config.get("model") or settings.model)


def trained_names(model, train_layers: str):
    """Initializer names that train and travel under `train_layers`."""
    return model.trainable_names(train_layers)


def initial_tensors(settings: RunSettings) -> Dict[str, np.ndarray]:
    """The trained tensors of the base model: round 1's global model."""
    model = load_model_cached(settings.model)
    return packing.pack(model.params, trained_names(model, settings.train_layers))


@dataclass
class NodeData:
    """One node's training and validation arrays, and where they came from."""

    name: str
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def node_data(settings: RunSettings, node_config: Mapping, model) -> NodeData:
    """This node's data: its own (`data` in the node config, as `edgetune fleet supernode --data`
    sets it) or, in a simulation, shard `partition-id` of `num-partitions` of the run's data."""
    if node_config.get("data"):
        return _own_data(str(node_config["data"]), model, settings.seed)
    if "partition-id" in node_config and "num-partitions" in node_config:
        return _shard_data(settings.data, settings.partition, int(node_config["partition-id"]),
                           int(node_config["num-partitions"]), settings.seed, model_spec(settings, node_config))
    raise DataError("this node has no data: start it with 'edgetune fleet supernode --data FILE'")


def _own_data(spec: str, model, seed: int) -> NodeData:
    from edgetune.runtime.data import load_data

    ds = load_data(spec, model.input_shape, seed=seed)
    _validate(ds, model)
    return NodeData(spec, ds.x, ds.y, ds.x_val, ds.y_val)


@lru_cache(maxsize=8)
def _shard_data(spec: str, partition: str, part: int, parts: int, seed: int, model_name: str) -> NodeData:
    from edgetune.runtime.data import load_data

    model = load_model_cached(model_name)
    ds = load_data(spec, model.input_shape, seed=seed)
    _validate(ds, model)
    tr, va = shard(ds.y, ds.y_val, part, parts, partition, seed)
    return NodeData(f"{spec}[{part}/{parts}]", ds.x[tr], ds.y[tr], ds.x_val[va], ds.y_val[va])


def _validate(ds, model) -> None:
    from edgetune.runtime.data import validate
    from edgetune.runtime.preflight import model_outputs

    validate(ds, model.input_shape)
    validate(ds, model.input_shape, num_classes=model_outputs(model, ds.x[:1]))


def make_node_engine(settings: RunSettings, node_config: Mapping, model, names):
    """The engine a node trains with: the node's own `engine`/`device` if given, else the run's."""
    from edgetune.runtime.engines import make_engine
    from edgetune.runtime.optim import OptimizerConfig

    name = str(node_config.get("engine") or settings.engine)
    kwargs: dict = {}
    if name == "device":
        kwargs["device"] = str(node_config.get("device") or "emulator")
    threads = int(node_config.get("threads", 0) or settings.client_threads)
    if name == "native" and threads:
        kwargs["threads"] = threads
    engine = make_engine(name, **kwargs)
    try:
        engine.load(model, list(names), OptimizerConfig(name=settings.optimizer, lr=settings.lr), "cross_entropy")
    except BaseException:
        engine.close()
        raise
    return engine


def train_round(settings: RunSettings, node_config: Mapping, received: Mapping[str, np.ndarray],
                server_round: int, proximal_mu: float = 0.0) -> Tuple[Dict[str, np.ndarray], dict]:
    """One node's part of a round: load the global tensors, run `local_fit`, return (trained tensors, metrics)."""
    from edgetune.runtime.trainer import local_fit, new_fit_state

    t0 = time.perf_counter()
    model = load_model_cached(model_spec(settings, node_config))
    names = trained_names(model, settings.train_layers)
    tensors = packing.unpack(received, packing.shapes(model.params, names))
    data = node_data(settings, node_config, model)
    engine = make_node_engine(settings, node_config, model, names)
    try:
        engine.set_params(tensors)
        if proximal_mu:
            engine.set_grad_hook(ProximalTerm(proximal_mu, tensors))
        # the data order differs per node and per round, and is reproducible from the seed
        seed = settings.seed * 1_000_003 + server_round * 1009 + int(node_config.get("partition-id", 0))
        state = local_fit(engine, data.x, data.y, epochs=settings.local_epochs, batch_size=settings.batch_size,
                          state=new_fit_state(seed))
        out = packing.pack(engine.get_params(), names)
    finally:
        engine.close()
    last = state["history"][-1]
    metrics = {"num-examples": int(len(data.x)), "train-loss": float(last["loss"]),
               "train-acc": float(last["train_acc"]), "seconds": time.perf_counter() - t0,
               "tensor-bytes": packing.tensor_bytes(out)}
    return out, metrics


def evaluate_round(settings: RunSettings, node_config: Mapping, received: Mapping[str, np.ndarray]) -> dict:
    """A node scores the global tensors on its own validation data."""
    model = load_model_cached(model_spec(settings, node_config))
    names = trained_names(model, settings.train_layers)
    tensors = packing.unpack(received, packing.shapes(model.params, names))
    data = node_data(settings, node_config, model)
    if len(data.x_val) == 0:
        return {"num-examples": 0, "val-acc": 0.0, "val-loss": 0.0}
    acc, loss = score(model, tensors, data.x_val, data.y_val)
    return {"num-examples": int(len(data.x_val)), "val-acc": acc, "val-loss": loss}


def score(model, tensors: Mapping[str, np.ndarray], x, y, engine: str = "native") -> Tuple[float, float]:
    """(accuracy, mean cross-entropy) of the model with `tensors` put in, on (x, y)."""
    from edgetune.runtime.engines import make_engine
    from edgetune.runtime.trainer import evaluate

    eng = make_engine(engine)
    try:
        eng.load(model, [])
        eng.set_params(dict(tensors))
        acc, loss, _ = evaluate(eng, x, y)
    finally:
        eng.close()
    return float(acc), float(loss)


class Server:
    """The server's side of the task: the base model, its validation data, evaluation and export."""

    def __init__(self, settings: RunSettings):
        from edgetune.runtime.data import load_data

        self.settings = settings
        self.model = load_model_cached(settings.model)
        self.names = trained_names(self.model, settings.train_layers)
        ds = load_data(settings.data, self.model.input_shape, seed=settings.seed)
        _validate(ds, self.model)
        self.x_val, self.y_val = ds.x_val, ds.y_val

    def initial(self) -> Dict[str, np.ndarray]:
        return packing.pack(self.model.params, self.names)

    def evaluate(self, tensors: Mapping[str, np.ndarray]) -> Tuple[float, float]:
        tensors = packing.unpack(tensors, packing.shapes(self.model.params, self.names))
        return score(self.model, tensors, self.x_val, self.y_val)

    def export(self, tensors: Mapping[str, np.ndarray], path: str) -> dict:
        """Write the model with `tensors` to `path` (atomically) and check it with onnxruntime:
        its outputs against the engine's, and its accuracy on the server's validation data."""
        from edgetune.runtime.engines import make_engine
        from edgetune.runtime.onnx_export import export_onnx, ort_logits
        from edgetune.runtime.trainer import _apply_final, evaluate

        tensors = packing.unpack(tensors, packing.shapes(self.model.params, self.names))
        params = {**self.model.params, **tensors}
        export_onnx(self.model, params, path)
        eng = make_engine("native")
        try:
            eng.load(self.model, [])
            eng.set_params(tensors)
            acc, _, logits = evaluate(eng, self.x_val, self.y_val)
        finally:
            eng.close()
        ort = ort_logits(path, self.x_val)
        diff = float(np.abs(ort - _apply_final(self.model.final, logits)).max())
        return {"path": os.path.abspath(path), "ort_max_abs_diff": diff,
                "ort_val_acc": float((ort.argmax(1) == self.y_val).mean()), "engine_val_acc": float(acc)}


def preflight(settings: RunSettings, nodes: int = 0) -> None:
    """Fail fast, before any process starts, on what the server and the nodes would fail on:
    the model, the data against the model, and (for a simulation) a partition of it in `nodes`."""
    from edgetune.runtime.data import load_data

    model = load_model_cached(settings.model)
    trained_names(model, settings.train_layers)
    ds = load_data(settings.data, model.input_shape, seed=settings.seed)
    _validate(ds, model)
    if nodes:
        shard(ds.y, ds.y_val, 0, nodes, settings.partition, settings.seed)


def resolve_paths(settings: RunSettings) -> RunSettings:
    """Absolute paths for the model, data and outputs that exist or are meant here: the server and
    the nodes do not run in this folder."""
    for name in ("model", "data", "out", "report"):
        value = getattr(settings, name)
        if value and (os.path.exists(value) or name in ("out", "report")):
            setattr(settings, name, os.path.abspath(value))
    return settings


def check_writable(path: Optional[str], what: str) -> None:
    """A clear UsageError before a run starts when `path` cannot be written (the same check as
    finetune's outputs: runtime/options.check_output_path)."""
    from edgetune.runtime.options import check_output_path

    if path:
        check_output_path(path, what)


__all__ = ["RunSettings", "ProximalTerm", "NodeData", "Server", "train_round", "evaluate_round", "score",
           "node_data", "initial_tensors", "check_writable", "preflight", "resolve_paths"]
