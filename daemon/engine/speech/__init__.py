"""Speech beside vision: what was said in a chunk, on the recording's clock (pure: no store).

- `audio.py`: a window of the audio track as 16 kHz mono samples (PyAV), with what was missing;
- `asr.py`: the recogniser (faster-whisper on CTranslate2, loaded once per process) and one
  chunk's `Transcript`, segment times from the bundled voice activity detector;
- `merge.py`: one copy of a segment both overlapping chunks heard;
- `memory.py`: what the recogniser costs in memory, for the budget and `framewatch plan`.

The worker transcribes a chunk while preparing its frames (daemon/engine/pipeline.py), the
transcript goes into the chunk's prompt (prompts.py), and the segments are stored with the
chunk's events in one transaction.
"""

from __future__ import annotations

from daemon.engine.speech.asr import AsrSettings, Transcriber, Transcript, detect_speech
from daemon.engine.speech.audio import AudioError, AudioWindow, read_audio
from daemon.engine.speech.merge import merge_speech, same_speech

__all__ = [
    "AsrSettings",
    "AudioError",
    "AudioWindow",
    "Transcriber",
    "Transcript",
    "detect_speech",
    "merge_speech",
    "read_audio",
    "same_speech",
]
