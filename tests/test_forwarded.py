"""FRONTDESK_TRUSTED_PROXIES (issue 17): X-Forwarded-For and X-Forwarded-Proto are believed only
from a trusted proxy, the client is the right-most hop that is not one, and what the sign-in
lock-out, the demo's rate limit and Twilio's signature check see follows from that.

The app runs in-process (starlette's TestClient, its socket peer set per client) without its
lifespan; its database is migrated beforehand.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agent.app import create_app
from agent.forwarded import LOOPBACK, forwarded_client, parse_networks
from agent.settings import Settings, SettingsError
from telephony.signature import sign_twilio_request
from tests.conftest import AUTH_TOKEN, server_env
from tools.store.db import Database

ORIGIN = {"origin": "http://testserver"}
PROXY = "10.1.2.3"  # a load balancer in the trusted network
TRUSTED = parse_networks("10.0.0.0/8,::1,127.0.0.1")
ALICE, BOB = "203.0.113.5", "198.51.100.7"  # two clients behind the same proxy


# --- The rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("192.0.2.9", ALICE, "192.0.2.9"),  # an untrusted peer's header is ignored
        (PROXY, ALICE, ALICE),
        (PROXY, f"1.1.1.1, {ALICE}", ALICE),  # the forged left-most entry is not believed
        (PROXY, f"127.0.0.1, {ALICE}", ALICE),  # nor a forged trusted-looking one
        (PROXY, f"{ALICE}, 10.9.9.9", ALICE),  # past a second trusted proxy
        (PROXY, f"{ALICE}:51234, 10.9.9.9:443", ALICE),  # with ports
        (PROXY, "[2001:db8::1]:443", "2001:db8::1"),
        (PROXY, "2001:db8::1", "2001:db8::1"),
        (PROXY, "::ffff:203.0.113.5", ALICE),  # IPv4 as mapped into IPv6
        (PROXY, f"{ALICE}, garbage", PROXY),  # garbled by a proxy: the last trusted hop
        (PROXY, f"unknown, {ALICE}", ALICE),
        (PROXY, "10.0.0.1, 10.0.0.2", "10.0.0.1"),  # all trusted: the client is a proxy too
        (PROXY, "", PROXY),
        ("::1", ALICE, ALICE),
    ],
)
def test_the_client_is_the_right_most_untrusted_hop(
    peer: str, forwarded_for: str, client: str
) -> None:
    assert forwarded_client(peer, forwarded_for, TRUSTED) == client


def test_the_setting_takes_addresses_and_networks_and_refuses_anything_else() -> None:
    def trusted(raw: str | None) -> tuple[object, ...]:
        env = {} if raw is None else {"FRONTDESK_TRUSTED_PROXIES": raw}
        return Settings.from_env(env).trusted_proxies

    assert trusted(None) == trusted("") == LOOPBACK
    assert trusted("none") == ()
    assert trusted(" 10.0.0.0/8, 2001:db8::/32 ,192.0.2.1") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("192.0.2.1/32"),
    )
    for bad in ("10.0.0.1/8", "proxy.example.com", "10.0.0.0/33", "*", "127.0.0.1;10.0.0.1"):
        with pytest.raises(SettingsError, match="FRONTDESK_TRUSTED_PROXIES") as refused:
            trusted(bad)
        assert repr(bad) in str(refused.value)  # names the entry that is wrong


# --- The app ----------------------------------------------------------------------------------


async def _migrate(url: str) -> None:
    db = Database(url)
    await db.migrate()
    await db.close()


def make_app(tmp_path: Path, **env: str) -> object:
    settings = Settings.from_env(
        server_env(tmp_path, 8080, FRONTDESK_TRUSTED_PROXIES="10.0.0.0/8", **env)
    )
    asyncio.run(_migrate(settings.database))
    return create_app(settings)


def client_from(app: object, peer: str) -> TestClient:
    return TestClient(app, client=(peer, 40000))  # type: ignore[arg-type]


def sign_in(client: TestClient, password: str, forwarded_for: str = "") -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = client.post("/api/admin/session", json={"password": password}, headers=headers)
    return response.status_code


def test_behind_a_trusted_proxy_each_client_has_its_own_sign_in_lock_out(tmp_path: Path) -> None:
    proxy = client_from(make_app(tmp_path), PROXY)
    # Alice guesses ten times; each request's left-most entry is a different forged address.
    codes = [sign_in(proxy, f"guess-{n}", f"192.0.2.{n}, {ALICE}") for n in range(10)]
    assert codes == [401] * 10
    assert sign_in(proxy, "admin-test-token-0123456789", ALICE) == 429  # locked, right or not
    assert sign_in(proxy, "admin-test-token-0123456789", f"1.1.1.1, {ALICE}") == 429
    # Bob, behind the same proxy, is not locked out.
    assert sign_in(proxy, "admin-test-token-0123456789", BOB) == 200


def test_from_an_untrusted_peer_x_forwarded_for_is_ignored(tmp_path: Path) -> None:
    direct = client_from(make_app(tmp_path), ALICE)
    # Each guess claims another address; all of them count against the peer itself.
    codes = [sign_in(direct, f"guess-{n}", f"198.51.100.{n}") for n in range(10)]
    assert codes == [401] * 10
    assert sign_in(direct, "admin-test-token-0123456789", BOB) == 429


def demo_call(client: TestClient, forwarded_for: str) -> str:
    """Open the demo socket as ``forwarded_for`` and return how it ended ("protocol" once it
    was admitted and got a bad start, "rate_limited" when refused)."""
    headers = {**ORIGIN, "X-Forwarded-For": forwarded_for}
    with client.websocket_connect("/demo/ws", headers=headers) as ws:
        ws.send_text("not a start")
        code: str = ws.receive_json()["code"]
        return code


def test_the_demo_rate_limit_counts_the_forwarded_client(tmp_path: Path) -> None:
    # Demo lines enough for every socket: a slot given back as a socket closes may still be held.
    app = make_app(
        tmp_path,
        FRONTDESK_DEMO="1",
        FRONTDESK_DEMO_CALLS_PER_MINUTE="2",
        FRONTDESK_DEMO_MAX_CALLS="20",
    )
    proxy = client_from(app, PROXY)
    assert [demo_call(proxy, f"192.0.2.{n}, {ALICE}") for n in range(3)] == [
        "protocol",
        "protocol",
        "rate_limited",  # the forged left-most entries did not make Alice someone else
    ]
    assert demo_call(proxy, BOB) == "protocol"  # Bob behind the same proxy still may call
    direct = client_from(app, "192.0.2.200")  # not a proxy: its header names nobody
    assert [demo_call(direct, f"198.51.100.{n}") for n in range(3)] == [
        "protocol",
        "protocol",
        "rate_limited",
    ]


def test_twilio_signatures_are_checked_against_the_url_the_proxy_was_reached_on(
    tmp_path: Path,
) -> None:
    """Without FRONTDESK_PUBLIC_URL, the signed URL is rebuilt from the Host header and the
    trusted proxy's X-Forwarded-Proto: Twilio signed https://, the app sees http://."""
    app = make_app(tmp_path)
    form = {"CallSid": "CA" + "a" * 32, "From": "+14135550123", "To": "+14135550100"}
    signature = sign_twilio_request(AUTH_TOKEN, "https://fd.example/twilio/voice", form)
    headers = {
        "Host": "fd.example",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": ALICE,
        "X-Twilio-Signature": signature,
    }
    answered = client_from(app, PROXY).post("/twilio/voice", data=form, headers=headers)
    assert answered.status_code == 200, answered.text
    assert 'url="wss://fd.example/twilio/media"' in answered.text
    # The same request straight from an untrusted peer: its X-Forwarded-Proto is not believed.
    forged = client_from(app, "192.0.2.9").post("/twilio/voice", data=form, headers=headers)
    assert forged.status_code == 403
