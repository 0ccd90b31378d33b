"""Self-test support: the tiny offline Qwen3-VL checkpoint (testmodel.py), the synthetic clips
(clips.py), and `framewatch selftest`, which runs the whole pipeline on them offline."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any


def run_selftest(keep: str | None = None) -> dict[str, Any]:
    """The whole pipeline on a generated clip with the tiny offline model, in a temporary folder
    (or `keep`). Returns {"ok", "problems", "seconds", "summary"}."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from daemon.analysis import analyze_path
    from daemon.config import parse_config
    from daemon.selftest.clips import make_video
    from daemon.selftest.testmodel import make_test_model

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="framewatch-selftest-") as tmp:
        root = Path(keep) if keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        model = make_test_model(root / "model")
        clip = make_video(
            root / "clip.mp4",
            seconds=12.0,
            size=(320, 180),
            scenes=[(0.0, (200, 30, 30)), (4.0, (30, 200, 30)), (8.0, (30, 30, 200))],
        )
        cfg = parse_config(
            {
                "storage": {"url": f"sqlite:///{root / 'selftest.db'}"},
                "model": {"name": str(model), "max_new_tokens": 96},
                "chunking": {"seconds": 6, "overlap_seconds": 1},
                "sampling": {"fps": 1, "max_side": 128},
                "analysis": {"max_events": 2, "label_chars": 16, "description_chars": 40},
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
        _, again = analyze_path(cfg, str(clip))
        if "already analysed" not in again:
            problems.append("second run was not a no-op")
    return {
        "ok": not problems,
        "problems": problems,
        "seconds": round(time.perf_counter() - t0, 1),
        "summary": summary,
    }
