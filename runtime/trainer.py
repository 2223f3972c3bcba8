"""The fine-tuning run: data order, checkpoints, evaluation, the kept weights, export and the report."""
from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, asdict, field
from typing import Callable, List, Optional

import numpy as np

from . import checkpoint as ckpt
from .testhooks import crash_point
from .data import load_data, validate
from .errors import EdgetuneError, ModelError, UsageError
from .optim import OptimizerConfig

FALLBACK_LR = 0.02     # --lr for a model that is not bundled (bundled models carry their own)


@dataclass
class FinetuneConfig:
    """Everything `edgetune finetune` takes; defaults are the bundled main job."""

    model: Optional[str] = None
    data: Optional[str] = None
    epochs: int = 4
    batch_size: int = 32
    lr: Optional[float] = None          # None: the bundled model's default, else FALLBACK_LR
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
    keep: str = "best"
    patience: Optional[int] = None
    schedule: str = "constant"
    num_classes: Optional[int] = None
    normalize: Optional[List[float]] = None
    threads: Optional[int] = None
    dense_kernels: bool = False
    untie_params: bool = False

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the run that wrote the checkpoint."""
        keys = ("model", "data", "batch_size", "lr", "optimizer", "weight_decay", "train_layers", "seed", "loss",
                "schedule", "num_classes", "normalize", "keep", "untie_params")
        out = {k: getattr(self, k) for k in keys}
        if self.schedule != "constant":
            out["epochs"] = self.epochs      # the schedule spans the planned epochs
        return out


def resolve_defaults(cfg: FinetuneConfig) -> FinetuneConfig:
    """Fill in the bundled model, its default data and learning rate, and the output path."""
    from edgetune import models

    if cfg.model is None:
        cfg.model = models.DEFAULT_MODEL
    bundled = models.is_bundled_model(cfg.model) and not os.path.exists(cfg.model)
    if cfg.data is None:
        cfg.data = models.model_info(cfg.model).get("default_data") if bundled else None
        if cfg.data is None:
            raise UsageError(f"--data is required for {cfg.model} (it is not a bundled model)")
    if cfg.lr is None:
        cfg.lr = float(models.model_info(cfg.model).get("finetune_defaults", {}).get("lr", FALLBACK_LR)) \
            if bundled else FALLBACK_LR
    if cfg.out is None:
        cfg.out = default_out(cfg.model, cfg.data)
    return cfg


def default_out(model: str, data: str) -> str:
    """MODEL-DATA-finetuned.onnx: a fine-tune on other data gets a file of its own (README,
    "Checkpoints and output files")."""
    return f"{_stem(model)}-{_stem(data)}-finetuned.onnx"


def _stem(spec: str) -> str:
    """A bundled name as it is, a file without its extension, a folder by its own name."""
    name = os.path.basename(os.path.normpath(os.path.abspath(spec))) if os.path.exists(spec) else str(spec)
    if os.path.isfile(spec):
        name = os.path.splitext(name)[0]
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "data"


def provenance(cfg: FinetuneConfig) -> dict:
    """Which model and data a fine-tuned file came from (its `finetuned_from` metadata): bundled
    names as they are, paths made absolute."""
    return {key: os.path.abspath(value) if os.path.exists(value) else value
            for key, value in (("model", cfg.model), ("data", cfg.data))}


def check_default_out(cfg: FinetuneConfig) -> None:
    """The default --out may replace only a file of the same model and data (a run done again):
    a name shared by other data (two folders both called train/), or a file edgetune did not
    write, is refused rather than silently replaced."""
    from .onnx_export import read_provenance

    if not os.path.exists(cfg.out):
        return
    theirs, mine = read_provenance(cfg.out), provenance(cfg)
    if theirs == mine:
        return
    what = (f"a fine-tune of {theirs.get('model')} on {theirs.get('data')}" if theirs
            else "a file that edgetune finetune did not write")
    raise UsageError(f"{cfg.out} already exists and holds {what}; this run fine-tunes {mine['model']} on "
                     f"{mine['data']}. Give --out to name the output (naming {cfg.out} replaces it)")


def device_line(device: Optional[str]) -> str:
    """What --engine device trains on, so that a run on the emulator is never mistaken for one on a board."""
    if not device:
        return ("device: --device not given, so the steps run on the bundled emulator of the accelerator, on this "
                "computer; to train on a board give --device /dev/ttyUSB0 (or another pyserial URL)")
    if device == "emulator":
        return "device: the bundled emulator of the accelerator (--device emulator), on this computer"
    return f"device: {device}"


def evaluate(engine, x, y, batch: int = 256):
    """(accuracy, mean cross-entropy) of the engine's predictions."""
    from .losses import loss_and_grad

    with np.errstate(all="ignore"):   # non-finite logits show as a NaN loss, and the export check refuses them
        logits = np.concatenate([engine.predict(x[i:i + batch]) for i in range(0, len(x), batch)])
        loss, _ = loss_and_grad("cross_entropy", logits, y)
    return float((logits.argmax(1) == y).mean()), loss, logits


def finetune(cfg: FinetuneConfig, log: Callable[[str], None] = print, progress=None,
             warn: Optional[Callable[[str], None]] = None, result: Optional[Callable[[str], None]] = None) -> dict:
    """Run a fine-tune end to end and return the report dict.

    `log` gets the progress lines, `warn` the warnings (default: log them), `result` the final
    result line (default: log it; the CLI prints it even with -q)."""
    from .engines import make_engine
    from .onnx_import import load_model
    from .options import check_options
    from .preflight import check_export, prepare_classes
    from .run_lock import FolderLock

    warn = warn or (lambda msg: log(f"warning: {msg}"))
    result = result or log
    out_given = cfg.out is not None
    cfg = resolve_defaults(cfg)
    check_options(cfg)
    if not out_given:
        check_default_out(cfg)
    model = load_model(cfg.model, untie=cfg.untie_params)
    for note in model.notes:
        log(f"import: {note}")
    meta = _model_metadata(model)
    norm = cfg.normalize
    if norm is None and meta["normalize"]:
        norm = list(meta["normalize"]["mean"]) + list(meta["normalize"]["std"])
        log("input normalization from the model's metadata (it was fine-tuned with --normalize)")
    ds = load_data(cfg.data, model.input_shape, seed=cfg.seed, normalize=norm)
    log(ds.summary)
    for w in ds.warnings:
        warn(w)
    validate(ds, model.input_shape)
    classes = prepare_classes(cfg, model, ds, meta, log, warn)
    check_export(model, ds.x_val[:2])
    trainable = model.trainable_names(cfg.train_layers)    # always includes the last layer (a new head)
    steps_per_epoch = -(-len(ds.x) // cfg.batch_size)
    opt = OptimizerConfig(name=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                          total_steps=cfg.epochs * steps_per_epoch)
    kwargs = dict(cfg.engine_options)
    if cfg.engine == "device":
        kwargs.setdefault("device", cfg.device or "emulator")
        log(device_line(cfg.device))
    if cfg.dense_kernels:
        kwargs["dense"] = True
    if cfg.threads:
        kwargs["threads"] = cfg.threads
    lock = FolderLock(cfg.checkpoint) if cfg.checkpoint else contextlib.nullcontext()
    with lock:
        engine = make_engine(cfg.engine, **kwargs)
        try:
            engine.load(model, trainable, opt, cfg.loss)
            run = _Run(cfg, model, ds, engine, trainable, classes, log, warn, result)
            return run.go(progress)
        finally:
            engine.close()


def _model_metadata(model) -> dict:
    from .onnx_export import read_metadata

    return read_metadata(model)


def new_fit_state(seed: int) -> dict:
    """A fresh training position: epoch 0, step 0, the seeded data-order RNG, empty history."""
    rng = np.random.default_rng(seed)
    return {"epoch": 0, "step": 0, "rng": rng.bit_generator.state, "history": [],
            "phase_seconds": {"fp": 0.0, "bp": 0.0, "wg": 0.0, "update": 0.0},
            "step_wall": {"seconds": 0.0, "steps": 0}, "epoch_stats": [0.0, 0, 0, 0.0],
            "steps_done": 0, "stopped_early": None, "keeper": None}


def local_fit(engine, x, y, *, epochs: int, batch_size: int, state: dict, rng=None,
              on_step=None, on_epoch_end=None, after_epoch=None, progress=None, keeper=None) -> dict:
    """The one training loop: run `engine.train_step` over (x, y) until `state["epoch"] == epochs`.

    `state` (from `new_fit_state`) is the resumable position and is updated in place, so a
    checkpoint of it continues the same data order. Used by `finetune` and by the fleet client.
    Hooks: `on_step(step)` after each step; `on_epoch_end(entry)` may add keys to the history
    entry (val_acc, val_loss for a keeper) and returns True to stop early; `after_epoch()` runs
    once the epoch is recorded. `keeper` (a selection.BestEpoch) sees each entry after
    on_epoch_end, remembers the best epoch and stops the loop when its patience runs out
    (state["stopped_early"] = that epoch, so a resumed run stays stopped).
    `progress(steps, epoch, epochs)` returns a bar with update(n) and finish() (and optionally
    set_loss(running_mean_loss)), or None; the bar is finished even when a step fails.
    """
    n = len(x)
    steps_per_epoch = -(-n // batch_size)
    rng = rng if rng is not None else np.random.default_rng()
    while state["epoch"] < epochs and not state.get("stopped_early"):
        rng.bit_generator.state = state["rng"]
        order = rng.permutation(n)
        t_epoch = time.perf_counter()
        bar = progress(steps_per_epoch, state["epoch"] + 1, epochs) if progress else None
        try:
            if bar is not None and state["step"]:
                bar.update(state["step"])
            while state["step"] < steps_per_epoch:
                idx = order[state["step"] * batch_size:(state["step"] + 1) * batch_size]
                # a diverging run overflows: the check below reports it, numpy's warnings would only add noise
                t_step = time.perf_counter()
                with np.errstate(all="ignore"):
                    res = engine.train_step(x[idx], y[idx])
                wall = state.setdefault("step_wall", {"seconds": 0.0, "steps": 0})
                wall["seconds"] += time.perf_counter() - t_step    # the whole step: a device's link included
                wall["steps"] += 1
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
                state["steps_done"] = state.get("steps_done", 0) + 1
                if bar is not None:
                    if hasattr(bar, "set_loss"):
                        bar.set_loss(st[0] / st[2])
                    bar.update(1)
                if on_step is not None:
                    on_step(state["step"])
        finally:
            if bar is not None:
                bar.finish()
        st = state["epoch_stats"]
        st[3] += time.perf_counter() - t_epoch
        entry = {"epoch": state["epoch"] + 1, "loss": st[0] / st[2], "train_acc": st[1] / st[2],
                 "seconds": st[3]}
        stop = bool(on_epoch_end(entry)) if on_epoch_end is not None else False
        if keeper is not None:
            stop = keeper.observe(engine, entry) or stop
            state["keeper"] = keeper.state_dict()
        state["history"].append(entry)
        state["rng"] = rng.bit_generator.state
        state.update(epoch=state["epoch"] + 1, step=0, epoch_stats=[0.0, 0, 0, 0.0])
        if stop and state["epoch"] < epochs:
            state["stopped_early"] = state["epoch"]
        if after_epoch is not None:
            after_epoch()
        if stop:
            break
    return state


class _Run:
    """One fine-tune after its checks: train (or resume), keep the chosen epoch, export, report."""

    def __init__(self, cfg, model, ds, engine, trainable, classes, log, warn, result):
        from .selection import BestEpoch

        self.cfg, self.model, self.ds, self.engine, self.trainable = cfg, model, ds, engine, trainable
        self.classes, self.log, self.warn, self.result = classes, log, warn, result
        self.keeper = BestEpoch(cfg.keep, cfg.patience)
        self.state = new_fit_state(cfg.seed)
        self.steps_per_epoch = -(-len(ds.x) // cfg.batch_size)
        self._link_seen: dict = {}

    def go(self, progress) -> dict:
        cfg, ds, engine, state = self.cfg, self.ds, self.engine, self.state
        before_acc, before_loss, _ = evaluate(engine, ds.x_val, ds.y_val)
        state["before"] = {"val_acc": before_acc, "val_loss": before_loss}
        resumed = cfg.resume and self._resume()
        if not resumed:
            self.keeper.start(engine, before_acc, before_loss)
            state["keeper"] = self.keeper.state_dict()
        self.log(f"{cfg.model} on {ds.name}: {len(ds.x)} train / {len(ds.x_val)} val samples, engine {engine.name}, "
                 f"training {len(self.trainable)} tensors, lr {cfg.lr:g} ({cfg.optimizer}, {cfg.schedule}); "
                 f"val acc before {100 * state['before']['val_acc']:.1f}%")
        self._link_health()     # baseline, so the first epoch reports only its own retries
        local_fit(engine, ds.x, ds.y, epochs=cfg.epochs, batch_size=cfg.batch_size, state=state,
                  rng=np.random.default_rng(cfg.seed), on_step=self._on_step, on_epoch_end=self._on_epoch_end,
                  after_epoch=self._save, progress=progress, keeper=self.keeper)
        if state.get("stopped_early"):
            self.log(f"stopped early after epoch {state['stopped_early']}: no better val_acc for "
                     f"{cfg.patience} epoch{'s' if cfg.patience != 1 else ''} (--patience)")
        return self._finish()

    # -- resume / checkpoints -----------------------------------------------------------------
    def _resume(self) -> bool:
        cfg, state = self.cfg, self.state
        found = ckpt.load(cfg.checkpoint)
        if found is None:       # check_options found one, so it went away since
            raise UsageError(f"--resume: no checkpoint in {cfg.checkpoint} any more")
        meta = found["meta"]
        mine = cfg.fingerprint()
        # a checkpoint from before a setting existed was written with that setting's default
        theirs = {**FinetuneConfig().fingerprint(), **meta["fingerprint"]}
        if theirs != mine:
            diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
            raise UsageError(f"--resume: the checkpoint in {cfg.checkpoint} was written with different "
                             f"settings ({', '.join(diff)})")
        try:
            self.engine.set_params(found["params"])
            self.engine.set_optimizer_state(found["opt_state"])
        except (KeyError, ValueError) as exc:    # same settings, but the model file changed since
            why = exc.args[0] if exc.args else exc
            raise UsageError(f"--resume: the checkpoint in {cfg.checkpoint} does not fit {cfg.model} ({why})") from None
        self.engine.set_plan_state(meta.get("plan", {}))
        state.update({k: meta.get(k, state[k]) for k in state})
        if state.get("keeper"):
            self.keeper.load_state_dict(state["keeper"], found["best"])
        else:
            self.keeper.start(self.engine, state["before"]["val_acc"], state["before"]["val_loss"])
        self.log(f"resumed from {cfg.checkpoint}: epoch {state['epoch'] + 1}, step {state['step']}")
        return True

    def _save(self) -> None:
        cfg = self.cfg
        if cfg.checkpoint:
            meta = {**{k: self.state[k] for k in self.state}, "fingerprint": cfg.fingerprint(),
                    "plan": self.engine.plan_state()}
            ckpt.save(cfg.checkpoint, self.engine.get_params(), self.engine.optimizer_state(), meta,
                      best=self.keeper.arrays())

    def _on_step(self, step) -> None:
        every = self.cfg.checkpoint_every
        if every and step % every == 0 and step < self.steps_per_epoch:
            self._save()
        crash_point("step", self.state["steps_done"])     # tests only (EDGETUNE_TEST_CRASH)

    # -- per epoch ----------------------------------------------------------------------------
    def _on_epoch_end(self, entry) -> bool:
        cfg = self.cfg
        entry["val_acc"], entry["val_loss"], _ = evaluate(self.engine, self.ds.x_val, self.ds.y_val)
        entry["lr"] = self.engine_lr()
        self.log(f"epoch {entry['epoch']}/{cfg.epochs}  loss {entry['loss']:.4f}  train_acc {100 * entry['train_acc']:.1f}%  "
                 f"val_acc {100 * entry['val_acc']:.1f}%  {entry['seconds']:.1f}s"
                 + (f"  lr {entry['lr']:.3g}" if cfg.schedule != "constant" else ""))
        link = self._link_health()
        if link:
            entry["link"] = link
            self.log("link: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in link.items()) + " this epoch")
        return False

    def engine_lr(self) -> float:
        """The learning rate of the last step taken (the schedule is a function of the step)."""
        opt = OptimizerConfig(name=self.cfg.optimizer, lr=self.cfg.lr, schedule=self.cfg.schedule,
                              total_steps=self.cfg.epochs * self.steps_per_epoch)
        return opt.lr_at(max(self.state.get("steps_done", 0), 1))

    def _link_health(self) -> dict:
        """Retries, resyncs, timeouts and device resets since the last call (device engine only)."""
        now = self.engine.link_health()
        delta = {k: v - self._link_seen.get(k, 0) for k, v in now.items()}
        self._link_seen = now
        return {k: v for k, v in delta.items() if v}

    # -- the end ----------------------------------------------------------------------------------
    def _finish(self) -> dict:
        from .atomic import write_bytes
        from .onnx_export import export_proto, ort_logits
        from .preflight import export_mismatch
        from .report import build_report
        from .summary import summary_lines

        cfg, ds, engine, state, keeper = self.cfg, self.ds, self.engine, self.state, self.keeper
        last = state["history"][-1] if state["history"] else None
        if keeper.restore(engine) and last is not None and keeper.best_epoch != last["epoch"]:
            which = "the starting weights (epoch 0)" if keeper.best_epoch == 0 else f"epoch {keeper.best_epoch}"
            self.log(f"kept {which}: best val_acc {100 * keeper.best_acc:.1f}% "
                     f"(last epoch {100 * last['val_acc']:.1f}%; --keep last keeps the last)")
        after_acc, after_loss, logits = evaluate(engine, ds.x_val, ds.y_val)
        params = engine.get_params()
        bad = next((k for k, v in params.items() if not np.isfinite(v).all()), None)
        if bad is not None:
            raise EdgetuneError(f"training made {bad!r} non-finite (NaN or Inf), so nothing was written to {cfg.out}; "
                                "lower --lr")
        metadata = {"classes": self.classes, "normalize": ds.normalize, "finetuned_from": provenance(cfg)}
        # verified before it is written: a model onnxruntime does not reproduce is never left behind
        data = export_proto(self.model, params, metadata).SerializeToString()
        ort = ort_logits(data, ds.x_val, threads=cfg.threads)
        expected = _apply_final(self.model.final, logits)
        why = export_mismatch(ort, expected)
        if why is not None:
            raise ModelError(f"the fine-tuned model was not written to {cfg.out}: onnxruntime does not reproduce "
                             f"what edgetune computes on the validation set ({why})")
        write_bytes(cfg.out, data)
        diff = float(np.abs(ort - expected).max())
        before = state["before"]["val_acc"]
        selected = {"keep": cfg.keep, "epoch": keeper.best_epoch if cfg.keep == "best" else len(state["history"]),
                    "epochs_run": len(state["history"]), "stopped_early": state.get("stopped_early")}
        report = build_report(cfg, self.model, ds, engine, self.trainable, params, state,
                              {"val_acc": after_acc, "val_loss": after_loss},
                              {"path": os.path.abspath(cfg.out), "ort_max_abs_diff": diff,
                               "metadata": {k: v for k, v in metadata.items() if v is not None}})
        report["selected"] = selected
        report["classes"] = self.classes
        report["data_summary"] = ds.summary
        if cfg.report:
            from .report import write_report

            write_report(cfg.report, report)
        for line in summary_lines(report):
            self.log(line)
        if after_acc < before:
            self.warn(f"the fine-tuned model is worse than the model it started from on the validation set "
                      f"({100 * before:.1f}% -> {100 * after_acc:.1f}%); try a lower --lr, fewer --epochs, "
                      "or --keep best")
        elif selected["epoch"] == 0 and cfg.keep == "best" and state["history"]:
            self.warn(f"no epoch beat the starting model ({100 * before:.1f}%), so {cfg.out} holds the starting "
                      "weights; try a lower --lr")
        self.result(f"val acc {100 * before:.1f}% -> {100 * after_acc:.1f}%; wrote {cfg.out} "
                    f"(onnxruntime max abs diff {diff:.2e})")
        if cfg.report:
            self.log(f"report written to {cfg.report}")
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
