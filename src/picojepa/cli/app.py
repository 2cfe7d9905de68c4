"""The ``picojepa`` Typer application and its sub-groups; the command modules register on them."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="pico-JEPA: ultra-light V-JEPA video self-supervised learning, and ensembles of small models.",
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect data and build manifests.")
app.add_typer(data_app, name="data")
