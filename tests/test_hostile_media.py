"""Files whose headers lie (issue 14, items 3 and 4): a few KB claiming 11 days or 3 years of
video, and an MP4 whose sample tables claim 60 million samples. Each is refused with a readable
reason in bounded memory, and a chunk of a file with a real gap in its frames never reaches the
model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.engine.probe import UnsupportedMedia, probe
from daemon.store import Store
from tests.daemon_proc import child_rss, install_fake_plugin, run_cli, write_config
from tests.media import make_sample_count_bomb, make_timed_frames, make_video

# What a refused probe may take at most: the interpreter, PyAV and a few KB of file (about 60 MiB
# here). Before the checks, the 60 M-sample MP4 took 4 GiB and `plan` of the 1e8 s file 3 GB.
RSS_CEILING_MIB = 400


PROBE = "from daemon.engine.probe import probe; import sys; probe(sys.argv[1])"


def test_three_frames_claiming_11_days_are_refused_as_not_credible(tmp_path: Path) -> None:
    liar = make_timed_frames(tmp_path / "liar.mkv", [0.0, 1.0, 1e6])
    assert liar.stat().st_size < 10_000
    with pytest.raises(UnsupportedMedia, match="claims 1000001 s of video in .* not credible"):
        probe(liar)


def test_a_duration_over_the_configured_cap_is_refused_with_the_key(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", seconds=3.0, fps=2, size=(32, 32))
    assert probe(clip, max_duration_s=10).duration_s == pytest.approx(3.0, abs=0.6)
    with pytest.raises(UnsupportedMedia, match=r"more than chunking.max_duration_s \(2 s\)"):
        probe(clip, max_duration_s=2)


def test_plan_of_a_file_claiming_3_years_ends_readably_in_bounded_memory(tmp_path: Path) -> None:
    liar = make_timed_frames(tmp_path / "liar.mkv", [0.0, 1.0, 1e8])
    config = write_config(
        tmp_path / "config.toml",
        {"storage": {"url": f"sqlite:///{tmp_path / 'fw.db'}"}, "chunking": {"seconds": 30}},
        [],
    )
    code, out, rss = child_rss("-m", "daemon.cli", "plan", "--config", str(config), str(liar))
    assert code != 0 and "not credible" in out and "Traceback" not in out, out
    assert rss < RSS_CEILING_MIB, f"plan peaked at {rss} MiB"


def test_sample_tables_claiming_60m_samples_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    small = make_video(tmp_path / "small.mp4", seconds=1.0, fps=4, size=(64, 64))
    bomb = make_sample_count_bomb(small, tmp_path / "bomb.mp4")
    with pytest.raises(UnsupportedMedia, match="malformed MP4: .* claims 60000000 samples"):
        probe(bomb)
    # The same in a fresh process, whose peak RSS is this probe's alone.
    code, out, rss = child_rss("-c", PROBE, str(bomb))
    assert code == 1 and "malformed MP4" in out, out
    assert rss < RSS_CEILING_MIB, f"the probe peaked at {rss} MiB"
    assert probe(small).frame_count == 4  # the untouched file still probes
    # Without its ftyp box (FFmpeg still reads it as QuickTime) the tables are checked all the same.
    data = bomb.read_bytes()
    headless = tmp_path / "headless.mov"
    headless.write_bytes(data[int.from_bytes(data[:4], "big") :])
    assert headless.read_bytes()[4:8] != b"ftyp"
    code, out, rss = child_rss("-c", PROBE, str(headless))
    assert code == 1 and "claims 60000000 samples" in out, out
    assert rss < RSS_CEILING_MIB, f"the probe peaked at {rss} MiB"


def test_chunks_in_a_gap_without_frames_are_not_sent_to_the_model(tmp_path: Path) -> None:
    # Real frames at 0, 1 and 40 s (a camera that stalled): 41 s, six 8 s chunks, four of them
    # with no frame of their own. The sampler would fill them with copies of the 1 s frame.
    clip = make_timed_frames(tmp_path / "gap.mkv", [0.0, 1.0, 40.0])
    site = install_fake_plugin(tmp_path / "site")
    config = write_config(
        tmp_path / "config.toml",
        {
            "storage": {"url": f"sqlite:///{tmp_path / 'fw.db'}"},
            "chunking": {"seconds": 8, "overlap_seconds": 1},
            "sampling": {"fps": 1, "max_side": 64},
            "plugins.fake": {},
        },
        [],
    )
    out = run_cli(
        "analyze", "--json", "--config", str(config), str(clip), env={"PYTHONPATH": str(site)}
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    chunks = result["chunks"]
    assert all(c["status"] == "done" for c in chunks) and len(chunks) == 6
    # The fake analyzer answers one event per chunk it is asked about: only those with frames.
    asked = sorted(int(e["label"].split("-")[1]) for e in result["events"])
    assert asked == [0, 5], (asked, chunks)
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    try:
        rows = store.chunks.of(result["recording"]["id"])
        for c in rows[1:5]:
            assert "no frame of the file in" in c.provenance["no_frames"], c.provenance
            assert c.provenance["sampling"]["frames"] == 0
        assert "no_frames" not in rows[0].provenance and "no_frames" not in rows[5].provenance
    finally:
        store.close()


def test_a_long_plan_prints_its_ends_and_sums_up_the_rest() -> None:
    from daemon.plan_report import SHOWN_AT_EACH_END, format_report

    chunk = {"frames": 2, "width": 64, "height": 64, "visual_tokens": 16, "prompt_tokens": 90}
    chunks = [
        {**chunk, "index": i, "start_s": 30.0 * i, "end_s": 30.0 * i + 30, "est_peak_gib": 1.0}
        for i in range(20_000)
    ]
    chunks[777]["est_peak_gib"] = 1.5
    report = {
        "note": None,
        "model": "m",
        "dtype": "bfloat16",
        "quantization": None,
        "device": "cpu",
        "weights_gib": 1.0,
        "fixed_gib": 1.0,
        "budget_gib": None,
        "budget_source": "no GPU: estimate only",
        "stepped_down": {},
        "chunks": chunks,
    }
    lines = format_report(report).splitlines()
    assert len(lines) < 20 + 2 * SHOWN_AT_EACH_END
    assert any("19990 chunks more (largest estimate 1.50 GiB, chunk 777" in line for line in lines)
    assert lines[-1].lstrip().startswith("19999")
