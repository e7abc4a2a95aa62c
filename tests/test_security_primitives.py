"""Stream tokens, Twilio signatures and phone numbers masked for logs."""

import pytest

from telephony.privacy import mask_phone
from telephony.signature import is_valid_twilio_request, public_request_url, sign_twilio_request
from telephony.tokens import StreamTokens, TokenError
from tests.conftest import Clock


def test_token_is_one_time_bound_and_short_lived():
    clock = Clock(1000.0)
    tokens = StreamTokens(ttl_secs=30, clock=clock)
    token = tokens.issue("CA1", {"from": "+14135550123"})
    with pytest.raises(TokenError, match="not issued for this call"):
        tokens.consume(token, "CA2")
    assert tokens.consume(token, "CA1") == {"from": "+14135550123"}
    with pytest.raises(TokenError, match="already used"):
        tokens.consume(token, "CA1")
    late = tokens.issue("CA3")
    clock.now += 60
    with pytest.raises(TokenError, match="expired"):
        tokens.consume(late, "CA3")
    for bad in (None, "", "garbage", "a.b.c", "a.1.c"):
        with pytest.raises(TokenError):
            tokens.consume(bad, "CA1")


def test_tokens_from_another_process_are_refused():
    token = StreamTokens().issue("CA1")
    with pytest.raises(TokenError):
        StreamTokens().consume(token, "CA1")


def test_twilio_signature_validation():
    url = "https://frontdesk.example.com/twilio/voice"
    params = {"CallSid": "CA1", "From": "+14135550123"}
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
