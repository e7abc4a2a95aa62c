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


def transfer_dial(
    numbers: list[str], action_url: str, whisper_url: str = "", timeout_secs: int = 20
) -> str:
    """Ring ``numbers`` at once; the first to answer gets the caller.

    With ``whisper_url`` (a warm transfer) the person who answers hears the TwiML served there
    before being connected. Twilio posts the outcome (DialCallStatus) to ``action_url``.
    """
    if not numbers:
        raise ValueError("a transfer needs at least one number to dial")
    response = VoiceResponse()
    dial = Dial(action=action_url, method="POST", timeout=timeout_secs)
    for number in numbers:
        if whisper_url:
            dial.number(number, url=whisper_url, method="POST")
        else:
            dial.number(number)
    response.append(dial)
    return str(response)


def whisper(summary: str) -> str:
    """What the person answering a warm transfer hears before the caller is put through."""
    response = VoiceResponse()
    response.say(summary)
    return str(response)


def hangup() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)
