"""A local stand-in for Twilio (the vendor we cannot reach): its REST API and its call engine.

REST, in Twilio's real format: ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``
with a form-encoded body (``Twiml=…``), HTTP basic auth with the account SID and auth token, a
JSON call resource back, and Twilio-style JSON errors (20003 authenticate, 20404 not found, 21220
call not in progress). Every request is kept for assertions. Messaging too: ``POST
/2010-04-01/Accounts/{AccountSid}/Messages.json`` (``To``, ``From``, ``Body``) answers a queued
message resource, or 21211 for a ``To`` that is not a phone number.

The call engine part (:meth:`FakeTwilio.dial`) does what Twilio does with ``<Dial>`` TwiML: it
fetches each ``<Number url>`` whisper when the person answers and posts the Dial ``action``
callback with DialCallStatus, all signed with X-Twilio-Signature.

Outbound calls: ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` (``To``, ``From``,
``Url``, ``StatusCallback`` + ``StatusCallbackEvent``, ``MachineDetection``, ``AsyncAmd`` +
``AsyncAmdStatusCallback``, ``Timeout``) is validated as Twilio does (21211 for a ``To`` that is
not E.164, 21213 without ``From``, 21205 without ``Url``) and answers a queued call resource;
each is kept in :attr:`FakeTwilio.placed`. :meth:`FakeTwilio.ring` then plays one out with a
scripted callee (:class:`Callee`): a person, who answers and talks through the replay client
with the stream token from the answer TwiML; an answering machine; nobody; a busy line. Every
callback is signed, as Twilio's are.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from telephony.replay import Report, Turn, converse, replay
from telephony.signature import sign_twilio_request


@dataclass
class RestRequest:
    account_sid: str
    call_sid: str
    form: dict[str, str]
    authorized: bool
    at: float  # time.time()


@dataclass
class SmsRequest:
    account_sid: str
    to: str
    from_: str
    body: str
    authorized: bool


@dataclass
class CallCreate:
    """One ``Calls.create`` request, as Twilio received it."""

    account_sid: str
    form: dict[str, str]
    status_events: list[str]  # StatusCallbackEvent (repeated in the form)
    authorized: bool
    sid: str = ""  # the CallSid it answered ("" : refused)

    @property
    def to(self) -> str:
        return self.form.get("To", "")


@dataclass
class Callee:
    """Who (or what) answers an outbound call in :meth:`FakeTwilio.ring`.

    ``human``: answers, the AMD verdict ``human`` is posted ``verdict_after`` seconds into the
    call, and ``turns`` are spoken through the replay client. ``machine``: ``greeting`` (16 kHz
    PCM) plays from the start, and the verdict (``machine_end_beep``) is posted when it ends.
    ``no-answer`` / ``busy``: the status callback reports it after ringing."""

    kind: Literal["human", "machine", "no-answer", "busy"]
    turns: list[Turn] = field(default_factory=list)
    greeting: bytes = b""
    rate: int = 16000
    verdict: str = ""  # default: human / machine_end_beep
    verdict_after: float = 0.3
    tail_secs: float = 6.0  # the callee hangs up after this much quiet from the agent
    #: Post the AMD callback to this server instead (another worker behind the public address).
    amd_server: str = ""


@dataclass
class RingResult:
    """What became of a rung outbound call: the answer TwiML and the callee's replay report
    (none when nobody answered), and every callback's HTTP status."""

    answer_twiml: str = ""
    report: Report | None = None
    heard: bytes = b""
    callbacks: list[tuple[str, int]] = field(default_factory=list)  # (CallStatus|AnsweredBy, code)


@dataclass
class DialResult:
    whisper_twiml: list[str]  # what each answering person heard first
    action_twiml: str  # what Twilio was told to do with the caller afterwards
    action_status: int


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    requests: list[RestRequest] = field(default_factory=list)
    messages: list[SmsRequest] = field(default_factory=list)  # every Messages request
    placed: list[CallCreate] = field(default_factory=list)  # every Calls.create request
    ended_calls: set[str] = field(default_factory=set)  # calls Twilio answers 404 for
    # Errors to answer the next requests with: (HTTP status, Twilio code, message).
    fail_next: list[tuple[int, int, str]] = field(default_factory=list)
    # How the call engine reaches our webhooks (None: over the network, by their URLs; an
    # httpx.ASGITransport: straight into an app in this process).
    transport: httpx.AsyncBaseTransport | None = None

    def updates(self, call_sid: str) -> list[RestRequest]:
        return [r for r in self.requests if r.call_sid == call_sid and r.authorized]

    async def dial(
        self,
        twiml: str,
        *,
        call_sid: str,
        from_number: str,
        to_number: str,
        status: str,
        answered_by: int | None = None,
    ) -> DialResult:
        """Play out ``<Dial>`` TwiML as Twilio would: the person at ``answered_by`` (index of
        the ``<Number>``) answers and hears the whisper, then the action callback reports
        ``status`` (completed, no-answer, busy, failed, canceled)."""
        dial = ET.fromstring(twiml).find("Dial")
        assert dial is not None, twiml
        numbers = dial.findall("Number")
        heard = []
        async with httpx.AsyncClient(timeout=30, transport=self.transport) as client:
            if answered_by is not None:
                number = numbers[answered_by]
                if number.get("url"):
                    params = {
                        "CallSid": "CA" + secrets.token_hex(16),
                        "ParentCallSid": call_sid,
                        "AccountSid": self.account_sid,
                        "From": from_number,
                        "To": (number.text or "").strip(),
                        "CallStatus": "in-progress",
                        "Direction": "outbound-dial",
                        "ApiVersion": "2010-04-01",
                    }
                    response = await self._post(client, number.get("url", ""), params)
                    assert response.status_code == 200, response.text
                    heard.append(response.text)
            params = {
                "CallSid": call_sid,
                "AccountSid": self.account_sid,
                "From": from_number,
                "To": to_number,
                "CallStatus": "in-progress",
                "Direction": "inbound",
                "ApiVersion": "2010-04-01",
                "DialCallStatus": status,
                "DialCallSid": "CA" + secrets.token_hex(16),
                "DialBridged": "true" if status == "completed" else "false",
            }
            if status == "completed":
                params["DialCallDuration"] = "42"
            action = await self._post(client, dial.get("action", ""), params)
        return DialResult(heard, action.text, action.status_code)

    async def ring(self, call: CallCreate, callee: Callee, *, admin_token: str = "") -> RingResult:
        """Play out the placed ``call`` as Twilio would with ``callee`` at the other end: its
        status callbacks (ringing, then in-progress or the reason nobody answered, then
        completed), the answer webhook, the asynchronous AMD callback, and for an answered
        call its media stream (the replay client). ``admin_token`` fetches the call record."""
        form = call.form
        result = RingResult()
        base = {
            "CallSid": call.sid,
            "AccountSid": self.account_sid,
            "From": form.get("From", ""),
            "To": form.get("To", ""),
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
        }
        async with httpx.AsyncClient(timeout=30, transport=self.transport) as client:

            async def status(event: str, value: str, **extra: str) -> None:
                """Post CallStatus ``value`` if the call asked for ``event`` (Twilio reports
                every way a call ends as the ``completed`` event)."""
                if event in call.status_events:
                    params = {**base, "CallStatus": value, **extra}
                    sent = await self._post(client, form["StatusCallback"], params)
                    result.callbacks.append((value, sent.status_code))

            await status("initiated", "initiated")
            await status("ringing", "ringing")
            if callee.kind in ("no-answer", "busy"):
                await status("completed", callee.kind)
                return result
            answer = await self._post(client, form["Url"], {**base, "CallStatus": "in-progress"})
            assert answer.status_code == 200, answer.text
            result.answer_twiml = answer.text
            if ET.fromstring(answer.text).find("./Connect/Stream") is None:
                await status("completed", "completed", CallDuration="1")
                return result
            await status("answered", "in-progress")
            verdict = callee.verdict or ("human" if callee.kind == "human" else "machine_end_beep")
            delay = callee.verdict_after
            if callee.kind == "machine":
                delay += len(callee.greeting) / 2 / callee.rate

            async def amd() -> None:
                await asyncio.sleep(delay)
                params = {**base, "CallStatus": "in-progress", "AnsweredBy": verdict}
                params["MachineDetectionDuration"] = str(int(delay * 1000))
                url = form["AsyncAmdStatusCallback"]
                if callee.amd_server:
                    url = callee.amd_server.rstrip("/") + "/twilio/" + url.split("/twilio/", 1)[1]
                sent = await self._post(client, url, params)
                result.callbacks.append((verdict, sent.status_code))

            options: dict[str, Any] = {
                "auth_token": self.auth_token,
                "admin_token": admin_token,
                "call_sid": call.sid,
                "answer_twiml": answer.text,
                "from_number": form.get("To", ""),
                "to_number": form.get("From", ""),
                "tail_secs": callee.tail_secs,
            }
            server = form["Url"].split("/twilio/")[0]
            verdict_posted = asyncio.create_task(amd())
            try:
                if callee.kind == "human":
                    report, heard = await converse(callee.turns, callee.rate, server, **options)
                else:
                    report, heard = await replay(callee.greeting, callee.rate, server, **options)
            finally:
                await verdict_posted
            result.report, result.heard = report, heard
            await status("completed", "completed", CallDuration=str(int(report.duration_ms / 1000)))
        return result

    async def _post(self, client: httpx.AsyncClient, url: str, params: dict[str, str]) -> Any:
        signature = sign_twilio_request(self.auth_token, url, params)
        return await client.post(url, data=params, headers={"X-Twilio-Signature": signature})


def _error(status: int, code: int, message: str) -> JSONResponse:
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    if code == 20003:
        body["detail"] = "Your AccountSid or AuthToken was incorrect."
    return JSONResponse(body, status_code=status)


def _authorized(fake: FakeTwilio, account_sid: str, header: str) -> bool:
    if not header.startswith("Basic "):
        return False
    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    expected = (fake.account_sid, fake.auth_token, fake.account_sid)
    return (user, password, account_sid) == expected


def _invalid_call(form: dict[str, str]) -> JSONResponse | None:
    """Twilio's refusal of a Calls.create request it would not place, or None."""
    to = form.get("To", "")
    if not (to.startswith("+") and to[1:].isdigit() and 8 <= len(to) <= 16):
        return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    if not form.get("From"):
        return _error(400, 21213, "Caller phone number is required.")
    if not form.get("Url", "").startswith(("http://", "https://")):
        return _error(400, 21205, "Url parameter is required.")
    return None


async def _create_call(fake: FakeTwilio, account_sid: str, request: Request) -> Any:
    """Calls.create: placed (a queued call resource) or refused as Twilio would."""
    raw = await request.form()
    form = {k: str(v) for k, v in raw.items()}
    events = [str(v) for v in raw.getlist("StatusCallbackEvent")]
    authorized = _authorized(fake, account_sid, request.headers.get("authorization", ""))
    call = CallCreate(account_sid, form, events, authorized)
    fake.placed.append(call)
    if not authorized:
        return _error(401, 20003, "Authenticate")
    if fake.fail_next:
        return _error(*fake.fail_next.pop(0))
    refusal = _invalid_call(form)
    if refusal is not None:
        return refusal
    to, from_ = form["To"], form["From"]
    call.sid = "CA" + secrets.token_hex(16)
    now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    return JSONResponse(
        {
            "sid": call.sid,
            "account_sid": account_sid,
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "status": "queued",
            "from": from_,
            "to": to,
            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{call.sid}.json",
        },
        status_code=201,
    )


def build_app(fake: FakeTwilio) -> FastAPI:
    app = FastAPI()

    @app.post("/2010-04-01/Accounts/{account_sid}/Messages.json")
    async def create_message(account_sid: str, request: Request) -> Any:
        form = {k: str(v) for k, v in (await request.form()).items()}
        authorized = _authorized(fake, account_sid, request.headers.get("authorization", ""))
        to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        fake.messages.append(SmsRequest(account_sid, to, from_, body, authorized))
        if not authorized:
            return _error(401, 20003, "Authenticate")
        if fake.fail_next:
            return _error(*fake.fail_next.pop(0))
        if not to.startswith("+") or not to[1:].isdigit():
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        sid = "SM" + secrets.token_hex(16)
        return JSONResponse(
            {
                "sid": sid,
                "account_sid": account_sid,
                "to": to,
                "from": from_,
                "body": body,
                "status": "queued",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
            },
            status_code=201,
        )

    @app.post("/2010-04-01/Accounts/{account_sid}/Calls.json")
    async def create_call(account_sid: str, request: Request) -> Any:
        return await _create_call(fake, account_sid, request)

    @app.post("/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json")
    async def update_call(account_sid: str, call_sid: str, request: Request) -> Any:
        form = {k: str(v) for k, v in (await request.form()).items()}
        authorized = _authorized(fake, account_sid, request.headers.get("authorization", ""))
        fake.requests.append(RestRequest(account_sid, call_sid, form, authorized, time.time()))
        if not authorized:
            return _error(401, 20003, "Authenticate")
        if fake.fail_next:
            return _error(*fake.fail_next.pop(0))
        if call_sid in fake.ended_calls:
            return _error(
                404,
                20404,
                f"The requested resource /2010-04-01/Accounts/{account_sid}/Calls/"
                f"{call_sid}.json was not found",
            )
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        return {
            "sid": call_sid,
            "account_sid": account_sid,
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "direction": "inbound",
            "status": "in-progress",
            "from": "+14135550123",
            "to": "+14135550100",
            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json",
        }

    return app
