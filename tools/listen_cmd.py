"""SCAFFOLD: replaced by the owner of this command (listen_cmd)."""

import typer


def listen_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
