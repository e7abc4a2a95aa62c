"""Stream tokens, Twilio signatures and phone numbers masked for logs."""

import base64
import json
import time
from pathlib import Path

import pytest

from agent.app import resolve_stream_token_key
from agent.settings import Secret, Settings
from telephony.privacy import mask_phone
from telephony.signature import is_valid_twilio_request, public_request_url, sign_twilio_request
from telephony.tokens import StreamTokens, TokenError, derive_key
from tests.conftest import Clock
from tools.store.db import Database
from tools.store.nonces import StreamNonces


async def test_token_is_one_time_bound_and_short_lived():
    clock = Clock(1000.0)
    tokens = StreamTokens(ttl_secs=30, clock=clock)
    token = tokens.issue("CA31000000000000000000000000000000", {"from": "+14135550123"})
    with pytest.raises(TokenError, match="not issued for this call"):
        await tokens.consume(token, "CA32000000000000000000000000000000")
    assert await tokens.consume(token, "CA31000000000000000000000000000000") == {
        "from": "+14135550123"
    }
    with pytest.raises(TokenError, match="already used"):
        await tokens.consume(token, "CA31000000000000000000000000000000")
    late = tokens.issue("CA33000000000000000000000000000000")
    clock.now += 60
    with pytest.raises(TokenError, match="expired"):
        await tokens.consume(late, "CA33000000000000000000000000000000")
    for bad in (None, "", "garbage", "a.b.c", "a.1.c", "é.x", "a.", ".b", "x" * 5000 + ".y"):
        with pytest.raises(TokenError):
            await tokens.consume(bad, "CA31000000000000000000000000000000")


async def test_tokens_signed_with_another_key_are_refused():
    token = StreamTokens().issue("CA31000000000000000000000000000000")
    with pytest.raises(TokenError, match="not issued"):
        await StreamTokens().consume(token, "CA31000000000000000000000000000000")
    with pytest.raises(TokenError, match="not issued"):
        await StreamTokens(key=derive_key("b")).consume(
            StreamTokens(key=derive_key("a")).issue("CA31000000000000000000000000000000"),
            "CA31000000000000000000000000000000",
        )


async def test_a_token_one_worker_issued_is_consumed_once_by_any_worker(db: Database):
    """Two workers: their own StreamTokens, the same key, the same database."""
    clock = Clock(time.time())
    key = derive_key("admin-token")
    issuer = StreamTokens(30, clock, key=key, nonces=StreamNonces(db, clock))
    other_db = Database(db.url)
    try:
        consumer = StreamTokens(30, clock, key=key, nonces=StreamNonces(other_db, clock))
        details = {"from": "+14135550123", "to": "+14135550100", "base": "https://x", "resume": "7"}
        token = issuer.issue("CA31000000000000000000000000000000", details)
        assert await consumer.consume(token, "CA31000000000000000000000000000000") == details
        for either in (issuer, consumer):  # a replay is refused by every worker
            with pytest.raises(TokenError, match="already used"):
                await either.consume(token, "CA31000000000000000000000000000000")
        late = issuer.issue("CA32000000000000000000000000000000")
        clock.now += 31
        with pytest.raises(TokenError, match="expired"):
            await consumer.consume(late, "CA32000000000000000000000000000000")
    finally:
        await other_db.close()


async def test_a_tokens_details_cannot_be_changed():
    tokens = StreamTokens()
    payload, mac = tokens.issue(
        "CA31000000000000000000000000000000", {"from": "+14135550123"}
    ).split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["d"]["from"] = "+19995550000"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    with pytest.raises(TokenError, match="not issued for this call"):
        await tokens.consume(f"{forged}.{mac}", "CA31000000000000000000000000000000")
    body["e"] += 3600  # nor its expiry
    longer = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    with pytest.raises(TokenError, match="not issued for this call"):
        await tokens.consume(f"{longer}.{mac}", "CA31000000000000000000000000000000")


def test_the_stream_token_key_workers_share(tmp_path: Path):
    admin = Secret("admin-token")
    plain = Settings(data_dir=tmp_path)
    derived = resolve_stream_token_key(plain, admin)
    assert derived == resolve_stream_token_key(Settings(data_dir=tmp_path / "b"), admin)
    assert derived != resolve_stream_token_key(plain, Secret("another-admin-token"))
    assert derived != admin.reveal().encode()  # not the admin token itself
    given = Settings(data_dir=tmp_path, stream_token_key=Secret("k" * 40))
    assert resolve_stream_token_key(given, admin) == b"k" * 40
    dev = Settings(data_dir=tmp_path / "dev", dev_mode=True)
    generated = resolve_stream_token_key(dev, admin)
    assert generated == resolve_stream_token_key(dev, Secret("other"))  # kept in DATA_DIR
    assert generated != derived and len(generated) >= 32
    assert (tmp_path / "dev" / "stream_token_key").stat().st_mode & 0o777 == 0o600
    env = {"FRONTDESK_STREAM_TOKEN_KEY": "from-env", "FRONTDESK_HEARTBEAT_SECS": "2"}
    settings = Settings.from_env(env)
    assert settings.stream_token_key == Secret("from-env") and settings.heartbeat_secs == 2.0
    assert "from-env" not in repr(settings)


def test_twilio_signature_validation():
    url = "https://frontdesk.example.com/twilio/voice"
    params = {"CallSid": "CA31000000000000000000000000000000", "From": "+14135550123"}
    signature = sign_twilio_request("secret", url, params)
    assert is_valid_twilio_request("secret", url, params, signature)
    assert not is_valid_twilio_request("other", url, params, signature)
    assert not is_valid_twilio_request("secret", url, {**params, "From": "+1999"}, signature)
    assert not is_valid_twilio_request("secret", url, params, None)


def test_public_url_wins_over_the_host_header():
    assert (
        public_request_url(
            "https://pub.example.com/", "/twilio/voice", "", "http://10.0.0.5:8080/twilio/voice"
        )
        == "https://pub.example.com/twilio/voice"
    )
    assert public_request_url("", "/x", "", "http://h/x") == "http://h/x"


def test_phone_numbers_are_masked_for_logs():
    assert mask_phone("+14135550123") == "+1413***0123"
    assert mask_phone("+442079460958") == "+4420***0958"
    assert mask_phone("+12345") == mask_phone("") == "***"  # too short to show any of it


def test_the_database_password_is_a_secret_for_the_logs():
    from agent.logging import secret_values
    from agent.settings import Settings

    url = "postgresql://frontdesk:hunter2-long@db.example.com:5432/frontdesk"
    assert "hunter2-long" in secret_values(Settings.from_env({"FRONTDESK_DATABASE": url}))
    assert secret_values(Settings.from_env({})) == []


def test_two_workers_with_the_same_settings_accept_each_others_tokens(tmp_path: Path):
    from agent.app import create_app
    from tests.conftest import server_env

    settings = Settings.from_env(server_env(tmp_path, 8080))
    one, two = (create_app(settings).state.frontdesk for _ in range(2))
    assert one.instances.me.id != two.instances.me.id
    token = one.tokens.issue("CA31000000000000000000000000000000", {"from": "+14135550123"})
    assert two.tokens.verify(token, "CA31000000000000000000000000000000")[2] == {
        "from": "+14135550123"
    }
    other = Settings.from_env(server_env(tmp_path, 8080, FRONTDESK_ADMIN_TOKEN="x" * 30))
    with pytest.raises(TokenError, match="not issued"):
        create_app(other).state.frontdesk.tokens.verify(token, "CA31000000000000000000000000000000")
