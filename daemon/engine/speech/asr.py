"""The speech recogniser: a faster-whisper (CTranslate2) model loaded once per process, and the
transcript of one chunk's window.

Segment boundaries come from faster-whisper's bundled voice activity detector (Silero, run on
onnxruntime's CPU provider), never from Whisper's timestamp tokens: each detected span is
transcribed on its own (`without_timestamps`, batched through `clip_timestamps`), so a segment's
start and end are the detector's. With `speech.vad = false` the model's own timestamps decide.
Each chunk reads `context_s` of audio beyond both of its ends, so a segment that crosses a chunk
border is seen whole, with the same times, by both chunks (merge.py keeps one copy).
faster_whisper is imported only when a model is loaded.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from daemon.engine.analyzer import ModelLoadError
from daemon.engine.speech.audio import AudioError, AudioWindow, read_audio
from daemon.models import Utterance

if TYPE_CHECKING:
    from collections.abc import Sequence

    from daemon.config import Config

log = structlog.get_logger(__name__)

# Whisper hears at most 30 s at once; the detector splits longer speech there.
MAX_SPAN_S = 30.0
# Audio given to the model on each side of a detected span (the reported times stay the span's).
SPAN_PAD_S = 0.2
# Spans per call of the batched pipeline: it computes every span's 30-s features up front.
SPANS_PER_CALL = 32


@dataclass(frozen=True, slots=True)
class AsrSettings:
    """How speech is recognised: the `[speech]` section as the recogniser applies it."""

    model: str
    device: str = "cpu"
    compute_type: str = "int8"
    language: str | None = None  # None: detected per chunk
    vad: bool = True
    vad_threshold: float = 0.5
    min_silence_ms: int = 500
    speech_pad_ms: int = 100
    beam_size: int = 5
    batch_size: int = 2
    cpu_threads: int = 0
    max_new_tokens: int = 224
    context_s: float = 30.0

    @classmethod
    def from_config(cls, config: Config) -> AsrSettings:
        s = config.speech
        gpu = s.device.startswith("cuda")
        return cls(
            model=config.speech_model(),
            device=s.device,
            compute_type=s.compute_type if s.compute_type != "auto" else resolve_compute(s.device),
            language=None if s.language == "auto" else s.language,
            vad=s.vad,
            vad_threshold=s.vad_threshold,
            min_silence_ms=s.min_silence_ms,
            speech_pad_ms=s.speech_pad_ms,
            beam_size=s.beam_size,
            batch_size=s.batch_size or (8 if gpu else 2),
            cpu_threads=s.cpu_threads,
            max_new_tokens=s.max_new_tokens,
            context_s=s.context_s,
        )

    def provenance(self) -> dict[str, Any]:
        """What a stored segment records of the settings that produced it."""
        out = asdict(self)
        out["language"] = self.language or "auto"
        return out


def resolve_compute(device: str) -> str:
    """speech.compute_type = "auto": int8 on the CPU (2.7-4x faster than float32 for Whisper on
    CTranslate2), float16 on a GPU. The one copy of this rule (the memory estimate uses it)."""
    return "float16" if device.startswith("cuda") else "int8"


@dataclass(frozen=True, slots=True)
class Transcript:
    """One chunk's speech: the utterances that touch [start_s, end_s], whole, by time.

    `window` is the audio that was read (the chunk and its context). `note` says what was
    missing in the audio; `error` why there is no transcript (the chunk's visual analysis goes
    on without one)."""

    utterances: tuple[Utterance, ...] = ()
    language: str | None = None
    window: tuple[float, float] | None = None
    note: str | None = None
    error: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        """The chunk-level record: what was read, found and said about it."""
        out: dict[str, Any] = {"segments": len(self.utterances), **self.stats}
        if self.window is not None:
            out["window"] = [round(self.window[0], 3), round(self.window[1], 3)]
        for key in ("language", "note", "error"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class Transcriber:
    """A loaded model and its settings; `transcribe` is safe to call from two threads (the
    worker's and the prefetch thread): CTranslate2 queues concurrent requests."""

    def __init__(self, model: Any, settings: AsrSettings):
        self.model = model
        self.settings = settings

    @classmethod
    def from_config(cls, config: Config) -> Transcriber:
        """Load speech.model. Raises ModelLoadError, whose message names the setting to change."""
        settings = AsrSettings.from_config(config)
        return cls(load_model(settings), settings)

    def provenance(self) -> dict[str, Any]:
        return self.settings.provenance()

    def transcribe(
        self, path: str, start_s: float, end_s: float, duration_s: float | None = None
    ) -> Transcript:
        """The speech of chunk [start_s, end_s] of `path`. Unusable audio, or a fault of the
        recogniser, gives a transcript with `error` set, never an exception: speech must not
        fail the visual analysis (and the chunk's provenance shows why it has none)."""
        s = self.settings
        a = max(0.0, start_s - s.context_s)
        b = end_s + s.context_s if duration_s is None else min(end_s + s.context_s, duration_s)
        b = max(b, end_s)
        t0 = time.perf_counter()
        try:
            window = read_audio(path, a, b)
        except AudioError as exc:
            return Transcript(window=(a, b), error=exc.reason, stats=_took(decode_s=t0))
        t1 = time.perf_counter()
        stats = _took(decode_s=(t0, t1))
        if window.empty:
            return Transcript(window=(a, b), note=window.note, stats=stats)
        try:
            if s.vad:
                spans = [(x, y) for x, y in detect_speech(window, s) if y > start_s and x < end_s]
                t2 = time.perf_counter()
                found, language = self._transcribe_spans(window, spans)
                stats |= _took(vad_s=(t1, t2), asr_s=t2) | {"spans": len(spans)}
            else:
                found, language = self._transcribe_timestamped(window, start_s, end_s)
                stats |= _took(asr_s=t1)
        except Exception as exc:  # the recogniser's own fault: the frames are still analysed
            log.exception("speech_recognition_failed")
            why = f"speech recognition failed ({type(exc).__name__}: {exc})"
            return Transcript(window=(a, b), note=window.note, error=why, stats=stats)
        said = tuple(u for u in found if u.text)
        if len(said) < len(found):
            stats["empty"] = len(found) - len(said)  # spans the model wrote no text for
        return Transcript(said, language, (a, b), window.note, None, stats)

    # -- steps ------------------------------------------------------------------------------

    def _transcribe_spans(
        self, window: AudioWindow, spans: Sequence[tuple[float, float]]
    ) -> tuple[list[Utterance], str | None]:
        """One utterance per span: the span's own times, the model's text for its audio. The
        language is detected once (on the first call's spans) unless configured."""
        from faster_whisper import BatchedInferencePipeline

        s = self.settings
        pipe = BatchedInferencePipeline(self.model)
        rate = self.model.feature_extractor.sampling_rate
        frames_per_s = self.model.frames_per_second
        length = len(window.samples) / window.rate
        language = s.language
        out: list[Utterance] = []
        for first in range(0, len(spans), SPANS_PER_CALL):
            group = spans[first : first + SPANS_PER_CALL]
            clips = []
            for x, y in group:
                lo = max(x - SPAN_PAD_S - window.start_s, 0.0)
                hi = min(y + SPAN_PAD_S - window.start_s, length, lo + MAX_SPAN_S)
                clips.append({"start": lo, "end": hi})
            # Each result is tagged with seek = its clip's start, after faster-whisper's own
            # conversion to whole samples, in 10 ms frames: rebuilt exactly to find the clip.
            seek_of = {
                int(int(c["start"] * rate) / rate * frames_per_s): i for i, c in enumerate(clips)
            }
            if len(seek_of) != len(clips):
                raise RuntimeError("two speech spans start within 10 ms of each other")
            segments, info = pipe.transcribe(
                window.samples,
                language=language,
                clip_timestamps=clips,
                beam_size=s.beam_size,
                batch_size=s.batch_size,
                max_new_tokens=s.max_new_tokens,
                without_timestamps=True,
                condition_on_previous_text=False,
                temperature=0.0,
                # Keep what was said: these thresholds only ever drop text.
                log_prob_threshold=None,
                no_speech_threshold=None,
                compression_ratio_threshold=None,
            )
            texts: list[list[str]] = [[] for _ in group]
            scores: list[Any] = [None] * len(group)
            for seg in segments:
                i = seek_of[seg.seek]
                texts[i].append(seg.text)
                scores[i] = seg
            language = info.language
            out += [
                Utterance(
                    start_s=x,
                    end_s=y,
                    text=" ".join("".join(texts[i]).split()),
                    language=language,
                    avg_logprob=_rounded(scores[i], "avg_logprob"),
                    no_speech_prob=_rounded(scores[i], "no_speech_prob"),
                )
                for i, (x, y) in enumerate(group)
            ]
        return out, language

    def _transcribe_timestamped(
        self, window: AudioWindow, start_s: float, end_s: float
    ) -> tuple[list[Utterance], str | None]:
        """speech.vad = false: the model's own segments and timestamps over the whole window,
        clipped to it; those that touch the chunk."""
        s = self.settings
        segments, info = self.model.transcribe(
            window.samples,
            language=s.language,
            beam_size=s.beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
            temperature=0.0,
            max_new_tokens=s.max_new_tokens,
        )
        out = []
        for seg in segments:
            x = min(window.start_s + max(seg.start, 0.0), window.end_s)
            y = min(window.start_s + max(seg.end, seg.start, 0.0), window.end_s)
            if y > start_s and x < end_s:
                out.append(
                    Utterance(
                        start_s=round(x, 3),
                        end_s=round(y, 3),
                        text=" ".join(seg.text.split()),
                        language=info.language,
                        avg_logprob=_rounded(seg, "avg_logprob"),
                        no_speech_prob=_rounded(seg, "no_speech_prob"),
                    )
                )
        return out, info.language


def detect_speech(window: AudioWindow, s: AsrSettings) -> list[tuple[float, float]]:
    """Absolute (start_s, end_s) of each stretch of speech faster-whisper's voice activity
    detector finds in `window` (it needs no Whisper model)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        threshold=s.vad_threshold,
        min_silence_duration_ms=s.min_silence_ms,
        # Pads the reported span: faster-whisper's 400 ms default puts an end 0.45 s late.
        speech_pad_ms=s.speech_pad_ms,
        max_speech_duration_s=MAX_SPAN_S,
    )
    rate = window.rate
    return [
        (round(window.start_s + t["start"] / rate, 3), round(window.start_s + t["end"] / rate, 3))
        for t in get_speech_timestamps(window.samples, options, sampling_rate=rate)
    ]


def load_model(s: AsrSettings) -> Any:
    """faster_whisper.WhisperModel for the settings. A local directory must hold model.bin and
    tokenizer.json (without the latter faster-whisper would fetch one from the hub); a name is
    fetched from the hub on first use. Raises ModelLoadError naming the setting to change."""
    path = Path(s.model).expanduser()
    local = s.model.startswith(("/", ".", "~")) or path.is_dir()
    if local:
        for needed in ("model.bin", "tokenizer.json"):
            if not (path / needed).is_file():
                raise ModelLoadError(
                    f"speech.model {s.model}: no {needed} there, not a CTranslate2 Whisper model "
                    f"directory. {_advice(s.model)}"
                )
    device, _, index = s.device.partition(":")
    t0 = time.perf_counter()
    try:
        from faster_whisper import WhisperModel

        model = WhisperModel(
            str(path) if local else s.model,
            device=device,
            device_index=int(index or 0),
            compute_type=s.compute_type,
            cpu_threads=s.cpu_threads,
        )
    except Exception as exc:  # hub, CTranslate2 and CUDA raise many types; say which and why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        log.warning("speech_model_load_failed", model=s.model, error=f"{type(exc).__name__}: {exc}")
        raise ModelLoadError(
            f"cannot load speech model {s.model!r} on {s.device} ({s.compute_type}): "
            f"{type(exc).__name__}: {first}. {_advice(s.model)}"
        ) from None
    log.info(
        "speech_model_loaded",
        model=s.model,
        device=s.device,
        compute_type=s.compute_type,
        seconds=round(time.perf_counter() - t0, 2),
    )
    return model


def _advice(name: str) -> str:
    fetch = (
        ""
        if name.startswith(("/", ".", "~"))
        else f", or allow network access to download {name!r}"
    )
    return (
        "Set speech.model to a local directory with a CTranslate2 Whisper model (model.bin, "
        "tokenizer.json; `framewatch make-test-model DIR --speech` writes a tiny one for checks)"
        f'{fetch}, or speech.mode = "off".'
    )


def _rounded(seg: Any, name: str) -> float | None:
    value = getattr(seg, name, None)
    return None if value is None else round(float(value), 4)


def _took(**steps: float | tuple[float, float]) -> dict[str, float]:
    """Seconds per step, from (start, end) perf_counter marks or a start that ends now."""
    now = time.perf_counter()
    out = {}
    for name, mark in steps.items():
        a, b = mark if isinstance(mark, tuple) else (mark, now)
        out[name] = round(b - a, 3)
    return out
