"""GPU memory calibration: measured over estimated peak allocation per model setting and GPU kind,
so later plans correct their estimate (daemon/engine/budget.py)."""

from __future__ import annotations

import time

from sqlmodel import select

from daemon.store.session import Database
from daemon.store.tables import Calibration


class Calibrations:
    def __init__(self, db: Database):
        self.db = db

    def record(self, model: str, device: str, measured_gib: float, estimated_gib: float) -> float:
        """Add one chunk's measured peak allocation against its estimate; returns the ratio plans
        now use (the largest seen: an estimate is a promise not to run out of memory)."""
        if measured_gib <= 0 or estimated_gib <= 0:
            raise ValueError("measured and estimated GiB must be positive")
        ratio = measured_gib / estimated_gib
        with self.db.session() as s:
            row = s.exec(
                select(Calibration).where(Calibration.model == model, Calibration.device == device)
            ).first()
            if row is None:
                row = Calibration(model=model, device=device)
            row.ratio_mean = (row.ratio_mean * row.samples + ratio) / (row.samples + 1)
            row.samples += 1
            row.ratio_max = max(row.ratio_max, ratio)
            row.last_measured_gib, row.last_estimated_gib = measured_gib, estimated_gib
            row.updated_at = time.time()
            s.add(row)
            return row.ratio_max

    def ratio(self, model: str, device: str) -> float | None:
        """The ratio to apply to estimates for `model` on `device`; None when never measured."""
        with self.db.session() as s:
            row = s.exec(
                select(Calibration).where(Calibration.model == model, Calibration.device == device)
            ).first()
            return row.ratio_max if row is not None and row.samples else None
