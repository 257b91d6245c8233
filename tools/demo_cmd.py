"""SCAFFOLD: replaced by the owner of this command (demo_cmd)."""

import typer


def demo_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
