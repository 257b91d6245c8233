"""SCAFFOLD: replaced by the owner of this command (data_simulate_cmd)."""

import typer


def simulate_cli() -> None:
    """Not built yet."""
    raise typer.Exit(1)
