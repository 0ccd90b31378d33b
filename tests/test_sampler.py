"""sample_frames(): the right picture for each time, with its real PTS, upright and resized."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from structlog.testing import capture_logs

from daemon.engine import sampler
from daemon.engine.probe import UnsupportedMedia, probe
from daemon.engine.sampler import sample_frames
from tests.media import BLUE, GREEN, RED, make_bad_inputs, make_video, vfr_times

# A distinct colour for each second of the seek test clip.
SECOND_COLOURS = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (255, 255, 255),
    (0, 0, 0),
]


def colour_of(image: np.ndarray, row: float = 0.5) -> np.ndarray:
    """Mean colour of a small patch at `row` (0 top, 1 bottom) in the middle column."""
    h, w, _ = image.shape
    y, x = min(int(row * h), h - 3), w // 2
    return image[max(0, y - 2) : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(axis=0)


def assert_colour(image: np.ndarray, expected, row: float = 0.5) -> None:
    # Lossy H.264 at 4:2:0 shifts solid colours by a few levels.
    assert np.abs(colour_of(image, row) - np.array(expected)).max() < 30, colour_of(image, row)


@pytest.fixture(scope="module")
def scene_clip(tmp_path_factory):
    """4 s at 10 fps: red until 2.0 s, then green."""
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    return make_video(path, seconds=4.0, fps=10, scenes=[(0.0, RED), (2.0, GREEN)], counter=True)


def test_scene_change_is_seen_on_both_sides(scene_clip):
    before, after = sample_frames(scene_clip, [1.9, 2.1], 160, 90)

    assert_colour(before.image, RED)
    assert_colour(after.image, GREEN)
    assert (before.t_s, after.t_s) == (1.9, 2.1)


def test_output_is_requested_size_rgb_uint8_contiguous(scene_clip):
    (frame,) = sample_frames(scene_clip, [1.0], 64, 36)

    assert frame.image.shape == (36, 64, 3)
    assert frame.image.dtype == np.uint8
    assert frame.image.flags["C_CONTIGUOUS"]


def test_sparser_sampling_keeps_every_nth_frame(scene_clip):
    times = [i * 0.5 for i in range(8)]

    frames = sample_frames(scene_clip, times, 80, 45)

    assert [f.t_s for f in frames] == times


def test_t_s_is_the_nearest_frames_pts_not_the_request(scene_clip):
    frames = sample_frames(scene_clip, [0.04, 0.06, 1.23, 1.27], 80, 45)

    assert [f.t_s for f in frames] == [0.0, 0.1, 1.2, 1.3]
    for frame in frames:
        # A real PTS on a 10 fps clip is a whole number of tenths.
        assert Fraction(frame.t_s).limit_denominator(1000) * 10 % 1 == 0


def test_denser_sampling_than_source_repeats_frames(scene_clip):
    frames = sample_frames(scene_clip, [1.00, 1.02, 1.04], 80, 45)

    assert [f.t_s for f in frames] == [1.0, 1.0, 1.0]


def test_times_past_the_end_get_the_last_frame(scene_clip):
    frames = sample_frames(scene_clip, [3.85, 5.0, 9.0], 80, 45)

    assert [f.t_s for f in frames] == [3.9, 3.9, 3.9]
    for frame in frames:
        assert_colour(frame.image, GREEN)


def test_window_in_the_middle_seeks(tmp_path):
    # Keyframes every 2.5 s: one window starts on the keyframe at 5.0 s, one between keyframes.
    path = make_video(
        tmp_path / "long.mp4",
        seconds=8.0,
        fps=10,
        gop=25,
        scenes=[(float(i), colour) for i, colour in enumerate(SECOND_COLOURS)],
    )

    for times in ([5.0, 5.5], [6.3, 7.0]):
        frames = sample_frames(path, times, 80, 45)

        assert [f.t_s for f in frames] == times
        for t, frame in zip(times, frames, strict=True):
            assert_colour(frame.image, SECOND_COLOURS[int(t)])


def test_variable_frame_rate_stamps_true_pts(tmp_path):
    scenes = [(0.0, RED), (1.5, GREEN)]
    path = make_video(tmp_path / "vfr.mp4", seconds=3.0, vfr=True, scenes=scenes)
    pts = vfr_times(3.0)
    times = [0.1, 0.15, 1.0, 1.4, 2.0]

    frames = sample_frames(path, times, 80, 45)

    for t, frame in zip(times, frames, strict=True):
        nearest = min(pts, key=lambda p: abs(p - t))
        assert frame.t_s == nearest
        assert_colour(frame.image, RED if nearest < 1.5 else GREEN)
    # Irregular gaps of 1/30 and 1/5 s: 0.1 is nearer 1/30, 0.15 nearer 7/30.
    assert frames[0].t_s == pytest.approx(1 / 30)
    assert frames[1].t_s == pytest.approx(7 / 30)


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotated_recording_comes_out_upright(tmp_path, rotation):
    path = make_video(
        tmp_path / "rot.mp4", seconds=1.0, size=(160, 90), rotation=rotation, bottom=BLUE
    )
    info = probe(path)
    width, height = info.display_size

    (frame,) = sample_frames(path, [0.5], width, height, rotation=info.rotation)

    assert frame.image.shape == (90, 160, 3)
    assert frame.image.flags["C_CONTIGUOUS"]
    assert_colour(frame.image, RED, row=0.1)
    assert_colour(frame.image, BLUE, row=0.9)


def test_no_times_no_work(scene_clip):
    assert sample_frames(scene_clip, [], 80, 45) == []


def test_unsorted_times_are_a_caller_bug(scene_clip):
    with pytest.raises(ValueError, match="sorted"):
        sample_frames(scene_clip, [2.0, 1.0], 80, 45)


@pytest.mark.parametrize("name", ["random", "truncated", "audio_only"])
def test_unusable_file_raises_unsupported_media(tmp_path, name):
    path = make_bad_inputs(tmp_path)[name]

    with pytest.raises(UnsupportedMedia):
        sample_frames(path, [0.0, 0.5], 80, 45)


def test_hwaccel_gives_the_same_frames_or_says_why_not(scene_clip, monkeypatch) -> None:
    """sampling.hwaccel = "cuda" (NVDEC). Where no CUDA device can be opened (this CI machine),
    decoding goes on on the CPU, with the reason logged once per process; where one can (a GPU
    box), the hardware path must choose the same frames at the same times."""
    monkeypatch.setattr(sampler, "HW_UNAVAILABLE", {})
    times = [0.5, 1.9, 2.1, 3.5]
    plain = sample_frames(scene_clip, times, 80, 45)
    with capture_logs() as logs:
        first = sample_frames(scene_clip, times, 80, 45, hwaccel="cuda")
        second = sample_frames(scene_clip, times, 80, 45, hwaccel="cuda")
    for got in (first, second):
        assert [f.t_s for f in got] == [f.t_s for f in plain]
        for a, b in zip(got, plain, strict=True):
            # Bit-exact decoding, but the device's NV12 output may be converted a little differently.
            assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 3
    warned = [e for e in logs if e["event"] == "hwaccel_unavailable"]
    if "cuda" in sampler.HW_UNAVAILABLE:
        assert len(warned) == 1 and warned[0]["hwaccel"] == "cuda"
        assert warned[0]["reason"].startswith("FFmpeg could not open a cuda device for decoding: ")
    else:
        assert warned == []


def test_hwaccel_does_not_hide_a_bad_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sampler, "HW_UNAVAILABLE", {})
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(UnsupportedMedia, match="cannot open media"):
        sample_frames(bad, [0.0], 80, 45, hwaccel="cuda")
    assert sampler.HW_UNAVAILABLE == {}  # the file was bad, not the device
