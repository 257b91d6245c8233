"""SCAFFOLD: replaced by the owner of this command (pipeline_cmd)."""

import typer


def pipeline_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
