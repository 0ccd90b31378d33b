"""`framewatch eval`: the configured pipeline over the recordings of a truth file, the stored
events scored against the truth (daemon/engine/scoring.py), once per setting to compare.

Each recording goes the way `framewatch analyze` takes it (analysis.analyze_path: ingest,
prepare, every chunk through the configured backend or analyzer plugin, the store, delivery to
plugins), with one worker per run so the model is loaded once; the events scored are those read
back from the store. The baseline run uses the configured store (a recording already analysed
there, same content, is scored as stored and marked `reused`; `fresh` analyses it again in a
temporary store instead); every other run (`--set`) gets a temporary store of its own, so the
runs' events never mix.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon.analysis import analyze_path
from daemon.config import load_config, parse_override
from daemon.engine.analyzer import ModelLoadError
from daemon.engine.scoring import DEFAULT_TOLERANCE_S, MATCHING, details, figures, match_events
from daemon.engine.truth import Span, Truth

if TYPE_CHECKING:
    from daemon.config import Config

Overrides = tuple[tuple[str, Any], ...]

# One --set may change several keys for one run: `sampling.fps=1,chunking.seconds=10`. A comma
# splits only where the next key=value begins, so `[1, 2]` or a name with a comma stays whole.
_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w.-]*\s*=)")


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run of the truth: its name (`baseline`, or the --set text) and its overrides."""

    name: str
    overrides: Overrides = ()


def parse_set(text: str) -> RunSpec:
    """One `--set` value: one run with one or more comma-separated key=value overrides."""
    return RunSpec(text, tuple(parse_override(part) for part in _SPLIT.split(text)))


def missing_files(truth: Truth) -> list[str]:
    return [r.path for r in truth.recordings if not os.path.isfile(r.path)]


def run_config(config_path: str | None, spec: RunSpec, store_dir: str | None) -> Config:
    """The config of one run: the file, a temporary SQLite store in `store_dir` (when given),
    then the run's overrides (so an explicit storage.url in --set wins)."""
    store: Overrides = (
        (("storage.url", f"sqlite:///{os.path.join(store_dir, 'eval.db')}"),) if store_dir else ()
    )
    return load_config(config_path, store + spec.overrides)


def evaluate(
    cfg: Config,
    truth: Truth,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    synonyms: dict[str, str] | None = None,
    say: Callable[[str], None] = lambda _line: None,
) -> dict[str, Any]:
    """Analyse every recording of `truth` under `cfg` and score the stored events: the overall
    figures, `load_s` (building the analyzer), `wall_s` (everything) and `recordings`."""
    from daemon.pluginhost.manager import load_plugins
    from daemon.store import Store
    from daemon.worker import Worker

    synonyms = {**truth.synonyms, **(synonyms or {})}
    t0 = time.perf_counter()
    plugins = load_plugins(cfg)
    store = Store(cfg.storage_url())
    worker = Worker(store, cfg, plugins.make_analyzer, subscribers=plugins.subscribers)
    rows, scores = [], []
    try:
        # The GPU lease and the model, once, before the first recording's clock starts (what
        # Worker.run would do at the first chunk).
        worker.ready(speech=cfg.speech.mode != "off")
        load_s = time.perf_counter() - t0
        for rec in truth.recordings:
            before, _ = worker.ingest(rec.path)
            reused = before.status == "done"
            t1 = time.perf_counter()
            result, summary = analyze_path(
                cfg, rec.path, store=store, plugins=plugins, worker=worker
            )
            wall = time.perf_counter() - t1
            say(summary)
            predicted = [Span(e["start_s"], e["end_s"], e["label"]) for e in result["events"]]
            score = match_events(rec.events, predicted, tolerance_s=tolerance_s, synonyms=synonyms)
            scores.append(score)
            info = result["recording"]
            rows.append(
                {
                    "path": rec.path,
                    "status": info["status"],
                    "reason": info["reason"],
                    "duration_s": info["duration_s"],
                    "reused": reused,
                    "wall_s": None if reused else round(wall, 3),
                    **figures([score]),
                    "warnings": _warnings(rec.events, info["duration_s"]),
                    **details(score),
                }
            )
    finally:
        worker.close()
        store.close()
        del worker, plugins
        _release_memory()
    return {
        **figures(scores),
        "wall_s": round(time.perf_counter() - t0, 3),
        "load_s": round(load_s, 3),
        "failed": sum(1 for r in rows if r["status"] != "done"),
        "recordings": rows,
    }


def evaluate_runs(
    config_path: str | None,
    truth: Truth,
    specs: Sequence[RunSpec],
    *,
    fresh: bool = False,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    synonyms: dict[str, str] | None = None,
    say: Callable[[str], None] = lambda _line: None,
) -> list[dict[str, Any]]:
    """The baseline (`specs[0]`, no overrides: the configured store unless `fresh`) and every
    other run in a temporary store of its own. Every run's config is checked before the first
    recording is analysed, so a mistyped --set fails at once."""
    with tempfile.TemporaryDirectory(prefix="framewatch-eval-") as tmp:
        dirs = [
            None if i == 0 and not fresh else os.path.join(tmp, f"run{i}")
            for i in range(len(specs))
        ]
        configs = [run_config(config_path, s, d) for s, d in zip(specs, dirs, strict=True)]
        out = []
        for spec, cfg, d in zip(specs, configs, dirs, strict=True):
            if d is not None:
                os.makedirs(d, exist_ok=True)
            say(f"run {spec.name}:")
            try:
                result = evaluate(
                    cfg,
                    truth,
                    tolerance_s=tolerance_s,
                    synonyms=synonyms,
                    say=lambda line: say(f"  {line}"),
                )
            except ModelLoadError as exc:
                if not out:
                    raise  # the baseline's model: nothing to compare with, the operator's to fix
                # A --set run whose model cannot load (a mistyped model.name) must not cost the
                # runs already made: it is reported with its error and no figures.
                say(f"  error: {exc}")
                result = {**figures([]), "wall_s": None, "load_s": None, "failed": 0}
                result.update(error=str(exc), recordings=[])
            out.append(
                {
                    "run": spec.name,
                    "settings": {k: v for k, v in spec.overrides},
                    "store": "configured" if d is None else "temporary",
                    **result,
                }
            )
    return out


def report(runs: list[dict[str, Any]], truth: Truth, tolerance_s: float) -> dict[str, Any]:
    """The one JSON object `eval --json` prints: the baseline's figures and recordings at the top
    level, how events were matched, and with --set every run (the baseline first) under `runs`."""
    out = {
        **runs[0],
        "truth": truth.source,
        "tolerance_s": tolerance_s,
        "matching": MATCHING,
    }
    if len(runs) > 1:
        out["runs"] = runs
    return out


def _warnings(events: Sequence[Span], duration_s: float | None) -> list[str]:
    """Truth events the recording cannot hold: after its end (a wrong file, or a wrong time)."""
    if not duration_s:
        return []
    return [
        f"truth event {e.label!r} at {e.start_s:g}-{e.end_s:g} s starts after the recording "
        f"ends ({duration_s:g} s)"
        for e in events
        if e.start_s >= duration_s
    ]


def _release_memory() -> None:
    """Give a run's model memory back before the next run loads its own."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
