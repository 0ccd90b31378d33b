"""`framewatch eval`: the scoring on hand-made predictions (empty, wrong labels, outside the
recording, duplicates across a chunk border, synonyms), truth files in JSON and CSV and their
errors, and the command end to end: on the tiny random checkpoint (which finds nothing: recall 0,
honestly), with a stand-in analyzer plugin that reports the planted truth shifted by a known
amount (so the error figures are exact), with --set, and on the --make-synthetic set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main
from daemon.engine.scoring import figures, match_events, percentile
from daemon.engine.truth import Span, TruthError, load_truth, synonym_map
from daemon.exits import EXIT_USAGE

CONTRACT = {
    "recall",
    "precision",
    "median_start_error_s",
    "p90_start_error_s",
    "median_end_error_s",
    "duplicates",
    "recordings",
}

TRUTH = [Span(0.0, 4.0, "red"), Span(4.0, 8.0, "green"), Span(8.0, 12.0, "blue")]


def score(predicted: list[Span], truth: list[Span] = TRUTH, **kw: Any) -> dict[str, Any]:
    return figures([match_events(truth, predicted, **kw)])


# -- scoring ----------------------------------------------------------------------------------


def test_exact_predictions_score_perfectly() -> None:
    out = score(list(TRUTH))
    assert out["recall"] == 1.0 and out["precision"] == 1.0
    assert out["median_start_error_s"] == 0.0 and out["p90_end_error_s"] == 0.0
    assert out["duplicates"] == 0 and out["matched"] == 3


def test_empty_predictions_give_recall_zero_and_no_precision() -> None:
    out = score([])
    assert out["recall"] == 0.0
    assert out["precision"] is None  # undefined without predictions, not 0 or 1
    assert out["median_start_error_s"] is None and out["p90_start_error_s"] is None
    assert out["duplicates"] == 0 and out["predicted_events"] == 0


def test_no_truth_events_gives_no_recall_and_zero_precision() -> None:
    out = score([Span(1, 2, "red")], truth=[])
    assert out["recall"] is None and out["precision"] == 0.0


def test_all_wrong_labels_match_nothing() -> None:
    out = score([Span(s.start_s, s.end_s, "purple") for s in TRUTH])
    assert out["recall"] == 0.0 and out["precision"] == 0.0 and out["duplicates"] == 0


def test_labels_compare_case_insensitively_and_through_synonyms() -> None:
    predicted = [Span(0, 4, "RED"), Span(4, 8, " Lime  "), Span(8, 12, "navy")]
    assert score(predicted)["matched"] == 1
    syn = synonym_map({"green": ["lime"], "Blue": ["navy", "azure"]})
    assert score(predicted, synonyms=syn)["matched"] == 3
    with pytest.raises(ValueError, match="already means"):
        synonym_map({"green": ["lime"], "yellow": ["lime"]})


def test_events_outside_the_recording_match_nothing() -> None:
    out = score([Span(40, 44, "red"), Span(-9, -5, "green"), Span(12.5, 13, "blue")])
    # 12.5 is within the 1 s tolerance of blue's end: near the end still counts, far never does
    assert out["matched"] == 1 and out["precision"] == pytest.approx(0.333)
    assert score([Span(40, 44, "red")], tolerance_s=0)["matched"] == 0


def test_tolerance_lets_a_near_miss_match_and_zero_needs_overlap() -> None:
    truth = [Span(10, 12, "door")]
    assert score([Span(12.5, 13, "door")], truth=truth)["matched"] == 1
    assert score([Span(12.5, 13, "door")], truth=truth, tolerance_s=0)["matched"] == 0
    assert score([Span(14, 15, "door")], truth=truth)["matched"] == 0


def test_known_shift_gives_exact_error_figures() -> None:
    predicted = [Span(s.start_s + 0.5, s.end_s - 1.0, s.label) for s in TRUTH]
    out = score(predicted)
    assert out["median_start_error_s"] == 0.5 and out["p90_start_error_s"] == 0.5
    assert out["median_end_error_s"] == 1.0 and out["p90_end_error_s"] == 1.0
    assert out["start_bias_s"] == 0.5 and out["end_bias_s"] == -1.0


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 90) == 3.0
    assert percentile([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == pytest.approx(9.0)
    assert percentile([1, 2], 50) == pytest.approx(1.5)
    assert percentile([0, 10], 90) == pytest.approx(9.0)


def test_an_event_found_twice_across_a_chunk_border_is_one_match_and_one_duplicate() -> None:
    # green 4-8 straddles a border at 6: one chunk reports 4-6, the next 6-8 again
    predicted = [
        Span(0, 4, "red"),
        Span(4, 6.3, "green"),
        Span(5.9, 8, "green"),
        Span(8, 12, "blue"),
    ]
    m = match_events(TRUTH, predicted)
    out = figures([m])
    assert out["recall"] == 1.0 and out["duplicates"] == 1
    assert out["precision"] == 0.75  # the second report is a prediction that matched nothing
    # 4-6.3 is nearer 4-8 (|0| + |-1.7| s) than 5.9-8 (|1.9| + |0| s): the later one is extra
    assert [x.predicted for x in m.matches] == [0, 1, 3] and m.duplicates == (2,)
    assert m.extra == []


def test_matching_is_one_to_one_and_greedy_by_distance() -> None:
    truth = [Span(0, 2, "x"), Span(3, 5, "x")]
    m = match_events(truth, [Span(2.6, 5, "x")])
    assert [(x.truth, x.predicted) for x in m.matches] == [(1, 0)]  # the nearer one
    assert m.missed == [0] and m.duplicates == ()


def test_scores_pool_over_recordings() -> None:
    a = match_events(TRUTH, list(TRUTH))
    b = match_events([Span(0, 5, "x")], [])
    out = figures([a, b])
    assert out["recall"] == 0.75 and out["precision"] == 1.0 and out["truth_events"] == 4


# -- truth files ------------------------------------------------------------------------------


def test_json_truth_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    t = tmp_path / "sub" / "truth.json"
    t.write_text(
        json.dumps(
            {
                "recordings": [
                    {"path": "a.mp4", "events": [{"start_s": 9, "end_s": 18.0, "label": "green"}]},
                    {"path": "/abs/b.mp4", "events": []},
                ],
                "synonyms": {"green": ["lime"]},
            }
        )
    )
    truth = load_truth(t)
    assert [r.path for r in truth.recordings] == [str(tmp_path / "sub" / "a.mp4"), "/abs/b.mp4"]
    assert truth.recordings[0].events == (Span(9.0, 18.0, "green"),)
    assert truth.synonyms == {"lime": "green"}


def test_csv_truth_with_header_comments_and_an_eventless_recording(tmp_path: Path) -> None:
    t = tmp_path / "truth.csv"
    t.write_text(
        "path,start_s,end_s,label\n# a comment\na.mp4,0,4,red\n\na.mp4,4.5,8,green\nb.mp4,,,\n"
    )
    truth = load_truth(t)
    assert [(Path(r.path).name, len(r.events)) for r in truth.recordings] == [
        ("a.mp4", 2),
        ("b.mp4", 0),
    ]
    assert truth.recordings[0].events[1] == Span(4.5, 8.0, "green")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("t.json", '{"recordings": [', "line 1 column 17: not valid JSON"),
        ("t.json", '{"videos": []}', "recordings: expected"),
        (
            "t.json",
            '{"recordings": [{"path": "a.mp4", "events": [{"start_s": 5, "end_s": 2, "label": "x"}]}]}',
            "recordings[0].events[0].end_s: ends before it starts",
        ),
        (
            "t.json",
            '{"recordings": [{"path": "a.mp4", "events": [{"start_s": "soon", "end_s": 2}]}]}',
            "recordings[0].events[0].start_s: expected a number of seconds, got 'soon'",
        ),
        (
            "t.json",
            '{"recordings": [{"path": "a.mp4", "events": [{"start_s": 1, "end_s": 2}]}]}',
            "recordings[0].events[0].label: expected a non-empty label",
        ),
        (
            "t.json",
            '{"recordings": [{"path": "a.mp4", "events": [{"start": 1, "end_s": 2, "label": "x"}]}]}',
            "recordings[0].events[0].start: unknown key",
        ),
        ("t.csv", "a.mp4,0,4,red\na.mp4,1,oops,red\n", "line 2: end_s: expected a number"),
        ("t.csv", "a.mp4,0,4,red\na.mp4,1,2\n", "line 2: expected 4 fields"),
        ("missing.json", None, "truth file not found"),
    ],
)
def test_bad_truth_files_are_reported_with_where(
    tmp_path: Path, name: str, text: str | None, expected: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(TruthError) as info:
        load_truth(path)
    assert expected in str(info.value)
    assert str(info.value).startswith(str(path))


def test_a_bad_truth_file_is_a_usage_error_of_eval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "t.csv"
    bad.write_text("a.mp4,0,4,red\na.mp4,9,1,red\n")
    assert main(["eval", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "truth file unusable" in err and "line 2: end_s: ends before it starts" in err
    assert "Traceback" not in err

    good = tmp_path / "t.json"
    good.write_text('{"recordings": [{"path": "nowhere.mp4", "events": []}]}')
    assert main(["eval", str(good)]) == EXIT_USAGE
    assert "no such recording" in capsys.readouterr().err
    assert main(["eval"]) == EXIT_USAGE
    assert "give a TRUTH file" in capsys.readouterr().err
