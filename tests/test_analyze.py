"""`framewatch analyze` end to end: real videos, the real Qwen3-VL code on the tiny checkpoint,
real SQLite; bad input, rotation, variable frame rate, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.analysis import analyze_recording
from daemon.cli import main
from daemon.config import load_config
from daemon.selftest.testmodel import TINY_SUMMARY
from daemon.store import Store
from daemon.worker import Worker
from tests.daemon_proc import run_cli
from tests.media import BLUE, GREEN, RED, make_bad_inputs, make_video, vfr_times


def write_config(tmp: Path, model: Path, **over: Any) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "storage": {"url": f"sqlite:///{tmp / 'fw.db'}"},
        "model": {"name": str(model), "max_new_tokens": 48},
        "chunking": {"seconds": 4, "overlap_seconds": 1},
        "sampling": {"fps": 1, "max_side": 64},
        "analysis": {"max_events": 2, "label_chars": 16, "description_chars": 40},
        "summary": TINY_SUMMARY,
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        sections[section][name] = value
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


cli = run_cli


class Spy:
    """Wraps the real analyzer and keeps the chunks it was given (frames, times), so a test can
    see what reached the model."""

    def __init__(self, inner: Any):
        self.inner, self.chunks = inner, []
        self.name = inner.name

    def analyze(self, chunk: Any) -> list[dict[str, Any]]:
        self.chunks.append(chunk)
        return self.inner.analyze(chunk)

    def provenance(self) -> dict[str, Any]:
        return self.inner.provenance()


@pytest.fixture(scope="module")
def qwen(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from daemon.engine.backends.qwen3vl import QwenAnalyzer

    cfg = load_config(write_config(tmp_path_factory.mktemp("q"), tiny_model))
    return QwenAnalyzer.from_config(cfg)


def test_analyze_json_contract_and_rows(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_video(
        tmp_path / "scenes.mp4", seconds=10, scenes=[(0, RED), (3.5, GREEN), (7.0, BLUE)]
    )
    cfg = write_config(tmp_path, tiny_model)
    assert main(["analyze", str(clip), "--config", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"recording", "chunks", "events", "speech", "summary"}
    assert out["summary"]["chapters"][0]["start_s"] == 0.0  # test_summary.py tests it whole
    assert out["speech"] == []  # speech is off by default
    rec = out["recording"]
    assert rec["status"] == "done" and rec["path"] == str(clip)
    assert rec["duration_s"] == pytest.approx(10.0, abs=0.15)
    windows = [(c["start_s"], c["end_s"]) for c in out["chunks"]]
    assert windows[:3] == [(0.0, 4.0), (3.0, 7.0), (6.0, 10.0)] and len(windows) == 3
    assert all(c["status"] == "done" and c["frames"] % 2 == 0 for c in out["chunks"])
    for e in out["events"]:
        c = out["chunks"][e["chunk"]]
        assert c["start_s"] <= e["start_s"] <= e["end_s"] <= c["end_s"]
        assert {"id", "chunk", "start_s", "end_s", "label", "description"} <= set(e)

    db = sqlite3.connect(tmp_path / "fw.db")
    prov = [json.loads(p) for (p,) in db.execute("select provenance from chunk order by `index`")]
    assert all(p["model"] == str(tiny_model) and p["backend"] == "transformers" for p in prov)
    assert all(p["sampling"]["frames"] == 4 and p["sampling"]["width"] == 64 for p in prov)
    assert all(
        set(p["counts"]) >= {"received", "kept", "clamped", "dropped", "merged"} for p in prov
    )
    n_events = db.execute("select count(*) from event").fetchone()[0]
    assert n_events == len(out["events"])

    # The same content again is a no-op that says so.
    assert main(["analyze", str(clip), "--config", str(cfg), "--json"]) == 0
    captured = capsys.readouterr()
    assert "already analysed" in captured.err
    assert db.execute("select count(*) from event").fetchone()[0] == n_events
    assert db.execute("select sum(attempts) from chunk").fetchone()[0] == 3

    assert main(["events", "--config", str(cfg), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in listed] == [e["id"] for e in out["events"]]
    assert all(e["recording"] == str(clip) for e in listed)


def test_rotated_phone_video_reaches_the_model_upright(tmp_path: Path, qwen: Any) -> None:
    # Stored sideways with a 90-degree display matrix; upright it is portrait, red above blue.
    clip = make_video(
        tmp_path / "phone.mp4",
        seconds=2,
        size=(90, 160),
        scenes=[(0, RED)],
        bottom=BLUE,
        rotation=90,
    )
    cfg = load_config(write_config(tmp_path, Path(qwen.provenance()["model"])))
    spy = Spy(qwen)
    store = Store(cfg.storage_url())
    w = Worker(store, cfg, lambda: spy)
    rec, _ = w.ingest(str(clip))
    assert analyze_recording(w, rec.id).status == "done"
    img = spy.chunks[0].frames[0].image
    h, wd, _ = img.shape
    assert h > wd, "portrait after rotation"
    top, bottom = img[: h // 4].reshape(-1, 3).mean(0), img[-h // 4 :].reshape(-1, 3).mean(0)
    assert top[0] > 150 and top[2] < 100, f"top should be red, got {top}"
    assert bottom[2] > 150 and bottom[0] < 100, f"bottom should be blue, got {bottom}"


def test_variable_frame_rate_gets_pts_true_times(tmp_path: Path, qwen: Any) -> None:
    clip = make_video(tmp_path / "vfr.mkv", seconds=6, vfr=True)
    truth = vfr_times(6)
    cfg = load_config(write_config(tmp_path, Path(qwen.provenance()["model"]), sampling__fps=2))
    spy = Spy(qwen)
    w = Worker(Store(cfg.storage_url()), cfg, lambda: spy)
    rec, _ = w.ingest(str(clip))
    assert analyze_recording(w, rec.id).status == "done"
    times = [f.t_s for c in spy.chunks for f in c.frames]
    assert times, "frames were sampled"
    for t in times:
        assert min(abs(t - x) for x in truth) < 1e-3, f"{t} is not a real frame time"
    # The timestamps are not an even grid: the irregular gaps survive into what the model sees.
    gaps = np.diff(sorted(set(times)))
    assert gaps.max() - gaps.min() > 0.1


def test_bad_inputs_fail_readably_and_are_stored(tmp_path: Path, tiny_model: Path) -> None:
    cfg = write_config(tmp_path, tiny_model)
    bad = make_bad_inputs(tmp_path / "bad")
    good = make_video(tmp_path / "good.mp4", seconds=2)
    for name, path in bad.items():
        r = cli("analyze", str(path), "--config", str(cfg), timeout=120)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 1, (name, r.stderr)
        assert "Traceback" not in r.stderr, (name, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("framewatch: error:"), (name, r.stderr)
    status = json.loads(cli("status", "--config", str(cfg), "--json").stdout)
    by_path = {r["path"]: r for r in status["recordings"]}
    for name, path in bad.items():
        row = by_path[str(path)]
        assert row["status"] == "failed" and row["reason"], (name, row)
    reasons = {name: by_path[str(p)]["reason"] for name, p in bad.items()}
    assert "empty" in reasons["empty"]
    assert "audio" in reasons["audio_only"]
    assert "16000" in reasons["huge"]
    # Nothing else is affected: a good file still analyses in the same store.
    r = cli("analyze", str(good), "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["recording"]["status"] == "done"


def test_missing_model_says_which_setting(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "a.mp4", seconds=1)
    cfg = write_config(tmp_path, tmp_path / "no-such-model")
    r = cli("analyze", str(clip), "--config", str(cfg))
    assert r.returncode == 3, r.stderr
    assert "model.name" in r.stderr and "Traceback" not in r.stderr


def test_resume_after_kill_analyses_no_chunk_twice(tmp_path: Path, tiny_model: Path) -> None:
    clip = make_video(tmp_path / "long.mp4", seconds=13, scenes=[(0, RED), (6, GREEN)])
    cfg = write_config(tmp_path, tiny_model, sampling__max_side=96)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "analyze", str(clip), "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    db_path = tmp_path / "fw.db"
    deadline = time.monotonic() + 240
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        if db_path.exists():
            try:
                rows = (
                    sqlite3.connect(db_path)
                    .execute("select status from chunk order by `index`")
                    .fetchall()
                )
            except sqlite3.OperationalError:
                rows = []
            states = [s for (s,) in rows]
            if states.count("done") >= 1 and "running" in states:
                proc.send_signal(signal.SIGKILL)
                killed_at = states
                break
        time.sleep(0.02)
    proc.wait(30)
    assert killed_at is not None, (
        f"never caught a chunk in flight: {proc.stderr.read() if proc.stderr else ''}"
    )
    db = sqlite3.connect(db_path)
    before = {
        i: (a, ids)
        for i, a, ids in db.execute(
            "select c.`index`, c.attempts, group_concat(e.id) from chunk c left join event e on e.chunk_id = c.id "
            "where c.status = 'done' group by c.id"
        )
    }
    r = cli("analyze", str(clip), "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [c["status"] for c in out["chunks"]] == ["done"] * len(out["chunks"])
    after = {
        i: (a, ids)
        for i, a, ids in db.execute(
            "select c.`index`, c.attempts, group_concat(e.id) from chunk c left join event e on e.chunk_id = c.id group by c.id"
        )
    }
    for i, (attempts, ids) in before.items():
        assert after[i] == (attempts, ids), "a chunk done before the kill was not touched again"
    assert all(a <= 2 for a, _ in after.values())
    keys = db.execute(
        "select chunk_index, label, start_s, end_s, count(*) from event group by 1, 2, 3, 4 having count(*) > 1"
    ).fetchall()
    assert keys == [], "no duplicated events"


def test_selftest_command() -> None:
    r = cli("selftest", "--json", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"], report
    assert report["speech"] == "checked" and "speech segments" in report["summary"]


def test_make_test_model_command_writes_a_loadable_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoConfig, AutoProcessor

    out = tmp_path / "tiny"
    assert main(["make-test-model", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    cfg = AutoConfig.from_pretrained(out)
    assert cfg.model_type == "qwen3_vl"
    assert cfg.vision_config.patch_size == 16 and cfg.vision_config.temporal_patch_size == 2
    assert cfg.vision_config.spatial_merge_size == 2 and cfg.text_config.vocab_size == 151936
    processor = AutoProcessor.from_pretrained(out)
    ids = processor.tokenizer.convert_tokens_to_ids(["<|video_pad|>", "<|im_end|>"])
    assert ids == [151656, 151645]
    weights = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    assert 1_000_000 < weights < 60_000_000, "a few MB of weights"
