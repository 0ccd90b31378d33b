"""Alert rules: config, the prompt and grammar they add (and do not add), and the decision logic
of candidate -> confirmed | rejected | unverified | suppressed, through the real worker, store,
sampler and plugin host on real clips. The analyzer is a labelled stand-in (no model): the test
says which rules "happen" when and what the second look answers; the real transformers path is
tests/test_alerts_model.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.config import ConfigError, parse_config
from daemon.engine import prompts
from daemon.engine.alerts import Outcome, capped, decide, verify_window
from daemon.models import ChunkInput, MediaInfo, RuleHit, RuleQuestion
from daemon.pluginhost.dispatch import Dispatcher
from daemon.store import Store
from daemon.worker import Worker
from tests.alertdata import NoVerify, Plugin, StandIn, run
from tests.media import make_video
from tests.outbox import manager

# -- config ---------------------------------------------------------------------------------------


def test_rules_parse_with_defaults_and_scoping(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "alerts": [
                {"name": "fence-climb", "when": "a person   climbs the fence"},
                {
                    "name": "fall",
                    "when": "someone falls and stays down",
                    "folders": ["cams/yard"],
                    "profiles": ["surveillance"],
                    "min_duration_s": 10,
                    "cooldown_s": 60,
                    "severity": "critical",
                    "verify": False,
                    "plugins": ["mqtt"],
                },
            ]
        },
        tmp_path / "config.toml",
    )
    first, second = cfg.alerts
    assert (first.when, first.verify, first.severity, first.cooldown_s) == (
        "a person climbs the fence",
        True,
        "warning",
        300.0,
    )
    yard = tmp_path / "cams" / "yard" / "a.mp4"
    assert [r.name for r in cfg.rules_for(yard, "surveillance")] == ["fence-climb", "fall"]
    assert [r.name for r in cfg.rules_for(yard, "general")] == ["fence-climb"]
    assert [r.name for r in cfg.rules_for(tmp_path / "cams" / "door.mp4", "surveillance")] == [
        "fence-climb"
    ]


@pytest.mark.parametrize(
    ("rules", "key", "message"),
    [
        (
            [{"name": "a", "when": "x happens"}, {"name": "a", "when": "y happens"}],
            "alerts.1.name",
            "duplicate",
        ),
        ([{"name": "a", "when": "x happens", "colour": "red"}], "alerts.0.colour", "unknown key"),
        ([{"name": "Not A Slug", "when": "x happens"}], "alerts.0.name", "pattern"),
        ([{"name": "a", "when": 'say "hi"'}], "alerts.0.when", "double quotes"),
        ([{"name": "a", "when": "x happens", "severity": "loud"}], "alerts.0.severity", "info"),
        (
            [{"name": "a", "when": "x happens", "profiles": ["nope"]}],
            "alerts.0.profiles",
            "unknown",
        ),
    ],
)
def test_config_errors_carry_the_key_path(
    tmp_path: Path, rules: list[dict[str, Any]], key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"alerts": rules}, tmp_path / "config.toml")
    keys = {k: m for k, _, m in info.value.errors}
    assert key in keys and message in keys[key], info.value.errors


def test_config_check_rejects_a_duplicate_rule(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[[alerts]]\nname = "fall"\nwhen = "someone falls"\n'
        '[[alerts]]\nname = "fall"\nwhen = "someone trips"\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and "alerts.1.name: duplicate rule name" in r.stderr, r.stderr


# -- the prompt and grammar without rules stay what they were -------------------------------------

# sha256 of the prompt, schema and grammar as they were before alert rules existed.
BEFORE = {
    "grammar(12,48,240)": "4bec2aac92039dd789e15b50eaa6a217ad905ebb349a234fcd9a8cd3cf8281d0",
    "grammar(2,16,40)": "6c58204b38a1117eae249082420c9d924b596a6fdf1439ec30bf5d91873ee9d4",
    "schema(12,48,240)": "1326ab96989fa05223d52421c85d67812d722c3274f0936942a27037d6068281",
    "schema(2,16,40)": "caa8afd7d737b644fad23865670e7c2680856912347f1c88afc563c6fae97716",
    "prompt(general)": "b36b6784aa9e510b9415b8bc97d227be3c552222e5cb4c995bc6a676a64f872f",
    "prompt(surveillance)": "5796b0bfa2632584bae01a1f2b30d8d1146897e50d512ec1d95bbb78acb61cc7",
}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_without_rules_the_prompt_schema_and_grammar_are_byte_identical() -> None:
    from daemon.engine.backends.qwen3vl import event_grammar

    now = {}
    for b in ((12, 48, 240), (2, 16, 40)):
        key = ",".join(map(str, b))
        now[f"grammar({key})"] = _sha(event_grammar(*b, rules=()))
        now[f"schema({key})"] = _sha(json.dumps(prompts.event_schema(*b, rules=()), sort_keys=True))
    for p in ("general", "surveillance"):
        now[f"prompt({p})"] = _sha(
            prompts.build_prompt(prompts.instructions(p, None), 600.0, 900.0, 12, ())
        )
    assert now == BEFORE


def test_rules_grow_the_prompt_and_the_grammar_by_one_question_each() -> None:
    from daemon.engine.backends.qwen3vl import event_grammar

    rules = (RuleQuestion("fence", "a person climbs the fence"), RuleQuestion("fall", "x", 10))
    base = prompts.build_prompt("Task.", 0, 4, 2)
    with_rules = prompts.build_prompt("Task.", 0, 4, 2, rules)
    assert with_rules.startswith(base) and "- fence: a person climbs the fence?" in with_rules
    assert "(lasting at least 10 seconds)" in with_rules
    grammar = event_grammar(2, 16, 40, rules=("fence", "fall"))
    assert '"\\"fence\\": " verdict ", " "\\"fall\\": " verdict' in grammar
    schema = prompts.event_schema(2, 16, 40, rules=("fence", "fall"))
    assert schema["required"] == ["events", "rules"]
    assert schema["properties"]["rules"]["required"] == ["fence", "fall"]


# -- pure decisions -------------------------------------------------------------------------------


def test_decide_and_cap(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "alerts": [
                {"name": "a", "when": "aaa"},
                {"name": "b", "when": "bbb", "verify": False},
                {"name": "c", "when": "ccc", "deliver_unverified": True, "severity": "critical"},
            ]
        }
    )
    a, b, c = cfg.alerts
    assert decide(a, True, "seen", verified=True) == Outcome("confirmed", "seen", True)
    assert decide(a, False, "not seen", verified=True) == Outcome("rejected", "not seen", False)
    assert decide(a, None, "no look", verified=False) == Outcome("unverified", "no look", False)
    assert decide(b, None, "off", verified=False).fired is True
    assert decide(c, None, "broken", verified=False).fired is True
    assert decide(None, True, "x", verified=True).fired is False
    hits = [RuleHit(n, 0, 1, "") for n in ("a", "c", "b")]
    kept, over = capped(hits, {"a": "warning", "c": "critical", "b": "info"}, 2)
    assert [h.rule for h in kept] == ["a", "c"] and [h.rule for h in over] == ["b"]


def test_verify_window_is_denser_and_sharper_and_bounded() -> None:
    cfg = parse_config({"alerting": {"verify_fps": 4, "verify_max_side": 320, "margin_s": 2}})
    media = MediaInfo("/v.mp4", 100.0, 640, 360, 25.0, 0, "h264")
    w = verify_window(3, 10.0, 12.0, 5.0, media, cfg.alerting, 1.0, 160)
    assert (w.index, w.start_s, w.end_s) == (3, 8.0, 17.0)  # margin, and min_duration covered
    assert len(w.sample_times) == 36 and max(w.width, w.height) == 320
    edge = verify_window(0, 99.0, 99.5, 0.0, media, cfg.alerting, 8.0, 640)
    assert edge.end_s == 100.0 and len(edge.sample_times) % 2 == 0
    assert max(edge.width, edge.height) == 640  # never below the chunk's own side
    long = verify_window(0, 0.0, 90.0, 0.0, media, cfg.alerting, 1.0, 64)
    assert len(long.sample_times) == cfg.alerting.verify_max_frames


# -- the worker with a labelled stand-in analyzer -------------------------------------------------


def test_candidate_confirmed_fires_once_with_a_sharper_denser_second_look(tmp_path: Path) -> None:
    sa = StandIn({"fence": [(1.5, 2.5)]}, {"fence": True})
    store, plugin, rec, _ = run(tmp_path, sa, [{"name": "fence", "when": "a person climbs"}])
    assert rec.status == "done"
    (alert,) = store.alerts.of(rec.id)
    assert (alert.state, alert.fired, alert.why) == ("confirmed", True, "saw fence")
    assert alert.reason == "I see fence"
    (look,) = sa.looks
    chunk0 = sa.chunks[0]
    first_fps = len(chunk0.frames) / (chunk0.end_s - chunk0.start_s)
    look_fps = len(look.frames) / (look.window_end_s - look.window_start_s)
    assert look_fps > first_fps and look.frames[0].image.shape[1] > chunk0.frames[0].image.shape[1]
    assert (
        look.window_start_s <= 1.5 and look.window_end_s >= 2.5 and "a person climbs" in look.prompt
    )
    v = alert.verification
    assert v["happened"] is True and v["frames"] == len(look.frames) and v["width"] == 160
    assert alert.thumbnail and alert.thumbnail[:2] == b"\xff\xd8"  # a JPEG
    assert alert.provenance["chunk"] == 0 and alert.provenance["asked"] == ["fence"]
    assert [(a, r, s) for a, r, s, _ in plugin.fired] == [(alert.id, "fence", "confirmed")]
    # The chunk's own provenance says what was asked; its events are stored as ever.
    c0 = store.chunks.get(rec.id, 0)
    assert c0.provenance["alerts"] == {"asked": ["fence"], "hits": ["fence"], "refused": 0}
    assert [e.label for e in store.events.of(rec.id)][:1] == ["c0"]


def test_candidate_rejected_is_stored_not_delivered(tmp_path: Path) -> None:
    sa = StandIn({"fence": [(1.5, 2.5)]}, {"fence": False})
    store, plugin, rec, _ = run(tmp_path, sa, [{"name": "fence", "when": "a person climbs"}])
    (alert,) = store.alerts.of(rec.id)
    assert (alert.state, alert.fired, alert.reason) == ("rejected", False, "no sign of fence")
    assert plugin.fired == [] and alert.verification["happened"] is False


@pytest.mark.parametrize(
    ("analyzer", "reason"),
    [
        (NoVerify({"fence": [(1.5, 2.5)]}, {}), "cannot verify (it has no verify method)"),
        (
            StandIn({"fence": [(1.5, 2.5)]}, {"fence": "raise"}),
            "plugin 'standin': verify() raised RuntimeError: camera offline",
        ),
        (
            StandIn({"fence": [(1.5, 2.5)]}, {"fence": "garbage"}),
            "plugin 'standin': verify() returned str without a boolean \"happened\"",
        ),
    ],
)
@pytest.mark.parametrize("deliver", [False, True])
def test_second_look_impossible_is_unverified_with_the_reason(
    tmp_path: Path, analyzer: StandIn, reason: str, deliver: bool
) -> None:
    rule = {"name": "fence", "when": "a person climbs", "deliver_unverified": deliver}
    store, plugin, rec, _ = run(tmp_path, analyzer, [rule])
    assert rec.status == "done"
    (alert,) = store.alerts.of(rec.id)
    assert alert.state == "unverified" and reason in (alert.reason or ""), alert.reason
    assert alert.fired is deliver and len(plugin.fired) == int(deliver)


def test_verify_false_fires_on_the_first_answer(tmp_path: Path) -> None:
    sa = StandIn({"fence": [(1.5, 2.5)]}, {})
    store, plugin, rec, _ = run(tmp_path, sa, [{"name": "fence", "when": "x y z", "verify": False}])
    (alert,) = store.alerts.of(rec.id)
    assert (alert.state, alert.fired) == ("unverified", True) and "verify = false" in alert.reason
    assert sa.looks == [] and len(plugin.fired) == 1


def test_cooldown_suppresses_a_second_alert_of_the_rule(tmp_path: Path) -> None:
    # Seen at 1.5 s (chunk 0) and at 6.5 s (chunk 2): 5 s apart, inside a 30 s cooldown.
    sa = StandIn({"fence": [(1.5, 2.0), (6.5, 7.0)]}, {"fence": True})
    rules = [{"name": "fence", "when": "a person climbs", "cooldown_s": 30}]
    store, plugin, rec, _ = run(tmp_path, sa, rules)
    first, second = store.alerts.of(rec.id)
    assert (first.state, first.fired) == ("confirmed", True)
    assert (second.state, second.fired) == ("suppressed", False)
    assert f"of alert {first.id}" in (second.reason or "")
    assert len(sa.looks) == 1 and len(plugin.fired) == 1  # no second look spent on it


def test_without_cooldown_each_moment_fires_and_overlap_duplicates_merge(tmp_path: Path) -> None:
    # 3.5 s lies in chunks 0 ([0, 4]) and 1 ([3, 7]): one candidate, not two.
    sa = StandIn({"fence": [(3.5, 3.8), (6.5, 7.0)]}, {"fence": True})
    store, plugin, rec, _ = run(tmp_path, sa, [{"name": "fence", "when": "xyz", "cooldown_s": 0}])
    assert [(a.start_s, a.state) for a in store.alerts.of(rec.id)] == [
        (3.5, "confirmed"),
        (6.5, "confirmed"),
    ]
    assert len(plugin.fired) == 2


def test_folder_scoping_leaves_other_recordings_unasked(tmp_path: Path) -> None:
    sa = StandIn({"fence": [(1.5, 2.5)]}, {"fence": True})
    rules = [{"name": "fence", "when": "a person climbs", "folders": ["elsewhere"]}]
    store, plugin, rec, cfg = run(tmp_path, sa, rules)
    assert store.alerts.of(rec.id) == [] and plugin.fired == []
    assert all(c.rules == () for c in sa.chunks)
    task = prompts.instructions("general", None)
    first = sa.chunks[0]
    assert first.prompt == prompts.build_prompt(task, first.start_s, first.end_s, 12)
    assert "alerts" not in store.chunks.get(rec.id, 0).provenance


def test_more_candidates_than_the_cap_are_unverified_saying_so(tmp_path: Path) -> None:
    hits = {n: [(1.5, 2.0)] for n in ("a", "b", "c")}
    rules = [{"name": n, "when": f"{n} happens"} for n in ("a", "b", "c")]
    rules[2]["severity"] = "critical"
    sa = StandIn(hits, {})
    store, _, rec, _ = run(
        tmp_path, sa, rules, seconds=4.0, alerting={"max_verifications_per_chunk": 2}
    )
    states = {a.rule: (a.state, a.reason) for a in store.alerts.of(rec.id)}
    assert states["c"][0] == states["a"][0] == "confirmed"
    assert states["b"][0] == "unverified" and "max_verifications_per_chunk" in states["b"][1]
    assert len(sa.looks) == 2


@pytest.mark.parametrize("rule_removed", [False, True])
def test_a_candidate_left_by_a_crash_is_verified_later_and_the_recording_waits(
    tmp_path: Path, rule_removed: bool
) -> None:
    sa = StandIn({"fence": [(1.5, 2.5)]}, {"fence": True})
    folder = tmp_path / "cam"
    folder.mkdir()
    video = make_video(folder / "cam.mp4", seconds=4, fps=10, size=(320, 180))
    cfg = parse_config(
        {
            "storage": {"url": f"sqlite:///{tmp_path / 'fw.db'}"},
            "chunking": {"seconds": 4, "overlap_seconds": 1},
            "sampling": {"fps": 1, "max_side": 64},
            "alerts": [{"name": "fence", "when": "a person climbs"}],
        },
        tmp_path / "config.toml",
    )
    plugin = Plugin(sa)
    pm = manager(cfg, (plugin, "standin"))
    store = Store(cfg.storage_url())
    crashed = Worker(store, cfg, pm.make_analyzer, subscribers=pm.subscribers, owner="gone:1")
    # The process dies right after the chunk's commit, before the second look: its pass is off.
    crashed.verify_due = lambda *a, **k: 0  # type: ignore[method-assign]
    rec, _ = crashed.ingest(str(video))
    crashed.prepare(rec.id)
    assert crashed.run(rec.id).status == "done"  # type: ignore[union-attr]
    (alert,) = store.alerts.of(rec.id)
    assert alert.state == "candidate"
    assert crashed.settle(rec.id).status == "analyzing"  # done waits for the second look
    # Restarted, maybe with the rule taken out of the config meanwhile.
    now = cfg.model_copy(update={"alerts": []}) if rule_removed else cfg
    restarted = Worker(store, now, pm.make_analyzer, subscribers=pm.subscribers)
    assert restarted.verify_due() == 1
    after = store.alerts.get(alert.id)
    if rule_removed:
        assert (after.state, after.fired) == ("unverified", False)
        assert "no [[alerts]] rule named 'fence'" in (after.reason or "")
    else:
        assert (after.state, after.fired) == ("confirmed", True)
    assert store.recordings.get(rec.id).status == "done"
    assert restarted.verify_due() == 0


def test_a_malformed_rule_hit_from_a_plugin_is_refused_not_fatal(tmp_path: Path) -> None:
    class Sloppy(StandIn):
        def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
            out = super().analyze(chunk)
            return [{**d, "start_s": "soon"} if "rule" in d else d for d in out]

    store, plugin, rec, _ = run(
        tmp_path,
        Sloppy({"fence": [(1.5, 2.5)]}, {}),
        [{"name": "fence", "when": "a person climbs"}],
    )
    assert rec.status == "done" and store.alerts.of(rec.id) == []
    assert store.chunks.get(rec.id, 0).provenance["alerts"]["hits"] == []


# -- several boxes over one store (SQLite, then PostgreSQL) ---------------------------------------


def test_boxes_never_verify_one_candidate_twice_and_the_cooldown_holds_across_them(
    url: str, tmp_path: Path
) -> None:
    from daemon.store.alerts import insert_candidates
    from tests.eventdata import populate

    box_a, box_b = Store(url), Store(url)  # two processes' connections to one store
    try:
        rec = populate(box_a, tmp_path / "yard.mp4", [[]], chunk_s=600, finish=None)
        with box_a.db.session() as s:
            insert_candidates(
                s,
                rec.id,
                0,
                [RuleHit("fence", 10.0, 12.0, "a"), RuleHit("fence", 40.0, 41.0, "b")],
                {"fence": "warning"},
                {},
            )
        first = box_a.alerts.claim("hostA:1", 60, now=1000.0)
        second = box_b.alerts.claim("hostB:1", 60, now=1000.0)
        assert first is not None and second is not None and first.id != second.id
        assert box_b.alerts.claim("hostB:1", 60, now=1001.0) is None  # both held
        # Both say yes at once: one fires, the other is inside the 300 s cooldown.
        a = box_a.alerts.decide(
            first.id, "hostA:1", "confirmed", "yes", fired=True, cooldown_s=300, notify=["hook"]
        )
        b = box_b.alerts.decide(
            second.id, "hostB:1", "confirmed", "yes", fired=True, cooldown_s=300, notify=["hook"]
        )
        assert a is not None and b is not None
        assert (a.state, a.fired, b.state, b.fired) == ("confirmed", True, "suppressed", False)
        assert box_a.outbox.counts()["pending"] == 1  # one alert_fired row, for the one that fired
        # A box that died while verifying: its lease runs out and another takes the candidate;
        # its late decision is refused.
        with box_a.db.session() as s:
            insert_candidates(s, rec.id, 1, [RuleHit("fall", 500.0, 501.0, "c")], {}, {})
        lost = box_a.alerts.claim("hostA:1", 60, now=1000.0)
        assert lost is not None and box_b.alerts.claim("hostB:1", 60, now=1030.0) is None
        taken = box_b.alerts.claim("hostB:1", 60, now=1100.0)
        assert taken is not None and taken.id == lost.id
        assert box_a.alerts.decide(lost.id, "hostA:1", "rejected", "no", fired=False) is None
        assert box_b.alerts.decide(taken.id, "hostB:1", "rejected", "no", fired=False) is not None
        assert box_b.alerts.decide(taken.id, "hostB:1", "confirmed", "yes", fired=True) is None
    finally:
        box_a.close()
        box_b.close()


def test_framewatch_alerts_lists_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.cli import main

    sa = StandIn({"fence": [(1.5, 2.5)], "fall": [(5.0, 6.0)]}, {"fence": True, "fall": False})
    rules = [{"name": "fence", "when": "a person climbs"}, {"name": "fall", "when": "x falls"}]
    store, _, rec, _ = run(tmp_path, sa, rules)
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///{tmp_path / "fw.db"}"\n')
    capsys.readouterr()  # what the analysis logged
    assert main(["alerts", "--config", str(config), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(a["rule"], a["outcome"]) for a in listed] == [
        ("fence", "confirmed"),
        ("fall", "rejected"),
    ]
    for a in listed:
        assert {
            "id",
            "rule",
            "recording",
            "start_s",
            "end_s",
            "outcome",
            "reason",
            "thumbnail",
        } <= set(a)
        assert a["recording"] == rec.path
        assert a["thumbnail"]["data_url"].startswith("data:image/jpeg;base64,")
    assert main(["alerts", "--config", str(config), "--outcome", "confirmed"]) == 0
    text = capsys.readouterr().out
    assert "fence (warning) confirmed fired: I see fence" in text and "fall" not in text


def test_a_rule_naming_an_unknown_plugin_is_a_config_error(tmp_path: Path) -> None:
    from tests.outbox import make_config

    cfg = make_config(
        tmp_path, alerts=[{"name": "fence", "when": "a person climbs", "plugins": ["webhok"]}]
    )
    with pytest.raises(ConfigError) as info:
        manager(cfg)
    assert ("alerts.0.plugins", "webhok", "no such plugin is installed") in info.value.errors


def test_the_plan_counts_the_rules_that_apply(tiny_model: Path, tmp_path: Path) -> None:
    from daemon.plan_report import plan_report

    (tmp_path / "cam").mkdir()
    video = make_video(tmp_path / "cam" / "yard.mp4", seconds=4, fps=10, size=(160, 90))
    base = {"model": {"name": str(tiny_model), "device": "cpu"}}
    rules = [{"name": "fence", "when": "a person climbs the fence"}]
    plain = plan_report(parse_config(base, tmp_path / "c.toml"), str(video))
    asked = plan_report(parse_config({**base, "alerts": rules}, tmp_path / "c.toml"), str(video))
    elsewhere = plan_report(
        parse_config({**base, "alerts": [{**rules[0], "folders": ["other"]}]}, tmp_path / "c.toml"),
        str(video),
    )
    tokens = [r["chunks"][0]["prompt_tokens"] for r in (plain, asked, elsewhere)]
    assert tokens[1] > tokens[0] == tokens[2]


def test_on_the_redis_path_a_candidate_a_box_left_is_verified_by_another(tmp_path: Path) -> None:
    """Two boxes over one PostgreSQL store and one Redis stream (RedisSource, as `framewatch run`
    and `framewatch worker` use it): box A analyses the chunk with the hit and dies before its
    second look; box B, running the next chunk, verifies it; the recording settles once."""
    import threading

    from daemon.work.redis import RedisSource
    from tests.services import (
        REDIS_URL,
        drop_prefix,
        postgres_database,
        redis_available,
        redis_prefix,
    )

    if not redis_available():
        pytest.fail("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)")
    prefix = redis_prefix()
    (tmp_path / "cam").mkdir()
    video = make_video(tmp_path / "cam" / "yard.mp4", seconds=7, fps=10, size=(320, 180))
    with postgres_database() as url:
        cfg = parse_config(
            {
                "storage": {"url": url},
                "queue": {"backend": "redis", "url": REDIS_URL, "prefix": prefix},
                "chunking": {"seconds": 4, "overlap_seconds": 1},
                "sampling": {"fps": 1, "max_side": 64},
                "alerts": [{"name": "fence", "when": "a person climbs"}],
            },
            tmp_path / "config.toml",
        )
        sa = StandIn({"fence": [(1.5, 2.5)]}, {"fence": True})
        plugin = Plugin(sa)
        pm = manager(cfg, (plugin, "standin"))
        stop = threading.Event()
        boxes = []
        for name in ("boxA", "boxB"):
            store = Store(url)
            worker = Worker(
                store, cfg, pm.make_analyzer, subscribers=pm.subscribers, owner=f"{name}:1"
            )
            boxes.append(
                (store, worker, RedisSource(cfg, store, worker, stop, produce=name == "boxA"))
            )
        (store_a, a, source_a), (store_b, b, source_b) = boxes
        a.verify_due = lambda *args, **kw: 0  # type: ignore[method-assign]  # dies before it
        try:
            rec, _ = a.ingest(str(video))
            ran = []
            for source, worker in ((source_a, a), (source_b, b)):
                job = None
                while job is None:
                    job = source.take(stop.is_set)
                with source.hold(job) as hold:
                    done = worker.run(job.recording_id, job.index)
                source.finish(job, done, hold)
                assert done is not None
                ran.append(done.chunk.index)
            assert ran == [0, 1]  # the hit's chunk on box A, the next one on box B
            (alert,) = store_b.alerts.of(rec.id)
            assert (alert.state, alert.fired, alert.chunk_index) == ("confirmed", True, 0)
            assert len(sa.looks) == 1
            assert store_b.recordings.get(rec.id).status == "done"
            Dispatcher(store_b, pm, cfg).deliver_all()
            assert [f[0] for f in plugin.fired] == [alert.id]
        finally:
            for store, worker, source in boxes:
                source.close()
                worker.close()
                store.close()
            drop_prefix(REDIS_URL, prefix)
