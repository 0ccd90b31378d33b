"""Typed configuration: `load_config(path) -> Config`, every error reported with its key path."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_MODEL = "Qwen/Qwen3-VL-2B-Instruct"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def default_state_dir() -> Path:
    """Where the SQLite store lives by default: systemd's StateDirectory, else XDG state home."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "framewatch"


class StorageConfig(_Section):
    url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store. Default: a SQLite file framewatch.db in the "
        "state directory ($STATE_DIRECTORY under systemd, else ~/.local/state/framewatch). "
        "A relative sqlite path is relative to the config file.",
    )


class ModelConfig(_Section):
    backend: Literal["transformers"] = Field(
        "transformers", description="Inference backend; a plugin's make_analyzer may replace it."
    )
    name: str = Field(
        DEFAULT_MODEL,
        description="Hugging Face model id or a local directory with a Qwen3-VL checkpoint.",
    )
    revision: str | None = Field(None, description="Model revision (branch, tag or commit).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on a GPU that supports it, float32 on the CPU."
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    attn_implementation: str | None = Field(
        None, description="sdpa, eager or flash_attention_2 (when installed); None: transformers' choice."
    )
    max_new_tokens: int = Field(1024, ge=8, le=32768, description="Upper bound on generated tokens per chunk.")
    prefill_chunk_size: int | None = Field(
        None, ge=64, description="Chunked prefill (bounds activation memory on a GPU); None: off."
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("must be auto, cpu, cuda or cuda:N")


class ChunkingConfig(_Section):
    seconds: float = Field(300.0, gt=0, description="Length L of each chunk in seconds.")
    overlap_seconds: float = Field(5.0, ge=0, description="Overlap O between consecutive chunks.")

    @model_validator(mode="after")
    def _overlap_below_length(self) -> ChunkingConfig:
        if self.overlap_seconds >= self.seconds:
            raise ValueError("overlap_seconds must be smaller than seconds")
        return self


class SamplingConfig(_Section):
    fps: float = Field(2.0, gt=0, le=60, description="Frames sampled per second of video.")
    max_side: int = Field(
        640, ge=32, le=4096, description="Longest side of a frame sent to the model, in pixels."
    )
    max_pixels: int | None = Field(
        None, ge=32 * 32, description="Optional pixel budget per frame (width x height)."
    )


class AnalysisConfig(_Section):
    profile: str = Field("general", description="Prompt profile: general, lecture, meeting, surveillance, screen.")
    prompt: str | None = Field(None, description="Your own instructions; replaces the profile's.")
    max_events: int = Field(12, ge=1, le=100, description="Most events the model may report per chunk.")
    label_chars: int = Field(48, ge=4, le=200, description="Longest label the schema allows.")
    description_chars: int = Field(240, ge=8, le=4000, description="Longest description the schema allows.")
    merge_tolerance_s: float = Field(
        2.0, ge=0, description="Events with the same label this close in overlapping chunks are one event."
    )


class Config(_Section):
    storage: StorageConfig = StorageConfig()
    model: ModelConfig = ModelConfig()
    chunking: ChunkingConfig = ChunkingConfig()
    sampling: SamplingConfig = SamplingConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    source: Path | None = Field(None, exclude=True, description="The file this was loaded from.")

    def storage_url(self) -> str:
        """The store's SQLAlchemy URL, with defaults and relative SQLite paths resolved."""
        url = self.storage.url
        if not url:
            path = default_state_dir() / "framewatch.db"
            return f"sqlite:///{path}"
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
            rel = url[len(prefix):]
            base = self.source.parent if self.source else Path.cwd()
            return prefix + str((base / rel).resolve())
        return url

    def model_name(self) -> str:
        """model.name, with a relative local directory resolved against the config file."""
        name = self.model.name
        if name.startswith((".", "/", "~")):
            base = self.source.parent if self.source else Path.cwd()
            return str((base / Path(name).expanduser()).resolve())
        return name


class ConfigError(Exception):
    """The config is unusable; `errors` holds (key path, value, message) triples."""

    def __init__(self, path: str | None, errors: list[tuple[str, Any, str]]):
        self.path = path
        self.errors = errors
        where = f"{path}: " if path else ""
        lines = [f"{where}{key}: {msg} (got {value!r})" for key, value, msg in errors]
        super().__init__("\n".join(lines))


def _errors_from(exc: ValidationError) -> list[tuple[str, Any, str]]:
    out = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append((key, err.get("input"), msg))
    return out


def parse_config(data: dict[str, Any], source: Path | None = None) -> Config:
    """Validate a config mapping (as read from TOML)."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(source) if source else None, _errors_from(exc)) from None
    return cfg.model_copy(update={"source": source.resolve() if source else None})


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a TOML config file; None gives the defaults."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(p), [("(file)", str(p), "config file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [("(file)", str(p), f"cannot read: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [("(file)", str(p), f"not valid TOML: {exc}")]) from None
    return parse_config(data, p)
