"""`framewatch events` plain listing (the fast path over plain columns) and --recording."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.cli import main
from daemon.engine.events import Candidate
from daemon.models import ChunkWindow
from daemon.store import Store

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_plain_listing_in_order_and_filtered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'fw.db'}"
    store = Store(url)
    for name, times in (("b.mp4", [3725.0, 5.0]), ("a.mp4", [1.0])):
        rec, _ = store.register(str(tmp_path / name), f"fp-{name}", 1, 0.0)
        store.plan(rec.id, [ChunkWindow(0, 0.0, 4000.0, (1.0, 2.0), 64, 64)])
        chunk = store.claim(rec.id, "t", 60)
        assert chunk is not None
        events = [Candidate(start_s=t, end_s=t + 2, label=f"l{t:g}", description="d") for t in times]
        store.commit_chunk(rec.id, 0, "t", events, {"model": "m", "prompt_hash": "h"})
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\nurl = "{url}"\n')
    capsys.readouterr()  # the store's own log lines
    assert main(["events", "--config", str(cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{tmp_path / 'b.mp4'} [00:00:05-00:00:07] l5: d",
        f"{tmp_path / 'b.mp4'} [01:02:05-01:02:07] l3725: d",
        f"{tmp_path / 'a.mp4'} [00:00:01-00:00:03] l1: d",
    ]
    assert main(["events", "--config", str(cfg), "--recording", str(tmp_path / "a.mp4")]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{tmp_path / 'a.mp4'} [00:00:01-00:00:03] l1: d"]
    assert main(["events", "--config", str(cfg), "--recording", str(tmp_path / "none.mp4")]) == 0
    assert capsys.readouterr().out == ""
