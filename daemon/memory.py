"""GPU memory at run time: the device and its lease, the memory model calibrated from the store,
the plan fitted to the budget, and what a chunk does when another process holds memory.

On the CPU nothing is budgeted (every method is then a no-op that says so); with an inference
server (model.backend = "openai") the model's memory is the server's. The arithmetic lives in
daemon/engine/budget.py and planner.py; this module applies it to the device it finds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from daemon.engine.alerts import questions, rule_answer_tokens
from daemon.engine.budget import (
    BudgetError,
    Estimator,
    budget_from,
    calibration_key,
    estimator_for,
    load_model_spec,
    text_pass_tokens,
    what_would_fit,
)
from daemon.engine.planner import (
    Floors,
    configured_plan,
    describe_steps,
    fit_plan,
    step_down_window,
    window_steps,
)
from daemon.engine.prompts import build_prompt, instructions
from daemon.gpu import GpuLease, GpuRuntime, lease_dir

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.models import ChunkWindow, MediaInfo
    from daemon.store import Store

log = structlog.get_logger(__name__)


class GpuMemory:
    """One process's view of its GPU: detected on first use (that imports torch)."""

    def __init__(self, store: Store, config: Config, gpu: GpuRuntime | None = None):
        self.store = store
        self.config = config
        self._gpu = gpu
        self._lease: GpuLease | None = None
        self._model: tuple[Estimator, float] | None = None
        self._unavailable = False

    @property
    def gpu(self) -> GpuRuntime:
        if self._gpu is None:
            # With an inference server the model's memory is the server's: nothing to budget or
            # lease here.
            local = self.config.model.backend == "transformers"
            self._gpu = GpuRuntime.detect(self.config.model.device) if local else GpuRuntime("cpu")
        return self._gpu

    def _key(self) -> tuple[str, str]:
        """(calibration key, GPU kind) this process's measurements are filed under."""
        g = self.gpu
        return calibration_key(self.config, g.device, g.bf16), g.name or g.device

    def budget(self) -> tuple[Estimator, float] | None:
        """(memory model, budget GiB) on a GPU, calibrated from the store; None on the CPU, whose
        memory is not budgeted, or when the model's config.json cannot be read."""
        if not self.gpu.is_cuda or self._unavailable:
            return None
        if self._model is None:
            c = self.config
            budget, _ = budget_from(c, self.gpu.total_gib)
            if budget is None:
                return None
            try:
                spec = load_model_spec(c.model_name(), c.model.revision)
            except BudgetError as exc:
                # No config.json to estimate from (a plugin's analyzer, an unusual checkpoint):
                # run unfitted; out-of-memory retries still protect each chunk.
                log.warning("memory_plan_unavailable", error=str(exc))
                self._unavailable = True
                return None
            ratio = self.store.calibration.ratio(*self._key()) or 1.0
            task = instructions(c.analysis.profile, c.analysis.prompt)
            # Every configured alert rule counted, whether or not it applies to a recording: its
            # question lengthens the prompt and its verdict the answer.
            rules = questions(c.alerts)
            prompt = build_prompt(task, 0.0, 0.0, c.analysis.max_events, rules)
            est = estimator_for(
                c, spec, self.gpu.device, ratio=ratio, prompt=prompt, bf16_supported=self.gpu.bf16
            )
            if rules:
                extra = rule_answer_tokens(rules, c.alerting.reason_chars)
                est = replace(est, max_new_tokens=est.max_new_tokens + extra)
            self._model = (est, budget)
        return self._model

    def text_tokens(self, ceiling: int, max_new_tokens: int) -> int:
        """The most prompt tokens one text-only request (a summary batch) may have within the
        memory budget, at most `ceiling` (no budget on the CPU: `ceiling`)."""
        memory = self.budget()
        if memory is None:
            return ceiling
        est, budget = memory
        return text_pass_tokens(est, budget, max_new_tokens, ceiling)

    def plan(self, media: MediaInfo) -> tuple[list[ChunkWindow], dict[str, list[float]]]:
        """The configured plan and what was stepped down ({} when nothing); on a GPU, fitted to
        the budget (BudgetError when even the floors do not fit, saying what would)."""
        c = self.config
        memory = self.budget()
        if memory is None:
            return configured_plan(media, c), {}
        est, budget = memory
        fitted = fit_plan(media, c, est, budget)
        if not fitted.fits:
            advice = what_would_fit(est, budget, fitted.floor, c.model_name())
            raise BudgetError(f"{c.model_name()}: {fitted.reason}. What would fit: {advice}")
        if fitted.stepped_down:
            log.info(
                "plan_stepped_down", stepped_down=fitted.describe(), budget_gib=round(budget, 2)
            )
        return list(fitted.windows), {k: list(v) for k, v in fitted.stepped_down.items()}

    # -- the device lease -----------------------------------------------------------------------

    def hold(self, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """One consumer per GPU: take this device's lease (kept for the life of the process).
        Raises GpuLeaseBusy, or waits, per gpu.when_locked; False if stopped while waiting."""
        if not self.gpu.is_cuda:
            return True
        if self._lease is None:
            self._lease = GpuLease(lease_dir(self.config), self.gpu.device)
        g = self.config.gpu
        return self._lease.acquire(
            wait=g.when_locked == "wait", should_stop=should_stop, poll_s=g.busy_poll_seconds
        )

    def close(self) -> None:
        """Give the GPU lease back (process exit does too)."""
        if self._lease is not None:
            self._lease.release()

    # -- one chunk ------------------------------------------------------------------------------

    def room_for(
        self,
        window: ChunkWindow,
        media: MediaInfo,
        steps: list[dict[str, Any]],
        should_stop: Callable[[], bool],
    ) -> ChunkWindow | None:
        """The chunk as it can run now: as planned, or, when another process holds GPU memory,
        after waiting or stepped down (gpu.when_busy). None if stopped while waiting."""
        memory = self.budget()
        if memory is None or self.gpu.room_gib() is None:
            return window
        est, budget = memory
        g = self.config.gpu
        waiting_since: float | None = None
        while True:
            room = self.gpu.room_gib()
            # The room excludes our CUDA context, which the estimate includes.
            limit = min(budget, (room if room is not None else budget) + est.context_gib)

            def fits(w: ChunkWindow, limit: float = limit) -> bool:
                return est.peak_gib(len(w.sample_times), w.width, w.height) <= limit

            if fits(window):
                if waiting_since is not None:
                    log.info("gpu_free_again", waited_s=round(time.monotonic() - waiting_since, 1))
                return window
            if g.when_busy == "step_down":
                smaller = step_down_window(
                    window,
                    media,
                    Floors.from_config(self.config),
                    self.config.sampling.max_pixels,
                    fits,
                )
                if smaller is not None and fits(smaller):
                    steps.append({"why": "gpu_busy", **window_steps(window, smaller)})
                    log.warning(
                        "gpu_busy_stepped_down",
                        room_gib=round(limit, 2),
                        stepped_down=describe_steps(window_steps(window, smaller)),
                    )
                    return smaller
            if waiting_since is None:
                waiting_since = time.monotonic()
                need = est.peak_gib(len(window.sample_times), window.width, window.height)
                log.warning("gpu_busy_waiting", room_gib=round(limit, 2), need_gib=round(need, 2))
            deadline = time.monotonic() + g.busy_poll_seconds
            while time.monotonic() < deadline:
                if should_stop():
                    return None
                time.sleep(min(0.5, g.busy_poll_seconds))

    def fit_window(
        self, window: ChunkWindow, media: MediaInfo
    ) -> tuple[ChunkWindow | None, dict[str, Any]]:
        """A window of its own (an alert's second look) fitted to the budget: as it is, or
        stepped down (frame size, then fps) until its estimate fits; (None, what was tried) when
        even the floors do not fit. Unbudgeted (CPU, a server): as it is."""
        memory = self.budget()
        if memory is None:
            return window, {}
        est, budget = memory

        def fits(w: ChunkWindow) -> bool:
            return est.peak_gib(len(w.sample_times), w.width, w.height) <= budget

        if fits(window):
            return window, {}
        smaller = step_down_window(
            window, media, Floors.from_config(self.config), self.config.sampling.max_pixels, fits
        )
        if smaller is None or not fits(smaller):
            return None, {"budget_gib": round(budget, 3)}
        return smaller, dict(window_steps(window, smaller))

    def calibrate(self, window: ChunkWindow, stats: dict[str, Any]) -> None:
        """Keep the measured peak against the estimate, so later plans use the ratio."""
        memory = self.budget() if self.gpu.is_cuda else None
        peak = stats.get("peak_gib")
        if memory is None or not isinstance(peak, (int, float)) or peak <= 0:
            return
        est, budget = memory
        estimated = est.calibrated(1.0).chunk(len(window.sample_times), window.width, window.height)
        ratio = self.store.calibration.record(*self._key(), float(peak), estimated.allocated_gib)
        self._model = (est.calibrated(ratio), budget)
        log.debug(
            "memory_calibrated",
            measured_gib=peak,
            estimated_gib=round(estimated.allocated_gib, 3),
            ratio=round(ratio, 3),
        )

    def provenance(
        self,
        planned: ChunkWindow,
        used: ChunkWindow,
        steps: list[dict[str, Any]],
        plan_stepped_down: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What the chunk was planned as, what ran, each step down on the way (and why), and
        what the recording's plan was stepped down from (`plan_stepped_down`)."""
        out: dict[str, Any] = {
            "planned": {
                "frames": len(planned.sample_times),
                "width": planned.width,
                "height": planned.height,
            },
            "stepped_down": [
                {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()} for s in steps
            ],
        }
        if plan_stepped_down:
            out["plan_stepped_down"] = dict(plan_stepped_down)
        if self._model is not None:
            est, budget = self._model
            out["budget_gib"] = round(budget, 3)
            out["est_peak_gib"] = round(
                est.peak_gib(len(used.sample_times), used.width, used.height), 3
            )
        return out
