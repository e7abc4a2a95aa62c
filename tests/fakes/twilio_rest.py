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
"""

from __future__ import annotations

import base64
import secrets
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
