"""Where the tests find an offline wheelhouse for this machine's platform and Python.

`./run setup` fills it (`wakeguard bundle --fetch-wheels .whl/<platform>-py<X.Y>`), so the
bundle and flash tests never touch the network; ``WAKEGUARD_WHEELHOUSE`` points elsewhere.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wheelhouse_dir() -> Path:
    tag = f"linux_{platform.machine()}-py{sys.version_info.major}.{sys.version_info.minor}"
    return Path(os.environ.get("WAKEGUARD_WHEELHOUSE", REPO / ".whl" / tag))


def wheelhouse_missing() -> str | None:
    """Why there is no usable wheelhouse (None when there is one)."""
    d = wheelhouse_dir()
    if not d.is_dir() or not any(d.glob("numpy-*.whl")):
        return (
            f"no offline wheelhouse at {d}: run `./run setup` (it runs "
            f"`wakeguard bundle --fetch-wheels {d}`) or set WAKEGUARD_WHEELHOUSE"
        )
    return None
