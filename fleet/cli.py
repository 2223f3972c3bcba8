"""`edgetune fleet ...`: the click group (registered by runtime/cli.py). Flower is imported
only inside the commands, so `edgetune --help` works without the fleet extra."""
from __future__ import annotations

import click

RUN_OPTIONS = [
    click.option("--data", default=None, help="Bundled dataset, .npz or image folder (default: the model's). "
                 "simulate: split across the nodes; init: the server's validation data."),
    click.option("--rounds", type=int, default=3, show_default=True, help="Federated rounds."),
    click.option("--strategy", type=click.Choice(["fedavg", "fedprox"]), default="fedavg", show_default=True),
    click.option("--mu", type=float, default=None, help="FedProx proximal weight mu (needs --strategy fedprox)."),
    click.option("--train-layers", default="all", show_default=True,
                 help="'all' or 'last:K'; only these tensors train and travel."),
    click.option("--epochs", type=int, default=1, show_default=True, help="Local epochs per round."),
    click.option("--batch-size", type=int, default=32, show_default=True),
    click.option("--lr", type=float, default=0.02, show_default=True),
    click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True),
    click.option("--engine", type=click.Choice(["native", "dense", "device"]), default="native", show_default=True,
                 help="The nodes' engine (a SuperNode's own --engine wins)."),
    click.option("--dp-clip", type=float, default=0.0, show_default=True,
                 help="Client-side fixed clipping norm of each node's update (0: no differential privacy)."),
    click.option("--dp-noise", type=float, default=0.0, show_default=True,
                 help="Noise multiplier of the Gaussian noise added to the aggregate (with --dp-clip)."),
    click.option("--fraction-evaluate", type=float, default=1.0, show_default=True,
                 help="Share of the nodes that also score each round's model on their own validation data."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--allow-client-failures", is_flag=True,
                 help="Finish successfully even when some node failed (failures are still reported)."),
]


def run_options(fn):
    for opt in reversed(RUN_OPTIONS):
        fn = opt(fn)
    return fn


def _settings(model, data, rounds, strategy, mu, train_layers, epochs, batch_size, lr, optimizer, engine,
              dp_clip, dp_noise, fraction_evaluate, seed, allow_client_failures, **extra):
    from edgetune import models

    from .task import RunSettings

    if data is None:
        data = models.model_info(model).get("default_data") if models.is_bundled_model(model) else None
        if data is None:
            from edgetune.runtime.errors import UsageError

            raise UsageError(f"--data is required for {model} (it is not a bundled model)")
    return RunSettings(model=model, data=data, rounds=rounds, strategy=strategy, proximal_mu=mu or 0.0,
                       train_layers=train_layers, local_epochs=epochs, batch_size=batch_size, lr=lr,
                       optimizer=optimizer, engine=engine, dp_clipping_norm=dp_clip, dp_noise_multiplier=dp_noise,
                       fraction_evaluate=fraction_evaluate, seed=seed,
                       allow_client_failures=allow_client_failures, **extra).checked()


@click.group()
def fleet():
    """Federated fine-tuning across many devices, on Flower (needs: pip install "edgetune[fleet]")."""


@fleet.command()
@click.argument("model", required=False, default="digits_cnn")
@click.option("--clients", type=int, default=4, show_default=True, help="Simulated nodes.")
@click.option("--partition", default="iid", show_default=True, help="'iid' or 'dirichlet:ALPHA' (label skew).")
@run_options
@click.option("--out", default=None, help="Final model (ONNX), checked with onnxruntime (default MODEL-fleet.onnx).")
@click.option("--report", default=None, help="Write the JSON report (per round and per node) here.")
@click.option("--timeout", type=float, default=1800.0, show_default=True, help="Seconds the whole run may take.")
@click.pass_context
def simulate(ctx, model, clients, partition, out, report, timeout, **opts):
    """Simulate a fleet of CLIENTS nodes fine-tuning MODEL on this machine (Flower simulation engine)."""
    import os

    from . import require_flower
    from .simulate import simulate as run

    require_flower()
    if out is None:
        out = f"{os.path.splitext(os.path.basename(model))[0]}-fleet.onnx"
    settings = _settings(model, partition=partition, out=out, report=report or "", client_threads=1, **opts)
    quiet = ctx.obj.get("quiet") if ctx.obj else False
    run(settings, clients, log=(lambda m: None) if quiet else click.echo, timeout=timeout)


@fleet.command()
@click.option("--superlink", required=True, metavar="HOST:PORT", help="The SuperLink's address.")
@click.option("--data", required=True, help="This device's data: .npz file, image folder or bundled name.")
@click.option("--engine", type=click.Choice(["native", "dense", "device"]), default=None,
              help="Engine for this node (default: the run's).")
@click.option("--device", default=None, help="device engine: a pyserial URL of the accelerator, or 'emulator'.")
@click.option("--model", default=None, help="The base model's path on this device (default: the run's model).")
@click.option("--name", default=None, help="How reports name this node (default: host/node id).")
@click.option("--threads", type=int, default=0, help="native engine threads (0: its default).")
@click.option("--root-certificates", default=None, metavar="CA", help="CA certificate (PEM) of the SuperLink's TLS.")
@click.option("--insecure", is_flag=True, help="Connect without TLS (testing only).")
@click.option("--flwr-home", default=None, help="Flower's folder for this node (default: a temporary one).")
def supernode(superlink, data, engine, device, model, name, threads, root_certificates, insecure, flwr_home):
    """Run this device's node of a fleet: a Flower SuperNode whose ClientApp trains with edgetune."""
    from . import require_flower
    from .node import run_supernode

    require_flower()
    raise SystemExit(run_supernode(superlink=superlink, data=data, engine=engine, device=device, model=model,
                                   name=name, threads=threads, root_certificates=root_certificates,
                                   insecure=insecure, flwr_home=flwr_home, echo=click.echo))


@fleet.command()
@click.argument("folder")
@click.option("--model", default="digits_cnn", show_default=True,
              help="Bundled name, or a path that is valid on every machine of the fleet.")
@click.option("--min-nodes", type=int, default=2, show_default=True, help="Nodes that train in every round.")
@run_options
@click.option("--out", default="", help="Where the SuperLink's machine writes the final model (ONNX).")
@click.option("--report", default="", help="Where the SuperLink's machine writes the JSON report.")
@click.option("--force", is_flag=True, help="Replace an existing pyproject.toml in FOLDER.")
def init(folder, model, min_nodes, out, report, force, **opts):
    """Write the Flower app config in FOLDER, for: flwr run FOLDER <superlink connection>."""
    from .app_config import write_app
    from .task import resolve_paths

    settings = resolve_paths(_settings(model, min_nodes=min_nodes, out=out, report=report, **opts))
    path = write_app(folder, settings, overwrite=force)
    click.echo(f"wrote {path}")
    click.echo(f"next: start a SuperLink and {min_nodes} x 'edgetune fleet supernode', then "
               f"'flwr run {folder} <connection>' (docs/FLEET.md)")
