"""Chunk planning is pure arithmetic: covered exhaustively here."""

from __future__ import annotations

from itertools import pairwise

import pytest

from daemon.engine.planner import frame_size, plan_chunks, plan_windows, sample_times
from daemon.models import MediaInfo


@pytest.mark.parametrize(
    ("duration", "length", "overlap"),
    [
        (1.0, 300, 5),
        (299.9, 300, 5),
        (300.0, 300, 5),
        (300.5, 300, 5),
        (3600.0, 300, 5),
        (61.0, 20, 5),
        (10.0, 3, 0),
    ],
)
def test_windows_cover_and_overlap(duration: float, length: float, overlap: float) -> None:
    w = plan_windows(duration, length, overlap)
    assert w[0][0] == 0.0
    assert w[-1][1] == pytest.approx(duration)
    for k, (start, end) in enumerate(w):
        assert start == pytest.approx(k * (length - overlap))
        assert end == pytest.approx(min(start + length, duration))
        assert end > start
    for (_, e0), (s1, _) in pairwise(w):
        assert e0 - s1 == pytest.approx(overlap)  # consecutive chunks share exactly O seconds


def test_short_file_is_one_chunk() -> None:
    assert plan_windows(42.0, 300, 5) == [(0.0, 42.0)]


def test_empty_duration_has_no_chunks() -> None:
    assert plan_windows(0.0, 300, 5) == []


def test_invalid_overlap_rejected() -> None:
    with pytest.raises(ValueError):
        plan_windows(10, 5, 5)


@pytest.mark.parametrize(
    ("start", "end", "fps"), [(0, 300, 2), (295, 300.5, 2), (0, 0.2, 2), (10, 13, 1), (0, 7, 0.5)]
)
def test_sample_times_even_inside_and_sorted(start: float, end: float, fps: float) -> None:
    t = sample_times(start, end, fps)
    assert len(t) % 2 == 0 and len(t) >= 2
    assert all(start <= x <= end for x in t)
    assert list(t) == sorted(t)


def test_sample_times_rate() -> None:
    assert len(sample_times(0, 300, 2)) == 600
    assert len(sample_times(0, 3, 1)) == 4  # 3 rounded up to even


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((640, 360), 640, (640, 352)),
        ((1920, 1080), 640, (640, 352)),
        ((360, 640), 640, (352, 640)),
        ((160, 90), 640, (160, 96)),
        ((10, 10), 640, (32, 32)),
    ],
)
def test_frame_size(size: tuple[int, int], max_side: int, expected: tuple[int, int]) -> None:
    assert frame_size(*size, max_side) == expected


def test_frame_size_pixel_budget() -> None:
    w, h = frame_size(1920, 1080, 4096, max_pixels=100_000)
    assert w * h <= 100_000 and w % 32 == 0 and h % 32 == 0


def test_plan_chunks_uses_display_size() -> None:
    media = MediaInfo("x.mp4", 30.0, 640, 360, 30.0, 90, "h264")
    plan = plan_chunks(media, seconds=20, overlap_s=5, fps=2, max_side=640)
    assert [(c.start_s, c.end_s) for c in plan] == [(0.0, 20.0), (15.0, 30.0)]
    assert (plan[0].width, plan[0].height) == (352, 640)  # rotated portrait
    assert len(plan[0].sample_times) == 40
