"""daemon/files.py: what may be opened (regular files only, never blocking) and how outside text
is printed (escaped)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.files import NotRegularFile, open_regular, printable, storable


def test_printable_escapes_what_steers_a_terminal_and_keeps_the_rest() -> None:
    assert printable("Vorlesung 3 – Übung 😀.mp4") == "Vorlesung 3 – Übung 😀.mp4"
    assert printable("red\x1b[31m\nline\r.mp4") == "red\\x1b[31m\\x0aline\\x0d.mp4"
    assert printable("evil\u202egpj.mp4") == "evil\\u202egpj.mp4"  # a bidi override
    assert printable(os.fsdecode(b"bad\xff\xfe.mp4")) == "bad\\xff\\xfe.mp4"
    assert printable(b"bad\xff.mp4") == "bad\\xff.mp4"
    # Escaping is idempotent: a name stored escaped prints as it was stored.
    assert printable(printable(b"bad\xff\x1b.mp4")) == "bad\\xff\\x1b.mp4"


def test_storable_is_false_only_for_names_that_were_not_utf8() -> None:
    assert storable("Übung.mp4") and not storable(os.fsdecode(b"bad\xff.mp4"))


def test_open_regular_refuses_fifos_and_devices_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(NotRegularFile, match="FIFO"):
        open_regular(tmp_path / "pipe")
    with pytest.raises(NotRegularFile, match="character device"):
        open_regular("/dev/null")
    with pytest.raises(NotRegularFile, match="directory"):
        open_regular(tmp_path)
    (tmp_path / "f.mp4").write_bytes(b"data")
    fd = open_regular(tmp_path / "f.mp4")
    try:
        assert os.get_blocking(fd) and os.read(fd, 10) == b"data"
    finally:
        os.close(fd)


def test_open_regular_follows_an_allowed_symlink_to_a_file_only(tmp_path: Path) -> None:
    (tmp_path / "f.mp4").write_bytes(b"data")
    (tmp_path / "link.mp4").symlink_to(tmp_path / "f.mp4")
    os.close(open_regular(tmp_path / "link.mp4"))
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "to-pipe.mp4").symlink_to(tmp_path / "pipe")
    with pytest.raises(NotRegularFile, match="FIFO"):
        open_regular(tmp_path / "to-pipe.mp4")
