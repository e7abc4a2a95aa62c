"""Bot audio pacing: a small lead queued at the phone absorbs stalls shorter than the lead."""

from __future__ import annotations

import itertools

from agent.transport import pace

CHUNK = 0.02


def play(send_stalls: dict[int, float], lead: float, chunks: int = 100) -> tuple[list, float]:
    """Simulate sending ``chunks`` 20 ms chunks with extra stalls before some of them.

    Returns (send instants, total silence the phone heard between the first and last chunk).
    """
    now, played_by = 0.0, 0.0
    sent = []
    heard_gap = 0.0
    for index in range(chunks):
        now += send_stalls.get(index, 0.0)
        if index and now > played_by:  # the phone's queue ran dry before this chunk arrived
            heard_gap += now - played_by
        sent.append(now)
        played_by, wait = pace(played_by, now, CHUNK, lead)
        now += wait
    return sent, heard_gap


def test_without_a_lead_every_stall_is_heard() -> None:
    _sent, gap = play({30: 0.06, 60: 0.03}, lead=0.0)
    assert round(gap, 3) == 0.09


def test_a_lead_absorbs_stalls_shorter_than_it() -> None:
    _sent, gap = play({30: 0.06, 60: 0.03}, lead=0.1)
    assert gap == 0.0
    _sent, gap = play({30: 0.25}, lead=0.1)
    assert round(gap, 3) == 0.15  # only what exceeds the lead


def test_the_lead_is_sent_at_once_then_real_time() -> None:
    sent, _gap = play({}, lead=0.1, chunks=50)
    assert sent[:6] == [0.0] * 6  # the chunk playing now plus 100 ms of lead go at once
    steady = [b - a for a, b in itertools.pairwise(sent[10:])]
    assert all(abs(step - CHUNK) < 1e-9 for step in steady)
    # Overall the sender never runs ahead of playback by more than the lead.
    assert all(at >= index * CHUNK - 0.1 - 1e-9 for index, at in enumerate(sent))
