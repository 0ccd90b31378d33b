"""`[summary]`: a recording's title, summary, chapters and key events, made by a text pass over
its stored events (and speech) after its last chunk, and `[digest]`: one Markdown file over the
recordings finished in a period."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from daemon.config.sections import _Section


class SummaryConfig(_Section):
    """`[summary]`: after a recording's last chunk, the analyzer's text pass (no video decode)
    writes its title, a few sentences, chapters covering it and its key events. A [[watch]]
    folder may turn it off (`summary = false`) or give its own prompt (`summary_prompt`)."""

    enabled: bool = Field(True, description="Make a summary for every recording.")
    prompt: str | None = Field(
        None,
        description="The task given to the model (default: a note-taker's summary of what it "
        "was about and what happened, in order).",
    )
    max_sentences: int = Field(5, ge=1, le=50, description="Sentences in the summary, at most.")
    max_chars: int = Field(
        800, ge=80, le=8000, description="Characters in the summary, at most (the schema's bound)."
    )
    title_chars: int = Field(80, ge=8, le=400, description="Characters in the title, at most.")
    max_chapters: int = Field(12, ge=1, le=100, description="Chapters, at most.")
    chapter_title_chars: int = Field(
        60, ge=8, le=400, description="Characters in a chapter's title, at most."
    )
    max_key_events: int = Field(10, ge=0, le=100, description="Key events named, at most.")
    max_new_tokens: int = Field(
        768, ge=64, le=16384, description="Tokens one answer may take, at most."
    )
    batch_tokens: int = Field(
        6000,
        ge=512,
        le=1_000_000,
        description="Prompt tokens of one request, at most (counted with the model's "
        "tokenizer); a longer recording is summarised in batches, then merged. The GPU memory "
        "budget may lower it.",
    )
    max_batches: int = Field(
        64, ge=1, le=10_000, description="Batches one recording may need, at most."
    )
    speech: bool = Field(True, description="Give the model the stored speech too, when there is.")


class DigestConfig(_Section):
    """`[digest]`: one Markdown file summarising every recording finished in a period
    (`framewatch digest`, and daily at `at` when `schedule` is on)."""

    dir: Path | None = Field(
        None,
        description="Folder for digest files (relative: to the config file); default: "
        "digests/ beside an SQLite store, else the state directory's digests/.",
    )
    schedule: bool = Field(False, description="Write a digest every day at `at`.")
    at: str = Field(
        "07:00",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Local time (HH:MM) of the daily digest; it covers the 24 hours before.",
    )
