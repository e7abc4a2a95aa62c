"""What the caller heard (mark bookkeeping) and when a caller's turn is over."""

import numpy as np
import pytest

from agent.turns import might_go_on, sounds_unfinished
from telephony.audio import CallRecording
from telephony.playback import PlaybackLedger
from tests.conftest import Clock


def test_heard_text_follows_marks_and_time():
    clock = Clock()
    ledger = PlaybackLedger(clock)
    ledger.add_audio(1000)
    first = ledger.close_segment("Our hours are nine to six.")
    ledger.add_audio(2000)
    second = ledger.close_segment("We are closed on Sundays and holidays too.")
    assert ledger.outstanding == 2
    clock.now = 1.0
    assert ledger.acknowledge(first)
    assert not ledger.acknowledge("seg-unknown")
    clock.now = 2.0  # one second into a two-second segment: about half its words
    heard, cut_off = ledger.interrupt()
    assert cut_off
    assert heard.startswith("Our hours are nine to six. We are closed on")
    assert "holidays" not in heard
    assert second and ledger.outstanding == 0


def test_nothing_cut_off_when_everything_played():
    ledger = PlaybackLedger(Clock())
    ledger.add_audio(500)
    name = ledger.close_segment("Goodbye!")
    ledger.acknowledge(name)
    assert ledger.interrupt() == ("Goodbye!", False)


def test_recording_drops_unplayed_bot_audio_on_clear():
    recording = CallRecording(8000)
    recording.add_caller(bytes(1600))  # 100 ms of caller
    recording.add_bot(b"\x10\x00" * 8000)  # a second of bot audio queued
    recording.add_caller(bytes(1600))
    recording.clear_bot()  # caller barged in at 200 ms
    wav = recording.to_wav()
    assert len(wav) - 44 == 2 * 2 * 1600  # stereo, 200 ms


@pytest.mark.parametrize(
    "text",
    [
        "My number is five five five,",
        "my phone number is 413 555",
        "It's four one three five five five",
        "I'd like to book a haircut on",
        "My name is",
        "I want to come in on the 20th and",
        "um",
        "Can I book for",
        "My phone number is 413. Sci-Fi 5",  # a mis-heard digit inside a number
        "Okay, let me",
        "Could you give me",
        "What time do you",
        "Is Maria",
        "The appointment is under",
        "Let me see",
        "My email is anna",
        "I was wondering",
    ],
)
def test_unfinished_phrases_wait_longer(text):
    assert sounds_unfinished(text)


@pytest.mark.parametrize(
    ("text", "often_more"),
    [
        ("My name is Maria", True),
        ("It's Anna.", True),
        ("It's Kowalski K O W", True),
        ("The name is Omar, O M A R", True),
        ("My name is Anna Lee.", False),
        ("What are your opening hours?", False),
        ("Book me in at two.", False),
    ],
)
def test_names_and_spelling_may_go_on(text, often_more):
    assert might_go_on(text) is often_more
    assert not sounds_unfinished(text)


@pytest.mark.parametrize(
    "text",
    [
        "What are your opening hours?",
        "I'd like a haircut this Friday at 2pm.",
        "My number is 413 555 0142.",
        "Call me back on 413 555 0142, please.",
        "My name is Anna Lee.",
        "Yes please.",
        "Thanks, bye.",
        "Two o'clock works for me.",
        "Yes, that suits me",
        "Could you tell me?",
        "Thank you.",
        "Are you open?",
        "My email is anna at example dot com.",
        "",
    ],
)
def test_finished_sentences_do_not_wait(text):
    assert not sounds_unfinished(text)


def test_interrupted_reply_is_recorded_as_heard():
    from agent.session import record_heard_reply

    user1 = {"role": "user", "content": "Tell me about your services"}
    user2 = {"role": "user", "content": "What are your hours?"}
    full = {"role": "assistant", "content": "We offer haircuts, coloring and blow drys."}
    replaced = record_heard_reply([user1, full, user2], "We offer haircuts", callers_before=1)
    assert replaced[1] == {"role": "assistant", "content": "We offer haircuts —(cut off)"}
    inserted = record_heard_reply([user1, user2], "We offer", callers_before=1)
    assert [m["role"] for m in inserted] == ["user", "assistant", "user"]
    assert inserted[1]["content"] == "We offer —(cut off)"
    call = {"role": "assistant", "tool_calls": [{"id": "1"}]}
    result = {"role": "tool", "content": "{}"}
    after_tool = record_heard_reply([user1, call, result, user2], "", callers_before=1)
    assert [m["role"] for m in after_tool] == ["user", "assistant", "tool", "assistant", "user"]
    assert "before the caller heard anything" in after_tool[3]["content"]


def _sentence_audio(rate: int = 8000) -> bytes:
    """A TTS sentence as hibari makes it: 300 ms of silence, 2.3 s of voice, 450 ms of silence."""
    t = np.arange(int(rate * 2.3)) / rate
    voice = (np.sin(2 * np.pi * 220 * t) * 12000).astype("<i2").tobytes()
    return bytes(int(rate * 0.3) * 2) + voice + bytes(int(rate * 0.45) * 2)


async def test_a_caller_answering_the_last_word_heard_all_of_it():
    """The caller answers "what's your name?" as soon as it is said, before the mark after
    the sentence's trailing silence comes back: every word was heard, none is cut off."""
    from pipecat.frames.frames import TTSAudioRawFrame, TTSTextFrame
    from pipecat.tests.utils import run_test
    from pipecat.utils.text.base_text_aggregator import TextType

    from agent.processors import PlaybackMarker

    clock = Clock()
    ledger = PlaybackLedger(clock)
    sentence = "Could I take your name please, and what's your name?"
    audio = _sentence_audio()
    frames = [
        TTSAudioRawFrame(audio[: len(audio) // 2], 8000, 1),
        TTSAudioRawFrame(audio[len(audio) // 2 :], 8000, 1),
        TTSTextFrame(sentence, text_type=TextType.SENTENCE),
    ]
    await run_test(PlaybackMarker(ledger), frames_to_send=frames)
    assert ledger.outstanding == 1  # the mark after the sentence has not come back yet
    clock.now = 2.8  # the last word ended at 2.6 s; the caller's answer arrives 200 ms later
    assert ledger.interrupt() == (sentence, True)


async def test_a_caller_cutting_in_mid_sentence_heard_only_the_words_played():
    from pipecat.frames.frames import TTSAudioRawFrame, TTSTextFrame
    from pipecat.tests.utils import run_test
    from pipecat.utils.text.base_text_aggregator import TextType

    from agent.processors import PlaybackMarker

    clock = Clock()
    ledger = PlaybackLedger(clock)
    sentence = "Could I take your name please, and what's your name?"
    frames = [
        TTSAudioRawFrame(_sentence_audio(), 8000, 1),
        TTSTextFrame(sentence, text_type=TextType.SENTENCE),
    ]
    await run_test(PlaybackMarker(ledger), frames_to_send=frames)
    clock.now = 0.3 + 2.3 * 0.65  # 65% of the way through the words (not of the audio)
    heard, cut_off = ledger.interrupt()
    assert cut_off and heard == "Could I take your name please,"
