"""Scoring predicted events against the truth (`framewatch eval`): pure functions, no store.

Matching. A predicted event can match a truth event when their labels are the same (label_key:
case-insensitive, synonyms resolved) and their times overlap or lie within `tolerance_s` of each
other (the gap between the two spans, like the overlap merge of daemon/engine/events.py). Every
event is matched at most once: greedily by distance, i.e. all compatible (truth, predicted) pairs
sorted by |start difference| + |end difference| (ties by the earlier truth, then the earlier
prediction) are taken in that order while both are still free. Greedy gives a maximal matching
(no compatible pair is left with both events free), not always a maximum one: with crowded
events of one label a different pairing could match one more. It needs no solver and is the same
on every machine.

Figures (per recording, and overall pooled over all recordings):
- recall: matched truth events / truth events (None without truth events);
- precision: matched predictions / predictions (None without predictions); a duplicate is a
  prediction that did not match, so it lowers precision;
- start and end errors: |predicted - truth| seconds over the matched pairs, their median and
  90th percentile (linear interpolation between closest ranks), and the median signed error
  (`start_bias_s`: positive when the model reports late);
- duplicates: predictions left unmatched that are compatible with a truth event another
  prediction matched: the same event found twice (as across a chunk border).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemon.engine.truth import Span, label_key

DEFAULT_TOLERANCE_S = 1.0
MATCHING = "greedy by distance (|start difference| + |end difference|), one-to-one"


@dataclass(frozen=True, slots=True)
class Match:
    truth: int  # index into RecordingScore.truth
    predicted: int  # index into RecordingScore.predicted
    start_error_s: float  # predicted - truth (signed)
    end_error_s: float


@dataclass(frozen=True, slots=True)
class RecordingScore:
    """How one recording's predictions compare with its truth."""

    truth: tuple[Span, ...]
    predicted: tuple[Span, ...]
    matches: tuple[Match, ...]
    duplicates: tuple[int, ...]  # indices into predicted

    @property
    def missed(self) -> list[int]:
        found = {m.truth for m in self.matches}
        return [i for i in range(len(self.truth)) if i not in found]

    @property
    def extra(self) -> list[int]:
        """Predictions that match nothing and are no duplicate: wrong label, wrong time."""
        used = {m.predicted for m in self.matches} | set(self.duplicates)
        return [i for i in range(len(self.predicted)) if i not in used]


def compatible(
    truth: Span, predicted: Span, tolerance_s: float, synonyms: dict[str, str] | None = None
) -> bool:
    """Same label (case-insensitive, synonyms resolved) and spans that overlap or lie within
    `tolerance_s` of each other."""
    if label_key(truth.label, synonyms) != label_key(predicted.label, synonyms):
        return False
    gap = max(truth.start_s, predicted.start_s) - min(truth.end_s, predicted.end_s)
    return gap <= tolerance_s + 1e-9


def distance(truth: Span, predicted: Span) -> float:
    return abs(predicted.start_s - truth.start_s) + abs(predicted.end_s - truth.end_s)


def match_events(
    truth: Sequence[Span],
    predicted: Sequence[Span],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    synonyms: dict[str, str] | None = None,
) -> RecordingScore:
    """One-to-one matching, greedy by distance (module docstring), and the duplicates."""
    if tolerance_s < 0:
        raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s}")
    pairs = sorted(
        (distance(t, p), i, j)
        for i, t in enumerate(truth)
        for j, p in enumerate(predicted)
        if compatible(t, p, tolerance_s, synonyms)
    )
    used_t: set[int] = set()
    used_p: set[int] = set()
    matches = []
    for _, i, j in pairs:
        if i in used_t or j in used_p:
            continue
        used_t.add(i)
        used_p.add(j)
        t, p = truth[i], predicted[j]
        matches.append(Match(i, j, round(p.start_s - t.start_s, 6), round(p.end_s - t.end_s, 6)))
    matches.sort(key=lambda m: m.truth)
    duplicates = sorted(
        {j for _, i, j in pairs if j not in used_p and i in used_t},
    )
    return RecordingScore(tuple(truth), tuple(predicted), tuple(matches), tuple(duplicates))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's
    default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def figures(scores: Sequence[RecordingScore]) -> dict[str, Any]:
    """recall, precision, start/end error median and p90, bias, duplicates and the counts,
    pooled over `scores` (one recording's figures: a list of one)."""
    n_truth = sum(len(s.truth) for s in scores)
    n_pred = sum(len(s.predicted) for s in scores)
    matches = [m for s in scores for m in s.matches]
    starts = [abs(m.start_error_s) for m in matches]
    ends = [abs(m.end_error_s) for m in matches]
    return {
        "recall": _r(len(matches) / n_truth) if n_truth else None,
        "precision": _r(len(matches) / n_pred) if n_pred else None,
        "median_start_error_s": _r(percentile(starts, 50)),
        "p90_start_error_s": _r(percentile(starts, 90)),
        "median_end_error_s": _r(percentile(ends, 50)),
        "p90_end_error_s": _r(percentile(ends, 90)),
        "start_bias_s": _r(percentile([m.start_error_s for m in matches], 50)),
        "end_bias_s": _r(percentile([m.end_error_s for m in matches], 50)),
        "duplicates": sum(len(s.duplicates) for s in scores),
        "truth_events": n_truth,
        "predicted_events": n_pred,
        "matched": len(matches),
    }


def details(score: RecordingScore) -> dict[str, Any]:
    """Which events matched (with their errors), which truth events were missed, which
    predictions were duplicates and which matched nothing."""
    return {
        "matches": [
            {
                "truth": score.truth[m.truth].as_json(),
                "predicted": score.predicted[m.predicted].as_json(),
                "start_error_s": _r(m.start_error_s),
                "end_error_s": _r(m.end_error_s),
            }
            for m in score.matches
        ],
        "missed": [score.truth[i].as_json() for i in score.missed],
        "duplicate_events": [score.predicted[j].as_json() for j in score.duplicates],
        "unmatched": [score.predicted[j].as_json() for j in score.extra],
    }
