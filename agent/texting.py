"""SMS for the tools (tools.registry.TextSender): Twilio Messaging from FRONTDESK_SMS_FROM."""

from __future__ import annotations

from agent.settings import Settings
from telephony.twilio_rest import TwilioRest, TwilioTexts


def call_texts(settings: Settings, source: str) -> TwilioTexts | None:
    """What a call's tools text with: None for the browser demo (nobody to prove anything to,
    and no sending texts for a public page) or without a sending number and credentials."""
    token = settings.twilio_auth_token
    if source != "twilio" or not settings.sends_texts or token is None:
        return None
    rest = TwilioRest(
        settings.twilio_account_sid, token.reveal(), base_url=settings.twilio_api_base_url
    )
    return TwilioTexts(rest, settings.sms_from)
