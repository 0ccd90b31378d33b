"""sample_frames(fast=True) skips decoding work but chooses exactly the frames of the plain path."""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING

import av
import numpy as np
import pytest

from daemon.engine.sampler import _SEEK_MARGIN_S, _keyframe_times, sample_frames
from tests.media import BLUE, GREEN, RED, make_video

if TYPE_CHECKING:
    from pathlib import Path

SCENES = [(0.0, RED), (3.0, GREEN), (7.0, BLUE)]


def _times(start: float, end: float, fps: float) -> list[float]:
    n = max(2, round((end - start) * fps))
    return [start + (i + 0.5) * (end - start) / n for i in range(n)]


def assert_same(
    path: Path, times: list[float], size: tuple[int, int] = (96, 64), rotation: int = 0
) -> None:
    plain = sample_frames(path, times, *size, rotation, fast=False)
    fast = sample_frames(path, times, *size, rotation, fast=True)
    assert [f.t_s for f in fast] == [f.t_s for f in plain]
    for a, b in zip(plain, fast, strict=True):
        # Skipped pictures are never referenced, so what is decoded is identical bit for bit.
        assert np.array_equal(a.image, b.image), a.t_s


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fast")
    common = {"seconds": 12.0, "fps": 25, "size": (160, 96), "scenes": SCENES, "counter": True}
    out = {
        "short_gop": make_video(d / "short.mp4", gop=50, **common),  # a keyframe every 2 s
        "long_gop": make_video(d / "long.mp4", gop=250, **common),  # one keyframe
        "mkv": make_video(d / "short.mkv", gop=25, **common),
        "vfr": make_video(
            d / "vfr.mkv", seconds=8.0, size=(160, 96), counter=True, vfr=True, gop=20
        ),
        "rotated": make_video(d / "rot.mp4", gop=25, rotation=90, **common),
    }
    if "libx265" in av.codecs_available:
        out["hevc"] = make_video(d / "hevc.mkv", codec="libx265", gop=50, **common)
    return out


@pytest.mark.parametrize("name", ["short_gop", "long_gop", "mkv", "hevc", "rotated"])
@pytest.mark.parametrize(
    "window",
    [
        (0.0, 12.0, 2.0),  # the planner's default rate over the whole clip
        (0.0, 12.0, 0.25),  # sparse: several keyframes between samples, so it seeks
        (2.5, 9.5, 5.0),  # dense, starting mid-file
        (0.0, 12.0, 25.0),  # every frame: nothing may be skipped
    ],
)
def test_fast_path_chooses_the_plain_frames(
    clips: dict[str, Path], name: str, window: tuple[float, float, float]
) -> None:
    if name not in clips:
        pytest.fail("libx265 is not built into this PyAV: the HEVC case cannot be generated")
    assert_same(clips[name], _times(*window))


@pytest.mark.timeout(120)
def test_seek_aimed_between_a_keyframes_dts_and_pts(clips: dict[str, Path]) -> None:
    """The index gives keyframes' decoding times; with B-frames a keyframe is presented two
    frames later. A seek aimed between the two lands on the keyframe before, and the fast path
    once sought again and again, for ever (found by bench/run.py on a 10-minute file at 0.25 fps)."""
    path = clips["short_gop"]  # 25 fps, a keyframe every 2 s
    with av.open(str(path)) as c:
        keys = _keyframe_times(c.streams.video[0])
    assert 1.85 < keys[1] < 2.0, f"the clip needs B-frames (keyframe DTS before PTS): {keys[:3]}"
    # Each seek aims at time - _SEEK_MARGIN_S = one frame before a keyframe's PTS, after its DTS.
    times = [k + _SEEK_MARGIN_S - 1 / 25 for k in (2.0, 6.0, 10.0)]
    assert_same(path, times)


def test_fast_path_on_variable_frame_rate(clips: dict[str, Path]) -> None:
    assert_same(clips["vfr"], _times(0.0, 8.0, 2.0))
    assert_same(clips["vfr"], _times(0.0, 8.0, 0.3))


def test_times_past_the_end_and_shared_frames(clips: dict[str, Path]) -> None:
    # Several times on one frame, and times after the last frame (padded with it).
    assert_same(clips["short_gop"], [1.0, 1.001, 1.002, 11.99, 12.5, 13.0])


def test_sparse_times_land_within_one_frame(clips: dict[str, Path]) -> None:
    times = _times(0.0, 12.0, 0.25)
    frames = sample_frames(clips["short_gop"], times, 96, 64)
    for t, f in zip(times, frames, strict=True):
        assert abs(f.t_s - t) <= 1 / 25 / 2 + 1e-6


def test_index_lists_the_keyframes(clips: dict[str, Path]) -> None:
    with av.open(str(clips["short_gop"])) as c:
        keys = _keyframe_times(c.streams.video[0])
    # One every 2 s (the index holds decode times, a frame or two before the PTS).
    assert len(keys) == 6
    assert all(abs(b - a - 2.0) < 0.1 for a, b in pairwise(keys))
