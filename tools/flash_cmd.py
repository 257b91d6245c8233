"""``wakeguard flash``: install, update or roll back wakeguard on a device over SSH."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import EXIT_FAILURE, console, err_console, print_error, print_json, run_cli


def _printer(as_json: bool):
    def log(line: str) -> None:
        if line.startswith("@"):
            return
        if line.startswith("!! error:"):
            return  # the final message says it once
        style = "yellow" if line.startswith("!!") else "dim"
        (err_console if as_json else console).print(
            f"[{style}]{line}[/]", highlight=False, soft_wrap=True
        )

    return log


def flash_cli(
    destination: Annotated[
        str,
        typer.Argument(
            metavar="USER@HOST", help="The device, as for ssh (user@host or a Host alias)."
        ),
    ],
    bundle: Annotated[
        Path | None,
        typer.Option(help="Bundle from `wakeguard bundle` (default: build one for the target)."),
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="SSH port.")] = 22,
    identity: Annotated[
        Path | None,
        typer.Option(
            "--identity", "-i", help="SSH private key (default: ssh's own choice, or the agent)."
        ),
    ] = None,
    ssh_config: Annotated[
        Path | None, typer.Option("--ssh-config", "-F", help="SSH client config file.")
    ] = None,
    root: Annotated[str, typer.Option(help="Install folder on the device.")] = "/opt/wakeguard",
    keep: Annotated[int, typer.Option(help="Releases to keep on the device.")] = 3,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Switch back to the previous release.")
    ] = False,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Update only the model, to this bundle folder."),
    ] = None,
    wheelhouse: Annotated[
        Path | None,
        typer.Option(help="When building the bundle: take the wheels from this folder, offline."),
    ] = None,
    service: Annotated[
        str,
        typer.Option(
            help="How to run the service: auto (systemd when running, else directly), systemd or direct."
        ),
    ] = "auto",
    health_timeout: Annotated[
        int, typer.Option(help="Seconds to wait for the service's metrics port to answer.")
    ] = 60,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Metrics port of the installed service (default: the config's, else 9810)."
        ),
    ] = None,
    proxy: Annotated[
        str | None,
        typer.Option(
            metavar="URI|off",
            help="Run the Wyoming wake proxy in front of the wake-word service at URI "
            "(tcp://HOST:PORT or unix:///PATH), now and on every later release; off stops it. "
            "Default: leave the device as it is.",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON (progress goes to stderr).")
    ] = False,
) -> None:
    """Install wakeguard on a device over SSH, health-check it, and roll back on any failure."""
    from .deploy import DeployError, SSHTarget, check_proxy_uri, flash

    if service not in ("auto", "systemd", "direct"):
        raise typer.BadParameter("choose auto, systemd or direct", param_hint="--service")
    if rollback and (bundle is not None or model is not None):
        raise typer.BadParameter("--rollback takes no --bundle or --model", param_hint="--rollback")
    if bundle is not None and model is not None:
        raise typer.BadParameter(
            "give --bundle (everything) or --model (the model only), not both", param_hint="--model"
        )
    if not destination.strip():
        raise typer.BadParameter("give the device as USER@HOST", param_hint="DESTINATION")
    for flag, path in (("--identity", identity), ("--ssh-config", ssh_config)):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"{path}: no such file", param_hint=flag)
    if proxy is not None:
        try:
            check_proxy_uri(proxy)
        except ValueError as exc:
            raise typer.BadParameter(
                str(exc).removeprefix("--proxy").lstrip(": "), param_hint="--proxy"
            ) from exc
    target = SSHTarget(destination, port=port, identity=identity, ssh_config=ssh_config)

    def confirm(question: str) -> bool:
        return typer.confirm(question, default=False, err=True)

    try:
        result = run_cli(
            flash,
            target,
            bundle=bundle,
            model=model,
            root=root,
            keep=keep,
            rollback=rollback,
            wheelhouse=wheelhouse,
            service=service,
            health_timeout=health_timeout,
            metrics_port=metrics_port,
            proxy=proxy,
            confirm=None if yes else confirm,
            log=_printer(as_json),
        )
    except DeployError as exc:
        print_error(exc)
        raise typer.Exit(EXIT_FAILURE) from exc
    if as_json:
        print_json(result.to_dict())
        if proxy not in (None, "off") and result.proxy != "up":
            raise typer.Exit(EXIT_FAILURE)
        return
    what = {"install": "installed", "model": "model updated", "rollback": "rolled back"}[
        result.action
    ]
    prev = f" (previous: {result.previous})" if result.previous else ""
    console.print(
        f"[green]{what}[/]: {result.destination} runs release {result.release}{prev}",
        highlight=False,
    )
    if result.proxy == "up":
        console.print(f"Wyoming wake proxy: listening on {result.proxy_uri}", highlight=False)
    elif proxy not in (None, "off"):
        print_error(
            "the release is live, but the Wyoming wake proxy is not listening (its log lines"
            " are above); the device keeps trying it on every release"
        )
        raise typer.Exit(EXIT_FAILURE)
