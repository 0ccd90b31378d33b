"""`[speech]`: a transcript of each chunk's audio beside the visual events."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from daemon.config.sections import _Section

# faster-whisper's name for Systran/faster-whisper-small: multilingual (English included), so
# speech.language = "auto" can detect the language; fetched from the hub on first use.
DEFAULT_SPEECH_MODEL = "small"


class SpeechConfig(_Section):
    """`[speech]`: a transcript of each chunk's audio, on the same clock as the visual events
    (faster-whisper / CTranslate2, segment times from its bundled voice activity detector)."""

    mode: Literal["off", "on", "auto"] = Field(
        "off",
        description="off; on: transcribe every recording; auto: only those with an audio stream.",
    )
    model: str = Field(
        DEFAULT_SPEECH_MODEL,
        description="faster-whisper model name (tiny, base, small, medium, large-v3, ...), a "
        "CTranslate2 Whisper model id on the Hugging Face hub, or a local directory with one "
        "(model.bin and tokenizer.json). Names are fetched on first use.",
    )
    language: str = Field(
        "auto",
        pattern=r"^(auto|[a-z]{2,3})$",
        description="auto: detected per chunk; else the spoken language's code (en, de, ...).",
    )
    device: str = Field("cpu", description="cpu, cuda or cuda:N.")
    compute_type: Literal[
        "auto",
        "int8",
        "int8_float32",
        "int8_float16",
        "int8_bfloat16",
        "float16",
        "bfloat16",
        "float32",
    ] = Field(
        "auto", description="CTranslate2 compute type; auto: int8 on the CPU, float16 on a GPU."
    )
    vad: bool = Field(
        True,
        description="Segment boundaries from the voice activity detector (Silero, shipped with "
        "faster-whisper); false: from the model's timestamp tokens.",
    )
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="Speech probability threshold.")
    min_silence_ms: int = Field(
        500, ge=0, le=10_000, description="A pause this long ends a segment."
    )
    speech_pad_ms: int = Field(
        100, ge=0, le=2000, description="Padding added to each side of a detected segment."
    )
    beam_size: int = Field(5, ge=1, le=20, description="Beam search width (1: greedy).")
    batch_size: int | None = Field(
        None, ge=1, le=64, description="Segments decoded together; None: 2 on the CPU, 8 on a GPU."
    )
    cpu_threads: int = Field(
        0, ge=0, le=256, description="CTranslate2 threads on the CPU; 0: its default."
    )
    max_new_tokens: int = Field(
        224,
        ge=8,
        le=440,
        description="Most tokens written for one segment (Whisper's limit is 448).",
    )
    context_s: float = Field(
        30.0,
        ge=0,
        le=300,
        description="Audio read beyond each end of a chunk, so a segment that crosses a chunk "
        "border is seen whole by both chunks (and stored once).",
    )
    prompt_tokens: int = Field(
        1000,
        ge=0,
        le=32_768,
        description="Most tokens of transcript added to a chunk's prompt (0: none); the memory "
        "budget counts them.",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("must be cpu, cuda or cuda:N")
