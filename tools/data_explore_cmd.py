"""SCAFFOLD: replaced by the owner of this command (data_explore_cmd)."""

import typer


def explore_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
