"""SCAFFOLD: replaced by the owner of this command (bundle_cmd)."""

import typer


def bundle_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
