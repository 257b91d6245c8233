"""SCAFFOLD: replaced by the owner of this command (monitor_cmd)."""

import typer


def monitor_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
