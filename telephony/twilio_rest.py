"""The Twilio REST calls Frontdesk makes: move a live call to new TwiML (a transfer), place an
outbound call (with asynchronous answering-machine detection), and send an SMS (a caller's
verification code; the message body is never logged).

A call never needs hanging up over REST: when its media stream closes, Twilio runs out of TwiML
after ``<Connect>`` and ends the call itself.

The twilio SDK blocks on the network, so every request runs in a worker thread
(``asyncio.to_thread``) and a call's event loop never waits on it. ``base_url`` points the SDK at
another host (tests use a local stand-in that speaks Twilio's REST format). Failures come back as
one :class:`TwilioRestError` carrying Twilio's HTTP status, error code and message; the auth
token never appears in one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

_T = TypeVar("_T")

#: Twilio error codes meaning the call is no longer there to act on.
CALL_GONE_CODES = frozenset({20404, 21220})  # not found; call not in progress


@dataclass(frozen=True)
class MessageResource:
    """The parts of Twilio's message resource we use."""

    sid: str
    status: str


@dataclass(frozen=True)
class CallResource:
    """The parts of Twilio's call resource we use."""

    sid: str
    status: str


#: The call progress events Twilio posts to an outbound call's status callback.
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")


@dataclass(frozen=True)
class OutboundCallRequest:
    """What :meth:`TwilioRest.create_call` asks Twilio for."""

    to: str  # E.164
    from_: str  # a number of this account
    answer_url: str  # TwiML for the answered call (a media stream)
    status_url: str  # call progress: initiated, ringing, answered, completed
    amd_url: str  # the asynchronous answering-machine verdict (AnsweredBy)
    ring_secs: int = 25  # give up (no-answer) after ringing this long


class TwilioRestError(Exception):
    """A Twilio REST request failed: ``status`` is the HTTP status (0: no answer at all),
    ``code`` Twilio's error code (e.g. 20003 authentication, 20404 not found)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"Twilio REST error {code} (HTTP {status}): {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def call_gone(self) -> bool:
        """The call ended (or never existed): there is nobody left to tell."""
        return self.code in CALL_GONE_CODES or self.status == 404


class TwilioRest:
    """A small async face over the SDK's Calls resource for one account."""

    def __init__(
        self, account_sid: str, auth_token: str, *, base_url: str = "", timeout: float = 10.0
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("Twilio REST needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        self.account_sid = account_sid
        self._client = Client(
            account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout)
        )
        if base_url:
            self._client.api.base_url = base_url.rstrip("/")

    async def redirect(self, call_sid: str, twiml: str) -> CallResource:
        """Replace what the live call ``call_sid`` is doing with ``twiml`` (this ends its media
        stream; the call itself goes on with the new instructions)."""
        return await asyncio.to_thread(self._update, call_sid, {"twiml": twiml})

    async def create_call(self, call: OutboundCallRequest) -> CallResource:
        """Place the call ``call`` describes: Twilio rings ``call.to`` and, once answered,
        fetches ``call.answer_url`` for TwiML; status and AMD results are posted to the
        callback URLs."""
        return await asyncio.to_thread(self._create_call, call)

    async def send_sms(self, to: str, from_: str, body: str) -> MessageResource:
        """Send the SMS ``body`` from ``from_`` (a number of this account) to ``to``."""
        return await asyncio.to_thread(self._create_message, to, from_, body)

    def _update(self, call_sid: str, values: dict[str, str]) -> CallResource:
        account = self._client.api.v2010.accounts(self.account_sid)
        call = _rest_request(lambda: account.calls(call_sid).update(**values))
        return CallResource(sid=str(call.sid or call_sid), status=str(call.status or ""))

    def _create_call(self, call: OutboundCallRequest) -> CallResource:
        account = self._client.api.v2010.accounts(self.account_sid)
        created = _rest_request(
            lambda: account.calls.create(
                to=call.to,
                from_=call.from_,
                url=call.answer_url,
                method="POST",
                status_callback=call.status_url,
                status_callback_event=list(STATUS_EVENTS),
                status_callback_method="POST",
                machine_detection="DetectMessageEnd",
                async_amd="true",
                async_amd_status_callback=call.amd_url,
                async_amd_status_callback_method="POST",
                timeout=call.ring_secs,
            )
        )
        return CallResource(sid=str(created.sid or ""), status=str(created.status or ""))

    def _create_message(self, to: str, from_: str, body: str) -> MessageResource:
        account = self._client.api.v2010.accounts(self.account_sid)
        message = _rest_request(lambda: account.messages.create(to=to, from_=from_, body=body))
        return MessageResource(sid=str(message.sid or ""), status=str(message.status or ""))


@lru_cache(maxsize=4)
def shared_rest(account_sid: str, auth_token: str, base_url: str = "") -> TwilioRest:
    """One REST client (and its HTTP session) per account for the process: transfers, texts
    and outbound calls share it, rather than one built per call or per use."""
    return TwilioRest(account_sid, auth_token, base_url=base_url)


def _rest_request(request: Callable[[], _T]) -> _T:
    """Run one SDK request; any failure becomes a TwilioRestError (without the request body)."""
    try:
        return request()
    except TwilioRestException as exc:
        code = exc.code if isinstance(exc.code, int) else exc.status
        message = re.sub(r"^Unable to \w+ record: ", "", str(exc.msg))
        raise TwilioRestError(exc.status, code, message) from None
    except TwilioException as exc:
        raise TwilioRestError(0, 0, f"{type(exc).__name__}: {exc}") from None
    except OSError as exc:  # requests' connection errors are OSErrors
        raise TwilioRestError(0, 0, f"no answer from Twilio: {type(exc).__name__}") from None


class TwilioTexts:
    """SMS from one number of the account (implements tools.registry.TextSender)."""

    def __init__(self, rest: TwilioRest, from_number: str) -> None:
        self.rest = rest
        self.from_number = from_number

    async def send_text(self, to: str, body: str) -> None:
        await self.rest.send_sms(to, self.from_number, body)
