"""The core config sections: storage, model, chunking, sampling, analysis, [[watch]], daemon,
plugins, GPU and queue (daemon.config assembles them into `Config`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

DEFAULT_MODEL = "Qwen/Qwen3-VL-2B-Instruct"

# Built-in prompt profiles (analysis.profile, [[watch]] profile): one fixed task per kind of
# recording, saying exactly what to extract (daemon/engine/prompts.py adds the answer format).
PROFILES: dict[str, str] = {
    "general": (
        "List the distinct things that happen in this video: actions, scene changes, people or "
        "objects appearing or leaving, and text that appears on screen."
    ),
    "lecture": (
        "This is a lecture recording. List the topics as they are introduced, slide or board "
        "changes, definitions, worked examples and questions from the audience."
    ),
    "meeting": (
        "This is a meeting recording. List who starts presenting, screen-share changes, "
        "decisions, action items and questions."
    ),
    "surveillance": (
        "This is security camera footage. List every person or vehicle that enters or leaves, "
        "doors opening or closing, objects left or taken, and anything unusual."
    ),
    "screen": (
        "This is a screen recording. List the applications and windows shown, what the user does "
        "in them, errors or dialogs that appear and text that matters."
    ),
}


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
    media_dir: Path | None = Field(
        None,
        description="Where event thumbnails are kept (<media_dir>/<recording id>/<event id>.jpg). "
        "Default: a folder media beside a SQLite store's file, else media/<database>-<digest of the "
        "store's address> in the state directory ($STATE_DIRECTORY under systemd). A relative path is relative to the config file. "
        "Several boxes sharing a PostgreSQL store should point it at one shared folder.",
    )


class ModelConfig(_Section):
    backend: Literal["transformers", "openai"] = Field(
        "transformers",
        description="Inference backend: transformers in this process, or openai: an "
        "OpenAI-compatible server (vLLM) at model.base_url. A plugin's make_analyzer may replace it.",
    )
    base_url: str | None = Field(
        None, description="backend openai: the server's base URL, e.g. http://127.0.0.1:8000/v1."
    )
    api_key_env: str = Field(
        "FRAMEWATCH_API_KEY",
        description="backend openai: environment variable holding the API key (if any).",
    )
    api_key_file: Path | None = Field(
        None,
        description="backend openai: file holding the API key; a bare name is looked up in "
        "$CREDENTIALS_DIRECTORY (systemd LoadCredential=).",
    )
    request_timeout_s: float = Field(
        600.0, gt=0, description="backend openai: seconds to wait for one answer."
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
        None,
        description="sdpa, eager or flash_attention_2 (when installed); None: transformers' choice.",
    )
    max_new_tokens: int = Field(
        1024, ge=8, le=32768, description="Upper bound on generated tokens per chunk."
    )
    prefill_chunk_size: int | None = Field(
        None, ge=64, description="Chunked prefill (bounds activation memory on a GPU); None: off."
    )
    quantization: Literal["8bit", "4bit"] | None = Field(
        None,
        description="Load the language model's linear layers in 8 or 4 bits (bitsandbytes, the "
        "optional extra `gpu`); the vision tower stays in model.dtype. None: no quantization.",
    )

    @model_validator(mode="after")
    def _server_needs_url(self) -> ModelConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError('model.backend = "openai" needs model.base_url')
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("must be auto, cpu, cuda or cuda:N")


class ChunkingConfig(_Section):
    seconds: float = Field(300.0, gt=0, description="Length L of each chunk in seconds.")
    overlap_seconds: float = Field(5.0, ge=0, description="Overlap O between consecutive chunks.")
    max_duration_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="Longest recording planned: a file whose header or timestamps claim more "
        "fails with that reason (a tiny file can claim years and plan millions of chunks).",
    )

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
    hwaccel: str = Field(
        "none",
        pattern=r"^(none|cuda|vaapi|qsv|vulkan|videotoolbox|d3d11va|drm)(:[^:\s]+)?$",
        description="Hardware decoding through FFmpeg: none, or a device type such as cuda "
        "(NVDEC), optionally with a device (cuda:1, vaapi:/dev/dri/renderD128). When the device "
        "cannot be opened, decoding falls back to the CPU and the daemon logs why, once.",
    )
    skip_static: bool = Field(
        False,
        description="Run a cheap pre-pass over each chunk (small frames at activity_fps) and do "
        "not send chunks where nothing changes to the model (or send them at static_fps). The "
        "chunk is stored done with a `static` note in its provenance.",
    )
    static_threshold: float = Field(
        0.002,
        ge=0,
        le=1,
        description="A chunk is static when no two consecutive pre-pass frames differ in more than "
        "this share of their pixels (luma change above 24/255 on a 128x72 picture).",
    )
    static_fps: float = Field(
        0.0,
        ge=0,
        le=60,
        description="Sampling rate for static chunks; 0: do not analyse them at all.",
    )
    activity_fps: float = Field(
        1.0,
        gt=0,
        le=30,
        description="Rate of the pre-pass: a change shorter than 1/activity_fps seconds may be missed.",
    )


class AnalysisConfig(_Section):
    profile: str = Field(
        "general", description="Prompt profile: general, lecture, meeting, surveillance, screen."
    )
    prompt: str | None = Field(None, description="Your own instructions; replaces the profile's.")
    max_events: int = Field(
        12, ge=1, le=100, description="Most events the model may report per chunk."
    )
    label_chars: int = Field(48, ge=4, le=200, description="Longest label the schema allows.")
    description_chars: int = Field(
        240, ge=8, le=4000, description="Longest description the schema allows."
    )
    merge_tolerance_s: float = Field(
        2.0,
        ge=0,
        description="Events with the same label this close in overlapping chunks are one event.",
    )


# Container suffixes a watched folder takes by default (matched case-insensitively).
DEFAULT_INCLUDE = (
    "*.mp4",
    "*.m4v",
    "*.mov",
    "*.mkv",
    "*.webm",
    "*.avi",
    "*.ts",
    "*.mts",
    "*.m2ts",
    "*.mpg",
    "*.mpeg",
    "*.wmv",
    "*.flv",
    "*.3gp",
    "*.ogv",
)


class WatchConfig(_Section):
    """One `[[watch]]` table: a folder whose finished files become recordings."""

    path: Path = Field(description="Folder to watch (relative: to the config file).")
    recursive: bool = Field(True, description="Also watch every subfolder.")
    include: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INCLUDE),
        description="Globs a file must match (name, or path relative to the folder when the glob "
        "has a '/'); case-insensitive.",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Globs of files to leave alone. Partial downloads (*.part, *.crdownload, *.tmp, "
        ".~*) and hidden files are always ignored until renamed.",
    )
    profile: str | None = Field(
        None, description="Prompt profile for this folder (default: analysis.profile)."
    )
    settle_seconds: float = Field(
        10.0,
        ge=0,
        le=86400,
        description="A finished file must keep its size and mtime this long before it is taken.",
    )
    follow_symlinks: bool = Field(
        False,
        description="Take symlinks whose target lies outside the folder (and descend into linked folders).",
    )
    poll: Literal["auto"] | StrictBool = Field(
        "auto",
        description="auto: poll on network file systems (NFS, SMB/CIFS, sshfs), inotify elsewhere; "
        "true/false force it.",
    )
    poll_interval_s: float = Field(
        5.0, gt=0, le=3600, description="How often a polled folder is compared."
    )
    summary: bool | None = Field(
        None, description="summary.enabled for this folder (None: inherit)."
    )
    summary_prompt: str | None = Field(
        None, description="summary.prompt for this folder (None: inherit)."
    )
    skip_static: bool | None = Field(
        None, description="sampling.skip_static for this folder (None: inherit)."
    )
    static_threshold: float | None = Field(
        None, ge=0, le=1, description="sampling.static_threshold for this folder (None: inherit)."
    )
    static_fps: float | None = Field(
        None, ge=0, le=60, description="sampling.static_fps for this folder (None: inherit)."
    )

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, v: str | None) -> str | None:
        if v is not None and v not in PROFILES:
            raise ValueError(f"unknown profile; one of {', '.join(sorted(PROFILES))}")
        return v


class DaemonConfig(_Section):
    """`[daemon]`: how `framewatch run` schedules, retries and shuts down."""

    max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Tries per chunk (failures and crashes in the middle of it) before it stays failed.",
    )
    retry_backoff_s: float = Field(
        60.0,
        ge=0,
        description="Wait before retrying a failed chunk; doubles with each further attempt.",
    )
    rescan_interval_s: float = Field(
        300.0,
        gt=0,
        description="How often every watched folder is rescanned for files the watcher missed.",
    )
    queue_poll_s: float = Field(
        30.0, gt=0, description="How often an idle worker looks at the queue without being woken."
    )
    reap_interval_s: float = Field(
        60.0, gt=0, description="How often chunks with an expired lease are reaped."
    )
    deliver_interval_s: float = Field(
        5.0, gt=0, description="How often due plugin notifications are delivered."
    )
    deliver_batch: int = Field(100, ge=1, description="Most notifications delivered per round.")
    chunk_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="A chunk running longer counts as hung: the systemd watchdog is no longer fed, "
        "so systemd restarts the service and the chunk is retried.",
    )
    intake_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Handing one finished file over (fingerprint, accept_recording, register) "
        "taking longer counts as stuck intake: the systemd watchdog is no longer fed, so systemd "
        "restarts the service.",
    )
    stop_timeout_s: float = Field(
        60.0,
        gt=0,
        description="On SIGTERM, how long to let the current chunk finish before releasing it and "
        "exiting; keep it below the unit's TimeoutStopSec.",
    )


class PluginsConfig(BaseModel):
    """`[plugins]`: `disabled` names plugins never to load; every other key is one plugin's table,
    kept raw here and validated at start-up by the plugin manager against the model the plugin
    registered (so errors still carry key paths like `plugins.webhook.url`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    disabled: list[str] = Field(
        default_factory=list, description="Plugins (built-in or installed) that are never loaded."
    )

    @model_validator(mode="after")
    def _tables_only(self) -> PluginsConfig:
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, dict):
                raise ValueError(f"plugins.{name} must be a table ([plugins.{name}])")
        return self

    def tables(self) -> dict[str, dict[str, Any]]:
        """Each `[plugins.<name>]` table as written (its presence turns a built-in output on)."""
        return {k: dict(v) for k, v in (self.model_extra or {}).items()}


class GpuConfig(_Section):
    """`[gpu]`: the memory budget one chunk must fit, and how far the planner may step down."""

    memory_budget_gib: float | None = Field(
        None,
        gt=0,
        description="GiB of GPU memory framewatch may use; None: memory_fraction of the device.",
    )
    memory_fraction: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of the device's memory used when memory_budget_gib is not set.",
    )
    min_side: int = Field(
        224,
        ge=32,
        le=4096,
        description="Floor for the frames' longest side when stepping down, in pixels.",
    )
    min_fps: float = Field(
        0.25, gt=0, le=60, description="Floor for frames per second when stepping down."
    )
    min_chunk_seconds: float = Field(
        30.0, gt=0, description="Floor for the chunk length when stepping down, in seconds."
    )
    when_busy: Literal["wait", "step_down"] = Field(
        "wait",
        description="Another process holds GPU memory so a chunk no longer fits: wait for it, "
        "or run the chunk stepped down.",
    )
    busy_poll_seconds: float = Field(
        10.0, gt=0, description="How often a waiting worker looks again."
    )
    slack_fraction: float = Field(
        0.15,
        ge=0,
        le=2,
        description="Allocator slack on top of the estimated activations and KV cache.",
    )
    when_locked: Literal["error", "wait"] = Field(
        "error",
        description="Another framewatch process already uses this GPU: stop with an error, or wait for it.",
    )


class QueueConfig(_Section):
    """`[queue]`: where chunk jobs wait. local: the store is the queue (one box). redis: a Redis
    stream shared by every box running `framewatch run` or `framewatch worker`."""

    backend: Literal["local", "redis"] = Field(
        "local", description="local (one box) or redis (several boxes)."
    )
    url: str | None = Field(
        None, description="backend redis: redis://host:6379/0 (rediss:// for TLS)."
    )
    lease_seconds: float = Field(
        600.0,
        gt=0,
        description="A worker that stops heartbeating (died) loses its chunk to another after this long.",
    )
    max_deliveries: int = Field(
        3,
        ge=1,
        le=100,
        description="Deliveries of one chunk before it goes to the dead-letter stream, failed.",
    )
    prefix: str = Field(
        "framewatch:", min_length=1, description="Prefix of every Redis key framewatch uses."
    )

    @model_validator(mode="after")
    def _redis_needs_url(self) -> QueueConfig:
        if self.backend == "redis" and not self.url:
            raise ValueError('queue.backend = "redis" needs queue.url')
        return self
