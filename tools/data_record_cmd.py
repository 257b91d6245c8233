"""SCAFFOLD: replaced by the owner of this command (data_record_cmd)."""

import typer


def record_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
