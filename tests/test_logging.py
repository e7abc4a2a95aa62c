"""FRONTDESK_LOG_FORMAT=json: one JSON object a line, the call's sid on every line logged while
handling it (pipecat's own lines, from its tasks, included), secrets scrubbed from messages and
tracebacks alike."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from agent.logging import configure_logging, redact
from agent.settings import Settings
from telephony.replay import converse
from tests.caller_audio import RATE, turn
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, LiveServer, server_env

SECRET = "sk-test-secret-0123456789"


@pytest.fixture
def json_log(tmp_path: Path) -> Iterator[io.StringIO]:
    """The product's logging in JSON at DEBUG (pipecat's lines too), written into a buffer."""
    log = io.StringIO()
    env = server_env(tmp_path, 0, FRONTDESK_LOG_FORMAT="json", FRONTDESK_LOG_LEVEL="DEBUG")
    configure_logging(Settings.from_env({**env, "OPENAI_API_KEY": SECRET}), stream=log)
    try:
        yield log
    finally:
        logger.remove()
        assert sys.__stderr__ is not None
        logger.add(sys.__stderr__)  # loguru's default sink, not a stream pytest will close


def lines(log: io.StringIO) -> list[dict[str, Any]]:
    """Every line of ``log``, each parsed (a line that is not one JSON object fails)."""
    parsed = [json.loads(line) for line in log.getvalue().splitlines()]
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


def test_lines_are_json_and_secrets_are_scrubbed(json_log: io.StringIO) -> None:
    redact("another-secret-9876")
    logger.info(f"using key {SECRET}")
    try:
        raise ValueError(f"bad key another-secret-9876 and {SECRET}")
    except ValueError:
        logger.exception("the vendor refused")
    info, error = lines(json_log)
    assert info["message"] == "using key **********" and info["level"] == "INFO"
    assert info["logger"] == "tests.test_logging" and info["module"] == "test_logging"
    assert info["time"].startswith("20") and "call_sid" not in info
    assert error["level"] == "ERROR" and error["message"] == "the vendor refused"
    assert "ValueError: bad key ********** and **********" in error["exception"]
    assert "Traceback" in error["exception"]
    assert SECRET not in json_log.getvalue() and "another-secret-9876" not in json_log.getvalue()


def test_text_tracebacks_are_scrubbed_too(tmp_path: Path) -> None:
    log = io.StringIO()
    configure_logging(Settings.from_env({**server_env(tmp_path, 0), "OPENAI_API_KEY": SECRET}), log)
    try:
        try:
            raise RuntimeError(f"connect failed with {SECRET}")
        except RuntimeError:
            logger.exception("oops")
    finally:
        logger.remove()
        assert sys.__stderr__ is not None
        logger.add(sys.__stderr__)
    assert "RuntimeError: connect failed with **********" in log.getvalue()
    assert SECRET not in log.getvalue()


async def test_a_calls_lines_carry_its_sid(live_server: LiveServer, json_log: io.StringIO) -> None:
    report, _ = await converse(
        [turn("What are your opening hours?", answer_parts=2), turn("That's all, thank you. Bye.")],
        RATE,
        live_server.url,
        auth_token=AUTH_TOKEN,
        admin_token=ADMIN_TOKEN,
    )
    assert report.call_record is not None
    sid = report.call_record["call_sid"]
    logged = lines(json_log)
    # The app's and pipecat's lines (not the replaying caller's, in this test's own loop).
    server = [p for p in logged if p["logger"].split(".")[0] in ("agent", "pipecat")]
    start = next(i for i, p in enumerate(server) if "streaming" in p["message"])
    end = next(i for i, p in enumerate(server) if f"call {sid} ended" in p["message"])
    during = server[start : end + 1]
    assert all(p.get("call_sid") == sid for p in during), [
        (p["logger"], p["message"]) for p in during if p.get("call_sid") != sid
    ][:5]
    # Lines from inside the pipeline (pipecat's processors run in tasks of their own).
    inside = {p["logger"] for p in during if p["logger"].startswith("pipecat.")}
    assert len(inside) >= 3, inside
    assert any(sid in p["message"] for p in during)


def test_what_the_model_wrote_is_logged_only_at_debug() -> None:
    """A caller's words the model repeated stay out of INFO logs; DEBUG shows them."""
    from agent.brain.policy import parse_turn

    said = "my card number is 4111 1111 1111 1111"
    for level, shown in (("INFO", False), ("DEBUG", True)):
        log = io.StringIO()
        sink = logger.add(log, level=level, format="{message}")
        try:
            parse_turn(f"tell them {said}", [])  # not a say: line nor a call: unusable
        finally:
            logger.remove(sink)
        assert "unusable line" in log.getvalue() or not shown
        assert (said in log.getvalue()) is shown, level
