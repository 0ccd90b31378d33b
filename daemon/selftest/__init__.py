"""Self-test support: the tiny offline Qwen3-VL checkpoint (testmodel.py), the tiny offline
Whisper (testwhisper.py), the synthetic clips (clips.py), and `framewatch selftest`, which runs
the whole pipeline on them offline, speech included."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any


def run_selftest(keep: str | None = None) -> dict[str, Any]:
    """The whole pipeline on a generated clip with the tiny offline models, in a temporary folder
    (or `keep`). Returns {"ok", "problems", "seconds", "summary", "speech"}; `speech` says
    whether the transcription path was checked (it needs openai-whisper's tokenizer file for
    the tiny Whisper, a development dependency) and why not."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from daemon.analysis import analyze_path
    from daemon.config import parse_config
    from daemon.selftest.clips import make_video, voice_track
    from daemon.selftest.testmodel import TINY_SUMMARY, make_test_model
    from daemon.selftest.testwhisper import make_test_whisper

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="framewatch-selftest-") as tmp:
        root = Path(keep) if keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        model = make_test_model(root / "model")
        try:
            whisper: Path | None = make_test_whisper(root / "whisper")
            speech = "checked"
        except FileNotFoundError as exc:
            whisper, speech = None, f"not checked: {exc}"
        clip = make_video(
            root / "clip.mp4",
            seconds=12.0,
            size=(320, 180),
            scenes=[(0.0, (200, 30, 30)), (4.0, (30, 200, 30)), (8.0, (30, 30, 200))],
            audio=voice_track(12.0, [(2.0, 2.5), (7.0, 3.0)]),
        )
        speech_settings = (
            {"mode": "on", "model": str(whisper), "beam_size": 1, "max_new_tokens": 16}
            if whisper is not None
            else {}
        )
        cfg = parse_config(
            {
                "storage": {"url": f"sqlite:///{root / 'selftest.db'}"},
                "model": {"name": str(model), "max_new_tokens": 96},
                "chunking": {"seconds": 6, "overlap_seconds": 1},
                "sampling": {"fps": 1, "max_side": 128},
                "analysis": {"max_events": 2, "label_chars": 16, "description_chars": 40},
                "speech": speech_settings,
                "summary": TINY_SUMMARY,
            }
        )
        result, summary = analyze_path(cfg, str(clip))
        problems = []
        if result["recording"]["status"] != "done":
            problems.append(
                f"recording ended {result['recording']['status']}: {result['recording']['reason']}"
            )
        if len(result["chunks"]) != 3 or any(c["status"] != "done" for c in result["chunks"]):
            problems.append(
                f"expected 3 done chunks, got {[c['status'] for c in result['chunks']]}"
            )
        for e in result["events"]:
            if not 0 <= e["start_s"] <= e["end_s"] <= 12.0:
                problems.append(f"event outside the clip: {e}")
        if whisper is not None:
            notes = [c["speech_note"] for c in result["chunks"] if "speech_note" in c]
            if notes:
                problems.append(f"speech: {notes[0]}")
            if not result["speech"]:
                problems.append("speech: nothing transcribed from the clip's voiced bursts")
            for s in result["speech"]:
                if not 0 <= s["start_s"] <= s["end_s"] <= 12.1:
                    problems.append(f"speech segment outside the clip: {s}")
        made = result["summary"]
        if made is None:
            problems.append(f"no summary: {result.get('summary_note', 'unknown why')}")
        elif (
            made["chapters"][0]["start_s"] != 0
            or abs(made["chapters"][-1]["end_s"] - float(result["recording"]["duration_s"] or 0))
            > 0.01
        ):
            problems.append(f"summary chapters do not cover the clip: {made['chapters']}")
        _, again = analyze_path(cfg, str(clip))
        if "already analysed" not in again:
            problems.append("second run was not a no-op")
    return {
        "ok": not problems,
        "problems": problems,
        "seconds": round(time.perf_counter() - t0, 1),
        "summary": summary,
        "speech": speech,
    }
