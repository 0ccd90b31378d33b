"""Digests: `framewatch digest` over three recordings (one without a summary, one outside the
folder, one outside the period), the scheduled digest, and the digest_ready hook."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from markdown_it import MarkdownIt

from daemon.cli import main
from daemon.hookspecs import hookimpl
from daemon.models import Chapter, DigestInfo, Summary
from daemon.scheduler import Scheduler
from daemon.store import Store
from tests.outbox import HOSTILE, analysed, ev, make_config, manager


def summary(rid: int, title: str) -> Summary:
    return Summary(
        recording_id=rid,
        title=title,
        text=f"What happened in {title}.",
        chapters=(Chapter(0.0, 30.0, "start"), Chapter(30.0, 60.0, "end")),
        key_events=(),
        provenance={"model": "stand-in"},
    )


def three(tmp_path: Path, cfg: Any) -> tuple[Store, list[Any]]:
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    (tmp_path / "front").mkdir()
    (tmp_path / "back").mkdir()
    recs = [
        analysed(store, pm, tmp_path / "front" / "a.mp4", [[ev(1, 2, "door", "opens")]]),
        analysed(store, pm, tmp_path / "front" / "b.mp4", [[ev(5, 6, "car", "parks")]]),
        analysed(store, pm, tmp_path / "back" / "c.mp4", [[ev(3, 4, "cat", "sits")]]),
    ]
    store.summaries.put(summary(recs[0].id, "Morning delivery"))
    store.summaries.put(summary(recs[2].id, HOSTILE[0]))
    return store, recs


def text_of(inline: Any) -> str:
    return "".join(c.content for c in inline.children or [] if c.type == "text")


class Spy:
    """A plugin that keeps each digest it is given."""

    got: list[DigestInfo] = []

    @staticmethod
    @hookimpl
    def digest_ready(digest: DigestInfo) -> None:
        Spy.got.append(digest)


def test_digest_over_three_recordings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path, {"markdown_export": {}})
    store, recs = three(tmp_path, cfg)
    since = datetime.fromtimestamp(time.time() - 3600).isoformat(timespec="minutes")
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\nurl = "{cfg.storage.url}"\n')
    capsys.readouterr()  # what the setup logged
    assert main(["digest", "--since", since, "--config", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in out["recordings"]] == [r.id for r in recs]
    assert out["recordings"][1]["summary"] is None
    assert out["recordings"][0]["summary"]["title"] == "Morning delivery"
    path = Path(out["path"])
    assert path.parent == tmp_path / "digests" and path.name.startswith("digest-")
    text = path.read_text(encoding="utf-8")
    tokens = MarkdownIt("commonmark").parse(text)
    assert not [t for t in tokens if t.type.startswith("html")]
    heads = [
        (t.tag, text_of(tokens[i + 1])) for i, t in enumerate(tokens) if t.type == "heading_open"
    ]
    assert [h for h in heads if h[0] == "h2"] == [
        ("h2", "Morning delivery"),
        ("h2", "b.mp4"),
        ("h2", HOSTILE[0]),  # model text stays text
    ]
    html = MarkdownIt("commonmark").render(text)
    assert "<script>" not in html
    assert 'href="../front/a.mp4#t=30"' in html and "No summary was made" in text

    # One folder only; a period after them: nothing.
    assert (
        main(
            [
                "digest",
                "--since",
                since,
                "--folder",
                str(tmp_path / "front"),
                "--config",
                str(config),
                "--json",
            ]
        )
        == 0
    )
    front = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in front["recordings"]] == [recs[0].id, recs[1].id]
    assert front["path"] != out["path"]
    later = datetime.fromtimestamp(time.time() + 120).isoformat(timespec="minutes")
    after = datetime.fromtimestamp(time.time() + 86400).isoformat(timespec="minutes")
    args = ["digest", "--since", later, "--until", after, "--config", str(config), "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["recordings"] == []
    assert main(["digest", "--since", after, "--until", later, "--config", str(config)]) == 2


def test_scheduled_digest_covers_the_day_before_and_tells_plugins(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"markdown_export": {}}, digest={"schedule": True, "at": "06:30"})
    store, recs = three(tmp_path, cfg)
    Spy.got = []
    pm = manager(cfg, (Spy, "spy"))
    fake = SimpleNamespace(store=store, config=cfg, dispatcher=SimpleNamespace(plugins=pm))
    now = time.time() + 120
    Scheduler.daily_digest(fake, now)  # type: ignore[arg-type]
    (got,) = Spy.got
    assert got.until == float(int(now) // 60 * 60) and got.until - got.since == 86400
    assert [r.id for r, _ in got.recordings] == [r.id for r in recs]
    assert Path(got.path).read_text(encoding="utf-8") == got.markdown


def test_scheduler_registers_the_daily_cron_job(tmp_path: Path) -> None:
    from apscheduler.triggers.cron import CronTrigger

    cfg = make_config(tmp_path, digest={"schedule": True, "at": "06:30"})
    sched = object.__new__(Scheduler)
    added: list[tuple[Any, ...]] = []
    sched.config = cfg
    sched.produce = True
    sched.watcher = None
    sched.dispatcher = SimpleNamespace(deliver_due=lambda n: None)  # type: ignore[assignment]
    sched.source = SimpleNamespace(maintenance=lambda: [])  # type: ignore[assignment]
    sched.stop_event = SimpleNamespace(is_set=lambda: False)  # type: ignore[assignment]
    sched.loop = SimpleNamespace(start=lambda: None)  # type: ignore[assignment]
    sched.watchdog = SimpleNamespace(start=lambda: None)  # type: ignore[assignment]
    sched.aps = SimpleNamespace(  # type: ignore[assignment]
        add_job=lambda fn, trigger, **kw: added.append((trigger, kw)), start=lambda: None
    )
    sched.start()
    (digest,) = [kw for trigger, kw in added if kw.get("id") == "digest"]
    assert digest["hour"] == 6 and digest["minute"] == 30 and digest["executor"] == "deliver"
    assert [trigger for trigger, kw in added if kw.get("id") == "digest"] == ["cron"]
    # A `framewatch worker` box beside the one that watches folders writes no digest.
    added.clear()
    sched.produce = False
    sched.start()
    assert not [kw for _, kw in added if kw.get("id") == "digest"]
    assert CronTrigger(hour=6, minute=30)  # the trigger APScheduler builds from them


def test_a_failing_digest_plugin_is_logged_not_raised(tmp_path: Path) -> None:
    from daemon.digest import make_digest, notify_digest

    class Broken:
        @staticmethod
        @hookimpl
        def digest_ready(digest: DigestInfo) -> None:
            raise RuntimeError("down")

    cfg = make_config(tmp_path)
    store, _ = three(tmp_path, cfg)
    Spy.got = []
    pm = manager(cfg, (Broken, "broken"), (Spy, "spy"))
    d = make_digest(store, cfg, time.time() - 3600, time.time() + 1)
    assert notify_digest(pm, d) == ["spy"] and len(Spy.got) == 1
