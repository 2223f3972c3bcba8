"""The fine-tuning loop: data order, checkpoints, evaluation, export and the report."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, asdict, field
from typing import Callable, Optional

import numpy as np

from . import checkpoint as ckpt
from .data import load_data, validate
from .errors import EdgetuneError, UsageError
from .optim import OptimizerConfig


@dataclass
class FinetuneConfig:
    """Everything `edgetune finetune` takes; defaults are the bundled main job."""

    model: Optional[str] = None
    data: Optional[str] = None
    epochs: int = 4
    batch_size: int = 32
    lr: float = 0.02
    optimizer: str = "sgd"
    weight_decay: Optional[float] = None
    train_layers: str = "all"
    engine: str = "native"
    device: Optional[str] = None
    out: Optional[str] = None
    checkpoint: Optional[str] = None
    checkpoint_every: int = 0
    resume: bool = False
    report: Optional[str] = None
    seed: int = 0
    loss: str = "cross_entropy"
    engine_options: dict = field(default_factory=dict)

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the run that wrote the checkpoint."""
        keys = ("model", "data", "batch_size", "lr", "optimizer", "weight_decay", "train_layers", "seed", "loss")
        return {k: getattr(self, k) for k in keys}


def resolve_defaults(cfg: FinetuneConfig) -> FinetuneConfig:
    """Fill in the bundled model, its default data and the output path."""
    from edgetune import models

    if cfg.model is None:
        cfg.model = models.DEFAULT_MODEL
    if cfg.data is None:
        cfg.data = models.model_info(cfg.model).get("default_data") if models.is_bundled_model(cfg.model) else None
        if cfg.data is None:
            raise UsageError(f"--data is required for {cfg.model} (it is not a bundled model)")
    if cfg.out is None:
        stem = os.path.splitext(os.path.basename(cfg.model))[0]
        cfg.out = f"{stem}-finetuned.onnx"
    return cfg


def _check_config(cfg: FinetuneConfig) -> None:
    if cfg.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {cfg.epochs}")
    if not (cfg.lr > 0 and np.isfinite(cfg.lr)):
        raise UsageError(f"--lr must be a positive number, got {cfg.lr}")
    for path, what in ((cfg.out, "--out"), (cfg.report, "--report")):
        if path:
            if os.path.isdir(path):
                raise UsageError(f"{what} {path}: is a folder; give a file path")
            folder = os.path.dirname(os.path.abspath(path)) or "."
            if not os.path.isdir(folder):
                raise UsageError(f"{what} {path}: folder {folder} does not exist")
            if not os.access(folder, os.W_OK):
                raise UsageError(f"{what} {path}: folder {folder} is not writable")
    if cfg.resume and not cfg.checkpoint:
        raise UsageError("--resume needs --checkpoint DIR")


def evaluate(engine, x, y, batch: int = 256):
    """(accuracy, mean cross-entropy) of the engine's predictions."""
    from .losses import loss_and_grad

    logits = np.concatenate([engine.predict(x[i:i + batch]) for i in range(0, len(x), batch)])
    loss, _ = loss_and_grad("cross_entropy", logits, y)
    return float((logits.argmax(1) == y).mean()), loss, logits


def finetune(cfg: FinetuneConfig, log: Callable[[str], None] = print, progress=None) -> dict:
    """Run a fine-tune end to end and return the report dict."""
    from .engines import make_engine
    from .onnx_import import load_model

    cfg = resolve_defaults(cfg)
    _check_config(cfg)
    model = load_model(cfg.model)
    ds = load_data(cfg.data, model.input_shape, seed=cfg.seed)
    validate(ds, model.input_shape)
    validate(ds, model.input_shape, num_classes=_num_classes(model, ds.x[:1]))
    trainable = model.trainable_names(cfg.train_layers)
    opt = OptimizerConfig(name=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)
    kwargs = dict(cfg.engine_options)
    if cfg.engine == "device":
        kwargs.setdefault("device", cfg.device or "emulator")
    engine = make_engine(cfg.engine, **kwargs)
    try:
        engine.load(model, trainable, opt, cfg.loss)
        return _run(cfg, model, ds, engine, trainable, log, progress)
    finally:
        engine.close()


def _num_classes(model, sample) -> int:
    from .engines.dense import DenseEngine

    probe = DenseEngine()
    probe.load(model, [])
    try:
        return int(probe.predict(sample).shape[1])
    except ValueError as exc:
        raise EdgetuneError(f"inputs of shape {sample.shape[1:]} do not fit the model ({exc})") from None


def new_fit_state(seed: int) -> dict:
    """A fresh training position: epoch 0, step 0, the seeded data-order RNG, empty history."""
    rng = np.random.default_rng(seed)
    return {"epoch": 0, "step": 0, "rng": rng.bit_generator.state, "history": [],
            "phase_seconds": {"fp": 0.0, "bp": 0.0, "wg": 0.0, "update": 0.0}, "epoch_stats": [0.0, 0, 0, 0.0]}


def local_fit(engine, x, y, *, epochs: int, batch_size: int, state: dict, rng=None,
              on_step=None, on_epoch_end=None, after_epoch=None, progress=None) -> dict:
    """The one training loop: run `engine.train_step` over (x, y) until `state["epoch"] == epochs`.

    `state` (from `new_fit_state`) is the resumable position and is updated in place, so a
    checkpoint of it continues the same data order. Used by `finetune` and by the fleet client.
    Hooks: `on_step(step)` after each step; `on_epoch_end(entry)` may add keys to the history
    entry and returns True to stop early; `after_epoch()` runs once the epoch is recorded.
    """
    n = len(x)
    steps_per_epoch = -(-n // batch_size)
    rng = rng if rng is not None else np.random.default_rng()
    while state["epoch"] < epochs:
        rng.bit_generator.state = state["rng"]
        order = rng.permutation(n)
        t_epoch = time.perf_counter()
        bar = progress(steps_per_epoch, state["epoch"] + 1, epochs) if progress else None
        if bar is not None and state["step"]:
            bar.update(state["step"])
        while state["step"] < steps_per_epoch:
            idx = order[state["step"] * batch_size:(state["step"] + 1) * batch_size]
            # a diverging run overflows: the check below reports it, numpy's warnings would only add noise
            with np.errstate(over="ignore", invalid="ignore"):
                res = engine.train_step(x[idx], y[idx])
            if not np.isfinite(res.loss):
                raise EdgetuneError(f"training diverged at epoch {state['epoch'] + 1} step {state['step'] + 1} "
                                    f"(loss {res.loss}); lower --lr")
            for k, v in res.phase_seconds.items():
                state["phase_seconds"][k] = state["phase_seconds"].get(k, 0.0) + v
            st = state["epoch_stats"]
            st[0] += res.loss * res.batch
            st[1] += res.correct
            st[2] += res.batch
            state["step"] += 1
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(state["step"])
        if bar is not None:
            bar.finish()
        st = state["epoch_stats"]
        st[3] += time.perf_counter() - t_epoch
        entry = {"epoch": state["epoch"] + 1, "loss": st[0] / st[2], "train_acc": st[1] / st[2],
                 "seconds": st[3]}
        stop = bool(on_epoch_end(entry)) if on_epoch_end is not None else False
        state["history"].append(entry)
        state["rng"] = rng.bit_generator.state
        state.update(epoch=state["epoch"] + 1, step=0, epoch_stats=[0.0, 0, 0, 0.0])
        if after_epoch is not None:
            after_epoch()
        if stop:
            break
    return state


def _run(cfg, model, ds, engine, trainable, log, progress) -> dict:
    n, bs = len(ds.x), cfg.batch_size
    steps_per_epoch = -(-n // bs)
    rng = np.random.default_rng(cfg.seed)
    state = new_fit_state(cfg.seed)
    before_acc, before_loss, _ = evaluate(engine, ds.x_val, ds.y_val)
    state["before"] = {"val_acc": before_acc, "val_loss": before_loss}
    if cfg.resume:
        found = ckpt.load(cfg.checkpoint)
        if found is None:
            log(f"no checkpoint in {cfg.checkpoint} yet; starting from the beginning")
        else:
            meta = found["meta"]
            if meta["fingerprint"] != cfg.fingerprint():
                diff = [k for k in meta["fingerprint"] if meta["fingerprint"][k] != cfg.fingerprint().get(k)]
                raise UsageError(f"--resume: the checkpoint in {cfg.checkpoint} was written with different "
                                 f"settings ({', '.join(diff)})")
            engine.set_params(found["params"])
            engine.set_optimizer_state(found["opt_state"])
            state.update({k: meta[k] for k in state})
            log(f"resumed from {cfg.checkpoint}: epoch {state['epoch'] + 1}, step {state['step']}")
    log(f"{cfg.model} on {ds.name}: {n} train / {len(ds.x_val)} val samples, engine {engine.name}, "
        f"training {len(trainable)} tensors; val acc before {100 * state['before']['val_acc']:.1f}%")

    def save():
        if cfg.checkpoint:
            meta = {**{k: state[k] for k in state}, "fingerprint": cfg.fingerprint()}
            ckpt.save(cfg.checkpoint, engine.get_params(), engine.optimizer_state(), meta)

    def on_step(step):
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < steps_per_epoch:
            save()

    def on_epoch_end(entry):
        entry["val_acc"], entry["val_loss"], _ = evaluate(engine, ds.x_val, ds.y_val)
        log(f"epoch {entry['epoch']}/{cfg.epochs}  loss {entry['loss']:.4f}  train_acc {100 * entry['train_acc']:.1f}%  "
            f"val_acc {100 * entry['val_acc']:.1f}%  {entry['seconds']:.1f}s")
        return False

    local_fit(engine, ds.x, ds.y, epochs=cfg.epochs, batch_size=bs, state=state, rng=rng,
              on_step=on_step, on_epoch_end=on_epoch_end, after_epoch=save, progress=progress)
    return _finish(cfg, model, ds, engine, trainable, state, log)


def _finish(cfg, model, ds, engine, trainable, state, log) -> dict:
    from .onnx_export import export_onnx, ort_logits
    from .report import build_report

    after_acc, after_loss, logits = evaluate(engine, ds.x_val, ds.y_val)
    params = engine.get_params()
    export_onnx(model, params, cfg.out)
    ort = ort_logits(cfg.out, ds.x_val)
    expected = _apply_final(model.final, logits)
    diff = float(np.abs(ort - expected).max())
    log(f"val acc {100 * state['before']['val_acc']:.1f}% -> {100 * after_acc:.1f}%; wrote {cfg.out} "
        f"(onnxruntime max abs diff {diff:.2e})")
    report = build_report(cfg, model, ds, engine, trainable, params, state,
                          {"val_acc": after_acc, "val_loss": after_loss},
                          {"path": os.path.abspath(cfg.out), "ort_max_abs_diff": diff})
    if cfg.report:
        from .report import write_report

        write_report(cfg.report, report)
        log(f"report written to {cfg.report}")
    return report


def _apply_final(final, logits):
    from .losses import log_softmax

    if final == "softmax":
        return np.exp(log_softmax(logits.astype(np.float64)))
    if final == "logsoftmax":
        return log_softmax(logits.astype(np.float64))
    return logits


def config_dict(cfg: FinetuneConfig) -> dict:
    return asdict(cfg)
