"""Turn the public replay corpora into the wakeguard dataset format.

Each importer reads a corpus in the layout its publishers distribute, checks that every
referenced audio file exists, and returns :class:`~wakeguard.edge.protocol.Row` objects with
the corpus's own split (train/dev/eval) and condition columns. :func:`import_corpus` writes
``protocol.csv`` (absolute paths to the original audio, or, with ``copy=True``, 16 kHz mono
WAV copies inside the output folder) and ``import_report.json`` (counts and every skipped row).

Where to get the corpora (downloading them is the user's step; all need a licence agreement
or registration on the publisher's page):

- ASVspoof 2017 v2.0: Edinburgh DataShare, https://datashare.ed.ac.uk/handle/10283/3055
  (``ASVspoof2017_V2_{train,dev,eval}.zip`` and ``protocol_V2.zip``).
- ASVspoof 2019 PA: Edinburgh DataShare, https://datashare.ed.ac.uk/handle/10283/3336
  (``PA.zip``: ``ASVspoof2019_PA_{train,dev,eval}/flac`` and ``ASVspoof2019_PA_cm_protocols``).
- ASVspoof 2021 PA eval: Zenodo, linked from https://www.asvspoof.org/index2021.html
  (``ASVspoof2021_PA_eval_part0*.tar.gz``); the keys ``PA-keys-full.tar.gz`` from the same page.
- ReMASC: https://github.com/YuanGongND/ReMASC (sign the user agreement linked there to get
  the download; ``meta.csv`` and the WAV files).

A missing audio file or a malformed protocol line is an :class:`ImportProblem` naming the
protocol file and line. With ``skip_missing=True`` those rows are left out and listed in the
report instead; nothing is ever dropped silently.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wakeguard.edge.files import write_text_atomic
from wakeguard.edge.protocol import LABELS, PROTOCOL, SPLITS, Row, ensure_folder, write_protocol

FORMATS = ("asvspoof2017", "asvspoof2019pa", "asvspoof2021pa", "remasc", "folder")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
REPORT = "import_report.json"

# ASVspoof 2019 PA condition letters (ASVspoof 2019 evaluation plan; see FACTS.md).
PA2019_ENV = {
    "room_size": ("room_size_m2", {"a": "2-5", "b": "5-10", "c": "10-20"}),
    "t60": ("t60_ms", {"a": "50-200", "b": "200-600", "c": "600-1000"}),
    "talker_distance": ("talker_distance_cm", {"a": "10-50", "b": "50-100", "c": "100-150"}),
}
PA2019_ATTACK = {
    "attacker_distance": ("attacker_distance_cm", {"A": "10-50", "B": "50-100", "C": ">100"}),
    "device_quality": ("device_quality_class", {"A": "perfect", "B": "high", "C": "low"}),
}
PA2021_COLUMNS = ("asv_room", "asv_mic", "dis_to_asv", "att_room", "att_mic", "att_d", "att_to_spk")
REMASC_COLUMNS = (
    "id",
    "type",
    "speaker",
    "environment",
    "position",
    "source_recorder",
    "playback_device",
    "recording_device",
    "length",
)
REMASC_TYPES = {"1": "source", "2": "bonafide", "3": "spoof"}


class ImportProblem(ValueError):
    """A corpus that cannot be imported as it is: names the file (and line) and the problem."""


@dataclass(frozen=True)
class Skipped:
    """One protocol row left out with ``skip_missing``: where it was and why."""

    source: str
    line: int
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "line": self.line, "reason": self.reason}


@dataclass
class ImportResult:
    """What :func:`import_corpus` wrote."""

    format: str
    source: str
    out: str
    protocol: str
    rows: list[Row]
    skipped: list[Skipped] = field(default_factory=list)
    not_used: dict[str, int] = field(default_factory=dict)
    copied: bool = False

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows per split and label: ``{split or "(none)": {label: n}}``."""
        out: dict[str, dict[str, int]] = {}
        for r in self.rows:
            c = out.setdefault(r.split or "(none)", {lab: 0 for lab in LABELS})
            c[r.label] += 1
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "format": self.format,
            "source": self.source,
            "out": self.out,
            "protocol": self.protocol,
            "copied": self.copied,
            "n_rows": len(self.rows),
            "counts": self.counts(),
            "condition_columns": _condition_columns(self.rows),
            "n_skipped": len(self.skipped),
            "skipped": [s.to_dict() for s in self.skipped],
            "not_used": self.not_used,
        }


class _Problems:
    """Collects bad rows; raises them all at the end unless skipping is allowed."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.items: list[Skipped] = []

    def add(self, source: Path | str, line: int, reason: str) -> None:
        self.items.append(Skipped(str(source), line, reason))

    def finish(self) -> list[Skipped]:
        if self.items and not self.skip:
            first = self.items[:5]
            lines = "; ".join(
                f"{s.source}:{s.line}: {s.reason}" if s.line else f"{s.source}: {s.reason}"
                for s in first
            )
            more = f" (and {len(self.items) - len(first)} more)" if len(self.items) > len(first) else ""
            raise ImportProblem(
                f"{len(self.items)} protocol row(s) cannot be imported: {lines}{more}. "
                "Fix the corpus, or pass --skip-missing to leave these rows out (they are listed in "
                f"{REPORT})."
            )
        return self.items


# ----------------------------------------------------------------------------- helpers


def _protocol_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Whitespace-separated fields of each non-empty line, with 1-based line numbers."""
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ImportProblem(f"{path}: not a text protocol file ({exc})") from exc
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            yield n, fields


def _index_audio(folders: Iterable[Path], extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> dict[str, Path]:
    """Map file stem -> path for the audio files directly inside ``folders`` (one scandir each)."""
    index: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        folder = folder.resolve()  # once per folder, not once per file (600k files in 2021 PA)
        with os.scandir(folder) as it:
            for entry in it:
                name = entry.name
                stem, ext = os.path.splitext(name)
                if ext.lower() in extensions and entry.is_file():
                    index.setdefault(stem, Path(entry.path))
    return index


def _require(path: Path, what: str, hint: str) -> Path:
    if not path.exists():
        raise ImportProblem(f"{path}: {what} not found. {hint}")
    return path


def _dash(value: str) -> str:
    """The corpora write ``-`` where a condition does not apply; the dataset format leaves it empty."""
    return "" if value == "-" else value


def _condition_columns(rows: Iterable[Row]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        for c in r.conditions:
            seen.setdefault(c, None)
    return list(seen)


def _label(value: str) -> str | None:
    v = value.lower()
    if v in ("bonafide", "genuine", "bona-fide", "bona_fide"):
        return "bonafide"
    if v == "spoof":
        return "spoof"
    return None


# ----------------------------------------------------------------------------- ASVspoof 2017


def _asvspoof2017_root(source: Path) -> Path:
    for cand in (source, *sorted(source.glob("*/"))):
        if (cand / "protocol_V2").is_dir():
            return cand
    raise ImportProblem(
        f"{source}: no protocol_V2/ folder found. Expected the ASVspoof 2017 v2 layout: "
        "ASVspoof2017_V2_train/, ASVspoof2017_V2_dev/, ASVspoof2017_V2_eval/ and protocol_V2/ "
        "(from https://datashare.ed.ac.uk/handle/10283/3055)."
    )


def read_asvspoof2017(source: Path, problems: _Problems) -> list[Row]:
    """ASVspoof 2017 v2: ``file label speaker phrase env playback recorder`` per line.

    Bona fide rows (``genuine``) carry ``-`` for environment, playback and recorder; those
    columns stay empty for them.
    """
    root = _asvspoof2017_root(source)
    protocols = {
        "train": root / "protocol_V2" / "ASVspoof2017_V2_train.trn.txt",
        "dev": root / "protocol_V2" / "ASVspoof2017_V2_dev.trl.txt",
        "eval": root / "protocol_V2" / "ASVspoof2017_V2_eval.trl.txt",
    }
    present = {s: p for s, p in protocols.items() if p.is_file()}
    if not present:
        raise ImportProblem(f"{root / 'protocol_V2'}: none of {[p.name for p in protocols.values()]} found")
    rows: list[Row] = []
    for split, proto in present.items():
        audio_dir = root / f"ASVspoof2017_V2_{split}"
        # Some unpackers nest the folder in a folder of the same name.
        index = _index_audio([audio_dir, audio_dir / audio_dir.name])
        for n, f in _protocol_lines(proto):
            if len(f) != 7:
                problems.add(proto, n, f"expected 7 fields (file label speaker phrase env playback recorder), got {len(f)}")
                continue
            name, lab, speaker, phrase, env, playback, recorder = f
            label = _label(lab)
            if label is None:
                problems.add(proto, n, f"label {lab!r} is not genuine/spoof")
                continue
            audio = index.get(Path(name).stem)
            if audio is None:
                problems.add(proto, n, f"audio file not found: {audio_dir / name}")
                continue
            rows.append(
                Row(
                    path=str(audio),
                    label=label,
                    speaker=speaker,
                    split=split,
                    conditions={
                        "phrase": phrase,
                        "environment": _dash(env),
                        "playback": _dash(playback),
                        "recorder": _dash(recorder),
                    },
                )
            )
    return rows


# ----------------------------------------------------------------------------- ASVspoof 2019 PA


def _pa2019_root(source: Path) -> Path:
    for cand in (source, source / "PA"):
        if (cand / "ASVspoof2019_PA_cm_protocols").is_dir():
            return cand
    raise ImportProblem(
        f"{source}: no ASVspoof2019_PA_cm_protocols/ folder found. Expected the ASVspoof 2019 PA "
        "layout (PA/ASVspoof2019_PA_{train,dev,eval}/flac and PA/ASVspoof2019_PA_cm_protocols, "
        "from https://datashare.ed.ac.uk/handle/10283/3336)."
    )


def decode_pa2019(env: str, attack: str) -> dict[str, str]:
    """Condition columns for one ASVspoof 2019 PA row: raw letters and their ranges.

    ``env`` is three letters (room size, T60, talker-to-mic distance; each a/b/c); ``attack``
    two letters (attacker-to-talker distance, device quality; each A/B/C) or ``-`` for bona
    fide. Raises ``ValueError`` for codes outside those alphabets.
    """
    if not re.fullmatch(r"[abc]{3}", env):
        raise ValueError(f"environment code {env!r} is not three letters from a/b/c")
    if attack != "-" and not re.fullmatch(r"[ABC]{2}", attack):
        raise ValueError(f"attack code {attack!r} is not two letters from A/B/C (or '-')")
    out = {"env": env, "attack": _dash(attack)}
    for (name, (decoded, table)), letter in zip(PA2019_ENV.items(), env, strict=True):
        out[name] = letter
        out[decoded] = table[letter]
    letters = attack if attack != "-" else "  "
    for (name, (decoded, table)), letter in zip(PA2019_ATTACK.items(), letters, strict=True):
        out[name] = letter.strip()
        out[decoded] = table.get(letter, "")
    return out


def read_asvspoof2019pa(source: Path, problems: _Problems) -> list[Row]:
    """ASVspoof 2019 PA CM protocols: ``SPEAKER FILE ENV ATTACK KEY`` per line."""
    root = _pa2019_root(source)
    protos = root / "ASVspoof2019_PA_cm_protocols"
    protocols = {
        "train": protos / "ASVspoof2019.PA.cm.train.trn.txt",
        "dev": protos / "ASVspoof2019.PA.cm.dev.trl.txt",
        "eval": protos / "ASVspoof2019.PA.cm.eval.trl.txt",
    }
    present = {s: p for s, p in protocols.items() if p.is_file()}
    if not present:
        raise ImportProblem(f"{protos}: none of {[p.name for p in protocols.values()]} found")
    rows: list[Row] = []
    for split, proto in present.items():
        audio_dir = root / f"ASVspoof2019_PA_{split}" / "flac"
        index = _index_audio([audio_dir])
        for n, f in _protocol_lines(proto):
            if len(f) != 5:
                problems.add(proto, n, f"expected 5 fields (SPEAKER FILE ENV ATTACK KEY), got {len(f)}")
                continue
            speaker, name, env, attack, key = f
            label = _label(key)
            if label is None:
                problems.add(proto, n, f"key {key!r} is not bonafide/spoof")
                continue
            if (label == "bonafide") != (attack == "-"):
                problems.add(proto, n, f"key {key!r} does not match attack code {attack!r}")
                continue
            try:
                conditions = decode_pa2019(env, attack)
            except ValueError as exc:
                problems.add(proto, n, str(exc))
                continue
            audio = index.get(name)
            if audio is None:
                problems.add(proto, n, f"audio file not found: {audio_dir / (name + '.flac')}")
                continue
            rows.append(Row(str(audio), label, speaker, split, conditions))
    return rows


# ----------------------------------------------------------------------------- ASVspoof 2021 PA


def _pa2021_keys(source: Path) -> Path:
    candidates = [
        source,
        source / "trial_metadata.txt",
        source / "CM" / "trial_metadata.txt",
        source / "PA" / "CM" / "trial_metadata.txt",
        source / "keys" / "PA" / "CM" / "trial_metadata.txt",
        source / "PA-keys-full" / "keys" / "PA" / "CM" / "trial_metadata.txt",
    ]
    for c in candidates:
        if c.is_file():
            return c
    raise ImportProblem(
        f"{source}: no ASVspoof 2021 PA keys found (looked for keys/PA/CM/trial_metadata.txt and "
        "PA-keys-full/keys/PA/CM/trial_metadata.txt). Download PA-keys-full.tar.gz from "
        "https://www.asvspoof.org/index2021.html and unpack it next to the audio, or pass --keys."
    )


def _pa2021_flac_dirs(source: Path) -> list[Path]:
    patterns = [
        "ASVspoof2021_PA_eval/flac",
        "*/ASVspoof2021_PA_eval/flac",
        "*/*/ASVspoof2021_PA_eval/flac",
        "flac",
    ]
    found: list[Path] = []
    for pat in patterns:
        found.extend(p for p in sorted(source.glob(pat)) if p.is_dir() and p not in found)
    return found


def read_asvspoof2021pa(source: Path, problems: _Problems, keys: Path | None = None) -> list[Row]:
    """ASVspoof 2021 PA eval: ``trial_metadata.txt`` key lines.

    ``spk trial asv_room asv_mic dis_to_asv att_room att_mic att_d att_to_spk label trim subset``.
    The audio may be split over ``ASVspoof2021_PA_eval_part0N/ASVspoof2021_PA_eval/flac``
    folders. All rows are ``split=eval`` (train and dev of 2021 PA are 2019 PA's);
    ``subset`` keeps the official eval/progress/hidden partition.
    """
    keys = _pa2021_keys(keys if keys is not None else source)
    flac_dirs = _pa2021_flac_dirs(source)
    if not flac_dirs:
        raise ImportProblem(
            f"{source}: no ASVspoof2021_PA_eval/flac folder found (also looked in "
            "ASVspoof2021_PA_eval_part*/). Unpack the eval archives from "
            "https://www.asvspoof.org/index2021.html under this folder."
        )
    index = _index_audio(flac_dirs)
    rows: list[Row] = []
    for n, f in _protocol_lines(keys):
        if len(f) != 12:
            problems.add(
                keys,
                n,
                "expected 12 fields (spk trial asv_room asv_mic dis_to_asv att_room att_mic att_d "
                f"att_to_spk label trim subset), got {len(f)}",
            )
            continue
        speaker, trial, *conds, key, trim, subset = f
        label = _label(key)
        if label is None:
            problems.add(keys, n, f"label {key!r} is not bonafide/spoof")
            continue
        audio = index.get(trial)
        if audio is None:
            problems.add(keys, n, f"audio file not found: {trial}.flac in {', '.join(map(str, flac_dirs))}")
            continue
        conditions = {c: _dash(v) for c, v in zip(PA2021_COLUMNS, conds, strict=True)}
        conditions.update(trim=trim, subset=subset)
        rows.append(Row(str(audio), label, speaker, "eval", conditions))
    return rows


# ----------------------------------------------------------------------------- ReMASC


def _remasc_meta(source: Path) -> Path:
    for c in (source, source / "meta.csv", source / "meta" / "meta.csv", *sorted(source.glob("*/meta.csv"))):
        if c.is_file():
            return c
    raise ImportProblem(
        f"{source}: no meta.csv found. Expected the ReMASC release (meta.csv and the WAV files; "
        "request access at https://github.com/YuanGongND/ReMASC)."
    )


def _remasc_header(first: list[str]) -> list[str] | None:
    """Column names if the first row is a header (ids are numeric, headers are not)."""
    norm = [re.sub(r"[^a-z0-9]+", "_", c.strip().lower()).strip("_") for c in first]
    if norm and not norm[0].lstrip("-").isdigit():
        return norm
    return None


def read_remasc(source: Path, problems: _Problems, not_used: Counter[str]) -> list[Row]:
    """ReMASC ``meta.csv``: id, type (1 source, 2 genuine, 3 replayed), speaker, environment,
    position, source recorder, playback device, recording device, length.

    Type 2 rows become ``bonafide``, type 3 ``spoof``; type 1 (the attacker's source
    recordings, never heard by the device) is not a trial and is counted in the report under
    ``not_used``. A header row, if present, names the columns; otherwise the order above is
    assumed. The audio is found by id (``<id>.wav``) anywhere below the corpus folder; multi-
    channel files are kept as they are (``load_audio`` averages channels; ``--copy`` writes
    that mono mix). ReMASC has no official train/dev/eval split: rows get ``split`` empty
    unless ``split`` is given to :func:`import_corpus`.
    """
    meta = _remasc_meta(source)
    root = meta.parent if source.is_file() or source == meta else source
    index: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(root.resolve()):
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() == ".wav":
                index.setdefault(stem, Path(dirpath) / name)
    rows: list[Row] = []
    with meta.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        columns = list(REMASC_COLUMNS)
        for n, rec in enumerate(reader, start=1):
            rec = [v.strip() for v in rec]
            if not any(rec):
                continue
            if n == 1:
                header = _remasc_header(rec)
                if header is not None:
                    columns = header
                    missing = [c for c in ("id", "type", "speaker") if c not in columns]
                    if missing:
                        raise ImportProblem(f"{meta}:1: header lacks column(s) {missing}: {rec}")
                    continue
            if len(rec) != len(columns):
                problems.add(meta, n, f"expected {len(columns)} comma-separated fields ({', '.join(columns)}), got {len(rec)}")
                continue
            d = dict(zip(columns, rec, strict=True))
            kind = REMASC_TYPES.get(d["type"])
            if kind is None:
                problems.add(meta, n, f"type {d['type']!r} is not 1 (source), 2 (genuine) or 3 (replayed)")
                continue
            if kind == "source":
                not_used["remasc_source_recordings"] += 1
                continue
            audio = index.get(d["id"])
            if audio is None:
                problems.add(meta, n, f"audio file not found: {d['id']}.wav below {root}")
                continue
            conditions = {c: d[c] for c in columns if c not in ("id", "type", "speaker", "length")}
            rows.append(Row(str(audio), kind, d["speaker"], "", conditions))
    return rows


# ----------------------------------------------------------------------------- folder


def _unreadable(path: Path) -> str:
    """Why ``path`` is not usable audio, from its header alone ("" when it is): a folder of
    one's own recordings holds the odd empty or half-copied file, and the dataset should not
    find out at training time. (The public corpora's hundreds of thousands of files are not
    opened here; ``--copy`` converts, and so checks, every file of any format.)"""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile's errors are not OSErrors
        return f"unreadable audio ({exc})"
    if info.frames <= 0:
        return "empty audio (no samples)"
    return ""


def read_folder(source: Path, problems: _Problems, not_used: Counter[str]) -> list[Row]:
    """A folder with ``bonafide/`` and ``spoof/`` subfolders (or ``train|dev|eval/{bonafide,spoof}``).

    Audio files are found recursively; a first-level subfolder below ``bonafide/``/``spoof/``
    is taken as the speaker (``bonafide/alice/001.wav`` -> speaker ``alice``).
    """
    layouts: list[tuple[str, Path]] = []
    for split in SPLITS:
        if (source / split).is_dir():
            layouts.append((split, source / split))
    if not layouts:
        layouts.append(("", source))
    rows: list[Row] = []
    for split, base in layouts:
        for label in LABELS:
            folder = base / label
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                if not path.is_file():
                    continue
                if path.suffix.lower() not in AUDIO_EXTENSIONS:
                    not_used["non_audio_files"] += 1  # README, .DS_Store...: counted, not imported
                    continue
                problem = _unreadable(path)
                if problem:
                    problems.add(path, 0, problem)
                    continue
                rel = path.relative_to(folder)
                speaker = rel.parts[0] if len(rel.parts) > 1 else ""
                rows.append(Row(str(path.resolve()), label, speaker, split, {}))
    if not rows:
        raise ImportProblem(
            f"{source}: no audio found. Expected bonafide/ and spoof/ subfolders "
            "(optionally inside train/, dev/ and eval/)."
        )
    return rows


# ----------------------------------------------------------------------------- writing


def _copy_name(row: Row, used: set[str]) -> str:
    stem = Path(row.path).stem
    rel = f"audio/{row.split or 'all'}/{row.label}/{stem}.wav"
    k = 1
    while rel in used:
        k += 1
        rel = f"audio/{row.split or 'all'}/{row.label}/{stem}_{k}.wav"
    used.add(rel)
    return rel


def _copy_rows(
    rows: list[Row], out: Path, problems: _Problems, progress: Callable[[int, int], None] | None
) -> list[Row]:
    """Convert each row's audio to 16 kHz mono WAV inside ``out``; resumable (existing copies kept)."""
    from wakeguard.edge.audio import AudioError, load_audio, write_wav

    used: set[str] = set()
    copied: list[Row] = []
    for i, r in enumerate(rows):
        rel = _copy_name(r, used)
        dest = out / rel
        if not dest.exists():
            try:
                write_wav(dest, load_audio(r.path))
            except AudioError as exc:
                problems.add(r.path, 0, f"cannot convert: {exc.problem}")
                continue
        copied.append(Row(rel, r.label, r.speaker, r.split, dict(r.conditions)))
        if progress is not None:
            progress(i + 1, len(rows))
    return copied


def _write_new_protocol(out: Path, rows: list[Row], overwrite: bool) -> Path:
    """Write ``out/protocol.csv``; refuse to replace a different one unless ``overwrite``."""
    final = out / PROTOCOL
    staged = write_protocol(out / "protocol.import.csv", rows, _condition_columns(rows))
    if final.exists() and not overwrite and final.read_bytes() != staged.read_bytes():
        staged.unlink()
        raise ImportProblem(
            f"{final} already exists and differs from this import (edited by hand, or another "
            "corpus): import into a new folder, or pass --overwrite to replace it"
        )
    staged.replace(final)
    return final


def import_corpus(
    fmt: str,
    source: Path,
    out: Path,
    *,
    copy: bool = False,
    skip_missing: bool = False,
    split: str | None = None,
    keys: Path | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Import the corpus at ``source`` (layout ``fmt``) into the dataset folder ``out``.

    ``split`` fills the split of rows that have none (ReMASC, a flat folder). ``keys`` points
    at ASVspoof 2021's ``trial_metadata.txt`` when it is not under ``source``. A different
    ``protocol.csv`` already in ``out`` (edited by hand, or from another corpus) is replaced
    only with ``overwrite``; the same one again is fine. Raises
    :class:`ImportProblem` for a corpus that is not in the expected layout, or (without
    ``skip_missing``) for any missing audio file or malformed protocol line.
    """
    if fmt not in FORMATS:
        raise ImportProblem(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if split is not None and split not in SPLITS:
        raise ImportProblem(f"split {split!r} is not one of {SPLITS}")
    source = Path(source).expanduser()
    out = Path(out).expanduser()
    if not source.exists():
        raise ImportProblem(f"{source}: corpus folder not found")
    if out.resolve() == source.resolve():
        raise ImportProblem(f"{out}: write the dataset to a new folder, not into the corpus itself")
    problems = _Problems(skip_missing)
    not_used: Counter[str] = Counter()
    if fmt == "asvspoof2017":
        rows = read_asvspoof2017(source, problems)
    elif fmt == "asvspoof2019pa":
        rows = read_asvspoof2019pa(source, problems)
    elif fmt == "asvspoof2021pa":
        rows = read_asvspoof2021pa(source, problems, keys)
    elif fmt == "remasc":
        rows = read_remasc(source, problems, not_used)
    else:
        rows = read_folder(source, problems, not_used)
    problems.finish()
    if split is not None:
        for r in rows:
            r.split = r.split or split
    if copy:
        ensure_folder(out, "dataset folder")
        rows = _copy_rows(rows, out, problems, progress)
        problems.finish()
    if not rows:
        raise ImportProblem(f"{source}: no usable rows to import ({len(problems.items)} skipped)")
    ensure_folder(out, "dataset folder")
    protocol = _write_new_protocol(out, rows, overwrite)
    result = ImportResult(
        format=fmt,
        source=str(source.resolve()),
        out=str(out.resolve()),
        protocol=str(protocol),
        rows=rows,
        skipped=problems.items,
        not_used=dict(not_used),
        copied=copy,
    )
    write_text_atomic(out / REPORT, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
