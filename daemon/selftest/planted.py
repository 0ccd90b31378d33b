"""A planted-event set for `framewatch eval --make-synthetic DIR`: a few short clips of
solid-colour scenes (clips.py) and the truth.json that says when each scene starts and ends,
labelled with its colour's name. Small and quick to write; for trying eval without footage of
one's own (a real model is asked what happens; a scene is the event)."""

from __future__ import annotations

import json
from pathlib import Path

from daemon.engine.truth import Span, Truth, TruthRecording, truth_json
from daemon.selftest.clips import Color, make_video

COLOURS: dict[str, Color] = {
    "red": (220, 20, 20),
    "green": (20, 200, 40),
    "blue": (20, 40, 220),
    "yellow": (240, 220, 20),
    "purple": (120, 30, 160),
    "orange": (250, 140, 0),
    "white": (245, 245, 245),
    "black": (10, 10, 10),
    "cyan": (0, 220, 230),
    "magenta": (230, 0, 200),
}

# (file, seconds, frame rate, (width, height), scenes as (start_s, colour name), frame counter)
PLANTED: tuple[
    tuple[str, float, int, tuple[int, int], tuple[tuple[float, str], ...], bool], ...
] = (
    ("scenes-a.mp4", 12.0, 10, (160, 90), ((0.0, "red"), (4.0, "green"), (8.5, "blue")), False),
    (
        "scenes-b.mp4",
        16.0,
        8,
        (128, 96),
        ((0.0, "yellow"), (5.0, "purple"), (11.0, "cyan")),
        True,
    ),
    (
        "scenes-c.mp4",
        10.0,
        12,
        (96, 64),
        ((0.0, "white"), (3.0, "orange"), (6.5, "magenta")),
        False,
    ),
)


def planted_truth(root: Path) -> Truth:
    """The truth of the planted set, with the clips' paths under `root`: one event a scene."""
    recordings = []
    for name, seconds, _fps, _size, scenes, _counter in PLANTED:
        ends = [start for start, _ in scenes[1:]] + [seconds]
        events = tuple(
            Span(start, end, colour) for (start, colour), end in zip(scenes, ends, strict=True)
        )
        recordings.append(TruthRecording(str(root / name), events))
    return Truth(str(root / "truth.json"), tuple(recordings))


def write_planted(directory: str | Path) -> Path:
    """Write the clips and `truth.json` (paths relative to it) into `directory`; returns the
    truth file's path."""
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    for name, seconds, fps, size, scenes, counter in PLANTED:
        make_video(
            root / name,
            seconds=seconds,
            fps=fps,
            size=size,
            scenes=[(start, COLOURS[colour]) for start, colour in scenes],
            counter=counter,
        )
    truth = planted_truth(root)
    path = root / "truth.json"
    path.write_text(json.dumps(truth_json(truth, relative_to=root), indent=2) + "\n")
    return path
