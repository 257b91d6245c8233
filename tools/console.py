"""What every command shares: the Rich console and the mapping of library errors to exit codes.

Library code raises exceptions with a clear message; only the CLI turns them into a
one-line error on stderr and an exit code (2 for bad input, 1 for anything else).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


def _bad_input_types() -> tuple[type[BaseException], ...]:
    from wakeguard.edge.audio import AudioError
    from wakeguard.edge.bundle import BundleError
    from wakeguard.edge.protocol import ProtocolError

    return (AudioError, BundleError, ProtocolError, FileNotFoundError, ValueError)


def print_error(problem: object) -> None:
    """One red ``error:`` line on stderr; the text is printed as it is (a ``[`` in a path is
    not read as markup)."""
    err_console.print(f"[bold red]error:[/] {escape(str(problem))}", highlight=False, soft_wrap=True)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn library exceptions into a red one-line message and an exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except _bad_input_types() as exc:
        print_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    except OSError as exc:  # full disk, permissions, devices
        print_error(exc)
        raise typer.Exit(EXIT_FAILURE) from exc


def run_cli(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with friendly_errors():
        return fn(*args, **kwargs)


def print_json(obj: Any) -> None:
    """One JSON document on stdout, for programs."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()
