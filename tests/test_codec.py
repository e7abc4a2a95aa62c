"""The Twilio Media Streams codec, fed with captured JSON frames, and its pipecat serializer."""

import base64
import json

import numpy as np
import pytest
from pipecat.frames.frames import (
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
)

from telephony import codec
from telephony.serializer import CallEventFrame, MarkFrame, TwilioMediaSerializer
from telephony.stream_codec import MAX_ERROR_CHARS, FrameErrors, ProtocolError
from tests.fakes.stream_hooks import RecordingHooks

CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
START = (
    '{"event": "start", "sequenceNumber": "1", "start": {"accountSid": "ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", '
    '"streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0", "callSid": "CA7a4d2d9dbe5b5d6b4a2b1c0e9f8a7b6c", '
    '"tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}, '
    '"customParameters": {"token": "abc.123.def"}}, "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0"}'
)
MEDIA = (
    '{"event": "media", "sequenceNumber": "3", "media": {"track": "inbound", "chunk": "1", '
    '"timestamp": "5", "payload": "' + base64.b64encode(bytes([0xFF] * 160)).decode() + '"}, '
    '"streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0"}'
)
DTMF = (
    '{"event": "dtmf", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0", "sequenceNumber": "5", '
    '"dtmf": {"track": "inbound_track", "digit": "0"}}'
)
MARK = (
    '{"event": "mark", "sequenceNumber": "4", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0", '
    '"mark": {"name": "seg-1"}}'
)
STOP = (
    '{"event": "stop", "sequenceNumber": "5", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0", '
    '"stop": {"accountSid": "ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "callSid": "CA7a4d2d9dbe5b5d6b4a2b1c0e9f8a7b6c"}}'
)


def test_parses_each_inbound_event():
    assert codec.parse_message(CONNECTED) == codec.Connected("Call", "1.0.0")
    start = codec.parse_message(START)
    assert isinstance(start, codec.Start)
    assert start.call_sid == "CA7a4d2d9dbe5b5d6b4a2b1c0e9f8a7b6c"
    assert start.custom_parameters == {"token": "abc.123.def"}
    media = codec.parse_message(MEDIA)
    assert isinstance(media, codec.Media) and media.payload == bytes([0xFF] * 160)
    assert media.chunk == 1 and media.timestamp_ms == 5
    assert codec.parse_message(DTMF) == codec.Dtmf("MZ18ad3ab5a668481ce02b83e7395059f0", "0")
    assert codec.parse_message(MARK) == codec.Mark("MZ18ad3ab5a668481ce02b83e7395059f0", "seg-1")
    stop = codec.parse_message(STOP)
    assert isinstance(stop, codec.Stop) and stop.call_sid.startswith("CA")


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"event": "bogus"}', "unknown event"),
        ('{"event": "media"}', "object 'media'"),
        ('{"event": "media", "media": {"payload": "%%%"}}', "base64"),
        ('{"event": "media", "media": {"payload": ""}}', "non-empty"),
        ('{"event": "dtmf", "dtmf": {"digit": "x"}}', "dtmf.digit"),
        ('{"event": "mark", "mark": {}}', "mark.name"),
        (START.replace('"sampleRate": 8000', '"sampleRate": 16000'), "8000 Hz"),
        (START.replace('"callSid": "CA7a4d2d9dbe5b5d6b4a2b1c0e9f8a7b6c", ', ""), "callSid"),
        ('{"event": "media", "media": {"payload": "' + "A" * 20000 + '"}}', "exceeds"),
    ],
)
def test_refuses_malformed_frames_with_a_clear_message(frame, message):
    with pytest.raises(ProtocolError, match=message):
        codec.parse_message(frame)


def test_parser_enforces_event_order():
    parser = codec.MediaStreamParser()
    parser.receive(CONNECTED)
    with pytest.raises(ProtocolError, match="before start"):
        parser.receive(MEDIA)
    parser.receive(START)
    with pytest.raises(ProtocolError, match="second start"):
        parser.receive(START)
    assert isinstance(parser.receive(MEDIA), codec.Media)
    with pytest.raises(ProtocolError, match="does not match"):
        parser.receive(MEDIA.replace("MZ18ad3ab5a668481ce02b83e7395059f0", "MZother"))
    parser.receive(STOP)
    with pytest.raises(ProtocolError, match="after stop"):
        parser.receive(MEDIA)
    assert parser.errors.count == 4


def test_encodes_outbound_events():
    assert json.loads(codec.encode_clear("MZ1")) == {"event": "clear", "streamSid": "MZ1"}
    assert json.loads(codec.encode_mark("MZ1", "seg-2")) == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "seg-2"},
    }
    media = json.loads(codec.encode_media("MZ1", b"\x01\x02"))
    assert media["event"] == "media" and base64.b64decode(media["media"]["payload"]) == b"\x01\x02"


def test_mulaw_round_trip_is_close():
    t = np.arange(8000) / 8000
    pcm = (np.sin(2 * np.pi * 440 * t) * 12000).astype("<i2")
    back = np.frombuffer(codec.ulaw_to_pcm16(codec.pcm16_to_ulaw(pcm.tobytes())), dtype="<i2")
    assert len(back) == len(pcm)
    error = np.abs(back.astype(int) - pcm.astype(int))
    assert error.max() < 12000 * 0.05  # mu-law keeps within a few percent at this level
    assert codec.ulaw_to_pcm16(bytes([0xFF])) == b"\x00\x00"  # 0xFF is mu-law silence


def test_matches_the_standard_g711_table():
    audioop = pytest.importorskip("audioop")
    pcm = np.arange(-32768, 32768).astype("<i2").tobytes()  # every sample value
    assert codec.pcm16_to_ulaw(pcm) == audioop.lin2ulaw(pcm, 2)
    ulaw = bytes(range(256))
    assert codec.ulaw_to_pcm16(ulaw) == audioop.ulaw2lin(ulaw, 2)


def test_frame_errors_keep_the_count_and_the_first_and_latest_error():
    errors = FrameErrors()
    errors.add(ProtocolError("first problem"))
    assert str(errors) == "1 malformed frame(s) ignored; first: first problem"
    errors.add(ProtocolError("x" * 5000))  # a peer's garbage quoted in the error is cut short
    errors.add(ProtocolError("latest problem"))
    assert (errors.count, errors.first, errors.latest) == (3, "first problem", "latest problem")
    assert str(errors).endswith("; latest: latest problem")
    errors.add(ProtocolError("y" * 5000))
    assert len(errors.latest) == MAX_ERROR_CHARS and errors.latest.endswith("…")


async def test_serializer_turns_events_into_frames_and_skips_bad_ones():
    parser = codec.MediaStreamParser()
    parser.receive(CONNECTED)
    with pytest.raises(ValueError, match="seen the start"):
        TwilioMediaSerializer(parser, RecordingHooks())
    parser.receive(START)
    hooks = RecordingHooks()
    serializer = TwilioMediaSerializer(parser, hooks, pipeline_rate=16000)
    audio = await serializer.deserialize(MEDIA)
    assert isinstance(audio, InputAudioRawFrame) and audio.sample_rate == 16000
    assert len(audio.audio) == 640  # 20 ms at 16 kHz
    assert await serializer.deserialize("not json") is None  # skipped, the call goes on
    assert await serializer.deserialize(MARK) is None
    dtmf = await serializer.deserialize(DTMF)
    assert isinstance(dtmf, InputDTMFFrame) and dtmf.button.value == "0"
    assert await serializer.deserialize(MEDIA.replace('"chunk"', '"chunk": [], "x"')) is None
    assert await serializer.deserialize(STOP) is None
    assert hooks.events == [("caller_audio", 320), ("mark", "seg-1"), ("dtmf", "0"), ("stop", None)]
    assert serializer.frame_errors.count == 2
    assert str(serializer.frame_errors).startswith("2 malformed frame(s) ignored; first: frame is")


async def test_serializer_encodes_bot_audio_clear_and_marks_for_twilio():
    parser = codec.MediaStreamParser()
    parser.receive(START)
    hooks = RecordingHooks()
    serializer = TwilioMediaSerializer(parser, hooks)
    sid = "MZ18ad3ab5a668481ce02b83e7395059f0"
    wideband = OutputAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1)
    media = json.loads(await serializer.serialize(wideband))
    assert media["streamSid"] == sid and len(base64.b64decode(media["media"]["payload"])) == 160
    assert json.loads(await serializer.serialize(InterruptionFrame())) == {
        "event": "clear",
        "streamSid": sid,
    }
    mark = json.loads(await serializer.serialize(MarkFrame("seg-2", "Hello.")))
    assert mark == {"event": "mark", "streamSid": sid, "mark": {"name": "seg-2"}}
    assert await serializer.serialize(CallEventFrame(message={"kind": "turn"})) is None
    assert hooks.events == [("bot_audio", 320), ("clear", None)]
