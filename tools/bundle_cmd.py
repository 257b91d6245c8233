"""``wakeguard bundle``: a self-contained tarball that installs on a target with no network."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import console, err_console, print_json, run_cli
from .runtime_flags import ModelOption


def bundle_cli(
    platform: Annotated[
        str | None,
        typer.Option(
            help="Target: linux_aarch64 (64-bit Raspberry Pi OS) or linux_x86_64 (default: this machine)."
        ),
    ] = None,
    python: Annotated[
        str | None, typer.Option(help="Target Python: 3.11, 3.12 or 3.13 (default: this one).")
    ] = None,
    model: ModelOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Tarball to write (default: ./wakeguard-VERSION-PLATFORM-pyX.Y.tar.gz).",
        ),
    ] = None,
    wheelhouse: Annotated[
        Path | None,
        typer.Option(
            help="Take the dependency wheels from this folder, offline (default: download them)."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Config to ship instead of the default wakeguard.toml.")
    ] = None,
    unit: Annotated[
        Path | None,
        typer.Option(help="systemd unit to ship instead of the default wakeguard.service."),
    ] = None,
    fetch_wheels: Annotated[
        Path | None,
        typer.Option(
            "--fetch-wheels",
            help="Only download the target's dependency wheels into this folder (a wheelhouse for later offline builds), then stop.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Build an offline install bundle: wheels, model, config, systemd unit, installer, checksums."""
    from . import shipping

    log = (
        (lambda msg: err_console.print(f"[dim]{msg}[/]", highlight=False))
        if not as_json
        else (lambda msg: None)
    )
    if fetch_wheels is not None:
        plat = platform or shipping.host_platform()
        py = python or shipping.host_python()
        wheels = run_cli(shipping.fetch_wheels, fetch_wheels, plat, py, log)
        if as_json:
            print_json({"wheelhouse": str(fetch_wheels), "wheels": [w.name for w in wheels]})
        else:
            console.print(f"{len(wheels)} wheels in {fetch_wheels}", highlight=False)
        return
    built = run_cli(
        shipping.build_bundle,
        out,
        platform=platform,
        python=python,
        model=model,
        wheelhouse=wheelhouse,
        config=config,
        unit=unit,
        log=log,
    )
    s = built.summary()
    if as_json:
        print_json(s)
        return
    console.print(
        f"[green]bundle[/] {s['path']}  ({s['bytes'] / 1e6:.1f} MB, {len(s['wheels'])} wheels, "
        f"wakeguard {s['version']}, model {s['model_version']}, {s['platform']}, Python {s['python']})",
        highlight=False,
    )
    console.print(
        f"install on the target: wakeguard flash USER@HOST --bundle {s['path']}", highlight=False
    )
