"""Chapter files for players and muxers, from a recording summary's chapters: an FFmpeg metadata
file and Matroska chapter XML (the WebVTT chapters are rendered with the subtitles' own writer).

- FFmpeg metadata (`;FFMETADATA1`): one `[CHAPTER]` block per chapter in milliseconds
  (`TIMEBASE=1/1000`), so `ffmpeg -i video -i chapters.ffmeta -map_metadata 1 -codec copy out`
  writes a copy of the video with the chapters; the user's file is never changed.
- Matroska chapter XML (`<Chapters><EditionEntry><ChapterAtom>`): what `mkvmerge --chapters`
  reads.

Titles are model text: reduced to one line (plugins._shared.one_line), then escaped for each
format (ffmetadata's backslash escapes; XML character references), so a title can neither start a
new key or section nor break the XML.
"""

from __future__ import annotations

from collections.abc import Sequence

from daemon.models import Chapter
from plugins._shared import one_line

# ffmpeg-formats(1), "Metadata": "=", ";", "#", "\" and a newline are escaped with a backslash.
_FFMETA_SPECIAL = {"=", ";", "#", "\\", "\n"}


def ffmeta_escape(text: str) -> str:
    return "".join("\\" + ch if ch in _FFMETA_SPECIAL else ch for ch in text)


def millis(chapters: Sequence[Chapter]) -> list[tuple[int, int, str]]:
    """(start ms, end ms, one-line title) of each chapter in time order; an end is never before
    its start (a player refuses such a chapter)."""
    out = []
    for c in sorted(chapters, key=lambda c: (c.start_s, c.end_s)):
        start = max(0, round(c.start_s * 1000))
        out.append((start, max(start, round(c.end_s * 1000)), one_line(c.title, 200)))
    return out


def to_ffmetadata(chapters: Sequence[Chapter], title: str | None = None) -> str:
    """An FFmpeg metadata file (`;FFMETADATA1`) with a global `title` (when given) and one
    `[CHAPTER]` block per chapter."""
    lines = [";FFMETADATA1"]
    if title:
        lines.append(f"title={ffmeta_escape(one_line(title, 200))}")
    for start, end, name in millis(chapters):
        lines += [
            "",
            "[CHAPTER]",
            "TIMEBASE=1/1000",
            f"START={start}",
            f"END={end}",
            f"title={ffmeta_escape(name)}",
        ]
    return "\n".join(lines) + "\n"


def _mkv_time(ms: int) -> str:
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}000000"


def _xml_text(text: str) -> str:
    # XML 1.0 cannot carry most control characters at all (one_line already removed them) or
    # lone surrogates; quotes are escaped too, though only element text is written.
    from xml.sax.saxutils import escape  # here: `framewatch --help` loads every plugin

    cleaned = "".join(ch for ch in text if not 0xD800 <= ord(ch) <= 0xDFFF)
    return escape(cleaned, {'"': "&quot;", "'": "&apos;"})


def to_matroska_xml(chapters: Sequence[Chapter], language: str = "und") -> str:
    """Matroska chapter XML, one ChapterAtom per chapter, as `mkvmerge --chapters` reads it."""
    atoms = []
    for start, end, name in millis(chapters):
        atoms.append(
            "    <ChapterAtom>\n"
            f"      <ChapterTimeStart>{_mkv_time(start)}</ChapterTimeStart>\n"
            f"      <ChapterTimeEnd>{_mkv_time(end)}</ChapterTimeEnd>\n"
            "      <ChapterDisplay>\n"
            f"        <ChapterString>{_xml_text(name)}</ChapterString>\n"
            f"        <ChapterLanguage>{_xml_text(language)}</ChapterLanguage>\n"
            "      </ChapterDisplay>\n"
            "    </ChapterAtom>\n"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE Chapters SYSTEM "matroskachapters.dtd">\n'
        "<Chapters>\n"
        "  <EditionEntry>\n" + "".join(atoms) + "  </EditionEntry>\n"
        "</Chapters>\n"
    )
