"""The dataset format every wakeguard tool reads and writes.

A dataset is a folder with ``protocol.csv`` and the audio. Columns: ``path`` (relative to
the CSV's folder, or absolute), ``label`` (``bonafide`` or ``spoof``), then optional
``speaker``, ``split`` (``train``/``dev``/``eval``) and any condition columns (attack, room,
distance, playback device, recording device, quality...). Plain ``csv``: no pandas, so the
Pi can write datasets of its own (``wakeguard monitor --export``).

A ``label_confirmed`` column (:data:`LABEL_CONFIRMED`) marks labels that are a model's own
verdicts until a person has listened and written ``yes``; :func:`require_confirmed` is how
training and evaluation refuse rows that are still unconfirmed.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import atomic_text

LABELS = ("bonafide", "spoof")
SPLITS = ("train", "dev", "eval")
REQUIRED = ("path", "label")
KNOWN = ("path", "label", "speaker", "split")
PROTOCOL = "protocol.csv"
LABEL_CONFIRMED = "label_confirmed"
"""Condition column of labels a person must check: ``no`` until confirmed, then ``yes``."""


class ProtocolError(ValueError):
    """A protocol file that does not follow the dataset format."""


class UnconfirmedLabelsError(ProtocolError):
    """Rows whose labels are a model's verdicts that no person has confirmed yet."""


@dataclass
class Row:
    """One utterance of a protocol."""

    path: str
    label: str
    speaker: str = ""
    split: str = ""
    conditions: dict[str, str] = field(default_factory=dict)

    def audio_path(self, root: Path) -> Path:
        p = Path(self.path)
        return p if p.is_absolute() else root / p

    def as_dict(self) -> dict[str, str]:
        return {
            "path": self.path,
            "label": self.label,
            "speaker": self.speaker,
            "split": self.split,
            **self.conditions,
        }


@dataclass
class Protocol:
    """Rows of a dataset and the folder their relative paths start from."""

    root: Path
    rows: list[Row]
    condition_columns: list[str]
    file: Path | None = None
    """The CSV the rows were read from (``None`` for a protocol built in memory)."""

    def where(self, split: str | None = None, label: str | None = None) -> list[Row]:
        return [
            r
            for r in self.rows
            if (split is None or r.split == split) and (label is None or r.label == label)
        ]

    def splits(self) -> list[str]:
        return sorted(
            {r.split for r in self.rows if r.split}, key=lambda s: (SPLITS + (s,)).index(s)
        )

    def audio_paths(self, rows: Sequence[Row] | None = None) -> list[Path]:
        return [r.audio_path(self.root) for r in (self.rows if rows is None else rows)]


def protocol_file(path: str | Path) -> Path:
    """Accept a dataset folder or its CSV."""
    p = Path(path)
    return p / PROTOCOL if p.is_dir() else p


def not_utf8(path: Path) -> str:
    """Why ``path`` cannot be read as UTF-8 text: the line and value of its first bad byte.

    Latin-1 or Windows-1252 exports and binary files (a WAV given as the CSV) end here;
    the codec's own message gives neither the file nor the line.
    """
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return (
            f"{path}:{line}: not a UTF-8 text CSV (byte 0x{data[exc.start]:02x}); "
            "save it as CSV UTF-8"
        )
    return f"{path}: not a UTF-8 text CSV"


def is_finite_number(value: Any) -> bool:
    """A JSON number a record or manifest may hold: int or float, finite, not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def file_in_the_way(path: str | Path) -> Path | None:
    """The file among ``path``'s parents that keeps it from being created, if one does."""
    return next((p for p in Path(path).parents if p.is_file()), None)


class OutputFolderError(ValueError):
    """An output folder that cannot be created or written (a user's wrong path)."""


def ensure_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` (and its parents) before any work, or say plainly why it cannot be
    used: a file of that name, a path under a file, no permission. The bare OSError names
    neither the folder's role nor, for a path under a file, the file in the way."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"cannot create {what} {folder}: a file of that name exists")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = file_in_the_way(folder)
        why = f"{blocker} is a file, not a folder" if blocker else exc.strerror or exc
        raise OutputFolderError(f"cannot create {what} {folder}: {why}") from exc
    if not os.access(folder, os.W_OK):
        raise OutputFolderError(f"cannot write to {what} {folder}: permission denied")
    return folder


def read_protocol(path: str | Path) -> Protocol:
    """Read and check a protocol; errors name the file and the line.

    UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8" writes one). A path may
    appear once: the same audio twice would count twice in training and evaluation.
    """
    csv_path = protocol_file(path)
    if not csv_path.is_file():
        raise ProtocolError(f"{csv_path}: protocol file not found")
    try:
        return _read_protocol(csv_path)
    except UnicodeDecodeError:
        raise ProtocolError(not_utf8(csv_path)) from None


def _read_protocol(csv_path: Path) -> Protocol:
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ProtocolError(f"{csv_path}: missing column(s) {missing}; header is {header}")
        conds = [c for c in header if c not in KNOWN]
        rows = []
        first_line: dict[str, int] = {}
        for lineno, rec in enumerate(reader, start=2):
            extra = [v for v in rec.get(None) or [] if v.strip()]  # type: ignore[call-overload]
            if extra:  # the columns after a stray comma would all be shifted by one
                raise ProtocolError(
                    f"{csv_path}:{lineno}: {len(header) + len(rec[None])} fields but the header "  # type: ignore[index]
                    f"has {len(header)} (a comma inside a value that is not quoted?)"
                )
            label = (rec.get("label") or "").strip()
            if label not in LABELS:
                raise ProtocolError(f"{csv_path}:{lineno}: label {label!r} is not one of {LABELS}")
            split = (rec.get("split") or "").strip()
            if split and split not in SPLITS:
                raise ProtocolError(f"{csv_path}:{lineno}: split {split!r} is not one of {SPLITS}")
            path = (rec.get("path") or "").strip()
            if not path:
                raise ProtocolError(f"{csv_path}:{lineno}: empty path")
            if path in first_line:
                raise ProtocolError(
                    f"{csv_path}:{lineno}: path {path} is listed twice (first on line {first_line[path]})"
                )
            first_line[path] = lineno
            rows.append(
                Row(
                    path=path,
                    label=label,
                    speaker=(rec.get("speaker") or "").strip(),
                    split=split,
                    conditions={c: (rec.get(c) or "").strip() for c in conds},
                )
            )
    if not rows:
        raise ProtocolError(f"{csv_path}: protocol has no rows")
    return Protocol(root=csv_path.parent, rows=rows, condition_columns=conds, file=csv_path)


def is_confirmed(row: Row) -> bool:
    """False when the row's ``label_confirmed`` holds anything but ``yes`` (any case) or nothing.

    An empty cell is a row that never had the flag (rows of an imported or simulated corpus
    merged into an exported dataset, as its data card suggests); ``wakeguard monitor
    --export`` always writes ``no``, so every model-labelled row is caught.
    """
    return row.conditions.get(LABEL_CONFIRMED, "").strip().lower() in ("", "yes")


def require_confirmed(protocol: Protocol, rows: Sequence[Row], used_for: str) -> None:
    """Raise :class:`UnconfirmedLabelsError` if any of ``rows`` has an unconfirmed label.

    Refusing, rather than skipping those rows with a warning, keeps the dataset a run
    records (path, fingerprint, counts) the dataset it actually used, and leaves the
    decision about each clip to the person who can listen to it: a skipped row would be a
    quiet hole in the data; a refused run costs one edit of the CSV. Protocols without the
    column are never affected.
    """
    if LABEL_CONFIRMED not in protocol.condition_columns:
        return
    bad = [r for r in rows if not is_confirmed(r)]
    if not bad:
        return
    where = protocol.file or protocol.root / PROTOCOL
    first = ", ".join(
        f"{r.path} ({LABEL_CONFIRMED}={r.conditions[LABEL_CONFIRMED]!r})" for r in bad[:3]
    )
    raise UnconfirmedLabelsError(
        f"{where}: {len(bad)} of the {len(rows)} rows for {used_for} have {LABEL_CONFIRMED} other than "
        f"'yes' (first: {first}{' ...' if len(bad) > 3 else ''}). Their labels are a model's own verdicts "
        f"(clips exported by `wakeguard monitor --export`), so using them would train or score the model "
        f"against its own mistakes. Listen to each clip, correct `label` where it is wrong, set "
        f"{LABEL_CONFIRMED}=yes, and delete the rows you cannot decide; then run again."
    )


def write_protocol(
    path: str | Path,
    rows: Iterable[Row],
    condition_columns: Sequence[str] | None = None,
    mode: int | None = None,
) -> Path:
    """Write rows atomically (temp file, then rename) so an interrupted write loses nothing;
    ``mode`` as in :func:`~wakeguard.edge.files.atomic_path`."""
    csv_path = protocol_file(path) if Path(path).suffix != ".csv" else Path(path)
    rows = list(rows)
    if condition_columns is None:
        seen: dict[str, None] = {}
        for r in rows:
            for c in r.conditions:
                seen.setdefault(c, None)
        condition_columns = list(seen)
    with atomic_text(csv_path, mode=mode) as fh:  # a full disk: names the file, leaves no half copy
        w = csv.DictWriter(fh, fieldnames=[*KNOWN, *condition_columns], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r.as_dict())
    return csv_path
