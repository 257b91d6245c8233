"""Atomic writes (`wakeguard.edge.files`): a failed write keeps the old file, leaves no
temporary behind, and its error keeps the errno and names the file."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from wakeguard.edge.files import (
    atomic_path,
    is_part,
    part_path,
    save_figure,
    write_bytes_atomic,
    write_text_atomic,
)


def test_the_temporary_is_no_file_of_its_kind_unless_its_writer_needs_the_suffix() -> None:
    # a stale take.wav.part is not picked up by a later *.wav glob
    assert part_path(Path("audio/take.wav")) == Path("audio/take.wav.part")
    assert part_path(Path("run/curves.png"), keep_suffix=True) == Path("run/curves.part.png")
    assert part_path(Path("model.keras"), keep_suffix=True).name == "model.part.keras"
    assert is_part(Path("a/curves.part.png")) and is_part(Path("a/take.wav.part"))
    assert not is_part(Path("a/departure.wav")) and not is_part(Path("a/curves.png"))


def test_a_failed_write_keeps_the_old_file_and_names_it(tmp_path: Path) -> None:
    target = write_text_atomic(tmp_path / "summary.json", "old\n")
    with pytest.raises(OSError, match=r"cannot write .*summary\.json: No space left") as info:
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise OSError(errno.ENOSPC, "No space left on device")  # as a write() reports it
    assert info.value.errno == errno.ENOSPC  # callers can still tell a full disk
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "summary.json"
    ]
    with pytest.raises(KeyboardInterrupt):  # an interrupt cleans up too, and stays what it is
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n" and not list(tmp_path.glob("*.part*"))


def test_a_folder_in_the_way_is_named(tmp_path: Path) -> None:
    (tmp_path / "model.tflite").mkdir()
    with pytest.raises(IsADirectoryError, match=r"cannot write .*model\.tflite: Is a directory"):
        write_bytes_atomic(tmp_path / "model.tflite", b"TFL3")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match=r"cannot write .*file/sub/a\.bin"):
        write_bytes_atomic(blocker / "sub" / "a.bin", b"x")  # a file where a folder must go
    assert write_bytes_atomic(tmp_path / "new" / "a.bin", b"x").read_bytes() == b"x"


def test_figures_and_arrays_are_written_in_their_own_format(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = save_figure(fig, tmp_path / "curves.png", dpi=50)
    plt.close(fig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with atomic_path(tmp_path / "cache.npz", keep_suffix=True) as tmp:
        np.savez(tmp, x=np.arange(3))  # numpy appends no second .npz: the suffix is kept
    assert np.load(tmp_path / "cache.npz")["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.npz", "curves.png"]


def test_a_private_file_never_exists_with_wider_permissions(tmp_path: Path) -> None:
    """``mode``: the temporary is created with it before anything is written, so the file is
    0600 while it is written and after, whatever the umask, and a leftover temporary with a
    wider mode from an earlier kill does not pass its mode on."""
    target = tmp_path / "private" / "clip.wav"
    leftover = part_path(target)
    leftover.parent.mkdir()
    leftover.write_bytes(b"half")
    leftover.chmod(0o644)
    old = os.umask(0)
    try:
        with atomic_path(target, mode=0o600) as tmp:
            assert stat.S_IMODE(tmp.stat().st_mode) == 0o600 and tmp.stat().st_size == 0
            shutil.copyfile(__file__, tmp)  # a writer that opens the file by name
        write_text_atomic(tmp_path / "new" / "card.md", "private\n", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == Path(__file__).read_bytes() and not leftover.exists()
    assert stat.S_IMODE((tmp_path / "new" / "card.md").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
