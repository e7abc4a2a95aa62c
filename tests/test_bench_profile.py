"""bench.profile reads py-spy's collapsed stacks into self and total shares."""

from __future__ import annotations

from bench.profile import module_of, shares

RAW = """\
<module> (run.py);serve (agent/app.py);process_frame (pipecat/processors/frame_processor.py) 6
<module> (run.py);serve (agent/app.py);run (onnxruntime/capi/onnxruntime_inference_collection.py) 3
<module> (run.py);f (x.py);f (x.py) 1
garbage line
"""


def test_module_names_drop_site_packages_and_suffix() -> None:
    assert module_of("/v/lib/python3.12/site-packages/pipecat/audio/vad/silero.py") == (
        "pipecat.audio.vad.silero"
    )
    assert module_of("json/__init__.py") == "json"


def test_self_share_is_the_leaf_and_total_counts_a_frame_once_per_stack() -> None:
    profile = shares(RAW)
    assert profile.samples == 10
    assert profile.function_self["pipecat.processors.frame_processor:process_frame"] == 6
    assert profile.function_self["agent.app:serve"] == 0
    assert profile.function_total["agent.app:serve"] == 9
    assert profile.function_total["x:f"] == 1  # recursion counted once
    assert profile.module_self["onnxruntime.capi.onnxruntime_inference_collection"] == 3
    assert profile.module_total["run"] == 10
