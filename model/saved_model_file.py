"""Saving and loading the classical baselines' fitted models (joblib dicts with a format tag)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wakeguard.edge.files import atomic_path


def save_model_file(path: str | Path, fmt: str, fields: dict[str, Any]) -> Path:
    """Write ``{"format": fmt, "version": 1, **fields}`` with joblib, creating the folder."""
    import joblib

    path = Path(path)
    with atomic_path(path, keep_suffix=True) as tmp:
        joblib.dump({"format": fmt, "version": 1, **fields}, tmp)
    return path


def load_model_file(path: str | Path, fmt: str, what: str) -> dict[str, Any]:
    """Read a file written by :func:`save_model_file`; errors name the file and the problem."""
    import joblib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} model not found")
    try:
        d = joblib.load(path)
    except Exception as exc:  # pickle raises many types for a bad file
        raise ValueError(f"{path}: not a readable {what} model ({exc})") from exc
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise ValueError(f"{path}: not a {fmt} file")
    return d
