"""What someone who can write a watched folder can put there (issue 14): a FIFO, a name that is not
UTF-8, a name with terminal escapes, a file handed over by a plugin that hangs. Each is tried on the
real `framewatch run` (the fake analyzer plugin, no torch) and `framewatch analyze`: it ends as a
skipped recording with a readable reason, once, the daemon stays up and a normal clip dropped
after it is still analysed."""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from daemon.store import Store
from tests.daemon_proc import (
    ROOT,
    Daemon,
    Inbox,
    NotifySocket,
    run_cli,
    status_json,
    wait_until,
    write_config,
)
from tests.media import make_sample_count_bomb, make_timed_frames, make_video

pytestmark = pytest.mark.slow

BAD_NAME = os.fsdecode(b"bad\xff\xfe.mp4")  # the bytes 0xff 0xfe are not UTF-8
WEBHOOK_SECRET = "whsec_" + "ZnJhbWV3YXRjaC10ZXN0LXNlY3JldC0zMi1ieXRlcyE="
ESCAPE_NAME = "red\x1b[31m\nfake line.mp4"  # an escape sequence and a newline


@pytest.fixture
def setup(tmp_path: Path) -> Inbox:
    return Inbox(tmp_path, clip_seconds=1.0)


def by_reason(config: Path) -> dict[str, dict[str, Any]]:
    return {r["path"]: r for r in status_json(config)["recordings"]}


def test_fifo_and_non_utf8_name_in_the_inbox_are_skipped_once_and_the_daemon_goes_on(
    setup: Inbox,
) -> None:
    # Dropped before the start: the start-up scan used to block in open() on the FIFO for ever.
    os.mkfifo(setup.inbox / "before.mp4")
    # Lying headers beside it (tests/test_hostile_media.py has them alone): they fail with their
    # reasons, in bounded memory, and hold nothing up.
    make_timed_frames(setup.inbox / "liar.mkv", [0.0, 1.0, 1e6])
    small = make_video(setup.outside / "small.mp4", seconds=1.0, fps=4, size=(64, 64))
    make_sample_count_bomb(small, setup.inbox / "bomb.mp4")
    config = setup.config(rescan_interval_s=1)
    d = Daemon(config, env=setup.env()).started()
    try:
        os.mkfifo(setup.inbox / "pipe.mp4")  # and one made while it runs
        bad = setup.clip(BAD_NAME)
        escaped = setup.clip(ESCAPE_NAME)
        normal = setup.clip("normal.mp4")
        store = Store(setup.url)
        try:
            wait_until(
                lambda: (r := store.recordings.find(str(normal))) and r.status == "done",
                60,
                what="normal.mp4 analysed",
            )
            # The escape-sequence name is a valid (if hostile) UTF-8 name: analysed like any.
            wait_until(
                lambda: (r := store.recordings.find(str(escaped))) and r.status == "done",
                60,
                what="the escape-sequence name analysed",
            )
        finally:
            store.close()
        recs = by_reason(config)
        for fifo in ("before.mp4", "pipe.mp4"):
            r = recs[str(setup.inbox / fifo)]
            assert r["status"] == "skipped" and "FIFO" in r["reason"], r
        assert recs[str(setup.inbox / "liar.mkv")]["status"] == "failed"
        assert "not credible" in recs[str(setup.inbox / "liar.mkv")]["reason"]
        assert "claims 60000000 samples" in recs[str(setup.inbox / "bomb.mp4")]["reason"]
        shown = str(setup.inbox / "bad\\xff\\xfe.mp4")  # the name's bytes, escaped
        assert recs[shown]["status"] == "skipped" and "UTF-8" in recs[shown]["reason"]
        assert bad.exists()  # nothing was moved or lost

        # Skipped once each: handed over once, not at every settle tick nor at each rescan (one a
        # second here; a later clip is waited for so several have run).
        later = setup.clip("later.mp4")
        d.wait_for("recording_finished", path=str(later), timeout=60)
        for name in ("before.mp4", "pipe.mp4"):
            assert len(d.find("file_ready", path=str(setup.inbox / name))) == 1
        assert len(d.find("file_ready", path=str(bad))) == 1
        assert len(d.find("recording_skipped")) == 3
        assert not d.find("intake_failed") and not d.find("settle_failed")
        assert d.proc.poll() is None

        # `status` escapes what the names carry: no raw escape character, no forged line.
        out = run_cli("status", "--config", str(config), env=setup.env())
        assert out.returncode == 0, out.stderr
        assert "\x1b" not in out.stdout and "\\x1b[31m\\x0afake line.mp4" in out.stdout
        assert "bad\\xff\\xfe.mp4 (file name is not valid UTF-8" in out.stdout
        assert not any(line.startswith("fake line") for line in out.stdout.splitlines())
        # So do `events` (and alerts, search): paths and the model's words, escaped.
        out = run_cli("events", "--config", str(config), env=setup.env())
        assert out.returncode == 0, out.stderr
        assert "\x1b" not in out.stdout and "\\x1b[31m\\x0afake line.mp4 [" in out.stdout
    finally:
        assert d.stop() == 0


def test_analyze_on_a_fifo_or_a_non_utf8_name_returns_a_readable_error(setup: Inbox) -> None:
    config = setup.config()
    os.mkfifo(setup.outside / "pipe.mp4")
    # A guard, not a measurement: before the fix this call never returned.
    out = run_cli(
        "analyze",
        "--config",
        str(config),
        str(setup.outside / "pipe.mp4"),
        env=setup.env(),
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    assert "skipped: not a regular file: it is a FIFO (named pipe)" in out.stderr
    assert "Traceback" not in out.stderr
    out = run_cli("plan", "--config", str(config), str(setup.outside / "pipe.mp4"), timeout=120)
    assert out.returncode == 1 and "not a regular file: it is a FIFO" in out.stderr, out.stderr

    bad = setup.clip(BAD_NAME, setup.outside)
    out = run_cli("analyze", "--config", str(config), str(bad), env=setup.env())
    assert out.returncode == 1, out.stderr
    assert "bad\\xff\\xfe.mp4: skipped: file name is not valid UTF-8" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_intake_stuck_in_a_plugin_stops_feeding_the_watchdog(setup: Inbox) -> None:
    notify = NotifySocket()
    config = setup.config(
        fake={"accept_sleep_s": 3.0, "slow_accept_names": ["slow-intake"]},
        # An inline secret in a config anyone may change: warned of at start-up (never shown).
        extra={"plugins.webhook": {"url": "http://127.0.0.1:9/hook", "secret": WEBHOOK_SECRET}},
        intake_timeout_s=0.5,
    )
    config.chmod(0o666)
    try:
        d = Daemon(config, env={**setup.env(), **notify.env(watchdog_s=0.4)}).started()
        try:
            (warned,) = d.find("config_secrets_exposed")
            assert "plugins.webhook.secret" in warned["detail"] and "0666" in warned["detail"]
            assert not any(WEBHOOK_SECRET in line for line in d.raw)
            setup.clip("slow-intake.mp4")
            stuck = d.wait_for("intake_stuck", timeout=30)
            assert "slow-intake.mp4" in stuck[0]["reason"]
            d.wait_for("recording_finished", timeout=30)
            gaps = [b - a for a, b in pairwise(notify.times("WATCHDOG=1"))]
            # Fed while idle, silent while the hand-over hung past 0.5 s (2.5 s more), fed again
            # after; the idle chunk loop's own pings stop too.
            assert max(gaps) > 1.5 and sorted(gaps)[len(gaps) // 2] < 0.5
        finally:
            assert d.stop() == 0
    finally:
        notify.close()


def test_two_concurrent_analyze_runs_the_loser_says_busy_and_exits_5(setup: Inbox) -> None:
    hold = setup.root / "hold"  # the winner's chunk lasts until this file is gone
    hold.touch()
    config = setup.config(fake={"hold_while_exists": str(hold)})
    clip = setup.clip("twice.mp4", setup.outside)
    args = ["analyze", "--config", str(config), str(clip)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **setup.env()}
    first = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = Store(setup.url) if (setup.root / "fw.db").exists() else None
    try:
        # The second starts once the first holds a chunk.
        def running() -> bool:
            nonlocal store
            if store is None and (setup.root / "fw.db").exists():
                store = Store(setup.url)
            return bool(store and store.chunks.running())

        wait_until(running, 60, 0.1, "the first analyze holds a chunk")
        second = run_cli(*args, env=setup.env())
        assert second.returncode == 5, second.stderr
        assert "being analysed by another process (" in second.stderr
        assert f":{first.pid})" in second.stderr  # the holder, host:pid
        hold.unlink()  # the winner finishes, and its result is whole
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0 and ": done, 1 chunks" in err, err
    finally:
        hold.unlink(missing_ok=True)
        if first.poll() is None:
            first.kill()
        if store is not None:
            store.close()


def test_a_corrupt_store_or_an_unusable_folder_is_one_line_and_exit_6(tmp_path: Path) -> None:
    (tmp_path / "fw.db").write_bytes(os.urandom(8192))  # not a SQLite file
    (tmp_path / "plain").write_text("a file where the store's folder should be")
    for url in (f"sqlite:///{tmp_path / 'fw.db'}", f"sqlite:///{tmp_path / 'plain' / 'fw.db'}"):
        config = write_config(tmp_path / "config.toml", {"storage": {"url": url}}, [])
        for args in (["status"], ["events"]):
            out = run_cli(*args, "--config", str(config))
            assert out.returncode == 6, (url, out.stderr)
            assert out.stderr.startswith("framewatch: ") and out.stderr.count("\n") == 1, out.stderr
            assert "store error" in out.stderr and "Traceback" not in out.stderr
