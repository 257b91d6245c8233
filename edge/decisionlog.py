"""The decision log: one JSON line per verdict, rotated by size, plus opt-in audio clips.

Every runtime path that makes a decision (``listen``, ``serve``) records it here, so
``wakeguard monitor`` can summarise what the model does in the wild. The log holds
``time`` (UTC ISO 8601), stream times, score, verdict, threshold, latency, level,
duration and model version. Its total size is bounded: the active file rotates at
``max_bytes`` into ``LOG.1`` ... ``LOG.<backups>``, the oldest dropped.

Audio is private: saving it is opt-in (``clips_dir``). Only rejected and borderline
utterances (``|score - threshold| < borderline_margin``) are kept, as 16-bit WAV under a
total size cap, oldest deleted first; the folder is created ``0700`` and every file
``0600`` so only the service user can read them. A failing disk (full, read-only) is
logged once and never stops the service: decisions go on, records are dropped until
writing works again.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from .audio import SAMPLE_RATE, check_audio
from .files import atomic_path
from .protocol import LABELS, file_in_the_way, is_finite_number

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
CLIP_SUFFIX = ".wav"
CLIP_NAME = re.compile(r"\d{8}T\d{6}\.\d{6}_\d{4}_[A-Za-z_-]+\.wav")
"""The clips this log writes (``20261124T090312.123456_0001_spoof.wav``): the only files in the
clip folder it counts against the cap and deletes; any other file there is the user's."""


def utc_now_iso() -> str:
    """Wall-clock time with milliseconds, UTC, ISO 8601 (what the log's ``time`` holds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700 for the folder itself."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    try:
        os.chmod(path, DIR_MODE)
    except OSError:  # not ours to change (e.g. a shared parent); the files are still 0600
        pass


def check_log_limits(
    max_bytes: int, backups: int, clip_cap_bytes: int, borderline_margin: float
) -> None:
    """ValueError for a size, count or margin of a decision log that means nothing (the
    ``[log]`` table of a configuration is checked with it before anything runs)."""
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes}")
    if backups < 0:
        raise ValueError(f"backups must be 0 or more, got {backups}")
    if clip_cap_bytes <= 0:
        raise ValueError(f"clip_cap_bytes must be a positive number of bytes, got {clip_cap_bytes}")
    if not math.isfinite(borderline_margin) or borderline_margin < 0:
        raise ValueError(f"borderline_margin must be 0 or more, got {borderline_margin}")


def not_a_log(path: Path) -> str | None:
    """Why the existing file ``path`` must not be appended to as a decision log, or None (it is
    one, it is empty, or it does not exist). Only its first line is read: a power cut can leave
    NUL bytes at a log's end, and the service must start again after one."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None  # missing, or a folder: opening it reports that
    first = head.split(b"\n", 1)[0].strip(b"\x00 \t\r")
    if not first or first.startswith(b"{"):
        return None
    if b"\x00" in head or first.startswith((b"RIFF", b"fLaC", b"OggS", b"ID3")):
        return "holds binary data (audio?), not JSON lines"
    return (
        f"holds text that is not JSON lines (it starts {first[:20].decode('utf-8', 'replace')!r})"
    )


def write_private_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> int:
    """Write 16-bit PCM WAV readable by the owner only (0600), atomically; returns its size."""
    import soundfile as sf

    with atomic_path(path, mode=FILE_MODE) as tmp:
        sf.write(
            tmp,
            np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0),
            sample_rate,
            subtype="PCM_16",
            format="WAV",
        )
    return path.stat().st_size


class DecisionLog:
    """Append-only JSON-lines decision log with size rotation and an optional clip store.

    Thread-safe: ``record`` may be called from any thread. Nothing here raises on a disk
    error; the first failure is logged (``logging`` at ERROR), later ones are counted in
    :attr:`write_errors` until a write succeeds again.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 5_000_000,
        backups: int = 3,
        clips_dir: str | Path | None = None,
        clip_cap_bytes: int = 50_000_000,
        borderline_margin: float = 1.0,
        strict_open: bool = False,
    ):
        """``strict_open``: a log that cannot be opened at the start for a reason that will not
        pass by itself (no such folder, no permission: a wrong path) raises OSError instead of
        running without it; a full disk never does, as it may clear while decisions go on."""
        check_log_limits(max_bytes, backups, clip_cap_bytes, borderline_margin)
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.backups = int(backups)
        self.clips_dir = None if clips_dir is None else Path(clips_dir)
        self.clip_cap_bytes = int(clip_cap_bytes)
        self.borderline_margin = float(borderline_margin)
        self.write_errors = 0
        """Records or clips lost to disk errors since the log was opened."""
        self.n_records = 0
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        self._failing = False
        self._closed = False
        self._clips: list[tuple[str, int]] = []  # (name, bytes), oldest first
        self._clip_bytes = 0
        self._clip_seq = 0
        why = not_a_log(self.path)
        if why:  # e.g. --log and --input swapped: never append to someone's recording
            raise ValueError(
                f"decision log {self.path} {why}; choose another --log path (nothing was written)"
            )
        self._open(strict=strict_open)
        if self.clips_dir is not None:
            self._scan_clips()

    # -- the log file -------------------------------------------------------------
    def _open(self, strict: bool = False) -> None:
        try:
            if str(self.path.parent) not in ("", "."):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")
        except OSError as exc:
            self._fh = None
            if strict and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                blocker = file_in_the_way(self.path)
                why = f"{blocker} is a file, not a folder" if blocker else exc.strerror or exc
                raise OSError(f"cannot open decision log {self.path}: {why}") from exc
            self._disk_error(f"cannot open decision log {self.path}", exc)

    def _size(self) -> int:
        try:
            return self._fh.tell() if self._fh is not None else 0
        except OSError:
            return 0

    def _rotate(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            if self.path.exists():
                self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._open()

    def _write_line(self, line: str) -> None:
        if self._fh is None:
            self._open()
            if self._fh is None:
                raise OSError(f"decision log {self.path} is not open")
        size = self._size()
        if size > 0 and size + len(line.encode("utf-8")) > self.max_bytes:
            self._rotate()
            if self._fh is None:
                raise OSError(f"decision log {self.path} could not be reopened after rotation")
        self._fh.write(line)
        self._fh.flush()

    def _disk_error(self, what: str, exc: BaseException) -> None:
        self.write_errors += 1
        if not self._failing:
            log.error(
                "%s: %s; decisions go on, records are dropped until it can be written again",
                what,
                exc,
            )
            self._failing = True

    # -- clips ----------------------------------------------------------------------
    def _scan_clips(self) -> None:
        assert self.clips_dir is not None
        try:
            _private_dir(self.clips_dir)
            found = []
            for p in self.clips_dir.iterdir():
                if CLIP_NAME.fullmatch(p.name) and p.is_file():
                    st = p.stat()
                    found.append((st.st_mtime, p.name, st.st_size))
        except OSError as exc:
            self._disk_error(f"cannot use clip folder {self.clips_dir}", exc)
            return
        found.sort()
        self._clips = [(name, size) for _, name, size in found]
        self._clip_bytes = sum(size for _, size in self._clips)
        self._enforce_cap(0)

    def _enforce_cap(self, incoming: int) -> None:
        """Delete the oldest clips until ``incoming`` more bytes fit under the cap."""
        assert self.clips_dir is not None
        while self._clips and self._clip_bytes + incoming > self.clip_cap_bytes:
            name, size = self._clips.pop(0)
            self._clip_bytes -= size
            try:
                (self.clips_dir / name).unlink(missing_ok=True)
            except OSError as exc:
                self._disk_error(f"cannot delete old clip {self.clips_dir / name}", exc)

    def wants_clip(self, score: float, verdict: str, threshold: float) -> bool:
        """True if this decision's audio would be saved: rejected, or within the borderline margin."""
        if self.clips_dir is None:
            return False
        return verdict != "bonafide" or abs(score - threshold) < self.borderline_margin

    def _save_clip(self, audio: np.ndarray, verdict: str) -> str | None:
        assert self.clips_dir is not None
        self._clip_seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
        name = f"{stamp}_{self._clip_seq:04d}_{verdict}{CLIP_SUFFIX}"
        expected = 44 + 2 * int(np.asarray(audio).size)  # WAV header + 16-bit samples
        if expected > self.clip_cap_bytes:
            return None
        _private_dir(self.clips_dir)
        self._enforce_cap(expected)
        path = self.clips_dir / name
        size = write_private_wav(path, audio)
        self._clips.append((name, size))
        self._clip_bytes += size
        self._enforce_cap(0)
        return str(path)

    @property
    def clip_bytes(self) -> int:
        """Bytes of clips currently kept."""
        return self._clip_bytes

    # -- the public API ------------------------------------------------------------
    def record(
        self,
        *,
        t_start: float,
        t_end: float,
        score: float,
        verdict: str,
        threshold: float,
        latency_ms: float,
        level_dbfs: float | None = None,
        duration_s: float | None = None,
        model_version: str,
        source: str = "listen",
        audio: np.ndarray | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Append one decision; save its audio if clips are on and it is rejected or borderline.

        ``audio`` is 16 kHz mono float32; ``level_dbfs``/``duration_s`` are computed from
        it when not given. Extra keyword fields (JSON-serialisable) are stored as they are
        and override the defaults (``time``/``unix_time`` when replaying old decisions).
        Returns the record as written (with ``clip`` when audio was saved).
        """
        if audio is not None and (level_dbfs is None or duration_s is None):
            info = check_audio(audio)
            level_dbfs = info.rms_dbfs if level_dbfs is None else level_dbfs
            duration_s = info.duration_s if duration_s is None else duration_s
        rec: dict[str, Any] = {
            "time": utc_now_iso(),
            "unix_time": round(time.time(), 3),
            "t_start": round(float(t_start), 3),
            "t_end": round(float(t_end), 3),
            "score": round(float(score), 6),
            "verdict": verdict,
            "threshold": round(float(threshold), 6),
            "borderline": abs(float(score) - float(threshold)) < self.borderline_margin,
            "latency_ms": round(float(latency_ms), 3),
            "level_dbfs": None
            if level_dbfs is None or not np.isfinite(level_dbfs)
            else round(float(level_dbfs), 2),
            "duration_s": None if duration_s is None else round(float(duration_s), 3),
            "model_version": model_version,
            "source": source,
        }
        rec.update(extra)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"decision log {self.path} is closed")
            clip_failed = False
            if audio is not None and self.wants_clip(score, verdict, threshold):
                try:
                    clip = self._save_clip(audio, verdict)
                    if clip is not None:
                        rec["clip"] = clip
                except OSError as exc:
                    clip_failed = True
                    self._disk_error(f"cannot save clip in {self.clips_dir}", exc)
            try:
                self._write_line(json.dumps(rec, default=float) + "\n")
                self.n_records += 1
                if self._failing and not clip_failed:
                    log.warning(
                        "decision log %s: writing works again (%d records or clips lost)",
                        self.path,
                        self.write_errors,
                    )
                    self._failing = False
            except OSError as exc:
                self._disk_error(f"cannot write decision log {self.path}", exc)
                # A failed write may leave the buffer half full; drop it and reopen next time.
                try:
                    if self._fh is not None:
                        self._fh.close()
                except OSError:
                    pass
                self._fh = None
        return rec

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None:
                try:
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                except OSError as exc:
                    self._disk_error(f"cannot flush decision log {self.path}", exc)

    def close(self) -> None:
        """Flush and close; further ``record`` calls raise. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fh is not None:
                try:
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                except OSError as exc:
                    self._disk_error(f"cannot flush decision log {self.path}", exc)
                try:
                    self._fh.close()
                except OSError:
                    pass
                self._fh = None

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def log_files(path: str | Path) -> list[Path]:
    """The log and its rotated backups that exist, oldest first (``LOG.N`` ... ``LOG.1``, ``LOG``)."""
    path = Path(path)
    backups = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1 :]
        if suffix.isdigit() and p.is_file():
            backups.append((int(suffix), p))
    files = [p for _, p in sorted(backups, reverse=True)]
    if path.exists():
        files.append(path)
    return files


NUMBER_FIELDS = (
    "t_start",
    "t_end",
    "threshold",
    "latency_ms",
    "added_ms",
    "level_dbfs",
    "duration_s",
)
"""Record fields that are a finite number when present (``null`` allowed)."""
MAX_UNIX_TIME = 253_402_300_799.0
"""9999-12-31T23:59:59Z, the last time a :class:`datetime` can hold."""
SHOWN_LINES = 5
"""Line numbers named in :meth:`LogContents.describe_bad`; the rest are counted."""


def _shown(v: Any) -> str:
    """A field's value as the log holds it (JSON), shortened."""
    text = json.dumps(v, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def record_problem(rec: Any) -> str | None:
    """Why a parsed JSON line is not a usable decision record, or None if it is one."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not a decision record"
    if "score" not in rec or "verdict" not in rec:
        return "not a decision record (no score or verdict)"
    if not is_finite_number(rec["score"]):
        return f"score {_shown(rec['score'])} is not a finite number"
    if rec["verdict"] not in LABELS:
        return f"verdict {_shown(rec['verdict'])} is not {' or '.join(LABELS)}"
    for key in NUMBER_FIELDS:
        if rec.get(key) is not None and not is_finite_number(rec[key]):
            return f"{key} {_shown(rec[key])} is not a finite number"
    t = rec.get("unix_time")
    if t is not None and not (is_finite_number(t) and 0.0 <= t <= MAX_UNIX_TIME):
        return f"unix_time {_shown(t)} is not a time in seconds since 1970"
    if rec.get("time") is not None and not isinstance(rec["time"], str):
        return f"time {_shown(rec['time'])} is not an ISO 8601 string"
    if rec.get("clip") is not None and not isinstance(rec["clip"], str):
        return f"clip {_shown(rec['clip'])} is not a path"
    return None


@dataclass(frozen=True)
class BadLine:
    """A non-empty line of a log that holds no usable decision record."""

    file: Path
    line: int
    """1-based line number in :attr:`file`."""
    problem: str
    last: bool
    """True for the last line of the newest file: what a crash or a full disk cuts short."""


@dataclass
class LogContents:
    """What :func:`read_log` found: the records, oldest first, and the lines it skipped."""

    path: Path
    files: list[Path]
    records: list[dict[str, Any]]
    bad: list[BadLine]

    def describe_bad(self) -> str | None:
        """One line naming the skipped lines and why (None if there are none)."""
        if not self.bad:
            return None
        groups: list[tuple[Path, list[int]]] = []  # consecutive lines of one file
        for b in self.bad[:SHOWN_LINES]:
            if groups and groups[-1][0] == b.file:
                groups[-1][1].append(b.line)
            else:
                groups.append((b.file, [b.line]))
        where = ", ".join(
            ("" if f == self.path else f"{f.name} ")
            + ("line " if len(ns) == 1 else "lines ")
            + ", ".join(map(str, ns))
            for f, ns in groups
        )
        more = f" and {len(self.bad) - SHOWN_LINES} more" if len(self.bad) > SHOWN_LINES else ""
        first = self.bad[0]
        at = "line" if first.file == self.path else f"{first.file.name} line"
        text = (
            f"{len(self.bad)} unreadable line(s) in {self.path} ({where}{more}) "
            f"skipped; {at} {first.line}: {first.problem}"
        )
        if len(self.bad) > 1 and self.bad[-1].last:
            text += f"; the last line: {self.bad[-1].problem}"
        return text


def read_log(path: str | Path) -> LogContents:
    """Every decision record of a log and its backups, oldest first, and the lines skipped.

    A line that is not JSON (cut short by a crash or a full disk) or not a decision record
    with the right types (see :func:`record_problem`) is skipped and reported, not fatal.
    Raises FileNotFoundError if neither the log nor a backup exists, ValueError if ``path``
    is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a decision log (a JSON-lines file)")
    files = log_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: decision log not found")
    records: list[dict[str, Any]] = []
    bad: list[BadLine] = []
    for f in files:
        with f.open(encoding="utf-8", errors="replace") as fh:
            lines = [(i, line.strip()) for i, line in enumerate(fh, start=1)]
        lines = [(i, line) for i, line in lines if line]
        for k, (i, line) in enumerate(lines):
            last = f is files[-1] and k == len(lines) - 1
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                if "\x00" in line or "\ufffd" in line:
                    problem = "binary data, not text"
                else:
                    problem = "not JSON" + (
                        " (cut short by a crash or a full disk?)" if last else ""
                    )
                bad.append(BadLine(f, i, problem, last))
                continue
            problem = record_problem(rec)
            if problem is None:
                records.append(rec)
            else:
                bad.append(BadLine(f, i, problem, last))
    return LogContents(path, files, records, bad)


def read_records(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """All records of a log and its backups, oldest first, and the number of lines skipped."""
    contents = read_log(path)
    return contents.records, len(contents.bad)


__all__ = [
    "BadLine",
    "DecisionLog",
    "LogContents",
    "check_log_limits",
    "log_files",
    "not_a_log",
    "read_log",
    "read_records",
    "record_problem",
    "utc_now_iso",
    "write_private_wav",
]
