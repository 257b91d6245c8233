"""The ``wakeguard`` command line: one module per command, registered here.

Command modules import only Typer and the standard library at module level; TensorFlow
and the other training libraries are imported inside the commands that need them, so
``wakeguard --help``, ``screen``, ``listen`` and ``bench`` start fast on a Pi.
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import (
    bench_cmd,
    bundle_cmd,
    data_cmd,
    demo_cmd,
    evaluate_cmd,
    flash_cmd,
    frontends_cmd,
    listen_cmd,
    monitor_cmd,
    pipeline_cmd,
    quantize_cmd,
    report_cmd,
    screen_cmd,
    serve_cmd,
    train_cmd,
)

app = typer.Typer(
    name="wakeguard",
    help="Voice liveness for smart speakers: tell a live talker from a replayed recording.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def package_version() -> str:
    """The installed distribution's version, or "unknown" when run from an uninstalled tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wakeguard")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"wakeguard {package_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the wakeguard version and exit.",
        ),
    ] = False,
) -> None:
    """Voice liveness for smart speakers: tell a live talker from a replayed recording."""


app.add_typer(data_cmd.app, name="data", help="Build, import, record and explore datasets.")
app.command("train")(train_cmd.train_cli)
app.command("compare-frontends")(frontends_cmd.compare_frontends_cli)
app.command("quantize")(quantize_cmd.quantize_cli)
app.command("evaluate")(evaluate_cmd.evaluate_cli)
app.command("report")(report_cmd.report_cli)
app.command("pipeline")(pipeline_cmd.pipeline_cli)
app.command("screen")(screen_cmd.screen_cli)
app.command("listen")(listen_cmd.listen_cli)
app.command("serve")(serve_cmd.serve_cli)
app.command("monitor")(monitor_cmd.monitor_cli)
app.command("demo")(demo_cmd.demo_cli)
app.command("bench")(bench_cmd.bench_cli)
app.command("bundle")(bundle_cmd.bundle_cli)
app.command("flash")(flash_cmd.flash_cli)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
