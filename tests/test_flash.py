"""`wakeguard flash` against a real OpenSSH server on loopback standing in for the Pi.

The device root is a temporary folder; with no systemd running here the installer starts
the service directly, which the tests stop at the end. The slow test installs the real
runtime into a fresh venv from the bundle's wheels (pip --no-index) and runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd import LoopbackSSHD, free_port, missing_reason, start_sshd
from typer.testing import CliRunner
from wakeguard.edge.bundle import default_bundle_path
from wakeguard.tools.cli import app
from wakeguard.tools.deploy import SSHTarget, TargetFacts, check_target, target_facts
from wakeguard.tools.shipping import (
    build_bundle,
    build_model_tarball,
    host_python,
    install_script_text,
)
from wheelhouse import wheelhouse_dir, wheelhouse_missing

runner = CliRunner()


# ---------------------------------------------------------------- target checks (no SSH)


def _facts(**overrides: str | list[str]) -> TargetFacts:
    base: dict[str, str | list[str]] = {
        "arch": "aarch64",
        "kernel": "Linux",
        "os": "Debian GNU/Linux 12 (bookworm)",
        "python": "3.11.2",
        "venv": "yes",
        "glibc": "2.36",
        "free_bytes": str(8 * 10**9),
        "root_writable": "no",
        "privileged": "sudo",
        "user": "pi",
        "systemd": "running",
        "tar": "yes",
        "audio_source": "arecord -l",
        "audio": ["card 1: Device [USB PnP Sound Device], device 0: USB Audio [USB Audio]"],
        "audio_cards": "1",
        "portaudio": "yes",
    }
    base.update(overrides)
    return TargetFacts({k: (v if isinstance(v, list) else [v]) for k, v in base.items()})


PI_BUNDLE = {"kind": "full", "platform": "linux_aarch64", "python": "3.11"}


def test_a_good_pi_passes() -> None:
    r = check_target(_facts(), PI_BUNDLE, 40_000_000)
    assert r.errors == [] and r.warnings == []


def test_target_problems_are_said_clearly() -> None:
    r = check_target(
        _facts(
            arch="armv7l",
            python="3.9.2",
            venv="no",
            free_bytes="50000000",
            audio_cards="0",
            audio=[],
            portaudio="no",
        ),
        PI_BUNDLE,
        40_000_000,
    )
    text = "\n".join(r.errors)
    assert "armv7l is not supported" in text and "32-bit" in text
    assert "python3 is 3.9.2" in text
    assert "python3-venv" in text
    assert "MB free" in text
    warnings = "\n".join(r.warnings)
    assert "arecord -l lists no capture device" in warnings
    assert "libportaudio2" in warnings


def test_bundle_must_match_the_target() -> None:
    r = check_target(_facts(arch="x86_64", python="3.12.3"), PI_BUNDLE, 1)
    text = "\n".join(r.errors)
    assert "bundle is for linux_aarch64, the target is linux_x86_64" in text
    assert "bundle is for Python 3.11" in text and "--python 3.12" in text


def test_systemd_without_root_is_an_error() -> None:
    r = check_target(_facts(privileged="no", root_writable="yes"), PI_BUNDLE, 1)
    assert any("no root or passwordless sudo" in e for e in r.errors)
    r = check_target(_facts(systemd="absent"), PI_BUNDLE, 1)
    assert any("started directly" in w for w in r.warnings)
    r = check_target(_facts(systemd="absent"), PI_BUNDLE, 1, service="systemd")
    assert any("systemd is not running" in e for e in r.errors)


def test_a_bad_proxy_uri_is_refused_before_connecting() -> None:
    r = runner.invoke(app, ["flash", "pi@192.0.2.1", "--proxy", "http://box:10401", "--yes"])
    assert r.exit_code == 2
    assert "--proxy" in r.output and "tcp://HOST:PORT" in r.output


def test_local_inputs_are_checked_before_connecting(tmp_path: Path) -> None:
    """192.0.2.1 is a documentation address nothing answers: each case must fail at once,
    on this machine, naming what is wrong, before any SSH."""
    corrupt = tmp_path / "model"
    shutil.copytree(default_bundle_path(), corrupt)
    with (corrupt / "model.tflite").open("ab") as f:
        f.write(b"junk")
    cases = [
        (["--port", "99999"], "--port"),
        (["--identity", str(tmp_path / "no-key")], "--identity"),  # the box wraps the path
        (["--ssh-config", str(tmp_path / "no-config")], "--ssh-config"),
        (["--bundle", str(tmp_path / "no.tar.gz")], "no.tar.gz: not found"),
        (["--model", str(corrupt)], "sha256 does not match"),
    ]
    for extra, said in cases:
        r = runner.invoke(app, ["flash", "pi@192.0.2.1", *extra, "--yes"])
        assert r.exit_code == 2, (extra, r.output)
        assert said in r.output and "inspecting" not in r.output, (extra, r.output)
    r = runner.invoke(app, ["flash", " ", "--yes"])
    assert r.exit_code == 2 and "USER@HOST" in r.output


def test_unreachable_host_is_reported(tmp_path: Path) -> None:
    if shutil.which("ssh") is None:
        pytest.skip("ssh client not installed")
    r = runner.invoke(
        app,
        [
            "flash",
            "nobody@127.0.0.1",
            "--port",
            str(free_port()),
            "--rollback",
            "--yes",
            "--root",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 1
    assert "cannot reach nobody@127.0.0.1" in r.output


# ---------------------------------------------------------------- against a real sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSSHD]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def device_facts(sshd: LoopbackSSHD) -> TargetFacts:
    return target_facts(
        SSHTarget(
            sshd.destination,
            port=sshd.port,
            identity=sshd.client_key,
            ssh_config=sshd.client_config,
        ),
        "/tmp",
    )


def test_facts_of_the_loopback_device(device_facts: TargetFacts) -> None:
    import platform

    assert device_facts.get("kernel") == "Linux"
    assert device_facts.get("arch") == platform.machine()
    assert device_facts.get("free_bytes").isdigit() and int(device_facts.get("free_bytes")) > 0
    assert device_facts.get("systemd") in ("running", "absent")
    assert device_facts.get("audio_cards").isdigit()
    assert device_facts.python  # python3 major.minor, as the target runs it


@pytest.fixture(scope="module")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, device_facts: TargetFacts
) -> Path:
    reason = wheelhouse_missing()
    if reason:
        pytest.skip(reason)
    if device_facts.python != host_python():
        pytest.skip(
            f"the loopback device's python3 is {device_facts.python}, the wheelhouse is for {host_python()}"
        )
    out = tmp_path_factory.mktemp("ship") / "wg.tar.gz"
    return build_bundle(out, model=tiny_bundle, wheelhouse=wheelhouse_dir()).path


def _flash(sshd: LoopbackSSHD, root: Path, *args: str):
    return runner.invoke(app, ["flash", *sshd.flash_args(), "--root", str(root), "--yes", *args])


def _small_copy(bundle: Path, tmp: Path, edit) -> Path:
    """The bundle without its wheels (and without them in its manifest), ``edit(top)`` applied:
    small, so the refusal tests upload and unpack little."""
    work = tmp / "repack"
    with tarfile.open(bundle) as tar:
        keep = [m for m in tar.getmembers() if "/wheels" not in m.name]
        tar.extractall(work, members=keep, filter="data")
    (top,) = work.iterdir()
    manifest = json.loads((top / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("wheels/")}
    (top / "manifest.json").write_text(json.dumps(manifest))
    edit(top)
    out = tmp / "edited.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return out


def test_bundle_for_another_platform_is_refused_before_upload(
    sshd: LoopbackSSHD, bundle: Path, tmp_path: Path
) -> None:
    def retarget(top: Path) -> None:
        m = json.loads((top / "manifest.json").read_text())
        m["platform"] = "linux_aarch64" if m["platform"] == "linux_x86_64" else "linux_x86_64"
        (top / "manifest.json").write_text(json.dumps(m))

    root = tmp_path / "device"
    r = _flash(sshd, root, "--bundle", str(_small_copy(bundle, tmp_path, retarget)))
    assert r.exit_code == 2, r.output
    assert "cannot take this bundle" in r.output and "build one with --platform" in r.output
    assert not root.exists()


def test_tampered_bundle_fails_checksums_and_changes_nothing(
    sshd: LoopbackSSHD, bundle: Path, tmp_path: Path
) -> None:
    def corrupt(top: Path) -> None:
        blob = bytearray((top / "model" / "model.tflite").read_bytes())
        blob[100] ^= 0xFF
        (top / "model" / "model.tflite").write_bytes(bytes(blob))

    root = tmp_path / "device"
    r = _flash(sshd, root, "--bundle", str(_small_copy(bundle, tmp_path, corrupt)))
    assert r.exit_code == 1, r.output
    assert "checksum verification failed: model/model.tflite: sha256 does not match" in r.output
    assert not (root / "current").exists()
    assert [p.name for p in (root / "releases").iterdir()] == []


def _stop_service(root: Path) -> None:
    for name in ("wakeguard.pid", "wakeguard-serve.pid"):
        _stop_pid(root / "run" / name)


def _stop_pid(pidfile: Path) -> None:
    if pidfile.is_file():
        pid = int(pidfile.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)


def _exec_start(unit: Path) -> list[str]:
    (line,) = [ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart=")]
    return line.split()


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def _current(root: Path) -> str:
    return os.readlink(root / "current").removeprefix("releases/")


def _variant(tiny_bundle: Path, dest: Path, version: str, *, truncate: bool = False) -> Path:
    """The tiny bundle under another version; ``truncate``: a model that is not a valid TFLite
    file although its checksum matches (it passes every check but running it)."""
    import hashlib

    shutil.copytree(tiny_bundle, dest)
    m = json.loads((dest / "manifest.json").read_text())
    m["version"] = version
    if truncate:
        data = (dest / "model.tflite").read_bytes()[:256]
        (dest / "model.tflite").write_bytes(data)
        m["model_sha256"] = hashlib.sha256(data).hexdigest()
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


@pytest.fixture
def device_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "opt-wakeguard"
    yield root
    _stop_service(root)


@pytest.mark.slow
def test_flash_lifecycle(
    sshd: LoopbackSSHD,
    bundle: Path,
    tiny_bundle: Path,
    device_root: Path,
    speech_file: Path,
    tmp_path: Path,
) -> None:
    root = device_root
    port = free_port()
    service = (
        ["--service", "direct"] if Path("/run/systemd/system").is_dir() else []
    )  # never touch this machine's systemd

    def model(name: str) -> Path:  # the tiny bundle as version test-model-N
        return _variant(tiny_bundle, tmp_path / name, f"test-model-{name[1:]}")

    # a site config (kept across installs) that moves the Wyoming proxy off the usual port
    proxy_port = free_port()
    with tarfile.open(bundle) as tar:
        (member,) = [m for m in tar.getmembers() if m.name.endswith("/wakeguard.toml")]
        shipped = tar.extractfile(member).read().decode()
    assert 'uri = "tcp://127.0.0.1:10400"' in shipped
    root.mkdir(parents=True)
    (root / "wakeguard.toml").write_text(
        shipped.replace('uri = "tcp://127.0.0.1:10400"', f'uri = "tcp://127.0.0.1:{proxy_port}"')
    )

    # 1. full install: fresh venv from the bundle's wheels, service started, health checked
    r = _flash(
        sshd, root, "--bundle", str(bundle), "--metrics-port", str(port), "--keep", "2", *service
    )
    assert r.exit_code == 0, r.output
    first = _current(root)
    assert "checksums of" in r.output and "verified" in r.output
    assert "health clip scored by the installed runtime" in r.output
    assert f"metrics answer on 127.0.0.1:{port}" in r.output
    if shutil.which("systemd-analyze"):
        assert "unit file verified with systemd-analyze" in r.output
    if not service:
        assert "no systemd running here: started the service directly" in r.output
    assert 'wakeguard_model_info{version="test-tiny"}' in _metrics(port)
    # The Wyoming proxy's unit is rendered for this layout, not started: same runtime,
    # config and model as the screener, its own upstream and log, no metrics port.
    serve_unit = (root / "current" / "wakeguard-serve.service").read_text()
    (exec_start,) = [ln for ln in serve_unit.splitlines() if ln.startswith("ExecStart=")]
    assert exec_start.split() == [
        f"ExecStart={root}/current/venv/bin/wakeguard",
        "serve",
        "--upstream",
        "tcp://127.0.0.1:10401",
        "--log",
        "/var/log/wakeguard/serve.jsonl",
        "--config",
        f"{root}/current/wakeguard.toml",
        "--model",
        f"{root}/current/model",
    ]
    assert f"Wyoming wake proxy: {root}/current/wakeguard-serve.service is ready" in r.output
    venv = root / "current" / "venv" / "bin"
    # the installed runtime screens real speech; it is the edge install: no TensorFlow in it
    out = subprocess.run(
        [
            venv / "wakeguard",
            "screen",
            speech_file,
            "--model",
            root / "current" / "model",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["verdict"] in ("bonafide", "spoof")
    assert (
        subprocess.run([venv / "python", "-c", "import tensorflow"], capture_output=True).returncode
        != 0
    )

    # 2. model-only update: a new release sharing the runtime, switched atomically
    r = _flash(sshd, root, "--model", str(model("m2")), "--keep", "2")
    assert r.exit_code == 0, r.output
    second = _current(root)
    assert second != first
    assert (root / "current" / "wakeguard-serve.service").read_text() == serve_unit
    assert os.readlink(root / "releases" / second / "venv") == f"../{first}/venv"
    assert 'wakeguard_model_info{version="test-model-2"}' in _metrics(port)

    # 3. a model that passes its checksums but cannot run: refused before going live
    r = _flash(
        sshd,
        root,
        "--model",
        str(_variant(tiny_bundle, tmp_path / "bad", "test-bad", truncate=True)),
    )
    assert r.exit_code == 1
    assert "failed its health check before going live, nothing changed" in r.output
    assert _current(root) == second
    assert sorted(p.name for p in (root / "releases").iterdir()) == sorted([first, second])

    # 4. rollback by hand
    r = _flash(sshd, root, "--rollback")
    assert r.exit_code == 0, r.output
    assert _current(root) == first
    assert "Wyoming wake proxy:" in r.output
    assert 'wakeguard_model_info{version="test-tiny"}' in _metrics(port)

    # 4b. the installer stopping unexpectedly after the switch (here: told to use a systemd
    # that is not running; flash itself refuses that) puts the previous release back
    if not service:
        model_tar = build_model_tarball(
            _variant(tiny_bundle, tmp_path / "m4", "test-model-4"), tmp_path / "m4.tar.gz"
        ).path
        target = SSHTarget(
            sshd.destination,
            port=sshd.port,
            identity=sshd.client_key,
            ssh_config=sshd.client_config,
        )
        proc = target.run(
            [
                "bash",
                "-s",
                "--",
                "model",
                "--root",
                str(root),
                "--service",
                "systemd",
                "--tarball",
                str(model_tar),
            ],
            stdin=install_script_text(),
        )
        assert proc.returncode == 1, proc.stdout
        assert "systemd is not running on this target" in proc.stdout
        assert f"rolled back to {first}" in proc.stdout
        assert _current(root) == first
        assert sorted(p.name for p in (root / "releases").iterdir()) == sorted([first, second])

    # 5. a release whose service cannot start (its metrics port is taken): rolled back
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        taken = blocker.getsockname()[1]
        m5 = _variant(tiny_bundle, tmp_path / "m5", "test-model-5")
        r = _flash(sshd, root, "--model", str(m5), "--metrics-port", str(taken))
    finally:
        blocker.close()
    assert r.exit_code == 1, r.output
    assert "health check failed" in r.output and "Address already in use" in r.output
    assert f"rolled back to {first}" in r.output
    assert _current(root) == first
    assert sorted(p.name for p in (root / "releases").iterdir()) == sorted([first, second])
    assert 'wakeguard_model_info{version="test-tiny"}' in _metrics(port)

    # 6. keep the last N: with --keep 1 only the new release and the runtime it shares stay
    r = _flash(sshd, root, "--model", str(model("m3")), "--keep", "1")
    assert r.exit_code == 0, r.output
    third = _current(root)
    assert f"removed old release {second}" in r.output
    assert sorted(p.name for p in (root / "releases").iterdir()) == sorted([first, third])

    # 7. --proxy: the Wyoming proxy starts in front of the given wake-word service, listening
    # where the config says, and the device remembers the upstream
    upstream = f"tcp://127.0.0.1:{free_port()}"
    r = _flash(sshd, root, "--model", str(model("m7")), "--proxy", upstream, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{") :])
    assert out["proxy"] == "up" and out["proxy_uri"] == f"tcp://127.0.0.1:{proxy_port}"
    assert (root / "proxy-upstream").read_text() == upstream + "\n"
    exec_start = _exec_start(root / "current" / "wakeguard-serve.service")
    assert exec_start[exec_start.index("--upstream") + 1] == upstream
    assert exec_start.count("--upstream") == 1
    socket.create_connection(("127.0.0.1", proxy_port), timeout=5).close()
    proxy_pid = int((root / "run" / "wakeguard-serve.pid").read_text())
    os.kill(proxy_pid, 0)
    assert "listening on" in (root / "log" / "serve-service.log").read_text()

    # 8. a later release (here a rollback) restarts the proxy on it, same upstream
    r = _flash(sshd, root, "--rollback")
    assert r.exit_code == 0, r.output
    assert (
        f"Wyoming wake proxy listening on tcp://127.0.0.1:{proxy_port}, forwarding to {upstream}"
        in r.output
    )
    assert int((root / "run" / "wakeguard-serve.pid").read_text()) != proxy_pid
    socket.create_connection(("127.0.0.1", proxy_port), timeout=5).close()
    exec_start = _exec_start(root / "current" / "wakeguard-serve.service")
    assert exec_start[exec_start.index("--upstream") + 1] == upstream

    # 9. --proxy off stops it and forgets the upstream
    r = _flash(sshd, root, "--model", str(model("m9")), "--proxy", "off")
    assert r.exit_code == 0, r.output
    assert "Wyoming wake proxy stopped" in r.output
    assert not (root / "proxy-upstream").exists()
    assert not (root / "run" / "wakeguard-serve.pid").exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy_port), timeout=2).close()
