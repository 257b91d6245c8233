"""Deploying a bundle to a device over SSH: target checks, upload, install, health, rollback.

Uses the system ``ssh`` and ``scp`` (keys or an agent, ``BatchMode=yes``: never a password).
The work on the device is done by the installer shipped in every bundle (``install.sh``),
piped over SSH, so the same steps run whether a person installs by hand or
``wakeguard flash`` does it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .shipping import (
    GLIBC_MIN,
    PLATFORMS,
    PYTHONS,
    ShipError,
    build_bundle,
    build_model_tarball,
    install_script_text,
    normalise_platform,
    read_manifest,
    version_tuple,
)

Log = Callable[[str], None]
DEFAULT_ROOT = "/opt/wakeguard"
MIN_FREE_BYTES = 300 * 1024 * 1024
"""Room a full release needs beyond the bundle itself: its venv holds the unpacked wheels
(measured: 197 MB for the x86_64 Python 3.11 runtime from a 46 MB bundle)."""
UPLOAD_DIR = ".wakeguard-upload"
"""Uploads land here in the remote user's home, so ROOT may still need creating with sudo."""


class TargetError(ValueError):
    """The target cannot take this bundle: every reason, one per line."""

    def __init__(self, target: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{target} cannot take this bundle:\n  - " + "\n  - ".join(problems))


class DeployError(RuntimeError):
    """The deployment failed (after any rollback the installer did), with the reason."""

    def __init__(self, message: str, output: list[str] | None = None):
        self.output = output or []
        super().__init__(message)


@dataclass(frozen=True)
class SSHTarget:
    """One device reachable over SSH with keys or an agent."""

    destination: str
    """``user@host`` (or a Host alias of the SSH config)."""
    port: int = 22
    identity: Path | None = None
    ssh_config: Path | None = None
    connect_timeout: int = 10

    def _options(self) -> list[str]:
        opts = [
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={self.connect_timeout}",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", "ServerAliveInterval=15",
        ]  # fmt: skip
        if self.ssh_config is not None:
            opts = ["-F", str(self.ssh_config), *opts]
        if self.identity is not None:
            opts += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        return opts

    def ssh_argv(self, remote_args: list[str]) -> list[str]:
        remote = " ".join(shlex.quote(a) for a in remote_args)
        return ["ssh", *self._options(), "-p", str(self.port), self.destination, remote]

    def run(
        self, remote_args: list[str], stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.ssh_argv(remote_args),
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode == 255:
            raise DeployError(self._unreachable(proc.stderr))
        return proc

    def _unreachable(self, stderr: str) -> str:
        lines = [
            ln
            for ln in stderr.strip().splitlines()
            if ln.strip() and not ln.startswith("Warning: Permanently added")
        ]
        why = lines[-1] if lines else "ssh exited with 255"
        hint = ""
        if "Permission denied" in why:
            hint = " (key-based login needed: ssh-copy-id, --identity KEY, or an ssh agent; passwords are never used)"
        elif "Host key verification failed" in why or "REMOTE HOST IDENTIFICATION" in stderr:
            hint = " (the host key changed: check the device, then remove its old key from known_hosts)"
        return f"cannot reach {self.destination} port {self.port} over SSH: {why}{hint}"

    def stream(
        self, remote_args: list[str], stdin: str, log: Log, timeout: float = 1800
    ) -> tuple[int, list[str]]:
        """Run a command, passing each output line to ``log`` as it arrives."""
        lines: list[str] = []
        with subprocess.Popen(
            self.ssh_argv(remote_args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        ) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
            for line in proc.stdout:
                line = line.rstrip("\n")
                lines.append(line)
                log(line)
            rc = proc.wait(timeout=timeout)
        if rc == 255:
            if not any(ln.startswith(("::", "!!", "@")) for ln in lines):
                raise DeployError(self._unreachable("\n".join(lines)), lines)
            if not any(ln.startswith("!! error:") for ln in lines):
                raise DeployError(
                    f"lost the SSH connection to {self.destination} during the install; the device "
                    "finishes it on its own and rolls back if it fails: flash again or check "
                    "ROOT/current there",
                    lines,
                )
        return rc, lines

    def upload(self, local: Path, remote_path: str, timeout: float = 1800) -> None:
        argv = [
            "scp",
            "-B",
            "-q",
            *self._options(),
            "-P",
            str(self.port),
            str(local),
            f"{self.destination}:{remote_path}",
        ]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["scp failed"])[-1]
            raise DeployError(
                f"uploading {local.name} to {self.destination}:{remote_path} failed: {why}"
            )


# ---------------------------------------------------------------- facts and checks


@dataclass(frozen=True)
class TargetFacts:
    """What the installer's ``facts`` command reported about the device."""

    values: dict[str, list[str]]

    @classmethod
    def parse(cls, lines: list[str]) -> TargetFacts:
        values: dict[str, list[str]] = {}
        for line in lines:
            if line.startswith("@") and "=" in line:
                key, _, value = line[1:].partition("=")
                values.setdefault(key, []).append(value)
        return cls(values)

    def get(self, key: str, default: str = "") -> str:
        v = self.values.get(key)
        return v[-1] if v else default

    def all(self, key: str) -> list[str]:
        return list(self.values.get(key, []))

    @property
    def platform(self) -> str | None:
        try:
            return normalise_platform(self.get("arch"))
        except ShipError:
            return None

    @property
    def python(self) -> str:
        """``major.minor`` of the target's python3 (empty if none)."""
        v = self.get("python")
        return ".".join(v.split(".")[:2]) if v and v != "none" else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (v if k in ("audio", "python_minor", "releases") else v[-1])
            for k, v in self.values.items()
        }


@dataclass
class CheckResult:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_target(
    facts: TargetFacts,
    bundle: dict[str, Any] | None,
    bundle_bytes: int = 0,
    *,
    root: str = DEFAULT_ROOT,
    service: str = "auto",
) -> CheckResult:
    """Everything wrong with the target for this bundle (errors stop the flash, warnings do not)."""
    r = CheckResult()
    if facts.get("kernel") != "Linux":
        r.errors.append(
            f"operating system is {facts.get('kernel') or 'unknown'} ({facts.get('os')}): wakeguard runs on Linux"
        )
    plat = facts.platform
    if plat is None:
        r.errors.append(
            f"architecture {facts.get('arch') or 'unknown'} is not supported: needs aarch64 (64-bit Raspberry Pi OS) or x86_64; "
            "a 32-bit Pi OS (armv7l) has no LiteRT wheels"
        )
    py = facts.python
    supported = " or ".join(PYTHONS)
    if not py:
        r.errors.append(f"python3 not found: install Python {supported}")
    elif py not in PYTHONS and not set(facts.all("python_minor")) & set(PYTHONS):
        r.errors.append(f"python3 is {facts.get('python')}: wakeguard needs Python {supported}")
    if py and facts.get("venv") != "yes":
        r.errors.append(
            "python3 cannot make virtual environments: install python3-venv (sudo apt install python3-venv)"
        )
    glibc = facts.get("glibc")
    if glibc and glibc != "unknown" and version_tuple(glibc) < GLIBC_MIN:
        r.errors.append(
            f"glibc {glibc} is older than {'.'.join(map(str, GLIBC_MIN))}, which the bundled wheels need"
        )
    if facts.get("tar") == "no":
        r.errors.append("tar not found on the target")
    if bundle is not None and bundle.get("kind") == "full":
        if plat is not None and bundle.get("platform") != plat:
            r.errors.append(
                f"bundle is for {bundle.get('platform')}, the target is {plat}: build one with --platform {plat}"
            )
        want = bundle.get("python")
        have = set(facts.all("python_minor")) | ({py} if py else set())
        if py and want not in have:
            r.errors.append(
                f"bundle is for Python {want}, the target has {', '.join(sorted(have))}: build one with --python {py}"
            )
    free = facts.get("free_bytes")
    need = 3 * bundle_bytes + MIN_FREE_BYTES
    if free.isdigit() and int(free) < need:
        r.errors.append(
            f"only {int(free) / 1e6:.0f} MB free where {root} lives; a release needs about {need / 1e6:.0f} MB"
        )
    if facts.get("root_writable") != "yes" and facts.get("privileged") == "no":
        r.errors.append(
            f"{root} is not writable by {facts.get('user')} and there is no root or passwordless sudo"
        )
    if facts.get("systemd") == "running" and facts.get("privileged") == "no":
        r.errors.append(
            f"systemd is running but {facts.get('user')} has no root or passwordless sudo to install the service: "
            "connect as root or allow sudo without a password"
        )
    if service == "systemd" and facts.get("systemd") != "running":
        r.errors.append(
            "--service systemd, but systemd is not running on the target (use auto or direct)"
        )
    if facts.get("audio_cards", "0") == "0":
        src = facts.get("audio_source")
        where = {
            "arecord -l": "arecord -l lists no capture device",
            "/proc/asound/pcm": "no capture device in /proc/asound/pcm",
        }.get(src or "", "no sound cards found (/proc/asound/cards)")
        if src == "none":
            where = "no way to list audio devices (no arecord, no /proc/asound/cards)"
        r.warnings.append(
            f"{where}: plug in a microphone; the service starts anyway and retries until one appears"
        )
    if facts.get("portaudio") == "no":
        r.warnings.append(
            "libportaudio2 not found: microphone capture needs it (sudo apt install libportaudio2)"
        )
    if facts.get("systemd") != "running" and service != "direct":
        r.warnings.append(
            "no systemd running on the target: the service will be started directly (nohup/setsid, pid file), not as a systemd unit"
        )
    return r


# ---------------------------------------------------------------- flash


@dataclass(frozen=True)
class FlashResult:
    action: str
    destination: str
    release: str
    previous: str | None
    service: str | None
    facts: dict[str, Any]
    warnings: list[str]
    bundle: str | None = None
    health_verdict: str | None = None
    proxy: str | None = None
    """The Wyoming wake proxy after the run: up, down (asked for, not listening) or off."""
    proxy_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "destination": self.destination,
            "release": self.release,
            "previous": self.previous,
            "service": self.service,
            "health_verdict": self.health_verdict,
            "proxy": self.proxy,
            "proxy_uri": self.proxy_uri,
            "bundle": self.bundle,
            "warnings": self.warnings,
            "target": self.facts,
        }


def target_facts(target: SSHTarget, root: str) -> TargetFacts:
    proc = target.run(["bash", "-s", "--", "facts", "--root", root], stdin=install_script_text())
    if proc.returncode != 0:
        why = (proc.stdout + proc.stderr).strip().splitlines()
        raise DeployError(
            f"could not inspect {target.destination}: {why[-1] if why else 'no output'} (is bash installed?)"
        )
    return TargetFacts.parse(proc.stdout.splitlines())


def _installer_failure(lines: list[str], rc: int) -> str:
    errors = [ln.removeprefix("!! error: ") for ln in lines if ln.startswith("!! error:")]
    if errors:
        return errors[-1]
    tail = [ln for ln in lines if ln.strip()][-3:]
    return f"installer exited with status {rc}: " + " | ".join(tail)


def _run_installer(target: SSHTarget, args: list[str], log: Log) -> TargetFacts:
    rc, lines = target.stream(["bash", "-s", "--", *args], install_script_text(), log)
    facts = TargetFacts.parse(lines)
    if rc != 0:
        raise DeployError(_installer_failure(lines, rc), lines)
    return facts


_PROXY_URI = re.compile(r"tcp://[A-Za-z0-9._-]+:[0-9]{1,5}|unix:///[A-Za-z0-9._/+-]+|off")


def check_proxy_uri(uri: str) -> str:
    """``uri`` if it is a proxy upstream the installer takes, else a ValueError saying why."""
    if not _PROXY_URI.fullmatch(uri):
        raise ValueError(f"--proxy must be tcp://HOST:PORT, unix:///PATH or off, got {uri!r}")
    if uri.startswith("tcp://") and not 0 < int(uri.rsplit(":", 1)[1]) < 65536:
        raise ValueError(f"--proxy: port out of range in {uri!r}")
    return uri


def full_bundle_manifest(tarball: Path) -> dict[str, Any]:
    """The manifest of a full bundle from `wakeguard bundle` for a known platform, or a
    ShipError naming the tarball."""
    manifest = read_manifest(tarball)
    if manifest.get("kind") != "full":
        raise ShipError(
            f"{tarball}: a {manifest.get('kind')!r} bundle; flash --bundle needs a full bundle from `wakeguard bundle`"
        )
    if manifest.get("platform") not in PLATFORMS:
        raise ShipError(f"{tarball}: unknown platform {manifest.get('platform')!r}")
    return manifest


def flash(
    target: SSHTarget,
    *,
    bundle: Path | None = None,
    model: Path | None = None,
    root: str = DEFAULT_ROOT,
    keep: int = 3,
    rollback: bool = False,
    wheelhouse: Path | None = None,
    service: str = "auto",
    health_timeout: int = 60,
    metrics_port: int | None = None,
    proxy: str | None = None,
    confirm: Callable[[str], bool] | None = None,
    log: Log = lambda _: None,
) -> FlashResult:
    """Check the target, then install a bundle, update only the model, or roll back.

    ``proxy``: the upstream wake-word service (``tcp://HOST:PORT`` or ``unix:///PATH``) the
    Wyoming proxy forwards to; the target remembers it and runs the proxy on every later
    release. ``"off"`` stops it; None leaves the target as it is."""
    if keep < 1:
        raise ValueError("--keep must be at least 1")
    if proxy is not None:
        check_proxy_uri(proxy)
    if not root.startswith("/"):
        raise ValueError(f"--root must be an absolute path on the target, got {root}")
    common = [
        "--root",
        root,
        "--keep",
        str(keep),
        "--service",
        service,
        "--health-timeout",
        str(health_timeout),
    ]
    if proxy is not None:
        common += ["--proxy", proxy]
    # What is on this machine is checked before anything goes over SSH.
    if bundle is not None:
        full_bundle_manifest(Path(bundle))
    if model is not None:
        from wakeguard.edge.bundle import load_bundle

        load_bundle(model)
    log(f":: inspecting {target.destination}")
    facts = target_facts(target, root)
    if rollback:
        if service == "systemd" and facts.get("systemd") != "running":
            raise TargetError(
                target.destination, ["--service systemd, but systemd is not running on the target"]
            )
        if confirm is not None and not confirm(
            f"Roll {target.destination} back to its previous release?"
        ):
            raise DeployError("cancelled")
        out = _run_installer(target, ["rollback", *common], log)
        return _result("rollback", target, facts, out, [], None)
    if metrics_port is not None:
        common += ["--metrics-port", str(metrics_port)]

    early = check_target(facts, None, root=root, service=service)
    if early.errors:  # before spending time on building or uploading
        raise TargetError(target.destination, early.errors)

    with tempfile.TemporaryDirectory(prefix="wakeguard-flash-") as tmp:
        given = str(bundle) if bundle is not None else None
        if model is not None:
            if not facts.get("current"):
                raise DeployError(
                    f"{target.destination} has no wakeguard release under {root}: flash a full bundle first"
                )
            tarball = build_model_tarball(model, Path(tmp) / "wakeguard-model.tar.gz").path
            manifest = read_manifest(tarball)
            action, command = "model", "model"
        else:
            if bundle is None:
                plat, py = facts.platform, facts.python
                assert plat is not None  # check_target said so already
                if py not in PYTHONS:  # an older python3 beside a usable pythonX.Y
                    py = sorted(set(facts.all("python_minor")) & set(PYTHONS))[-1]
                log(f":: building a bundle for {plat}, Python {py}")
                bundle = build_bundle(
                    Path(tmp) / "bundle.tar.gz",
                    platform=plat,
                    python=py,
                    wheelhouse=wheelhouse,
                    log=lambda m: log(f"   {m}"),
                ).path
            tarball = Path(bundle)
            manifest = full_bundle_manifest(tarball)
            action, command = "install", "install"
        checks = check_target(facts, manifest, tarball.stat().st_size, root=root, service=service)
        for w in checks.warnings:
            log(f"!! warning: {w}")
        if checks.errors:
            raise TargetError(target.destination, checks.errors)
        what = (
            f"model {manifest.get('model_version')}"
            if action == "model"
            else f"wakeguard {manifest.get('version')} (model {manifest.get('model_version')})"
        )
        if confirm is not None and not confirm(
            f"Install {what} on {target.destination} under {root}?"
        ):
            raise DeployError("cancelled")
        home = facts.get("home") or "."
        remote_dir = f"{home.rstrip('/')}/{UPLOAD_DIR}"
        remote_file = f"{remote_dir}/{tarball.name}"
        proc = target.run(["mkdir", "-p", remote_dir])
        if proc.returncode != 0:
            raise DeployError(
                f"cannot create {remote_dir} on {target.destination}: {proc.stderr.strip()}"
            )
        log(f":: uploading {tarball.name} ({tarball.stat().st_size / 1e6:.1f} MB)")
        target.upload(tarball, remote_file)
        try:
            out = _run_installer(target, [command, *common, "--tarball", remote_file], log)
        finally:
            try:
                target.run(["rm", "-f", remote_file])
            except DeployError:
                pass
        return _result(
            action,
            target,
            facts,
            out,
            checks.warnings,
            given,
        )


def _result(
    action: str,
    target: SSHTarget,
    facts: TargetFacts,
    out: TargetFacts,
    warnings: list[str],
    bundle: str | None,
) -> FlashResult:
    return FlashResult(
        action=action,
        destination=target.destination,
        release=out.get("release"),
        previous=out.get("previous") or None,
        service=out.get("service") or None,
        facts=facts.to_dict(),
        warnings=warnings,
        bundle=bundle,
        health_verdict=out.get("health_verdict") or None,
        proxy=out.get("proxy") or None,
        proxy_uri=out.get("proxy_uri") or None,
    )
