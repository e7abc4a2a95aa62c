"""TwiML documents Frontdesk answers with (built with the twilio SDK)."""

from __future__ import annotations

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse


def connect_stream(stream_url: str, token: str, parameters: dict[str, str] | None = None) -> str:
    """Answer a call by streaming its audio to our media websocket."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    stream.parameter(name="token", value=token)
    for name, value in (parameters or {}).items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def apologise_busy(message: str, dial_number: str = "") -> str:
    """Over capacity or shutting down: apologise, then dial a person if there is one."""
    response = VoiceResponse()
    response.say(message)
    if dial_number:
        dial = Dial(timeout=25)
        dial.number(dial_number)
        response.append(dial)
    else:
        response.hangup()
    return str(response)


def say_and_hangup(message: str) -> str:
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)
