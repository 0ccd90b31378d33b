"""What the speech recogniser costs in memory, estimated without loading it: its weights at the
compute type, the encoder's working set for a batch of segments, and (on the CPU, where the
detector always runs) one chunk's audio window and the voice activity detector over it.

The model's shape comes from its model.bin header (CTranslate2's format: each variable's name,
shape and type before its bytes, so no weights are read) for a local directory or a model in the
Hugging Face cache, else from the published sizes of faster-whisper's named models. On a GPU the
estimate is added to the chunk's budget (daemon/engine/budget.py); on the CPU, whose memory is
not budgeted, `framewatch plan` reports it. The per-second cost of the detector was measured
(bench/RESULTS-speech.md); the rest is arithmetic, not a measurement.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.engine.speech.asr import AsrSettings
from daemon.engine.speech.audio import RATE

if TYPE_CHECKING:
    from daemon.config import Config

# Published architectures of faster-whisper's named models: (parameters, d_model, encoder heads).
KNOWN_MODELS = {
    "tiny": (39_000_000, 384, 6),
    "base": (74_000_000, 512, 8),
    "small": (244_000_000, 768, 12),
    "medium": (769_000_000, 1024, 16),
    "large": (1_550_000_000, 1280, 20),
    "distil-small.en": (166_000_000, 768, 12),
    "distil-medium.en": (394_000_000, 1024, 16),
    "distil-large": (756_000_000, 1280, 20),
    "turbo": (809_000_000, 1280, 20),
}
# The faster-whisper names and the hub repositories they stand for.
_REPO = {
    **{n: f"Systran/faster-whisper-{n}" for n in ("tiny", "base", "small", "medium")},
    **{f"{n}.en": f"Systran/faster-whisper-{n}.en" for n in ("tiny", "base", "small", "medium")},
    **{f"large-{v}": f"Systran/faster-whisper-large-{v}" for v in ("v1", "v2", "v3")},
    "large": "Systran/faster-whisper-large-v3",
    **{
        n: f"Systran/faster-{n.replace('distil-', 'distil-whisper-')}"
        for n in ("distil-small.en", "distil-medium.en", "distil-large-v2", "distil-large-v3")
    },
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}
COMPUTE_BYTES = {"int8": 1, "float16": 2, "bfloat16": 2, "float32": 4}
FRAMES = 1500  # encoder positions of one 30-s window
# The detector scores 32-ms windows many at once; measured +123 MB over 300 s, +212 MB over 600 s.
VAD_BYTES_PER_S = 0.42e6
# cuBLAS/cuDNN workspace CTranslate2 holds beside its weights on a GPU (an allowance).
GPU_WORKSPACE = 256 * 2**20


@dataclass(frozen=True, slots=True)
class Shape:
    """What memory depends on: parameter count, model width, encoder attention heads."""

    parameters: int
    d_model: int
    heads: int
    source: str  # "model.bin" or "published size"


@dataclass(frozen=True, slots=True)
class AsrMemory:
    """Bytes the recogniser needs on `device`: weights, and what one chunk adds while it runs."""

    device: str
    compute_type: str
    weights: int
    working: int
    source: str

    @property
    def total(self) -> int:
        return self.weights + self.working

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


def read_shape(model_bin: Path) -> Shape:
    """The shape of a CTranslate2 Whisper from its model.bin header (ValueError when it is not
    one). Only headers are read; each variable's bytes are skipped."""
    params = d_model = heads = 0
    with model_bin.open("rb") as f:

        def take(fmt: str) -> int:
            data = f.read(struct.calcsize(fmt))
            if len(data) != struct.calcsize(fmt):
                raise ValueError(f"{model_bin}: cut short")
            return int(struct.unpack("<" + fmt, data)[0])

        def name() -> str:
            return f.read(take("H")).rstrip(b"\0").decode("utf-8")

        if take("I") < 5:
            raise ValueError(f"{model_bin}: CTranslate2 binary version too old to read")
        spec = name()
        if "whisper" not in spec.lower():
            raise ValueError(f"{model_bin}: a {spec!r} model, not Whisper")
        take("I")  # revision
        for _ in range(take("I")):
            var = name()
            dims = [take("I") for _ in range(take("B"))]
            take("B")  # type id
            size = take("I")
            if var == "encoder/num_heads":
                heads = int.from_bytes(f.read(size), "little", signed=True)
                continue
            f.seek(size, 1)
            count = 1
            for d in dims:
                count *= d
            if dims:
                params += count
            if var == "encoder/conv1/weight":
                d_model = dims[0]
    if not (params and d_model and heads):
        raise ValueError(f"{model_bin}: no Whisper encoder found")
    return Shape(params, d_model, heads, "model.bin")


def model_shape(model: str) -> Shape | None:
    """The shape of speech.model: from model.bin when the directory (or the hub cache) has it,
    else from the published size of a faster-whisper name; None when unknown."""
    candidates = [Path(model).expanduser() / "model.bin"]
    repo = _REPO.get(model, model if "/" in model and not model.startswith((".", "/")) else None)
    if repo is not None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(repo, "model.bin")
            if isinstance(cached, str):
                candidates.append(Path(cached))
        except ImportError:
            pass
    for path in candidates:
        if path.is_file():
            try:
                return read_shape(path)
            except (OSError, ValueError):
                continue
    # A faster-whisper name, or a hub id such as Systran/faster-distil-whisper-large-v3.
    base = re.sub(r"^faster-(distil-)?whisper-", r"\1", model.rsplit("/", 1)[-1])
    base = base.removesuffix(".en")
    for known in sorted(KNOWN_MODELS, key=len, reverse=True):
        if base == known or base.startswith(known + "-"):
            params, width, heads = KNOWN_MODELS[known]
            return Shape(params, width, heads, "published size")
    return None


def asr_memory(config: Config) -> AsrMemory | None:
    """The recogniser's memory for `config` (None when speech is off or the model unknown)."""
    if config.speech.mode == "off":
        return None
    s = AsrSettings.from_config(config)
    shape = model_shape(s.model)
    if shape is None:
        return None
    kind = s.compute_type.split("_")[0]  # int8_float16 stores int8 weights
    element = COMPUTE_BYTES.get(kind, 4)
    act = 2 if s.device.startswith("cuda") and kind != "float32" else 4
    # Per segment in a batch: the encoder's attention scores and a few activations of width
    # d_model, over the 1500 positions of a 30-s window; and its log-mel features.
    per_segment = shape.heads * FRAMES * FRAMES * act + FRAMES * shape.d_model * act * 8
    per_segment += 80 * 2 * FRAMES * 4
    working = s.batch_size * per_segment
    if s.device.startswith("cuda"):
        working += GPU_WORKSPACE
    window_s = config.chunking.seconds + 2 * s.context_s
    host = int(window_s * RATE * 4 + window_s * VAD_BYTES_PER_S)
    if not s.device.startswith("cuda"):
        working += host
    return AsrMemory(s.device, s.compute_type, shape.parameters * element, working, shape.source)
