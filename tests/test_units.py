"""The systemd units that ship with the package parse and hold the policies we promise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

EDGE = Path(__file__).resolve().parents[1] / "edge"
UNITS = ["wakeguard.service", "wakeguard-serve.service"]


@pytest.mark.parametrize("name", UNITS)
def test_unit_policies(name):
    lines = (EDGE / name).read_text().splitlines()
    for line in ("Restart=on-failure", "User=wakeguard", "KillSignal=SIGTERM", "UMask=0077"):
        assert line in lines, f"{name} lacks {line}"
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    assert "0.0.0.0" not in exec_start  # localhost unless the user says otherwise


def test_serve_unit_runs_the_wake_proxy():
    from wakeguard.edge.config import ServeConfig

    unit = (EDGE / "wakeguard-serve.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert "wakeguard serve --config /etc/wakeguard/wakeguard.toml " in exec_start
    assert " --upstream tcp://127.0.0.1:" in exec_start
    # No --uri: the config's [serve] uri applies, by default the satellite-facing localhost port.
    assert "--uri" not in exec_start and ServeConfig().uri == "tcp://127.0.0.1:10400"


@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies(name, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / name
    # Point ExecStart at an executable that exists here, so verify judges the unit itself.
    unit.write_text((EDGE / name).read_text().replace("/opt/wakeguard/bin/wakeguard", shutil.which("true")))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if name in line]
    assert not problems, problems
