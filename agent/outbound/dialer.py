"""The :class:`~agent.outbound.jobs.Dialer` the app uses: Twilio's REST ``Calls.create`` with
asynchronous answering-machine detection (``DetectMessageEnd``), from FRONTDESK_OUTBOUND_FROM.

Twilio fetches the answered call's TwiML from ``/twilio/outbound/answer`` and posts the call's
progress to ``/twilio/outbound/status`` and the machine verdict to ``/twilio/outbound/amd``
(telephony.outbound_routes), all under FRONTDESK_PUBLIC_URL.
"""

from __future__ import annotations

from loguru import logger

from agent.outbound.jobs import DialError, OutboundJob
from agent.settings import Settings
from telephony.privacy import mask_phone
from telephony.twilio_rest import OutboundCallRequest, TwilioRest, TwilioRestError, shared_rest

ANSWER_PATH = "/twilio/outbound/answer"
STATUS_PATH = "/twilio/outbound/status"
AMD_PATH = "/twilio/outbound/amd"


class OutboundDisabledError(RuntimeError):
    """Outbound calls are not configured; the message says which setting is missing."""


class TwilioDialer:
    """Places :class:`OutboundJob` calls through ``rest`` from ``from_number``; the webhooks
    are reached at ``public_url``."""

    def __init__(
        self, rest: TwilioRest, from_number: str, public_url: str, ring_secs: int = 25
    ) -> None:
        self.rest = rest
        self.from_number = from_number
        self.public_url = public_url.rstrip("/")
        self.ring_secs = ring_secs

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioDialer:
        """The dialer ``settings`` configure; OutboundDisabledError says what is missing."""
        missing = settings.outbound_unavailable
        if missing or settings.twilio_auth_token is None:
            raise OutboundDisabledError(missing or "TWILIO_AUTH_TOKEN is not set")
        rest = shared_rest(
            settings.twilio_account_sid,
            settings.twilio_auth_token.reveal(),
            settings.twilio_api_base_url,
        )
        return cls(rest, settings.outbound_from, settings.public_url, settings.outbound_ring_secs)

    def request(self, job: OutboundJob) -> OutboundCallRequest:
        """What Twilio is asked for to place ``job`` (the webhooks find the job by CallSid)."""
        return OutboundCallRequest(
            to=job.to,
            from_=self.from_number,
            answer_url=f"{self.public_url}{ANSWER_PATH}",
            status_url=f"{self.public_url}{STATUS_PATH}",
            amd_url=f"{self.public_url}{AMD_PATH}",
            ring_secs=self.ring_secs,
        )

    async def place(self, job: OutboundJob) -> str:
        """Ring ``job.to``; Twilio's CallSid. DialError: retryable for no answer from Twilio or
        a 5xx (and 429), not for a request Twilio refuses (an invalid or blocked number)."""
        try:
            call = await self.rest.create_call(self.request(job))
        except TwilioRestError as exc:
            retryable = exc.status == 0 or exc.status >= 500 or exc.status == 429
            logger.warning(
                f"outbound call {job.id} to {mask_phone(job.to)} not placed "
                f"({'will retry' if retryable else 'refused'}): {exc}"
            )
            raise DialError(str(exc), retryable=retryable) from None
        logger.info(f"outbound call {job.id} to {mask_phone(job.to)} placed: {call.sid}")
        return call.sid
