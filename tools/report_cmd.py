"""SCAFFOLD: replaced by the owner of this command (report_cmd)."""

import typer


def report_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
