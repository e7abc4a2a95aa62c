"""SMS for the tools (tools.registry.TextSender): Twilio Messaging from FRONTDESK_SMS_FROM.

Every text goes out through :class:`CountedTexts`: its result is counted
(``frontdesk_texts_total``) and a failure logged with the number masked; the body (a code, a
booking) is never logged."""

from __future__ import annotations

import asyncio

from loguru import logger

from agent import metrics
from agent.settings import Settings
from telephony.privacy import mask_phone
from telephony.twilio_rest import TwilioTexts, shared_rest
from tools.registry import TextSender


class CountedTexts:
    """A TextSender that counts and logs what becomes of each text, then passes any failure
    on to the tool that sent it (which decides what the caller hears)."""

    def __init__(self, inner: TextSender) -> None:
        self.inner = inner

    async def send_text(self, to: str, body: str) -> None:
        try:
            await self.inner.send_text(to, body)
        except asyncio.CancelledError:  # the sender stopped waiting (its own time limit)
            metrics.texted("timeout")
            logger.warning(f"text to {mask_phone(to)} given up: no answer from Twilio in time")
            raise
        except Exception as exc:
            metrics.texted("failed")
            logger.warning(f"text to {mask_phone(to)} not sent: {exc}")
            raise
        metrics.texted("sent")


def business_texts(settings: Settings) -> CountedTexts | None:
    """What the business texts with outside a call (the admin console's confirmations): None
    without a sending number and Twilio credentials."""
    token = settings.twilio_auth_token
    if not settings.sends_texts or token is None:
        return None
    rest = shared_rest(settings.twilio_account_sid, token.reveal(), settings.twilio_api_base_url)
    return CountedTexts(TwilioTexts(rest, settings.sms_from))


def call_texts(settings: Settings, source: str) -> CountedTexts | None:
    """What a call's tools text with: None for the browser demo (nobody to prove anything to,
    and no sending texts for a public page) or without a sending number and credentials."""
    if source != "twilio":
        return None
    return business_texts(settings)
