"""The Pi has no TensorFlow: `wakeguard.edge`, `listen --input` and `screen` must work without it.

Each check runs in a fresh interpreter whose import system refuses tensorflow, keras,
librosa, sklearn, scipy and matplotlib (a meta-path finder installed before anything else
is imported), so a stray module-level or run-time import of any of them fails the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from wakeguard.edge.audio import write_wav

BLOCKED = ("tensorflow", "keras", "librosa", "sklearn", "scipy", "matplotlib")

PREAMBLE = textwrap.dedent(
    f"""
    import importlib.abc, sys
    BLOCKED = {BLOCKED!r}
    class _Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is not installed on the Pi (edge isolation test)")
            return None
    sys.meta_path.insert(0, _Refuse())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    """
)


def run_blocked(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PREAMBLE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli_blocked(args: list[str]) -> subprocess.CompletedProcess:
    code = f"""
    import json
    sys.argv = ["wakeguard", *{args!r}]
    from wakeguard.tools.cli import main
    try:
        main()
    except SystemExit as exc:
        rc = exc.code or 0
    else:
        rc = 0
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
    sys.stderr.write("ISOLATION " + json.dumps({{"rc": rc, "loaded": loaded}}) + "\\n")
    sys.exit(rc)
    """
    return run_blocked(code)


def isolation_report(r: subprocess.CompletedProcess) -> dict:
    lines = [line for line in r.stderr.splitlines() if line.startswith("ISOLATION ")]
    assert lines, r.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("ISOLATION "))


def test_the_blocker_works():
    r = run_blocked("import scipy.signal")
    assert r.returncode != 0 and "not installed on the Pi" in r.stderr


def test_every_edge_module_imports_without_training_libraries():
    r = run_blocked(
        """
        import importlib, pkgutil, json
        import wakeguard.edge as edge
        names = sorted(m.name for m in pkgutil.iter_modules(edge.__path__))
        for name in names:
            importlib.import_module(f"wakeguard.edge.{name}")
        print(json.dumps(names))
        """
    )
    assert r.returncode == 0, r.stderr[-3000:]
    names = json.loads(r.stdout)
    for expected in (
        "audio",
        "capture",
        "config",
        "decision",
        "endpoint",
        "listener",
        "scorer",
        "stream_resample",
    ):
        assert expected in names


@pytest.fixture(scope="module")
def speech_wav(speech_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wakeguard.edge.audio import load_audio

    x = load_audio(speech_file)[: 3 * 16_000]
    quiet = np.zeros(16_000, dtype=np.float32)
    path = tmp_path_factory.mktemp("iso") / "one.wav"
    write_wav(path, np.concatenate([quiet, x, quiet]))
    return path


def test_listen_input_runs_without_training_libraries(tiny_bundle, speech_wav):
    r = run_cli_blocked(
        ["listen", "--input", str(speech_wav), "--speed", "0", "--model", str(tiny_bundle)]
    )
    rep = isolation_report(r)
    assert rep == {"rc": 0, "loaded": []}, r.stderr[-3000:]
    verdicts = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(verdicts) >= 1 and all(v["verdict"] in ("bonafide", "spoof") for v in verdicts)


def test_screen_runs_without_training_libraries(tiny_bundle, speech_wav):
    r = run_cli_blocked(["screen", "--json", "--model", str(tiny_bundle), str(speech_wav)])
    rep = isolation_report(r)
    assert rep == {"rc": 0, "loaded": []}, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[0])
    assert out["verdict"] in ("bonafide", "spoof")
