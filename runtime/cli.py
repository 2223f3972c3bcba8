"""The edgetune command line (click). Heavy imports stay inside the commands."""
from __future__ import annotations

import os
import sys

import click

from .cli_options import (at_least, batch_size_option, data_option, json_option, models_argument, normalize_option,
                          quiet_option, seed_option, threads_option)
from .errors import EdgetuneError


class _Group(click.Group):
    """Turns edgetune's own errors into one line and an exit code, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgetuneError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: still one line, with a way to see more
            if os.environ.get("EDGETUNE_DEBUG"):
                raise
            click.echo(f"error: internal error ({type(exc).__name__}: {exc}); "
                       "set EDGETUNE_DEBUG=1 for a traceback", err=True)
            ctx.exit(1)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("edgetune")
    except Exception:  # noqa: BLE001 - a source tree without metadata
        return "unknown"


@click.group(cls=_Group)
@click.option("--quiet", "-q", is_flag=True, help="Print only results, warnings and errors.")
@click.version_option(_version(), "--version", prog_name="edgetune", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx, quiet):
    """edgetune: on-device fine-tuning of ONNX models with sparse training kernels."""
    ctx.obj = {"quiet": quiet}


def _log(ctx):
    return (lambda msg: None) if (ctx.obj or {}).get("quiet") else click.echo


def _warn(msg: str) -> None:
    click.echo(f"warning: {msg}", err=True)


@cli.command()
@quiet_option
def models():
    """List the bundled models and datasets."""
    from edgetune import models as bundled

    click.echo("models:")
    for m in bundled.list_models():
        shape = "x".join("N" if d is None else str(d) for d in m["input_shape"])
        lr = m.get("finetune_defaults", {}).get("lr")
        click.echo(f"  {m['name']:<24} {shape:<12} data={m.get('default_data', '-'):<16} "
                   f"lr={lr if lr is not None else '-':<7} {m.get('description', '')}")
    click.echo("datasets:")
    for d in bundled.list_datasets():
        click.echo(f"  {d['name']:<24} {d.get('description', '')}")
    click.echo(f"default: edgetune finetune {bundled.DEFAULT_MODEL} --data {bundled.model_info(bundled.DEFAULT_MODEL).get('default_data')}")


UNTIE_HELP = ("Give each reader of a shared initializer its own copy, instead of training it as one "
              "tensor (README: Your model).")


@cli.command()
@click.argument("model")
@click.option("--untie-params", is_flag=True, help=UNTIE_HELP)
@quiet_option
def info(model, untie_params):
    """Show MODEL's layers, shapes, parameters and activation constraint rules, and the kernel
    level this process runs (EDGETUNE_ISA, a portable build's choice)."""
    from .bench import simd
    from .info import describe

    click.echo(describe(model, untie=untie_params))
    sd = simd()
    click.echo(f"kernels: {sd['isa']} ({sd['floats']} floats per vector), module level {sd['level']}")


@cli.command()
@click.argument("model", required=False)
@data_option()
@click.option("--epochs", type=int, default=4, show_default=True)
@batch_size_option()
@click.option("--lr", type=float, default=None, help="Learning rate [default: the bundled model's own, else 0.02].")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--weight-decay", type=float, default=None, help="Default: 0 for sgd, 0.01 for adamw.")
@click.option("--schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True,
              help="cosine: the rate decays per step to 0 over all --epochs.")
@click.option("--keep", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Write the best validation epoch's weights (the starting ones count), or the last epoch's.")
@click.option("--patience", type=int, default=None, help="Stop after N epochs without a better val_acc.")
@click.option("--train-layers", default="all", show_default=True, help="'all' or 'last:K' Conv/Gemm layers.")
@click.option("--num-classes", type=int, default=None, help="Replace the last Gemm/MatMul with a fresh K-output layer.")
@click.option("--untie-params", is_flag=True, help=UNTIE_HELP)
@normalize_option("Per channel (x - MEAN) / STD after scaling to [0,1]; MEAN,STD or C means then C stds.")
@click.option("--engine", type=click.Choice(["native", "dense", "device"]), default="native", show_default=True)
@click.option("--dense-kernels", is_flag=True, help="native engine: iterate densely (no zero skipping).")
@threads_option("native engine: kernel threads (default: all cores).")
@click.option("--device", default=None, help="device engine: a pyserial URL, or 'emulator'.")
@click.option("--out", default=None, help="Fine-tuned ONNX path (default MODEL-DATA-finetuned.onnx).")
@click.option("--checkpoint", default=None, help="Folder for atomic checkpoints (one run at a time).")
@click.option("--checkpoint-every", type=int, default=0, help="Also checkpoint every N steps.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --checkpoint.")
@click.option("--report", default=None, help="Write the JSON report here (view it with 'edgetune report').")
@seed_option()
@click.option("--loss", type=click.Choice(["cross_entropy", "mse"]), default="cross_entropy", show_default=True)
@quiet_option
@click.pass_context
def finetune(ctx, model, data, epochs, batch_size, lr, optimizer, weight_decay, schedule, keep, patience,
             train_layers, num_classes, untie_params, normalize, engine, dense_kernels, threads, device, out, checkpoint,
             checkpoint_every, resume, report, seed, loss):
    """Fine-tune MODEL (default: the bundled default) on the device."""
    from .data import parse_normalize
    from .progress import ProgressBar
    from .trainer import FinetuneConfig, finetune as run

    cfg = FinetuneConfig(model=model, data=data, epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, weight_decay=weight_decay, train_layers=train_layers,
                         engine=engine, device=device, out=out, checkpoint=checkpoint,
                         checkpoint_every=checkpoint_every, resume=resume, report=report, seed=seed,
                         loss=loss, keep=keep, patience=patience, schedule=schedule, num_classes=num_classes,
                         normalize=parse_normalize(normalize) if normalize is not None else None,
                         threads=threads, dense_kernels=dense_kernels, untie_params=untie_params)
    quiet = (ctx.obj or {}).get("quiet")

    def progress(steps, epoch, epochs):
        if quiet or not sys.stderr.isatty():
            return None
        return ProgressBar(steps, f"epoch {epoch}/{epochs}", sys.stderr)

    run(cfg, log=_log(ctx), progress=progress, warn=_warn, result=click.echo)


@cli.command(name="eval")
@click.argument("model")
@data_option(required=True)
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True)
@threads_option("onnxruntime threads (default: all cores).")
@normalize_option("Per channel normalization [default: the model's metadata, else none].")
@quiet_option
@click.pass_context
def eval_cmd(ctx, model, data, split, threads, normalize):
    """Accuracy and loss of MODEL on DATA, run by onnxruntime; outputs mapped to the model's class names."""
    from .data import parse_normalize
    from .evaluate import evaluate_onnx

    res = evaluate_onnx(model, data, split, threads=threads,
                        normalize=parse_normalize(normalize) if normalize is not None else None)
    log = _log(ctx)
    log(res["data_summary"])
    if res["normalize"]:
        log(f"normalization from {res['normalize']}")
    if res["labels"]:
        log(f"outputs -> labels (model metadata): {', '.join(f'{i}={n}' for i, n in enumerate(res['labels']))}")
    if len(res["per_class"]) <= 20:
        for c in res["per_class"]:
            log(f"  {c['class']:<16} {100 * c['accuracy']:6.1f}%  ({c['n']} samples)")
    click.echo(f"{res['model']} on {res['data']} ({res['split']}, {res['n']} samples): "
               f"accuracy {100 * res['accuracy']:.2f}%  loss {res['loss']:.4f}")


@cli.command(name="report")
@click.argument("report_file", metavar="REPORT.json")
@click.option("--plot", default=None, metavar="OUT.png", help="Also draw the curves and per-layer bars (needs .[plots]).")
@quiet_option
def report_cmd(report_file, plot):
    """Show a finetune --report (epochs, the per-layer table of sparsity, MACs and bytes, the summary)
    or a fleet simulate --report (rounds, nodes)."""
    from .report import is_fleet_report, read_report

    rep = read_report(report_file)
    if plot:
        from .options import check_output_path
        from .plot import plot_report

        check_output_path(plot, "--plot")
        plot_report(rep, plot)
    if is_fleet_report(rep):
        from edgetune.fleet.report import report_text
    else:
        from .summary import report_text
    click.echo(report_text(rep))
    if plot:
        click.echo(f"plot written to {plot}")


@cli.command()
@models_argument
@batch_size_option()
@click.option("--steps", type=int, default=10, show_default=True, callback=at_least(1),
              help="Timed steps per engine (median).")
@click.option("--threads", type=int, default=None, help="Threads for every engine (default: all cores).")
@data_option("Data for the batch (default: each model's bundled data).")
@json_option("Write the results here.")
@click.option("--no-memory", is_flag=True, help="Skip the step-memory probes (one child process per engine).")
@click.option("--background", type=int, default=0, show_default=True, callback=at_least(0),
              help="Also time every engine beside N busy processes (a loaded device), and the sparse kernels "
                   "and torch at one thread on the quiet machine.")
def bench(models, batch_size, steps, threads, data, json_out, no_memory, background):
    """Time sparse vs dense-native vs numpy vs torch training steps on MODELS (default: bench models)."""
    from .bench import BENCH_MODELS, MAX_BACKGROUND_PER_CPU, default_threads, run_bench
    from .errors import UsageError
    from .options import check_output_path
    from .report import write_report

    limit = MAX_BACKGROUND_PER_CPU * default_threads()
    if background > limit:
        raise UsageError(f"--background {background}: at most {limit} busy processes "
                         f"({MAX_BACKGROUND_PER_CPU} per CPU this process may use)")
    if json_out:
        check_output_path(json_out, "--json")      # before the minutes of timing, not after
    res = run_bench(list(models) or list(BENCH_MODELS), batch_size, steps, threads or default_threads(), data,
                    echo=click.echo, memory=not no_memory, background=background,
                    progress=lambda line: click.echo(line, err=True))
    if json_out:
        write_report(json_out, res)


@cli.command()
@models_argument
@batch_size_option("Batch of the modelled training step.")
@data_option("Bundled dataset name, .npz file or image folder (default: the model's bundled data).")
@click.option("--config", "config", default=None, metavar="CFG.json",
              help="JSON file overriding runtime/accel/spec.json and runtime/sim_config.json (any subset of keys).")
@json_option("Write all results (per layer, design and phase) here.")
def simulate(models, batch_size, data, config, json_out):
    """Model dense, runtime-detect and constraint accelerators on MODELs' real training masks
    (default: the four bench models) and compare cycles and energy (docs/SIMULATION.md)."""
    from .options import check_output_path
    from .simulate import simulate_main

    if json_out:
        check_output_path(json_out, "--json")
    simulate_main(list(models), batch_size, data, config, json_out, echo=click.echo)


@cli.command()
@click.option("--pty", "use_pty", is_flag=True, help="Serve on a pseudo-terminal (the default).")
@click.option("--tcp", default=None, metavar="HOST:PORT", help="Serve on TCP instead (loopback by default).")
@click.option("--fault-rate", type=float, default=0.0, show_default=True, help="Link fault probability per frame.")
@click.option("--format", "fmt", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--reset-after", type=int, default=None, help="Simulate a device reset after N training steps.")
@seed_option("Seed of the fault injector and of the session ids.")
@click.option("--engine", type=click.Choice(["native", "dense"]), default=None,
              help="The engine that does the arithmetic [default: native].")
@click.option("--rtl", is_flag=True,
              help="Serve the simulated RTL device, arithmetic included (hardware/rtl; needs the hw extra and "
                   "the RISC-V cross compiler). --fault-rate is then the probability per byte of a bit flip on "
                   "the line. Simulator: $EDGETUNE_RTL_SIMULATOR (verilator or icarus). See docs/HARDWARE.md.")
@click.option("--exit-with-parent", is_flag=True, hidden=True, help="Stop when the process that started it ends.")
def emulator(use_pty, tcp, fault_rate, fmt, reset_after, seed, engine, rtl, exit_with_parent):
    """Serve the accelerator emulator; prints the device path alone on the first line."""
    if rtl:
        from edgetune.hardware.rtl_emulator import serve_rtl_main
        from .errors import UsageError

        if fmt != "fp32" or engine is not None:
            raise UsageError("--format bf16 and --engine are emulator options; --rtl computes in fp32 in the RTL")
        raise SystemExit(serve_rtl_main(pty=not tcp, tcp=tcp, fault_rate=fault_rate, seed=seed,
                                        reset_after=reset_after,
                                        simulator=os.environ.get("EDGETUNE_RTL_SIMULATOR", "verilator")))
    from edgetune.firmware_bridge.emulator import serve_main

    raise SystemExit(serve_main(pty=not tcp, tcp=tcp, fault_rate=fault_rate, fmt=fmt, reset_after=reset_after,
                                seed=seed, engine=engine, exit_with_parent=exit_with_parent))


# `edgetune fleet` is a group of its own package; it imports no Flower until one of its commands runs
from edgetune.fleet.cli import fleet  # noqa: E402

cli.add_command(fleet)


def main(args=None):
    """Console-script entry point (`args`: the command line without the program name)."""
    cli.main(args=args, prog_name="edgetune")


if __name__ == "__main__":
    main()
