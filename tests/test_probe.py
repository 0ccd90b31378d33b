"""probe(): what generated clips report, and a readable UnsupportedMedia for every broken input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from daemon.engine.probe import MAX_SIDE, UnsupportedMedia, probe
from tests.daemon_proc import child_rss
from tests.media import BLUE, RED, make_bad_inputs, make_huge_header, make_video, vfr_times


def test_constant_rate_clip(tmp_path):
    info = probe(make_video(tmp_path / "cfr.mp4", seconds=3.0, fps=10, size=(160, 90)))

    assert info.duration_s == pytest.approx(3.0, abs=0.01)
    assert info.fps == pytest.approx(10.0)
    assert (info.width, info.height) == (160, 90)
    assert info.display_size == (160, 90)
    assert info.rotation == 0
    assert info.codec == "h264"
    assert info.frame_count == 30
    assert info.variable_frame_rate is False
    assert info.path == str(tmp_path / "cfr.mp4")


def test_other_codec_and_container(tmp_path):
    path = make_video(tmp_path / "clip.mkv", seconds=2.0, fps=5, codec="mpeg4", size=(96, 64))
    info = probe(path)

    assert info.codec == "mpeg4"
    assert info.duration_s == pytest.approx(2.0, abs=0.01)
    assert info.fps == pytest.approx(5.0)
    assert (info.width, info.height) == (96, 64)


def test_variable_frame_rate_clip(tmp_path):
    info = probe(make_video(tmp_path / "vfr.mp4", seconds=3.0, vfr=True))

    assert info.variable_frame_rate is True
    times = vfr_times(3.0)
    assert info.frame_count == len(times)
    # The last frame lasts one more gap after its PTS.
    assert times[-1] < info.duration_s <= times[-1] + 0.2 + 1e-6


def test_duration_without_header_comes_from_last_packet(tmp_path):
    # Matroska written "live" carries no duration, like a recording whose writer was killed.
    path = make_video(tmp_path / "live.mkv", seconds=3.0, fps=10, container_options={"live": "1"})

    assert probe(path).duration_s == pytest.approx(3.0, abs=0.11)


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotation_is_read_from_the_display_matrix(tmp_path, rotation):
    info = probe(make_video(tmp_path / "rot.mp4", seconds=0.5, size=(160, 90), rotation=rotation))

    assert info.rotation == rotation
    sideways = rotation in (90, 270)
    assert (info.width, info.height) == ((90, 160) if sideways else (160, 90))
    assert info.display_size == (160, 90)


@pytest.mark.parametrize("rotation", [90, 270])
def test_rotation_convention_matches_ffmpeg(tmp_path, rotation):
    """ffmpeg's player-style autorotation shows make_video's picture upright: the sign is right."""
    path = make_video(
        tmp_path / "rot.mp4", seconds=0.3, size=(64, 32), rotation=rotation, bottom=BLUE
    )
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1"]
        + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    upright = np.frombuffer(raw, dtype=np.uint8).reshape(32, 64, 3).astype(int)

    assert np.abs(upright[4, 32] - RED).max() < 40
    assert np.abs(upright[-4, 32] - BLUE).max() < 40
    assert probe(path).rotation == rotation


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    return make_bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("empty", ["empty", "0 bytes"]),
        ("random", ["not a media file"]),
        ("text", ["not a media file"]),
        ("truncated", ["truncated", "moov"]),
        ("audio_only", ["no video stream", "audio-only"]),
        ("huge", ["16000x16000", f"{MAX_SIDE}-pixel limit"]),
    ],
)
def test_bad_input_is_refused_with_a_reason(bad_inputs, name, words):
    with pytest.raises(UnsupportedMedia) as caught:
        probe(bad_inputs[name])

    assert str(caught.value) == caught.value.reason
    for word in words:
        assert word in caught.value.reason


def test_huge_header_is_refused_before_allocating(tmp_path):
    path = make_huge_header(tmp_path / "huge.mkv")
    with pytest.raises(UnsupportedMedia, match="exceeds"):
        probe(path)
    # The same in a fresh process, whose peak RSS is this probe's alone: one 16000x16000 picture
    # would be hundreds of MiB on top of the interpreter and PyAV (about 60 MiB).
    code, out, rss = child_rss(
        "-c", "from daemon.engine.probe import probe; import sys; probe(sys.argv[1])", str(path)
    )
    assert code == 1 and "exceeds" in out, out
    assert rss < 200, f"the probe peaked at {rss} MiB"


def test_moov_cut_short_is_called_truncated(tmp_path):
    data = make_video(tmp_path / "whole.mp4", seconds=1.0).read_bytes()
    cut = tmp_path / "cut.mp4"
    # Keep the moov header and part of mvhd: the sample tables that locate frames are lost.
    cut.write_bytes(data[: data.find(b"moov") + 60])

    with pytest.raises(UnsupportedMedia, match="truncated"):
        probe(cut)


def test_missing_file(tmp_path):
    with pytest.raises(UnsupportedMedia, match="cannot read file: no such file"):
        probe(tmp_path / "gone.mp4")


def test_directory_is_not_a_recording(tmp_path):
    with pytest.raises(UnsupportedMedia, match="not a regular file: it is a directory"):
        probe(tmp_path)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    # open() of a FIFO for reading blocks until a writer comes: the probe never opens one (and
    # would not block if one were swapped in after its check: O_NONBLOCK, then fstat).
    os.mkfifo(tmp_path / "pipe.mp4")
    with pytest.raises(UnsupportedMedia, match="not a regular file: it is a FIFO"):
        probe(tmp_path / "pipe.mp4")


def test_a_fifo_swapped_in_after_the_check_opens_without_blocking(tmp_path, monkeypatch):
    # The race the lstat check alone cannot close: the check passes (patched here: nothing else
    # can make a path change kind between two system calls on demand), the open meets a FIFO.
    from daemon import files

    os.mkfifo(tmp_path / "pipe.mp4")
    monkeypatch.setattr(files, "check_regular", lambda path: os.stat(path))
    with pytest.raises(files.NotRegularFile, match="FIFO"):
        files.open_regular(tmp_path / "pipe.mp4")


def test_unreadable_file(tmp_path):
    path = make_video(tmp_path / "secret.mp4", seconds=0.3)
    path.chmod(0)
    tmp_path.chmod(0o755)
    # Root reads files whatever their mode, so probe as an unprivileged user in a child process
    # (CI runs as root), dropping privileges after the imports (root's home holds the stdlib);
    # as a normal user the child simply keeps our uid.
    code = (
        "import os, sys\n"
        "from daemon.engine.probe import UnsupportedMedia, probe\n"
        "if os.geteuid() == 0: os.setgid(65534); os.setuid(65534)\n"
        "try:\n    probe(sys.argv[1])\nexcept UnsupportedMedia as e:\n    print(e.reason)\n"
    )
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    assert "permission denied" in r.stdout, r.stdout + r.stderr
