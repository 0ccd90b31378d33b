"""What a picture per event costs: `python bench/thumbnails.py` (from the repository root).

Frames are sampled the way a chunk samples them (daemon.engine.sampler, 640x352: the default
sampling.max_side) from an ffmpeg testsrc2 clip (with and without noise, the hard and the easy case
for JPEG); then `Thumbnails.save` writes one thumbnail per event (each event on its own frame,
as after a commit) into a temporary media folder. Reported per event: wall time (JPEG encode at
320 px + write + rename) and bytes on disk. Prints a Markdown table.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.engine.sampler import sample_frames
from daemon.models import EventInfo
from daemon.thumbnails import Thumbnails

SECONDS, FPS, EVENTS, ROUNDS = 20, 3, 60, 7


def clip(path: Path, noise: bool) -> Path:
    vf = "noise=alls=40:allf=t" if noise else "null"
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc2=size=1280x720:rate=30:duration={SECONDS}",
            "-vf", vf, "-c:v", "libx264", "-preset", "ultrafast", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for noise in (False, True):
            video = clip(Path(tmp) / f"src-{noise}.mp4", noise)
            times = [i / FPS for i in range(SECONDS * FPS)]
            frames = sample_frames(video, times, 640, 352)
            step = len(frames) / EVENTS
            events = [
                EventInfo(
                    i + 1, 1, 0, frames[int(i * step)].t_s, frames[int(i * step)].t_s, "x", ""
                )
                for i in range(EVENTS)
            ]
            per_event, sizes = [], []
            for r in range(ROUNDS):
                thumbs = Thumbnails(Path(tmp) / f"media-{noise}-{r}")
                t0 = time.perf_counter()
                saved = thumbs.save(events, frames)
                per_event.append((time.perf_counter() - t0) / EVENTS)
                sizes.append(saved.bytes / EVENTS)
            rows.append(
                (
                    "testsrc2 + noise" if noise else "testsrc2",
                    statistics.median(per_event) * 1000,
                    min(per_event) * 1000,
                    statistics.median(sizes) / 1024,
                )
            )
    print(f"{EVENTS} events, {ROUNDS} rounds, frames 640x352 -> thumbnails 320x176 (JPEG q80)\n")
    print("| frames | ms per event (median) | ms per event (best) | KiB per event |")
    print("|---|---|---|---|")
    for name, med, best, kib in rows:
        print(f"| {name} | {med:.2f} | {best:.2f} | {kib:.1f} |")


if __name__ == "__main__":
    main()
