"""The edgetune command line (click). Heavy imports stay inside the commands."""
from __future__ import annotations

import os
import sys

import click

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


@click.group(cls=_Group)
@click.option("--quiet", "-q", is_flag=True, help="Print only results and errors.")
@click.pass_context
def cli(ctx, quiet):
    """edgetune: on-device fine-tuning of ONNX models with sparse training kernels."""
    ctx.obj = {"quiet": quiet}


def _log(ctx):
    return (lambda msg: None) if ctx.obj.get("quiet") else click.echo


@cli.command()
def models():
    """List the bundled models and datasets."""
    from edgetune import models as bundled

    click.echo("models:")
    for m in bundled.list_models():
        shape = "x".join("N" if d is None else str(d) for d in m["input_shape"])
        click.echo(f"  {m['name']:<24} {shape:<12} data={m.get('default_data', '-'):<16} {m.get('description', '')}")
    click.echo("datasets:")
    for d in bundled.list_datasets():
        click.echo(f"  {d['name']:<24} {d.get('description', '')}")
    click.echo(f"default: edgetune finetune {bundled.DEFAULT_MODEL} --data {bundled.model_info(bundled.DEFAULT_MODEL).get('default_data')}")


@cli.command()
@click.argument("model")
def info(model):
    """Show MODEL's layers, shapes, parameters and activation constraint rules."""
    from .info import describe

    click.echo(describe(model))


@cli.command()
@click.argument("model", required=False)
@click.option("--data", "data", help="Bundled dataset name, .npz file or image folder.")
@click.option("--epochs", type=int, default=4, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=0.02, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--weight-decay", type=float, default=None, help="Default: 0 for sgd, 0.01 for adamw.")
@click.option("--train-layers", default="all", show_default=True, help="'all' or 'last:K' Conv/Gemm layers.")
@click.option("--engine", type=click.Choice(["native", "dense", "device"]), default="native", show_default=True)
@click.option("--dense-kernels", is_flag=True, help="native engine: iterate densely (no zero skipping).")
@click.option("--device", default=None, help="device engine: a pyserial URL, or 'emulator'.")
@click.option("--out", default=None, help="Fine-tuned ONNX path (default MODEL-finetuned.onnx).")
@click.option("--checkpoint", default=None, help="Folder for atomic checkpoints.")
@click.option("--checkpoint-every", type=int, default=0, help="Also checkpoint every N steps.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --checkpoint.")
@click.option("--report", default=None, help="Write the JSON report here.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--loss", type=click.Choice(["cross_entropy", "mse"]), default="cross_entropy", show_default=True)
@click.pass_context
def finetune(ctx, model, data, epochs, batch_size, lr, optimizer, weight_decay, train_layers, engine,
             dense_kernels, device, out, checkpoint, checkpoint_every, resume, report, seed, loss):
    """Fine-tune MODEL (default: the bundled default) on the device."""
    from .trainer import FinetuneConfig, finetune as run

    cfg = FinetuneConfig(model=model, data=data, epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, weight_decay=weight_decay, train_layers=train_layers,
                         engine=engine, device=device, out=out, checkpoint=checkpoint,
                         checkpoint_every=checkpoint_every, resume=resume, report=report, seed=seed,
                         loss=loss, engine_options={"dense": True} if dense_kernels else {})
    quiet = ctx.obj.get("quiet")

    def progress(steps, epoch, epochs):
        if quiet or not sys.stderr.isatty():
            return None
        return click.progressbar(length=steps, label=f"epoch {epoch}/{epochs}", file=sys.stderr)

    run(cfg, log=_log(ctx), progress=progress)


@cli.command(name="eval")
@click.argument("model")
@click.option("--data", "data", required=True, help="Bundled dataset name, .npz file or image folder.")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True)
def eval_cmd(model, data, split):
    """Accuracy and loss of MODEL on DATA, run by onnxruntime."""
    from .evaluate import evaluate_onnx

    res = evaluate_onnx(model, data, split)
    click.echo(f"{res['model']} on {res['data']} ({res['split']}, {res['n']} samples): "
               f"accuracy {100 * res['accuracy']:.2f}%  loss {res['loss']:.4f}")


@cli.command()
@click.argument("models", nargs=-1)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--steps", type=int, default=10, show_default=True, help="Timed steps per engine (median).")
@click.option("--threads", type=int, default=None, help="Threads for every engine (default: all cores).")
@click.option("--data", default=None, help="Data for the batch (default: each model's bundled data).")
@click.option("--json", "json_out", default=None, help="Write the results here.")
def bench(models, batch_size, steps, threads, data, json_out):
    """Time sparse vs dense-native vs numpy vs torch training steps on MODELS (default: bench models)."""
    from .bench import BENCH_MODELS, default_threads, run_bench
    from .errors import UsageError
    from .report import write_report

    if batch_size < 1 or steps < 1:
        raise UsageError("--batch-size and --steps must be at least 1")
    res = run_bench(list(models) or list(BENCH_MODELS), batch_size, steps, threads or default_threads(), data,
                    echo=click.echo)
    if json_out:
        write_report(json_out, res)


@cli.command()
@click.option("--pty", "use_pty", is_flag=True, help="Serve on a pseudo-terminal (the default).")
@click.option("--tcp", default=None, metavar="HOST:PORT", help="Serve on TCP instead (loopback by default).")
@click.option("--fault-rate", type=float, default=0.0, show_default=True, help="Link fault probability per frame.")
@click.option("--format", "fmt", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--reset-after", type=int, default=None, help="Simulate a device reset after N training steps.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault injector.")
@click.option("--rtl", is_flag=True,
              help="Serve the simulated RTL link layer (hardware/rtl; needs the hw extra). --fault-rate is then "
                   "the probability per byte of a bit flip on the line. Simulator: $EDGETUNE_RTL_SIMULATOR "
                   "(verilator or icarus). See docs/HARDWARE.md.")
def emulator(use_pty, tcp, fault_rate, fmt, reset_after, seed, rtl):
    """Serve the accelerator emulator; prints the device path alone on the first line."""
    if rtl:
        from edgetune.hardware.rtl_emulator import serve_rtl_main
        from .errors import UsageError

        if fmt != "fp32" or reset_after is not None:
            raise UsageError("--format bf16 and --reset-after are emulator options; --rtl serves fp32 without resets")
        raise SystemExit(serve_rtl_main(pty=not tcp, tcp=tcp, fault_rate=fault_rate, seed=seed,
                                        simulator=os.environ.get("EDGETUNE_RTL_SIMULATOR", "verilator")))
    from edgetune.firmware_bridge.emulator import serve_main

    raise SystemExit(serve_main(pty=not tcp, tcp=tcp, fault_rate=fault_rate, fmt=fmt,
                                reset_after=reset_after, seed=seed))


def _register_extra_commands():
    from .simulate_cli import simulate

    cli.add_command(simulate)


_register_extra_commands()


def main():
    """Console-script entry point."""
    cli(prog_name="edgetune")


if __name__ == "__main__":
    main()
