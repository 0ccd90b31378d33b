"""Typed configuration: `load_config(path) -> Config`, every error reported with its key path."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon.redact import SECRET, is_secret_key, redact_value

DEFAULT_MODEL = "Qwen/Qwen3-VL-2B-Instruct"
# faster-whisper's name for Systran/faster-whisper-small: multilingual (English included), so
# speech.language = "auto" can detect the language; fetched from the hub on first use.
DEFAULT_SPEECH_MODEL = "small"

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


SEVERITIES = ("info", "warning", "critical")


class AlertRule(_Section):
    """One `[[alerts]]` table: a plain-language rule the model is asked about in every chunk of
    the recordings it applies to, and that fires only after a second, focused look confirms it."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$",
        description="A slug (lower-case letters, digits, - and _): the rule's id in alerts, "
        "topics and Home Assistant.",
    )
    when: str = Field(
        min_length=3,
        max_length=300,
        description='What to look for, in plain language ("a person climbs the fence").',
    )
    folders: list[Path] | None = Field(
        None,
        description="Only recordings inside these folders (relative: to the config file); "
        "None: every folder.",
    )
    profiles: list[str] | None = Field(
        None,
        description="Only recordings analysed with these prompt profiles (a [[watch]] folder's "
        "profile, or analysis.profile); None: every profile.",
    )
    min_duration_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="It must last this long: the second look is asked for it (and its window "
        "covers it); a rule without verification needs the first answer to last this long.",
    )
    cooldown_s: float = Field(
        300.0,
        ge=0,
        description="One alert per rule per this many seconds of a recording: a later candidate "
        "this close to an alert that fired is suppressed, never verified or delivered.",
    )
    severity: Literal["info", "warning", "critical"] = Field(
        "warning", description="info, warning or critical (carried in every message)."
    )
    verify: bool = Field(
        True,
        description="Confirm each candidate with a second, focused look before it fires; false: "
        "fire on the chunk's answer alone (stored and delivered as unverified).",
    )
    deliver_unverified: bool = Field(
        False,
        description="Also deliver candidates whose second look could not run (unverified, "
        "with the reason).",
    )
    plugins: list[str] | None = Field(
        None,
        description="Plugins that deliver this rule's alerts (e.g. webhook, mqtt); None: every "
        "plugin that takes alerts.",
    )

    @field_validator("when")
    @classmethod
    def _one_line(cls, v: str) -> str:
        text = " ".join(v.split())
        if any(ch in text for ch in '"\\'):
            raise ValueError("must not contain double quotes or backslashes")
        return text

    @field_validator("profiles")
    @classmethod
    def _known_profiles(cls, v: list[str] | None) -> list[str] | None:
        for p in v or ():
            if p not in PROFILES:
                raise ValueError(f"unknown profile {p!r}; one of {', '.join(sorted(PROFILES))}")
        return v


class AlertingConfig(_Section):
    """`[alerting]`: how candidates of every rule are verified (the second look)."""

    margin_s: float = Field(
        5.0, ge=0, le=300, description="Seconds added before and after a candidate's window."
    )
    verify_fps: float = Field(
        4.0,
        gt=0,
        le=30,
        description="Frame rate of the second look (at least sampling.fps; stepped down only "
        "to fit the GPU budget).",
    )
    verify_max_side: int = Field(
        960,
        ge=32,
        le=4096,
        description="Longest frame side of the second look (at least sampling.max_side).",
    )
    verify_max_frames: int = Field(
        64, ge=2, le=1024, description="Most frames one second look may use."
    )
    max_verifications_per_chunk: int = Field(
        4,
        ge=1,
        le=100,
        description="A chunk starts at most this many second looks; its further candidates are "
        "stored unverified, with that reason.",
    )
    reason_chars: int = Field(
        160, ge=8, le=1000, description="Longest reason the model may give for an answer."
    )
    verify_max_new_tokens: int = Field(
        256, ge=16, le=4096, description="Upper bound on generated tokens of one second look."
    )

    @model_validator(mode="after")
    def _room_for_the_reason(self) -> AlertingConfig:
        # The verdict's JSON around its reason takes about 16 tokens; a reason can take one
        # token per character. Less room cuts answers off and leaves every alert unverified.
        if self.verify_max_new_tokens < self.reason_chars + 16:
            raise ValueError(
                f"verify_max_new_tokens must be at least reason_chars + 16 ({self.reason_chars + 16})"
            )
        return self


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


class Config(_Section):
    storage: StorageConfig = StorageConfig()
    model: ModelConfig = ModelConfig()
    chunking: ChunkingConfig = ChunkingConfig()
    sampling: SamplingConfig = SamplingConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    gpu: GpuConfig = GpuConfig()
    plugins: PluginsConfig = PluginsConfig()
    watch: list[WatchConfig] = Field(default_factory=list, description="[[watch]] folders.")
    daemon: DaemonConfig = DaemonConfig()
    queue: QueueConfig = QueueConfig()
    alerts: list[AlertRule] = Field(default_factory=list, description="[[alerts]] rules.")
    alerting: AlertingConfig = AlertingConfig()
    speech: SpeechConfig = SpeechConfig()
    source: Path | None = Field(None, exclude=True, description="The file this was loaded from.")

    def rules_for(self, path: str | os.PathLike[str], profile: str | None) -> list[AlertRule]:
        """The [[alerts]] rules that apply to a recording at `path` analysed with `profile`, in
        config order."""
        target = Path(os.path.abspath(Path(path).expanduser()))
        base = self.source.parent if self.source else Path.cwd()
        out = []
        for rule in self.alerts:
            if rule.profiles is not None and profile not in rule.profiles:
                continue
            if rule.folders is not None:
                roots = [
                    Path(os.path.abspath(f if f.is_absolute() else base / f.expanduser()))
                    for f in rule.folders
                ]
                if not any(target.is_relative_to(r) for r in roots):
                    continue
            out.append(rule)
        return out

    def rule(self, name: str) -> AlertRule | None:
        """The [[alerts]] rule called `name`, or None (a rule removed since its alert was found)."""
        return next((r for r in self.alerts if r.name == name), None)

    def storage_url(self) -> str:
        """The store's SQLAlchemy URL, with defaults and relative SQLite paths resolved."""
        url = self.storage.url
        if not url:
            path = default_state_dir() / "framewatch.db"
            return f"sqlite:///{path}"
        prefix = "sqlite:///"
        if (
            url.startswith(prefix)
            and not url.startswith(prefix + "/")
            and url != "sqlite:///:memory:"
        ):
            rel = url[len(prefix) :]
            base = self.source.parent if self.source else Path.cwd()
            return prefix + str((base / rel).resolve())
        return url

    def watch_path(self, watch: WatchConfig) -> Path:
        """watch.path made absolute (relative to the config file), `~` expanded."""
        path = watch.path.expanduser()
        if not path.is_absolute():
            path = (self.source.parent if self.source else Path.cwd()) / path
        return Path(os.path.abspath(path))

    def watch_for(self, path: str | os.PathLike[str]) -> WatchConfig | None:
        """The [[watch]] folder `path` lies in (the deepest, when folders nest), or None."""
        target = Path(os.path.abspath(Path(path).expanduser()))
        best: tuple[int, WatchConfig] | None = None
        for watch in self.watch:
            root = self.watch_path(watch)
            if target.is_relative_to(root) and (best is None or len(root.parts) > best[0]):
                best = (len(root.parts), watch)
        return best[1] if best else None

    def model_name(self) -> str:
        """model.name, with a relative local directory resolved against the config file."""
        return self._model_path(self.model.name)

    def speech_model(self) -> str:
        """speech.model, with a relative local directory resolved against the config file."""
        return self._model_path(self.speech.model)

    def _model_path(self, name: str) -> str:
        if name.startswith((".", "/", "~")):
            base = self.source.parent if self.source else Path.cwd()
            return str((base / Path(name).expanduser()).resolve())
        return name


class ConfigError(Exception):
    """The config is unusable; `errors` holds (key path, value, message) triples. The values are
    kept as they may be shown (daemon.redact): a secret-looking key's value, and every such value
    inside an echoed table, is SECRET; URLs lose their credentials and query strings. Callers that
    know more secret fields (a plugin's SecretStr settings) redact those before."""

    def __init__(self, path: str | None, errors: list[tuple[str, Any, str]]):
        self.path = path
        self.errors = [(key, _shown(key, value), msg) for key, value, msg in errors]
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per error: `<file>: <key path>: <message> (got <value>)`."""
        where = f"{self.path}: " if self.path else ""
        return [f"{where}{key}: {msg} (got {value!r})" for key, value, msg in self.errors]


def _shown(key: str, value: Any) -> Any:
    """A config error's value as it may be printed: SECRET under a secret-looking key (any part
    of the key path but a plugin's name: `plugins.<name>.api_keys.0`), else redacted inside."""
    parts = key.split(".")
    if parts[0] == "plugins":
        parts = parts[2:]
    if any(is_secret_key(p) for p in parts):
        return SECRET
    return redact_value(value)


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
    seen: dict[str, int] = {}
    duplicates = []
    for i, rule in enumerate(cfg.alerts):
        if rule.name in seen:
            duplicates.append(
                (
                    f"alerts.{i}.name",
                    rule.name,
                    f"duplicate rule name (also alerts.{seen[rule.name]})",
                )
            )
        seen.setdefault(rule.name, i)
    if duplicates:
        raise ConfigError(str(source) if source else None, duplicates)
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
