"""A picture for every event: the sampled frame nearest its evidence time, kept as a small JPEG.

The frames a chunk was analysed with are still in memory when its events are committed, so each
stored event's thumbnail is encoded from them then (no second decode) and written to
`<media_dir>/<recording id>/<event id>.jpg` (`models.thumbnail_path`). The folder follows the
store: a chunk run again replaces its events (new ids), and the files of ids the store no longer
has are removed in the same step; `remove_recording` empties a recording's folder. A file is
written under a temporary name and renamed, so a reader never sees half a picture.

Thumbnails are a convenience: a folder that cannot be written is logged, never a failed chunk.
"""

from __future__ import annotations

import bisect
import io
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from PIL import Image

from daemon.models import EventInfo, Frame, thumbnail_path

if TYPE_CHECKING:
    import numpy as np

    from daemon.engine.events import Candidate
    from daemon.store import Store

log = structlog.get_logger(__name__)

MAX_SIDE = 320  # longest side of a thumbnail, in pixels (never enlarged)
QUALITY = 80  # JPEG quality


@dataclass(frozen=True, slots=True)
class Saved:
    """What one chunk's thumbnails cost: files written, their bytes, seconds spent encoding."""

    written: int = 0
    bytes: int = 0
    seconds: float = 0.0


def encode_jpeg(image: np.ndarray, max_side: int = MAX_SIDE, quality: int = QUALITY) -> bytes:
    """An RGB frame (H x W x 3, uint8) as JPEG bytes, its longest side at most `max_side`."""
    picture = Image.fromarray(image, "RGB")
    picture.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def nearest_frame(frames: Sequence[Frame], t: float) -> Frame | None:
    """The frame whose time is nearest `t` (the earlier one on a tie); None without frames.
    `frames` are in time order, as the sampler returns them."""
    if not frames:
        return None
    times = [f.t_s for f in frames]
    i = bisect.bisect_left(times, t)
    if i == 0:
        return frames[0]
    if i == len(frames):
        return frames[-1]
    before, after = frames[i - 1], frames[i]
    return before if t - before.t_s <= after.t_s - t else after


def event_time(e: EventInfo | Candidate) -> float:
    """The moment an event's picture shows: its evidence time, else its start."""
    return e.evidence_s if e.evidence_s is not None else e.start_s


def frames_for(events: Iterable[Candidate], frames: Sequence[Frame]) -> tuple[Frame, ...]:
    """Of a chunk's frames, only those some event's picture comes from (in time order), so the
    rest can be freed before the commit: the events stored are a subset of these candidates,
    with the same times (merging only drops duplicates)."""
    wanted = {id(f): f for e in events if (f := nearest_frame(frames, event_time(e))) is not None}
    return tuple(sorted(wanted.values(), key=lambda f: f.t_s))


class Thumbnails:
    """The thumbnails under one media directory (`Config.media_dir()`)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def path(self, e: EventInfo) -> Path:
        assert e.id is not None, "only stored events have thumbnails"
        return thumbnail_path(self.root, e.recording_id, e.id)

    def find(self, e: EventInfo) -> str | None:
        """The absolute path of an event's thumbnail, or None when there is none."""
        if e.id is None:
            return None
        p = self.path(e)
        return str(p.absolute()) if p.is_file() else None

    def save(self, events: Iterable[EventInfo], frames: Sequence[Frame]) -> Saved:
        """Write the thumbnail of each stored event from the frame nearest its time (replacing a
        file of the same id: SQLite may give a deleted id again); an event with no frame gets
        no file (any old one is removed)."""
        written = size = 0
        t0 = time.perf_counter()
        for e in events:
            target = self.path(e)
            frame = nearest_frame(frames, event_time(e))
            if frame is None:
                target.unlink(missing_ok=True)
                continue
            data = encode_jpeg(frame.image)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
            written, size = written + 1, size + len(data)
        return Saved(written, size, time.perf_counter() - t0)

    def prune(self, recording_id: int, keep: Iterable[int]) -> int:
        """Remove a recording's thumbnails whose event ids are not in `keep` (events a re-run
        replaced). Returns how many files were removed."""
        folder = self.root / str(int(recording_id))
        if not folder.is_dir():
            return 0
        wanted = {f"{int(i)}.jpg" for i in keep}
        removed = 0
        for entry in os.scandir(folder):
            if entry.name not in wanted and entry.is_file():
                os.unlink(entry.path)
                removed += 1
        return removed

    def remove_recording(self, recording_id: int) -> None:
        """Remove every thumbnail of a recording (the recording is deleted)."""
        shutil.rmtree(self.root / str(int(recording_id)), ignore_errors=True)

    def sync_chunk(
        self, store: Store, recording_id: int, stored: Sequence[EventInfo], frames: Sequence[Frame]
    ) -> Saved:
        """After a chunk's commit: its events' thumbnails written, and the files of events the
        store no longer has removed. Errors are logged, not raised: the chunk stands."""
        try:
            saved = self.save(stored, frames)
            removed = self.prune(recording_id, (e.id for e in store.events.of(recording_id)))
        except OSError as exc:
            log.warning("thumbnails_failed", root=str(self.root), error=str(exc))
            return Saved()
        if saved.written or removed:
            log.debug(
                "thumbnails_saved",
                written=saved.written,
                bytes=saved.bytes,
                seconds=round(saved.seconds, 4),
                removed=removed,
            )
        return saved
