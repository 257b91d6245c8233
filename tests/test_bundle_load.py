"""Loading a bundle and building its interpreter: every invalid bundle is one named BundleError.

Manifests are written by :func:`write_bundle` and then edited by hand, as a corrupt disk or
a careless edit would; the model comes from the shipped bundle, run by the edge runtime
(no TensorFlow).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from wakeguard.edge.bundle import BundleError, default_bundle_path, load_bundle, sha256_bytes
from wakeguard.edge.litert import ModelInvalid, make_interpreter
from wakeguard.edge.scorer import Scorer
from wakeguard.tools.cli import app

SHIPPED = default_bundle_path()
needs_shipped = pytest.mark.skipif(
    not (SHIPPED / "manifest.json").is_file(), reason="no shipped bundle (run wakeguard pipeline)"
)


def _copy(tmp_path: Path, name: str = "b") -> Path:
    dst = tmp_path / name
    shutil.copytree(SHIPPED, dst, ignore=shutil.ignore_patterns("*.keras"))
    return dst


def _edit(folder: Path, change: Any) -> Path:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    return folder


def _wav(tmp_path: Path) -> Path:
    import numpy as np
    import soundfile as sf

    t = np.arange(32_000) / 16_000
    path = tmp_path / "tone.wav"
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000)
    return path


def _replace_model(folder: Path, data: bytes) -> Path:
    """Swap the model file and update the checksum, so only the interpreter can tell."""
    (folder / "model.tflite").write_bytes(data)
    return _edit(folder, lambda m: m.update(model_sha256=sha256_bytes(data)))


@needs_shipped
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(calibration=None), "calibration must be a mapping, got null"),
        (
            lambda m: m["calibration"].update(scale="2"),
            'calibration.scale must be a number, got "2"',
        ),
        (lambda m: m["thresholds"].update(eer="abc"), 'thresholds.eer must be a number, got "abc"'),
        (lambda m: m.update(thresholds=None), "thresholds must be a non-empty mapping, got null"),
        (
            lambda m: m["input_policy"].update(min_seconds="x"),
            'input_policy.min_seconds must be a number >= 0, got "x"',
        ),
        (lambda m: m.update(input_policy=[]), "input_policy must be a mapping, got []"),
        (
            lambda m: m["input_policy"].update(trim="vad"),
            "input_policy.trim 'vad' is not one of ['none', 'speech']",
        ),
        (
            lambda m: m.update(sample_rate="16000"),
            'sample_rate must be a whole number, got "16000"',
        ),
        (
            lambda m: m["frontend"].update(hop_length="500"),
            'frontend.hop_length must be a whole number, got "500"',
        ),
        (lambda m: m["frontend"].update(deltas=1), "frontend.deltas must be a bool, got 1"),
        (lambda m: m.update(frontend=[1, 2]), "frontend must be a mapping, got [1, 2]"),
        (lambda m: m.update(input_shape=7), "input_shape must be a list, got 7"),
        (
            lambda m: m.update(model_file="../../etc/passwd"),
            'model_file must be a file name in the bundle, got "../../etc/passwd"',
        ),
        (
            lambda m: m.update(calibration_scores={"bonafide": None}),
            "calibration_scores.bonafide must be a list of numbers",
        ),
    ],
)
def test_manifest_field_of_the_wrong_type_is_named(
    tmp_path: Path, change: Any, message: str
) -> None:
    folder = _edit(_copy(tmp_path), change)
    with pytest.raises(BundleError) as info:
        load_bundle(folder)
    assert str(folder) in str(info.value) and message in str(info.value)


@needs_shipped
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "the model is empty"),
        (b"\x00garbage" * 50, "not a valid TFLite model"),
        (None, "not a valid TFLite model"),  # the shipped model cut short
    ],
)
def test_a_model_the_interpreter_refuses_is_a_bundle_error(
    tmp_path: Path, data: bytes | None, reason: str
) -> None:
    folder = _copy(tmp_path)
    if data is None:
        data = (SHIPPED / "model.tflite").read_bytes()[:1000]
    _replace_model(folder, data)
    bundle = load_bundle(folder)  # the checksum matches: only the interpreter can tell
    with pytest.raises(BundleError) as info:
        Scorer.from_bundle(bundle)
    assert str(folder) in str(info.value) and "model.tflite" in str(info.value)
    assert reason in str(info.value)
    # The CLI prints that one line and exits with the bad-input code.
    res = CliRunner().invoke(app, ["screen", str(_wav(tmp_path)), "--model", str(folder)])
    assert res.exit_code == 2, res.output
    assert reason in res.output and "Traceback" not in res.output


@needs_shipped
def test_cli_names_the_bundle_for_a_corrupt_manifest(tmp_path: Path) -> None:
    folder = _edit(_copy(tmp_path), lambda m: m.update(calibration=None))
    res = CliRunner().invoke(app, ["screen", str(_wav(tmp_path)), "--model", str(folder)])
    assert res.exit_code == 2, res.output
    assert "calibration must be a mapping" in res.output and "Traceback" not in res.output


def test_make_interpreter_refuses_garbage_with_its_own_error() -> None:
    with pytest.raises(ModelInvalid, match="not a valid TFLite model"):
        make_interpreter(b"\x00garbage" * 50, 1)


@needs_shipped
@pytest.mark.parametrize("threads", [0, -5])
def test_fewer_than_one_thread_is_refused_not_clamped(threads: int) -> None:
    model = (SHIPPED / "model.tflite").read_bytes()
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        make_interpreter(model, threads)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        Scorer.from_bundle(SHIPPED, num_threads=threads)
    make_interpreter(model, 1)  # one thread is fine


@needs_shipped
def test_threads_from_the_environment_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    model = (SHIPPED / "model.tflite").read_bytes()
    for value in ("0", "many"):
        monkeypatch.setenv("WAKEGUARD_THREADS", value)
        with pytest.raises(ValueError, match="WAKEGUARD_THREADS"):
            make_interpreter(model)
    monkeypatch.setenv("WAKEGUARD_THREADS", "2")
    make_interpreter(model)


def test_the_runtime_delegate_notice_is_held_back_and_other_output_passed_on(monkeypatch, capfd):
    """The interpreter's C++ prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    on file descriptor 2 for every model; it would open every command's output. Only that
    line is held back: anything else the runtime prints while loading (its errors) shows."""
    import os

    import wakeguard.edge.litert as litert

    class Chatty:
        def __init__(self, model_content: bytes, num_threads: int):
            os.write(2, f"{litert.DELEGATE_NOTICE}\nWARNING: something real\n".encode())

        def allocate_tensors(self) -> None:
            os.write(2, f"{litert.DELEGATE_NOTICE}\n".encode())

    monkeypatch.setattr(litert, "interpreter_class", lambda: ("fake", Chatty))
    make_interpreter(b"model", num_threads=1)
    err = capfd.readouterr().err
    assert err == "WARNING: something real\n"


def test_screen_output_has_no_runtime_notice(tmp_path):
    import subprocess
    import sys

    import numpy as np
    from wakeguard.edge.audio import write_wav

    wav = tmp_path / "a.wav"
    write_wav(wav, 0.1 * np.sin(np.arange(32000) / 10.0))
    r = subprocess.run(
        [sys.executable, "-m", "wakeguard.tools.cli", "screen", str(wav), str(tmp_path / "no.wav")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "no.wav: file not found" in r.stderr
    assert "XNNPACK" not in r.stderr and "INFO" not in r.stderr


def test_a_bundle_is_refused_by_a_runtime_too_old_to_trim_it(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle calibrated on trimmed recordings is written as format 3, so a format-2
    runtime (which scores whole files) refuses it instead of deciding against the wrong
    calibration; one that scores whole files stays format 1, which every runtime reads."""
    import wakeguard.edge.bundle as bundle_mod

    whole = load_bundle(tiny_bundle)
    trimmed = bundle_mod.write_bundle(
        tmp_path / "trimmed",
        whole.model_bytes,
        whole.frontend,
        thresholds=whole.thresholds,
        calibration=whole.calibration,
        trim="speech",
    )
    assert whole.manifest["format_version"] == 1
    assert load_bundle(trimmed).manifest["format_version"] == 3
    monkeypatch.setattr(bundle_mod, "FORMAT_VERSION", 2)
    load_bundle(tiny_bundle)
    with pytest.raises(BundleError, match="format_version 3 is newer than this runtime"):
        load_bundle(trimmed)


def test_the_decision_digest_changes_with_every_part_of_the_decision() -> None:
    """The last part of a bundle's version: calibration, each threshold and the input policy."""
    from wakeguard.edge.bundle import Calibration, decision_digest

    thr = {"eer": 0.4, "bpcer_1pct": -2.0, "bpcer_5pct": -1.0}
    base = decision_digest(Calibration(0.9, 2.3), thr, "speech")
    assert base == decision_digest(Calibration(0.9, 2.3), dict(reversed(thr.items())), "speech")
    others = {
        decision_digest(Calibration(1.0, 2.3), thr, "speech"),
        decision_digest(Calibration(0.9, 2.2), thr, "speech"),
        decision_digest(Calibration(0.9, 2.3), {**thr, "eer": 0.41}, "speech"),
        decision_digest(Calibration(0.9, 2.3), thr, "none"),
    }
    assert base not in others and len(others) == 4
