"""Test-side name for daemon.synth, the generator of synthetic recordings."""

from daemon.synth import (  # noqa: F401
    BLUE,
    GREEN,
    HUGE_SIDE,
    RED,
    VFR_GAPS,
    VFR_TIME_BASE,
    make_audio_only,
    make_bad_inputs,
    make_huge_header,
    make_video,
    vfr_times,
)
