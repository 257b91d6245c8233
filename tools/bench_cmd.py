"""SCAFFOLD: replaced by the owner of this command (bench_cmd)."""

import typer


def bench_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
