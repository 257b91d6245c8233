"""SCAFFOLD: replaced by the owner of this command (data_import_cmd)."""

import typer


def import_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
