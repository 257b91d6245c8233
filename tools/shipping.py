"""Offline bundles for a target device: wheels, model, config, unit, install script, manifest.

A bundle is a ``.tar.gz`` with one top folder::

    wakeguard-<version>-<platform>-py<python>/
        manifest.json      format, kind, version, platform, python, sha256 of every file
        install.sh         the installer (also what ``wakeguard flash`` runs over SSH)
        wakeguard.toml     default config (written for /opt/wakeguard)
        wakeguard.service  systemd unit (the live screener; installed and started)
        wakeguard-serve.service  systemd unit of the Wyoming wake proxy (rendered, not enabled)
        model/             the model bundle (manifest.json + model.tflite)
        wheels/            the project wheel and every wheel of the ``edge`` extra's dependencies

A model-only bundle (``kind: "model"``) holds ``manifest.json`` and ``model/`` alone.

Wheels come from ``pip download`` for the target's platform and Python, or, offline, from a
wheelhouse folder: pip resolves the project wheel's requirements inside it, so a wheelhouse
that lacks something fails here, not on the device.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from wakeguard.edge.files import atomic_path, write_text_atomic

SHIP_FORMAT = "wakeguard-ship"
SHIP_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PLATFORMS = ("linux_aarch64", "linux_x86_64")
"""Targets: 64-bit Raspberry Pi OS (aarch64) and 64-bit x86 Linux."""
PYTHONS = ("3.11", "3.12", "3.13")
GLIBC_MIN = (2, 28)
"""Oldest glibc the downloaded wheels may need (manylinux_2_28; Pi OS bookworm has 2.36)."""
CONFIG_NAME = "wakeguard.toml"
UNIT_NAME = "wakeguard.service"
SERVE_UNIT_NAME = "wakeguard-serve.service"
INSTALLER_NAME = "install.sh"
DIST_NAME = "wakeguard"

Log = Callable[[str], None]


class ShipError(ValueError):
    """A bundle that cannot be built or read, with the reason."""


def _quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------- targets


def normalise_platform(value: str) -> str:
    v = value.strip().lower().replace("-", "_")
    v = {
        "aarch64": "linux_aarch64",
        "arm64": "linux_aarch64",
        "x86_64": "linux_x86_64",
        "amd64": "linux_x86_64",
        "linux_arm64": "linux_aarch64",
    }.get(v, v)
    if v not in PLATFORMS:
        raise ShipError(f"unsupported platform {value!r}: choose one of {', '.join(PLATFORMS)}")
    return v


def normalise_python(value: str) -> str:
    v = value.strip().removeprefix("py").removeprefix("cp")
    if "." not in v and len(v) == 3:
        v = f"{v[0]}.{v[1:]}"
    v = ".".join(v.split(".")[:2])
    if v not in PYTHONS:
        raise ShipError(f"unsupported Python {value!r}: choose one of {', '.join(PYTHONS)}")
    return v


def host_platform() -> str:
    return normalise_platform(_platform.machine())


def host_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def manylinux_tags(platform: str) -> list[str]:
    """Every manylinux tag a target with glibc >= GLIBC_MIN accepts, newest first."""
    arch = normalise_platform(platform).removeprefix("linux_")
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MIN[1], 16, -1)]
    return tags + [f"manylinux2014_{arch}"]


def bundle_file_name(version: str, platform: str, python: str) -> str:
    return f"wakeguard-{version}-{platform}-py{python}.tar.gz"


# ---------------------------------------------------------------- checksums and manifests


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``folder`` except the manifest itself."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel != MANIFEST:
            out[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def write_manifest(folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    manifest = {
        "format": SHIP_FORMAT,
        "format_version": SHIP_FORMAT_VERSION,
        **info,
        "files": file_table(folder),
    }
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify_folder(folder: Path) -> list[str]:
    """Problems found checking an unpacked bundle against its manifest (empty = good).

    The installer does the same check on the device with the system python3.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return [f"no readable {MANIFEST} ({exc})"]
    problems = []
    files = manifest.get("files", {})
    for rel, info in sorted(files.items()):
        p = folder / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(p) != info["sha256"]:
            problems.append(f"{rel}: sha256 does not match the manifest")
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel != MANIFEST and rel not in files:
            problems.append(f"{rel}: not in the manifest")
    return problems


def read_manifest(tarball: Path) -> dict[str, Any]:
    """The manifest of a bundle tarball, read without unpacking it."""
    tarball = Path(tarball)
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] == MANIFEST and member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None
                    manifest = json.loads(f.read())
                    break
            else:
                raise ShipError(f"{tarball}: not a wakeguard bundle (no top-level {MANIFEST})")
    except FileNotFoundError as exc:
        raise ShipError(f"{tarball}: not found") from exc
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, ShipError):
            raise
        raise ShipError(f"{tarball}: not a readable .tar.gz bundle ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != SHIP_FORMAT:
        raise ShipError(f"{tarball}: {MANIFEST} is not a wakeguard bundle manifest")
    if int(manifest.get("format_version", 0)) > SHIP_FORMAT_VERSION:
        raise ShipError(
            f"{tarball}: bundle format {manifest.get('format_version')} is newer than this wakeguard"
        )
    return manifest


def _write_tarball(folder: Path, out: Path) -> Path:
    """``out`` holds ``folder`` under its own name; written to a temporary name, then renamed
    (a full disk names ``out`` and leaves no half-written tarball)."""

    def reset(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    with atomic_path(out) as part, tarfile.open(part, "w:gz", compresslevel=6) as tar:
        tar.add(folder, arcname=folder.name, filter=reset)
    return out


# ---------------------------------------------------------------- package data


def _package_file(package: str, name: str) -> Path:
    return Path(str(resources.files(package) / name))


def install_script_path() -> Path:
    return _package_file("wakeguard.tools", INSTALLER_NAME)


def install_script_text() -> str:
    return install_script_path().read_text()


def default_config_path() -> Path:
    return _package_file("wakeguard.edge", CONFIG_NAME)


def default_unit_path() -> Path:
    return _package_file("wakeguard.edge", UNIT_NAME)


def default_serve_unit_path() -> Path:
    return _package_file("wakeguard.edge", SERVE_UNIT_NAME)


def project_version() -> str:
    return metadata.version(DIST_NAME)


# ---------------------------------------------------------------- wheels


def _source_tree() -> Path | None:
    """The checkout this wakeguard runs from (an editable install), if any."""
    repo = Path(__file__).resolve().parents[1]
    if (
        (repo / "pyproject.toml").is_file()
        and (repo / "edge").is_dir()
        and (repo / "tools").is_dir()
    ):
        return repo
    return None


def _pip(args: list[str], *, offline: bool, what: str) -> None:
    env = dict(os.environ)
    if offline:
        # only the wheels we name: no config files, no extra indexes or find-links
        env["PIP_CONFIG_FILE"] = os.devnull
        for key in list(env):
            if key.startswith("PIP_") and key not in ("PIP_CONFIG_FILE", "PIP_CERT"):
                env.pop(key)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        lines = [
            ln
            for ln in (proc.stderr + proc.stdout).splitlines()
            if ln.strip() and "is ignored" not in ln
        ]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-4:]
        raise ShipError(f"{what} failed: " + " | ".join(errors[:4]))


def build_project_wheel(dest: Path) -> Path:
    """The wakeguard wheel, built from the checkout this package runs from.

    The sources are copied to a scratch folder first, so concurrent builds never share a
    ``build/`` folder and the checkout gains no build output.
    """
    repo = _source_tree()
    if repo is None:
        raise ShipError(
            "cannot build the wakeguard wheel: this wakeguard is not installed from a source checkout; "
            "pass --bundle with a ready-made bundle, or run from a checkout (pip install -e .)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "*.egg-info", "build", "dist")
    with tempfile.TemporaryDirectory(prefix="wakeguard-src-") as tmp:
        src = Path(tmp) / "wakeguard"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in"):
            if (repo / name).is_file():
                shutil.copy2(repo / name, src / name)
        for name in ("edge", "model", "tools"):
            shutil.copytree(repo / name, src / name, ignore=ignore)
        # offline: build with the setuptools we have, if it reads pyproject.toml's SPDX
        # `license` (77 and later); else pip fetches a build backend (needs the index)
        isolation = ["--no-build-isolation"] if _setuptools_version() >= (77,) else []
        _pip(
            ["wheel", "-q", "--no-deps", *isolation, "-w", str(dest), str(src)],
            offline=False,
            what="building the wakeguard wheel",
        )
    wheels = sorted(dest.glob("wakeguard-*.whl"))
    if not wheels:
        raise ShipError("building the wakeguard wheel produced no wheel")
    return wheels[-1]


def version_tuple(v: str) -> tuple[int, ...]:
    """The leading numeric parts of a dotted version (``"2.31"`` -> ``(2, 31)``, ``"80.9.0rc1"``
    -> ``(80, 9, 0)``), up to the first part without a digit."""
    out = []
    for part in v.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _setuptools_version() -> tuple[int, ...]:
    """The installed setuptools' (major, minor), or () when there is none."""
    try:
        version = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        return ()
    return version_tuple(version)[:2]


def _pip_target_args(platform: str, python: str) -> list[str]:
    plat_args = [a for tag in manylinux_tags(platform) for a in ("--platform", tag)]
    abi = "cp" + python.replace(".", "")
    return [
        "--only-binary=:all:",
        *plat_args,
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--abi",
        abi,
    ]


def _filtered_wheelhouse(wheelhouse: Path, scratch: Path) -> Path:
    """Links to the wheelhouse's wheels minus any wakeguard wheel (the fresh build must win)."""
    wheelhouse = Path(wheelhouse)
    if not wheelhouse.is_dir():
        raise ShipError(f"wheelhouse {wheelhouse}: not a folder")
    out = scratch / "wheelhouse"
    out.mkdir()
    n = 0
    for whl in wheelhouse.glob("*.whl"):
        if not whl.name.lower().startswith("wakeguard-"):
            (out / whl.name).symlink_to(whl.resolve())
            n += 1
    if n == 0:
        raise ShipError(f"wheelhouse {wheelhouse}: holds no wheels")
    return out


def collect_wheels(
    dest: Path, project_wheel: Path, platform: str, python: str, wheelhouse: Path | None = None
) -> list[Path]:
    """The project wheel plus every wheel ``wakeguard[edge]`` needs on the target, into ``dest``."""
    version = project_wheel.name.split("-")[1]
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wakeguard-wh-") as tmp:
        args = [
            "download",
            "-q",
            "-d",
            str(dest),
            *_pip_target_args(platform, python),
            "--find-links",
            str(project_wheel.parent),
        ]
        if wheelhouse is not None:
            args += ["--no-index", "--find-links", str(_filtered_wheelhouse(wheelhouse, Path(tmp)))]
        args.append(f"wakeguard[edge]=={version}")
        where = f"wheelhouse {wheelhouse}" if wheelhouse is not None else "the package index"
        _pip(
            args,
            offline=wheelhouse is not None,
            what=f"collecting wheels for {platform} Python {python} from {where}",
        )
    # pip follows symlinks when it copies from find-links; make sure plain files landed
    for whl in dest.glob("*.whl"):
        if whl.is_symlink():
            target = whl.resolve()
            whl.unlink()
            shutil.copy2(target, whl)
    return sorted(dest.glob("*.whl"))


def fetch_wheels(dest: Path, platform: str, python: str, log: Log = _quiet) -> list[Path]:
    """Download the dependency wheels for a target into a wheelhouse folder (needs the network).

    The wakeguard wheel itself is left out: bundles always ship a fresh build of it.
    """
    platform, python = normalise_platform(platform), normalise_python(python)
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="wakeguard-fetch-") as tmp:
        log("building the wakeguard wheel (to read its requirements)")
        wheel = build_project_wheel(Path(tmp) / "project")
        log(f"downloading wheels for {platform}, Python {python}")
        collect_wheels(dest, wheel, platform, python)
    for whl in dest.glob("wakeguard-*.whl"):
        whl.unlink()
    return sorted(dest.glob("*.whl"))


# ---------------------------------------------------------------- bundles


@dataclass(frozen=True)
class BuiltBundle:
    path: Path
    manifest: dict[str, Any]

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": str(self.path),
            "bytes": self.bytes,
            "kind": m["kind"],
            "version": m.get("version"),
            "platform": m.get("platform"),
            "python": m.get("python"),
            "model_version": m.get("model_version"),
            "wheels": m.get("wheels", []),
            "files": len(m["files"]),
        }


def _copy_model(model: Path | None, dest: Path) -> str:
    """Validate the model bundle, copy it to ``dest``; returns its version."""
    from wakeguard.edge.bundle import BundleError, default_bundle_path, load_bundle

    if model is None:
        try:
            bundle = load_bundle(None)
        except BundleError as exc:
            raise ShipError(
                f"no model given and the package's default bundle ({default_bundle_path()}) cannot be used "
                f"({exc.problem}): pass --model BUNDLE (e.g. RUN/bundle from `wakeguard pipeline`)"
            ) from exc
    else:
        bundle = load_bundle(model)
    dest.mkdir(parents=True)
    members = {str(m["path"]) for m in bundle.manifest.get("members", [])}
    for p in sorted(bundle.path.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            shutil.copy2(p, dest / p.name)
        elif p.is_dir() and p.name in members:  # an ensemble's networks, one folder each
            shutil.copytree(p, dest / p.name, ignore=shutil.ignore_patterns(".*", "*.part"))
    return bundle.version


def _ship_file(explicit: Path | None, default: Path, what: str, flag: str) -> Path:
    path = Path(explicit) if explicit is not None else default
    if not path.is_file():
        where = "given" if explicit is not None else "the package's default"
        raise ShipError(f"{what} not found ({where}: {path}); pass {flag} FILE")
    return path


def build_bundle(
    out: Path | None = None,
    *,
    platform: str | None = None,
    python: str | None = None,
    model: Path | None = None,
    wheelhouse: Path | None = None,
    config: Path | None = None,
    unit: Path | None = None,
    log: Log = _quiet,
) -> BuiltBundle:
    """Build the self-contained tarball for one target platform and Python version."""
    platform = normalise_platform(platform or host_platform())
    python = normalise_python(python or host_python())
    config_path = _ship_file(config, default_config_path(), "config", "--config")
    unit_path = _ship_file(unit, default_unit_path(), "systemd unit", "--unit")
    if config is not None:
        # the runtime's own loader (what `wakeguard serve -c` runs): valid TOML is not
        # enough, an unknown key or a wrong type would make the shipped service refuse it
        from wakeguard.edge.config import ConfigError, load_config

        try:
            load_config(config_path)
        except ConfigError as exc:
            raise ShipError(f"config {exc}") from exc
    version = project_version()
    out = Path(out) if out is not None else Path.cwd() / bundle_file_name(version, platform, python)
    with tempfile.TemporaryDirectory(prefix="wakeguard-bundle-") as tmp:
        top = Path(tmp) / bundle_file_name(version, platform, python).removesuffix(".tar.gz")
        top.mkdir()
        log("checking the model bundle")
        model_version = _copy_model(model, top / "model")
        log("building the wakeguard wheel")
        project_wheel = build_project_wheel(Path(tmp) / "project")
        src = f"wheelhouse {wheelhouse}" if wheelhouse else "the package index"
        log(f"collecting wheels for {platform}, Python {python} from {src}")
        wheels = collect_wheels(top / "wheels", project_wheel, platform, python, wheelhouse)
        shutil.copy2(config_path, top / CONFIG_NAME)
        shutil.copy2(unit_path, top / UNIT_NAME)
        shutil.copy2(default_serve_unit_path(), top / SERVE_UNIT_NAME)
        shutil.copy2(install_script_path(), top / INSTALLER_NAME)
        (top / INSTALLER_NAME).chmod(0o755)
        manifest = write_manifest(
            top,
            {
                "kind": "full",
                "version": version,
                "platform": platform,
                "python": python,
                "glibc_min": ".".join(map(str, GLIBC_MIN)),
                "model_version": model_version,
                "project_wheel": project_wheel.name,
                "wheels": [w.name for w in wheels],
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
        log(f"writing {out}")
        _write_tarball(top, out)
    return BuiltBundle(out, manifest)


def build_model_tarball(model: Path, out: Path) -> BuiltBundle:
    """A model-only bundle: ``manifest.json`` (kind ``model``) and ``model/``."""
    with tempfile.TemporaryDirectory(prefix="wakeguard-model-") as tmp:
        top = Path(tmp) / "wakeguard-model"
        top.mkdir()
        model_version = _copy_model(Path(model), top / "model")
        manifest = write_manifest(
            top,
            {
                "kind": "model",
                "model_version": model_version,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
        _write_tarball(top, Path(out))
    return BuiltBundle(Path(out), manifest)
