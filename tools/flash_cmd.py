"""SCAFFOLD: replaced by the owner of this command (flash_cmd)."""

import typer


def flash_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
