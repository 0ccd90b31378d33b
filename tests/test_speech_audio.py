"""Audio windows for speech, from awkward files: no audio, damaged packets, a stream that cannot
be decoded, 7.1 in three codecs, audio shorter than the video or starting late, MPEG-TS, five
hours of silence. Each gives a readable reason or a correct (possibly empty) result, on the
video's clock. The voice activity detector (faster-whisper's, no Whisper model) finds the speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.engine.speech import AsrSettings, AudioError, detect_speech, read_audio
from tests.speech_media import Truth, mux, speech_track

ITEMS = (
    (2.0, "The quick brown fox jumps over the lazy dog."),
    (9.0, "Framewatch analyses long recordings."),
)
VAD = AsrSettings(model="unused")


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, Truth]:
    return speech_track(20.0, ITEMS)


def spans(path: Path, start: float, end: float) -> list[tuple[float, float]]:
    return detect_speech(read_audio(path, start, end), VAD)


def close(found: list[tuple[float, float]], truth: Truth, shift: float = 0.0) -> bool:
    return len(found) == len(truth) and all(
        abs(s - on - shift) <= 0.5 and abs(e - off - shift) <= 0.5
        for (s, e), (on, off, _) in zip(found, truth, strict=True)
    )


def test_no_audio_stream_is_an_empty_window(tmp_path: Path) -> None:
    w = read_audio(mux(tmp_path / "v.mp4", None, video_s=10), 0, 10)
    assert w.empty and w.note == "no audio stream" and detect_speech(w, VAD) == []


def test_some_damaged_packets_are_silence_with_a_note(tmp_path: Path, speech: tuple) -> None:
    track, truth = speech
    rng = np.random.default_rng(1)
    p = mux(
        tmp_path / "c.mp4",
        track,
        video_s=20,
        damage=lambda i, d: rng.bytes(len(d)) if 560 <= i < 620 else d,
    )
    w = read_audio(p, 0, 20)
    assert w.decode_errors == 60
    assert w.note is not None and "60 of" in w.note and "audio packets undecodable" in w.note
    assert close(detect_speech(w, VAD), truth)  # both utterances lie outside the damage


@pytest.mark.parametrize("damage", ["random", "truncated", "zeroed"])
def test_undecodable_stream_raises_a_reason(tmp_path: Path, speech: tuple, damage: str) -> None:
    rng = np.random.default_rng(2)
    broken = {
        "random": lambda i, d: rng.bytes(len(d)),
        "truncated": lambda i, d: d[:3],
        "zeroed": lambda i, d: bytes(len(d)),
    }[damage]
    p = mux(tmp_path / "c.mkv", speech[0], video_s=20, damage=broken)
    with pytest.raises(AudioError, match=r"^audio stream undecodable \(aac: .*Invalid data"):
        read_audio(p, 0, 20)


@pytest.mark.parametrize(
    "codec,ext,channels",
    [("aac", "mp4", [2]), ("aac", "mp4", [0, 1]), ("flac", "mkv", [4]), ("opus", "mkv", [2])],
    ids=["aac-centre", "aac-front-LR", "flac-back-left", "opus-centre"],
)
def test_7_1_is_mixed_down_on_time(
    tmp_path: Path, speech: tuple, codec: str, ext: str, channels: list[int]
) -> None:
    track, truth = speech
    eight = np.zeros((8, len(track)), np.float32)
    eight[channels] = track
    w = read_audio(mux(tmp_path / f"a.{ext}", eight, video_s=20, layout="7.1", codec=codec), 0, 20)
    assert w.stream["channels"] == 8
    assert close(detect_speech(w, VAD), truth)


def test_audio_shorter_than_the_video(tmp_path: Path, speech: tuple) -> None:
    p = mux(tmp_path / "s.mp4", speech[0], video_s=40)
    w = read_audio(p, 16, 36)
    assert w.note is not None and w.note.startswith("audio ends at 20.0")
    assert detect_speech(w, VAD) == []
    w = read_audio(p, 32, 40)
    assert w.empty and w.note == "no audio in this window"


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
@pytest.mark.parametrize(
    "video_start,audio_start",
    [(0.0, 3.0), (10.0, 12.0), (5.0, 4.0)],
    ids=["late", "both-late", "early"],
)
def test_the_clock_is_the_videos(
    tmp_path: Path, speech: tuple, ext: str, video_start: float, audio_start: float
) -> None:
    track, truth = speech
    p = mux(
        tmp_path / f"o.{ext}",
        track,
        video_s=30,
        video_start_s=video_start,
        audio_start_s=audio_start,
    )
    shift = audio_start - video_start
    assert close(spans(p, 0, 30), truth, shift)
    # A window that needs a seek (Matroska cannot seek on its audio stream: container-level).
    later = [s for s in spans(p, 8.5 + shift, 30) if s[0] > 8.5 + shift]
    assert close(later, truth[1:], shift)


def test_mpeg_ts_audio_after_the_video(tmp_path: Path, speech: tuple) -> None:
    track, truth = speech
    p = mux(tmp_path / "s.ts", track, video_s=30, audio_start_s=2.0, h264=True)
    assert close(spans(p, 0, 30), truth, 2.0)


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_five_hours_of_silence_decode_only_the_window(tmp_path: Path, ext: str) -> None:
    total = 5 * 3600.0
    p = mux(
        tmp_path / f"long.{ext}",
        np.zeros(48000, np.float32),
        video_s=total,
        silent_until_s=total,
    )
    w = read_audio(p, total - 330, total)  # the last 300-s chunk with its 30 s of context
    # Only the window's packets (1024 samples at 48 kHz, plus the seek margin), not 5 hours'
    # (about 844,000); the samples are the window's.
    assert w.packets < 16_000
    assert len(w.samples) == 330 * 16000
    assert not w.empty and detect_speech(w, VAD) == []


def test_a_file_that_is_not_media_raises_a_reason(tmp_path: Path) -> None:
    p = tmp_path / "x.mp4"
    p.write_bytes(b"not media at all" * 100)
    with pytest.raises(AudioError, match="^cannot open media"):
        read_audio(p, 0, 10)
