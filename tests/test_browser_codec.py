"""The browser demo's wire format, its pipecat serializer and the per-client rate limit."""

import json

import pytest
from pipecat.frames.frames import InputAudioRawFrame, InterruptionFrame, OutputAudioRawFrame

from telephony import browser_codec as bc
from telephony.browser_serializer import BrowserMediaSerializer
from telephony.ratelimit import RateLimiter, client_key
from telephony.serializer import CallEventFrame, MarkFrame
from telephony.stream_codec import ProtocolError
from tests.conftest import Clock
from tests.fakes.stream_hooks import RecordingHooks

START = '{"type": "start", "sampleRate": 16000, "format": "pcm16"}'


def started() -> bc.BrowserStreamParser:
    parser = bc.BrowserStreamParser()
    assert parser.receive(START) == bc.Start(16000)
    return parser


def test_a_call_in_order():
    parser = started()
    assert parser.sample_rate == 16000
    assert parser.receive(bytes(640)) == bc.Audio(bytes(640))
    assert parser.receive('{"type": "mark", "name": "seg-1"}') == bc.Mark("seg-1")
    assert parser.receive('{"type": "hangup"}') == bc.Hangup()
    with pytest.raises(ProtocolError, match="after hangup"):
        parser.receive(bytes(640))


def test_narrowband_start_and_default_format():
    parser = bc.BrowserStreamParser()
    assert parser.receive('{"type": "start", "sampleRate": 8000}') == bc.Start(8000)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        ('{"type": "dance"}', "unknown message type 'dance'"),
        ('{"type": "start", "sampleRate": 44100}', "8000 or 16000, got 44100"),
        ('{"type": "start", "sampleRate": true}', "got True"),
        ('{"type": "start", "sampleRate": "16000"}', "got '16000'"),
        ('{"type": "start", "sampleRate": 16000, "format": "opus"}', "'pcm16', got 'opus'"),
        ('{"type": "mark"}', "mark.name"),
        ('{"type": "mark", "name": ""}', "mark.name"),
        (json.dumps({"type": "mark", "name": "x" * 65}), "1-64 characters"),
        ("{" * 5000, "exceeds 4096"),
    ],
)
def test_bad_control_frames_name_the_problem(frame, message):
    with pytest.raises(ProtocolError, match=message):
        bc.parse_control(frame)


def test_order_and_audio_rules():
    parser = bc.BrowserStreamParser()
    with pytest.raises(ProtocolError, match="audio before the start"):
        parser.receive(bytes(640))
    with pytest.raises(ProtocolError, match="mark before the start"):
        parser.receive('{"type": "mark", "name": "seg-1"}')
    with pytest.raises(ProtocolError, match="no start message"):
        _ = parser.sample_rate
    parser.receive(START)
    with pytest.raises(ProtocolError, match="second start"):
        parser.receive(START)
    with pytest.raises(ProtocolError, match="whole 16-bit samples, got 641"):
        parser.receive(bytes(641))
    with pytest.raises(ProtocolError, match="got 0 bytes"):
        parser.receive(b"")
    with pytest.raises(ProtocolError, match="exceeds 32000"):
        parser.receive(bytes(32002))
    assert parser.receive(bytes(32000)) == bc.Audio(bytes(32000))  # one second is fine
    assert parser.errors.count == 6  # and the parser is still usable after each


def test_outbound_messages():
    assert json.loads(bc.encode_ready("BRabc", 16000)) == {
        "type": "ready",
        "callSid": "BRabc",
        "sampleRate": 16000,
    }
    assert json.loads(bc.encode_mark("seg-2", "Hello.")) == {
        "type": "mark",
        "name": "seg-2",
        "text": "Hello.",
    }
    assert json.loads(bc.encode_clear()) == {"type": "clear"}
    event = json.loads(bc.encode_event("tool_call", {"name": "x", "kind": "spoof", "type": "y"}))
    assert event == {"type": "event", "kind": "tool_call", "name": "x"}
    assert json.loads(bc.encode_error("busy", "All lines are busy.")) == {
        "type": "error",
        "code": "busy",
        "message": "All lines are busy.",
    }


async def test_serializer_carries_pcm_marks_and_events():
    parser = started()
    hooks = RecordingHooks()
    serializer = BrowserMediaSerializer(parser, hooks)
    assert serializer.wants_events
    audio = await serializer.deserialize(bytes(640))
    assert isinstance(audio, InputAudioRawFrame) and audio.sample_rate == 16000
    assert await serializer.deserialize(bytes(641)) is None  # skipped, the call goes on
    assert await serializer.deserialize('{"type": "mark", "name": "seg-1"}') is None
    assert await serializer.deserialize('{"type": "hangup"}') is None
    assert hooks.events == [("caller_audio", 640), ("mark", "seg-1"), ("stop", None)]
    assert serializer.frame_errors.count == 1 and "641 bytes" in serializer.frame_errors.first
    narrowband = OutputAudioRawFrame(audio=bytes(160), sample_rate=8000, num_channels=1)
    assert len(await serializer.serialize(narrowband)) == 320  # resampled to the page's rate
    assert json.loads(await serializer.serialize(InterruptionFrame())) == {"type": "clear"}
    mark = json.loads(await serializer.serialize(MarkFrame("seg-2", "Hello.")))
    assert mark == {"type": "mark", "name": "seg-2", "text": "Hello."}
    event = await serializer.serialize(CallEventFrame(message={"kind": "turn", "text": "Hi"}))
    assert json.loads(event) == {"type": "event", "kind": "turn", "text": "Hi"}
    assert hooks.events[3:] == [("bot_audio", 320), ("clear", None)]


def test_rate_limit_is_per_client_and_slides():
    clock = Clock(1000.0)
    limiter = RateLimiter(2, 60.0, clock)
    assert limiter.hit("a") == 0.0
    clock.now += 10
    assert limiter.hit("a") == 0.0
    assert limiter.hit("a") == pytest.approx(50.0)  # the first hit leaves the window in 50 s
    assert limiter.hit("b") == 0.0  # another client is not affected
    clock.now += 50
    assert limiter.hit("a") == 0.0
    assert limiter.hit("a") == pytest.approx(10.0)
    clock.now += 3600
    limiter.hit("c")
    assert set(limiter._hits) == {"c"}  # old clients are forgotten


def test_client_keys():
    assert client_key("203.0.113.9") == "203.0.113.9"
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("") == "unknown"
    assert client_key("testclient") == "testclient"
