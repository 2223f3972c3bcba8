"""Options several edgetune commands share, written once (click decorators)."""
from __future__ import annotations

import click


def _quiet_flag(ctx, _param, value):
    if value:
        ctx.ensure_object(dict)["quiet"] = True
    return value


# -q also works after the subcommand (edgetune finetune -q)
quiet_option = click.option("--quiet", "-q", is_flag=True, expose_value=False, is_eager=True,
                            callback=_quiet_flag, help="Print only results, warnings and errors.")


def at_least(low: int):
    """A click callback refusing a whole number below `low` (a UsageError: exit code 2)."""
    def check(_ctx, param, value):
        from .errors import UsageError

        if value is not None and value < low:
            raise UsageError(f"--{param.name.replace('_', '-')} must be at least {low}, got {value}")
        return value

    return check


def batch_size_option(help_text: str = "Samples per training step."):
    return click.option("--batch-size", type=int, default=32, show_default=True, callback=at_least(1),
                        help=help_text)


def data_option(help_text: str = "Bundled dataset name, .npz file or image folder.", required: bool = False):
    # a required option gets no default: since click 8.3 an explicit default=None counts as given
    extra = {"required": True} if required else {"default": None}
    return click.option("--data", "data", help=help_text, **extra)


def threads_option(help_text: str):
    return click.option("--threads", type=int, default=None, callback=at_least(1), help=help_text)


def normalize_option(help_text: str):
    return click.option("--normalize", default=None, metavar="MEAN,STD", help=help_text)


def json_option(help_text: str):
    return click.option("--json", "json_out", default=None, metavar="OUT", help=help_text)


def seed_option(help_text: str = "Seed of every random choice."):
    return click.option("--seed", type=int, default=0, show_default=True, help=help_text)


models_argument = click.argument("models", nargs=-1)
