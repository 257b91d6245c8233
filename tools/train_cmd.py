"""SCAFFOLD: replaced by the owner of this command (train_cmd)."""

import typer


def train_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
