"""Command line: ``picojepa <command> --help`` describes each command.

One module per command group (``pretrain``, ``data``, ``evaluate``, ``deploy``, ``viz``) registers its commands
on the application in ``app``; this module mounts them and runs it.
"""

from __future__ import annotations

import sys

import typer

from ..errors import PicoJepaError
from .app import app
from .common import HEAD_HELP, INITS_HELP, PROBE_GRID_HELP  # noqa: F401  (re-exported)
from .viz import viz_app

# isort: off
# Importing a group registers its commands, in this order in --help: train, evaluate, deploy, data.
from . import pretrain, evaluate, deploy, data  # noqa: F401
# isort: on

app.add_typer(viz_app, name="viz", help="Pictures: mask views, t-SNE maps, training curves.")


def main() -> None:
    try:
        app()
    except PicoJepaError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
