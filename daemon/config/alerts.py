"""`[[alerts]]` rules and `[alerting]`: what the model is asked to watch for in every chunk."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from daemon.config.sections import PROFILES, _Section

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
