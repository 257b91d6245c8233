"""Writing files so that a full disk or a kill loses nothing and names the file.

Every output goes to a temporary sibling first and is moved onto its name only once it is
complete, so an interrupted write leaves the previous file (or none), never half of one.
A failure (a full disk, no permission) is raised again as an :class:`OSError` that keeps its
``errno`` and names the file: the bare error of a ``write()`` ("No space left on device")
says neither which file nor which step.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


def part_path(path: Path, keep_suffix: bool = False) -> Path:
    """The temporary sibling of ``path``: ``NAME.part``, which no ``*.wav`` or ``*.csv`` glob
    picks up if a kill leaves it behind; with ``keep_suffix``, ``STEM.part.SUFFIX``, for
    writers that choose the format by the suffix (matplotlib, numpy, Keras, joblib)."""
    if keep_suffix:
        return path.with_name(f"{path.stem}.part{path.suffix}")
    return path.with_name(f"{path.name}.part")


def is_part(path: Path) -> bool:
    """Whether ``path`` is a temporary sibling left by an interrupted write."""
    return path.suffix == ".part" or path.stem.endswith(".part")


@contextlib.contextmanager
def atomic_path(
    path: str | Path, keep_suffix: bool = False, mode: int | None = None
) -> Iterator[Path]:
    """Yield the temporary path to write ``path`` through (see :func:`part_path`); moved onto
    ``path`` once the block ends without error, removed if it raises (an ``OSError`` is
    raised again naming ``path``).

    ``mode`` (e.g. ``0o600`` for recordings made in someone's home): the temporary file is
    created empty with exactly that mode before the block writes it, so the file never exists,
    even for a moment, with wider permissions (writers that open an existing file keep its
    mode); missing parent folders are then created owner-only (0700)."""
    path = Path(path)
    tmp = part_path(path, keep_suffix)
    try:
        if mode is None:
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
            os.chmod(tmp, mode)  # an existing leftover keeps its old mode through os.open
        yield tmp
        tmp.replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


@contextlib.contextmanager
def atomic_text(path: str | Path, mode: int | None = None) -> Iterator[TextIO]:
    """A UTF-8 text file handle that becomes ``path`` once the block ends (see :func:`atomic_path`)."""
    with atomic_path(path, mode=mode) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        yield fh


def write_text_atomic(path: str | Path, text: str, mode: int | None = None) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_text(path, mode=mode) as fh:
        fh.write(text)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_figure(fig: object, path: str | Path, **savefig_kw: object) -> Path:
    """Save a matplotlib figure to ``path`` atomically (its suffix chooses the format)."""
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, **savefig_kw)  # type: ignore[attr-defined]
    return Path(path)
