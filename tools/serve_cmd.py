"""SCAFFOLD: replaced by the owner of this command (serve_cmd)."""

import typer


def serve_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
