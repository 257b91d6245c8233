"""SCAFFOLD: replaced by the owner of this command (evaluate_cmd)."""

import typer


def evaluate_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
