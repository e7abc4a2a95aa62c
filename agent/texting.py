"""SMS for the tools (tools.registry.TextSender): Twilio Messaging from FRONTDESK_SMS_FROM."""

from __future__ import annotations

from functools import lru_cache

from agent.settings import Settings
from telephony.twilio_rest import TwilioRest, TwilioTexts


def call_texts(settings: Settings, source: str) -> TwilioTexts | None:
    """What a call's tools text with: None for the browser demo (nobody to prove anything to,
    and no sending texts for a public page) or without a sending number and credentials."""
    token = settings.twilio_auth_token
    if source != "twilio" or not settings.sends_texts or token is None:
        return None
    rest = _rest(settings.twilio_account_sid, token.reveal(), settings.twilio_api_base_url)
    return TwilioTexts(rest, settings.sms_from)


@lru_cache(maxsize=4)
def _rest(account_sid: str, auth_token: str, base_url: str) -> TwilioRest:
    """One REST client (and its HTTP session) per account for the process, not one per call."""
    return TwilioRest(account_sid, auth_token, base_url=base_url)
