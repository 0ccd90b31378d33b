"""The plugin manager and every hook: built-ins, settings with key paths, firstresult hooks,
start-up/shut-down, the analyzer factory, and `framewatch plugins`."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from daemon.analysis import analyze_path
from daemon.cli import main
from daemon.config import ConfigError
from daemon.hookspecs import hookimpl
from daemon.models import ChunkInfo, ChunkInput, EventInfo, RecordingInfo
from daemon.pluginhost.manager import load_plugins
from daemon.store import Store
from tests.media import make_video
from tests.outbox import analysed, ev, make_config, manager

ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    """A plugin that keeps every notification it receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    def events_found(
        self, recording: RecordingInfo, chunk: ChunkInfo, events: list[EventInfo]
    ) -> None:
        self.calls.append(("events_found", (recording.id, chunk.index, [e.label for e in events])))

    @hookimpl
    def recording_finished(self, recording: RecordingInfo, events: list[EventInfo]) -> None:
        self.calls.append(("recording_finished", (recording.id, recording.status, len(events))))

    @hookimpl
    def recording_failed(self, recording: RecordingInfo, error: str) -> None:
        self.calls.append(("recording_failed", (recording.id, error)))


def test_builtin_outputs_need_their_table(tmp_path: Path) -> None:
    bare = manager(make_config(tmp_path))
    assert bare.names() == ["qwen3vl"]  # a bare config writes no files and calls no URL
    assert bare.subscribers("recording_finished") == []
    on = manager(make_config(tmp_path, {"markdown_export": {}, "subtitles": {}}))
    assert on.names() == ["markdown_export", "qwen3vl", "subtitles"]
    assert sorted(on.subscribers("recording_finished")) == ["markdown_export", "subtitles"]


def test_disabled_wins_over_a_table(tmp_path: Path) -> None:
    pm = manager(make_config(tmp_path, {"disabled": ["subtitles", "qwen3vl"], "subtitles": {}}))
    assert pm.names() == []
    entries = {e.name: e for e in pm.entries()}
    assert (
        entries["subtitles"].reason == "disabled in [plugins]" and not entries["subtitles"].active
    )


def test_settings_errors_carry_key_paths(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "webhook": {"url": "ftp://example.com", "timeout_s": -1, "tiemout_s": 3},
            "subtitles": {"formats": ["ass"]},
            "nosuch": {"x": 1},
        },
    )
    with pytest.raises(ConfigError) as ei:
        load_plugins(cfg, third_party=False)
    keys = {k for k, _, _ in ei.value.errors}
    assert {
        "plugins.webhook.url",
        "plugins.webhook.timeout_s",
        "plugins.webhook.tiemout_s",
        "plugins.subtitles.formats.0",
        "plugins.nosuch",
    } <= keys
    assert "unknown key" in str(ei.value) and "config.toml" in str(ei.value)


def test_config_check_validates_plugin_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text('[plugins.webhook]\nurl = "not a url"\n')
    assert main(["config", "check", "--config", str(conf)]) == 2
    assert "plugins.webhook.url" in capsys.readouterr().err
    conf.write_text(
        '[plugins.webhook]\nurl = "https://example.com/hook"\n[plugins.markdown_export]\n'
    )
    assert main(["config", "check", "--config", str(conf)]) == 0


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    threshold: int
    folder: Path | None = None


class WithSettings:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def register_settings(self) -> dict[str, type[BaseModel]]:
        return {"thresholds": Settings}

    @hookimpl
    def recording_finished(self, recording: RecordingInfo, settings: Settings) -> None:
        self.seen.append(settings)


def test_hook_register_settings_validates_and_hands_settings_over(tmp_path: Path) -> None:
    from daemon.pluginhost.dispatch import Dispatcher

    with pytest.raises(ConfigError) as ei:
        manager(make_config(tmp_path), (WithSettings(), "thresholds"))
    assert [k for k, _, _ in ei.value.errors] == [
        "plugins.thresholds.threshold"
    ]  # required, absent

    plugin = WithSettings()
    cfg = make_config(tmp_path, {"thresholds": {"threshold": 7}})
    pm = manager(cfg, (plugin, "thresholds"))
    try:
        store = Store(cfg.storage_url())
        analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)]])
        assert Dispatcher(store, pm, cfg).deliver_due() == 1
        assert plugin.seen == [Settings(threshold=7)]
    finally:
        pm.unregister("thresholds")


def test_misspelt_hook_is_caught(tmp_path: Path) -> None:
    class Typo:
        @hookimpl
        def event_found(self, recording: RecordingInfo) -> None: ...

    with pytest.raises(ConfigError) as ei:
        manager(make_config(tmp_path), (Typo(), "typo"))
    assert ei.value.errors[0][0] == "plugins.typo" and "event_found" in ei.value.errors[0][2]


def test_hook_startup_and_shutdown_in_order(tmp_path: Path) -> None:
    log: list[str] = []

    def plugin(name: str, fail_shutdown: bool = False) -> object:
        class P:
            @hookimpl
            def startup(self, app: Any) -> None:
                log.append(f"start {name} {app}")

            @hookimpl
            def shutdown(self, app: Any) -> None:
                log.append(f"stop {name}")
                if fail_shutdown:
                    raise RuntimeError("stuck")

        return P()

    pm = manager(make_config(tmp_path), (plugin("a", fail_shutdown=True), "a"), (plugin("b"), "b"))
    pm.startup("app")
    pm.shutdown("app")  # a's failure is logged, not raised, and b still stopped first
    assert log == ["start a app", "start b app", "stop b", "stop a"]


def test_hook_accept_recording_first_answer_wins(tmp_path: Path) -> None:
    class NoOpinion:
        @hookimpl
        def accept_recording(self, path: str) -> bool | None:
            return None

    class SkipsTmp:
        @hookimpl
        def accept_recording(self, path: str, config: Any) -> bool | None:
            assert config.plugins is not None
            return False if path.endswith(".tmp.mp4") else None

    pm = manager(make_config(tmp_path), (NoOpinion(), "none"), (SkipsTmp(), "skips"))
    assert pm.accept_recording("/v/x.tmp.mp4") is False
    assert pm.accept_recording("/v/x.mp4") is None


class StandIn:
    """Stands in for the Qwen3-VL model: one event spanning each chunk, no weights needed."""

    name = "stand-in"

    def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
        assert chunk.frames and chunk.frames[0].image.ndim == 3
        return [
            {
                "start_s": chunk.start_s,
                "end_s": chunk.end_s,
                "label": f"scene {chunk.index}",
                "description": "x",
            }
        ]

    def provenance(self) -> dict[str, Any]:
        return {"model": "stand-in", "backend": "test"}


class MakesStandIn:
    @hookimpl
    def make_analyzer(self, config: Any) -> StandIn:
        return StandIn()


def test_hook_make_analyzer_default_is_qwen_and_tried_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.engine.backends import qwen3vl

    loaded: list[Any] = []
    monkeypatch.setattr(
        qwen3vl.QwenAnalyzer,
        "from_config",
        classmethod(lambda cls, cfg: loaded.append(cfg) or qwen),
    )
    qwen = StandIn()
    cfg = make_config(tmp_path)
    assert manager(cfg).make_analyzer().inner is qwen
    assert loaded == [cfg]
    pm = manager(cfg, (MakesStandIn(), "standin"))
    made = pm.make_analyzer()
    assert (
        isinstance(made.inner, StandIn) and made.inner is not qwen
    )  # registered after the default yet tried first
    assert len(loaded) == 1


def test_analyze_uses_plugin_analyzer_and_delivers(tmp_path: Path) -> None:
    """The one-shot `analyze` path: the analyzer comes from make_analyzer, the Worker writes outbox
    rows for the subscribers, and the notifications are delivered before it returns."""
    clip = make_video(tmp_path / "clip.mp4", seconds=3.0, fps=5, size=(64, 36))
    cfg = make_config(
        tmp_path,
        {"markdown_export": {}},
        chunking={"seconds": 2, "overlap_seconds": 0.5},
        sampling={"fps": 1, "max_side": 64},
    )
    recorder = Recorder()
    pm = manager(cfg, (MakesStandIn(), "standin"), (recorder, "recorder"))
    result, summary = analyze_path(cfg, str(clip), plugins=pm)
    assert result["recording"]["status"] == "done", summary
    n = len(result["chunks"])
    assert n == 2
    assert [c for c in recorder.calls if c[0] == "events_found"] == [
        ("events_found", (1, i, [f"scene {i}"])) for i in range(n)
    ]
    assert recorder.calls[-1] == ("recording_finished", (1, "done", len(result["events"])))
    assert (tmp_path / "clip.framewatch.md").exists()
    assert "retry later" not in summary


def test_plugins_command_lists_versions_and_hooks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text('[plugins.subtitles]\ndir = "subs"\n')
    assert main(["plugins", "--json", "--config", str(conf)]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert listed["subtitles"]["active"] and listed["subtitles"]["version"] == "0.1.0"
    assert listed["subtitles"]["hooks"] == ["recording_finished", "register_settings"]
    assert listed["qwen3vl"]["hooks"] == ["make_analyzer"]
    assert not listed["webhook"]["active"] and "events_found" in listed["webhook"]["hooks"]
    assert main(["plugins", "--config", str(conf)]) == 0
    assert (
        "webhook 0.1.0 (built-in; inactive: no [plugins.webhook] table)" in capsys.readouterr().out
    )


def test_relative_plugin_paths_mean_next_to_the_config(tmp_path: Path) -> None:
    pm = manager(
        make_config(tmp_path, {"subtitles": {"dir": "subs"}, "markdown_export": {"dir": "~/r"}})
    )
    assert pm.settings["subtitles"].dir == tmp_path / "subs"  # type: ignore[union-attr]
    assert pm.settings["markdown_export"].dir == Path.home() / "r"  # type: ignore[union-attr]


def test_builtin_plugins_use_only_the_public_api() -> None:
    allowed = {"daemon.hookspecs", "daemon.models"}
    for path in (ROOT / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] == "daemon":
                    assert name in allowed, f"{path.relative_to(ROOT)} imports {name}"
