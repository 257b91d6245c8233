"""`wakeguard bundle`: the offline tarball, built from a local wheelhouse (no network)."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner
from wakeguard.tools.cli import app
from wakeguard.tools.shipping import (
    default_config_path,
    default_unit_path,
    install_script_path,
    read_manifest,
    sha256_file,
    verify_folder,
)
from wheelhouse import wheelhouse_dir, wheelhouse_missing

runner = CliRunner()


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    reason = wheelhouse_missing()
    if reason:
        pytest.skip(reason)
    return wheelhouse_dir()


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, wheelhouse: Path
) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bundle") / "wg.tar.gz"
    r = runner.invoke(
        app,
        [
            "bundle",
            "--model",
            str(tiny_bundle),
            "--wheelhouse",
            str(wheelhouse),
            "--out",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def unpacked(built: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(built[0]) as tar:
        tar.extractall(dest, filter="data")
    (top,) = dest.iterdir()
    return top


def test_bundle_holds_everything_with_checksums(
    built: tuple[Path, dict], unpacked: Path, tiny_bundle: Path
) -> None:
    path, summary = built
    assert summary["platform"] == "linux_x86_64" or summary["platform"] == "linux_aarch64"
    assert summary["model_version"] == "test-tiny"
    manifest = json.loads((unpacked / "manifest.json").read_text())
    assert manifest == read_manifest(path)
    assert manifest["kind"] == "full" and manifest["format"] == "wakeguard-ship"
    # every file is listed with its real sha256, and nothing unlisted is there
    assert verify_folder(unpacked) == []
    for rel, info in manifest["files"].items():
        assert sha256_file(unpacked / rel) == info["sha256"], rel
    # the pieces the device needs
    assert (unpacked / "install.sh").read_text() == install_script_path().read_text()
    assert (unpacked / "wakeguard.toml").read_text() == default_config_path().read_text()
    assert (unpacked / "wakeguard.service").read_text() == default_unit_path().read_text()
    assert (unpacked / "wakeguard-serve.service").read_text() == (
        default_unit_path().with_name("wakeguard-serve.service").read_text()
    )
    assert (unpacked / "model" / "model.tflite").read_bytes() == (
        tiny_bundle / "model.tflite"
    ).read_bytes()
    wheels = {w.name.split("-")[0].lower() for w in (unpacked / "wheels").glob("*.whl")}
    for dep in (
        "wakeguard",
        "numpy",
        "ai_edge_litert",
        "sounddevice",
        "soundfile",
        "wyoming",
        "prometheus_client",
        "typer",
        "rich",
        "cffi",
    ):
        assert dep in wheels, f"{dep} missing from {sorted(wheels)}"
    for dep in ("tensorflow", "keras", "scikit_learn", "scipy", "matplotlib"):
        assert dep not in wheels, f"{dep} must not ship to the Pi"
    arch = summary["platform"].removeprefix("linux_")
    for whl in (unpacked / "wheels").glob("*.whl"):
        platform_tag = whl.name.removesuffix(".whl").split("-")[-1]
        assert platform_tag == "any" or platform_tag.endswith(arch), whl.name
    # the project wheel carries the runtime's package data: health clip, installer, unit
    (project,) = (unpacked / "wheels").glob("wakeguard-*.whl")
    names = set(zipfile.ZipFile(project).namelist())
    for member in (
        "wakeguard/edge/assets/healthcheck.wav",
        "wakeguard/tools/install.sh",
        "wakeguard/edge/wakeguard.service",
    ):
        assert member in names


def test_tampered_bundle_is_caught(unpacked: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(unpacked / "model", copy / "model")
    shutil.copy2(unpacked / "manifest.json", copy / "manifest.json")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if k.startswith("model/")}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert verify_folder(copy) == []
    blob = bytearray((copy / "model" / "model.tflite").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (copy / "model" / "model.tflite").write_bytes(bytes(blob))
    (copy / "model" / "extra.bin").write_bytes(b"x")
    problems = verify_folder(copy)
    assert "model/model.tflite: sha256 does not match the manifest" in problems
    assert "model/extra.bin: not in the manifest" in problems


def test_wheelhouse_without_the_target_platform_fails_clearly(
    wheelhouse: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    other = "linux_aarch64" if not any(wheelhouse.glob("*aarch64*.whl")) else "linux_x86_64"
    r = runner.invoke(
        app,
        [
            "bundle",
            "--platform",
            other,
            "--model",
            str(tiny_bundle),
            "--wheelhouse",
            str(wheelhouse),
            "--out",
            str(tmp_path / "x.tar.gz"),
        ],
    )
    assert r.exit_code == 2
    assert other in r.output and "wheelhouse" in r.output
    assert not (tmp_path / "x.tar.gz").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--platform", "linux_armv7l"], "unsupported platform"),
        (["--python", "3.9"], "unsupported Python"),
        (["--config", "/nonexistent/wakeguard.toml"], "config not found"),
    ],
)
def test_bad_options_are_named(
    args: list[str], message: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    r = runner.invoke(
        app,
        [
            "bundle",
            "--model",
            str(tiny_bundle),
            "--wheelhouse",
            str(tmp_path),
            "--out",
            str(tmp_path / "x.tar.gz"),
            *args,
        ],
    )
    assert r.exit_code == 2
    assert message in r.output


def test_model_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notabundle").mkdir()
    r = runner.invoke(
        app,
        [
            "bundle",
            "--model",
            str(tmp_path / "notabundle"),
            "--wheelhouse",
            str(tmp_path),
            "--out",
            str(tmp_path / "x.tar.gz"),
        ],
    )
    assert r.exit_code == 2
    assert "notabundle" in r.output and "manifest.json" in r.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[metrics\nport = 1\n", "TOML"),
        ("[serve]\nnosuch = 1\n", "unknown key [serve] nosuch"),
        ('[serve]\nconnect_timeout_s = "soon"\n', "connect_timeout_s"),
    ],
    ids=["not TOML", "unknown key", "wrong type"],
)
def test_config_the_service_would_refuse_is_refused(
    tiny_bundle: Path, tmp_path: Path, text: str, expected: str
) -> None:
    """Valid TOML is not enough: the bundle's config goes through the runtime's own loader."""
    bad = tmp_path / "edgebad.toml"
    bad.write_text(text)
    out = tmp_path / "x.tar.gz"
    argv = ["bundle", "--model", str(tiny_bundle), "--config", str(bad)]
    r = runner.invoke(app, [*argv, "--wheelhouse", str(tmp_path), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "edgebad.toml" in r.output and expected in r.output
    assert not out.exists()


def test_version_option_prints_the_installed_version() -> None:
    from importlib.metadata import version

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"wakeguard {version('wakeguard')}"


def test_a_tarball_that_does_not_fit_names_it_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from wakeguard.tools.shipping import _write_tarball

    folder = tmp_path / "wakeguard-x"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")

    def disk_full(self: tarfile.TarFile, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "add", disk_full)
    out = tmp_path / "dist" / "wakeguard-x.tar.gz"
    with pytest.raises(OSError, match=r"cannot write .*wakeguard-x\.tar\.gz: No space left"):
        _write_tarball(folder, out)
    assert not out.exists() and list(out.parent.iterdir()) == []
