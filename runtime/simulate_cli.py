"""`edgetune simulate`: the click command (registered by cli.py with cli.add_command(simulate)).

Standalone: python -m edgetune.runtime.simulate_cli [MODEL...] [options]
"""
from __future__ import annotations

import click


@click.command()
@click.argument("models", nargs=-1)
@click.option("--batch-size", type=int, default=32, show_default=True, help="Batch of the modelled training step.")
@click.option("--data", default=None, help="Bundled dataset name, .npz file or image folder (default: the model's bundled data).")
@click.option("--config", "config", default=None, help="JSON file overriding runtime/sim_config.json (any subset of keys).")
@click.option("--json", "json_out", default=None, help="Write all results (per layer, design and phase) here.")
def simulate(models, batch_size, data, config, json_out):
    """Model dense, runtime-detect and constraint accelerators on MODELs' real training masks
    (default: the four bench models) and compare cycles and energy."""
    from .errors import UsageError
    from .simulate import simulate_main

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    simulate_main(list(models), batch_size, data, config, json_out, echo=click.echo)


def main():
    """Run the command on its own, with edgetune's one-line error handling."""
    import sys

    from .errors import EdgetuneError

    try:
        simulate.main(prog_name="edgetune simulate", standalone_mode=False)
    except EdgetuneError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
