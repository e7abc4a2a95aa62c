"""Several workers: two real `run.py serve` processes on one PostgreSQL database behind this
test's TCP proxy, which picks the backend of every connection from its request line; and the
supervisor (`run.py serve --workers 2`) on one socket.

The calls use the vendor stand-ins (Deepgram, an OpenAI-compatible script, ElevenLabs, Twilio
REST), so they cost little: what runs for real is ours, in both workers.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from agent.prompts import phrases
from telephony.replay import Report, Turn, converse, replay
from tests.caller_audio import RATE, silence, speech
from tests.conftest import ADMIN_TOKEN, AUTH_TOKEN, BUSINESS_YAML, free_port, pg_database
from tests.fakes.deepgram import DeepgramStandIn
from tests.fakes.deepgram import build_app as deepgram_app
from tests.fakes.elevenlabs import ElevenLabsStandIn
from tests.fakes.elevenlabs import build_app as elevenlabs_app
from tests.fakes.llm import Rule, ScriptedLLM, ServerThread
from tests.fakes.llm import build_app as llm_app
from tests.fakes.twilio_rest import FakeTwilio
from tests.fakes.twilio_rest import build_app as twilio_app
from tests.postgres import Cluster
from tests.test_process import ServerProcess
from tools.store import schema
from tools.store.db import Database

ACCOUNT_SID = "AC" + "7" * 32
DESK = "+14135550199"
HOURS = "What are your opening hours?"
BYE = "That's all, thank you, bye."
RULES = [
    Rule(r"opening hours", reply="We are open every day, around the clock."),
    Rule(r"real person", tool="transfer_to_human", arguments={"reason": "asked for a person"}),
    Rule(
        r"call me back",
        tool="take_message",
        arguments={"message": "please call back about my booking", "name": "Anna Lee"},
    ),
    Rule(r"\bbye\b", tool="end_call", arguments={"reason": "caller said goodbye"}),
]


# --- The proxy ------------------------------------------------------------------------------


class Proxy:
    """A TCP proxy on a loopback port, in its own thread. Each connection goes to the backend
    ``route(path)`` names (default: alternating per connection), chosen from the request line
    of its first request; every choice is kept in :attr:`routed`."""

    def __init__(self, backends: list[int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backends = backends
        self.route: Callable[[str], int] | None = None
        self.routed: list[tuple[str, int]] = []
        self._count = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Proxy:
        self._thread.start()
        assert self._started.wait(10), "proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def count(self, path: str) -> int:
        return sum(p == path for p, _ in self.routed)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", self.port)
        )
        self._started.set()
        self._loop.run_forever()
        server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        parts = line.split()
        path = parts[1].decode(errors="replace").split("?")[0] if len(parts) > 1 else ""
        index = self.route(path) if self.route else self._count % len(self.backends)
        self._count += 1
        self.routed.append((path, index))
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backends[index])
        except OSError:
            writer.close()
            return
        up_writer.write(line)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        sink.close()


# --- Two workers on one database --------------------------------------------------------------


@dataclass
class Site:
    proxy: Proxy
    workers: list[ServerProcess]
    database: str
    deepgram: DeepgramStandIn
    llm: ScriptedLLM
    twilio: FakeTwilio
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def worker_of(self, line: str, call_sid: str) -> list[int]:
        """Which workers logged ``line`` (``{sid}`` replaced by ``call_sid``)."""
        text = line.format(sid=call_sid)
        return [i for i, w in enumerate(self.workers) if text in w.log()]


def business_file(directory: Path) -> Path:
    """The salon, open around the clock (so nothing depends on when the test runs), with a
    short greeting and one escalation number."""
    config = yaml.safe_load(BUSINESS_YAML.read_text())
    days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    config["hours"] = {day: "00:00-24:00" for day in days}
    config["holidays"] = []
    config["greeting"] = "Hello, {business_name}."
    config["escalation_number"] = DESK
    path = directory / "business.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def worker_env(site_dir: Path, database: str, ports: dict[str, int], public: str) -> dict[str, str]:
    return {
        "FRONTDESK_DATABASE": database.replace("+asyncpg", ""),
        "FRONTDESK_PUBLIC_URL": public,
        "FRONTDESK_BUSINESS_CONFIG": str(business_file(site_dir)),
        "FRONTDESK_TURN_AUDIO_THRESHOLD": "0",  # no smart-turn model: cheaper calls
        "FRONTDESK_MAX_CALLS": "60",  # shared by the workers (the race has 50 at once)
        "FRONTDESK_PROVIDER_TIMEOUT_SECS": "60",  # the race holds the LLM's answers
        "FRONTDESK_HEARTBEAT_SECS": "2",  # a dead worker is found within seconds (6 s: 3 beats)
        "DEEPGRAM_API_KEY": "dg-test",
        "DEEPGRAM_BASE_URL": f"ws://127.0.0.1:{ports['deepgram']}",
        "ELEVENLABS_API_KEY": "el-test",
        "ELEVENLABS_BASE_URL": f"ws://127.0.0.1:{ports['elevenlabs']}",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_API_BASE_URL": f"http://127.0.0.1:{ports['twilio']}",
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, pg_cluster: Cluster) -> Iterator[Site]:
    """Two workers sharing a fresh PostgreSQL database (they migrate and seed it at once) and a
    data dir, behind the proxy that is their FRONTDESK_PUBLIC_URL."""
    data_dir = tmp_path_factory.mktemp("workers")
    database = asyncio.run(pg_database(pg_cluster, template="template0"))
    deepgram = DeepgramStandIn(scripts=[[HOURS, BYE]], latency=0.05)
    script = ScriptedLLM(rules=list(RULES))
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    ports = {name: free_port() for name in ("deepgram", "llm", "elevenlabs", "twilio")}
    with (
        ServerThread(deepgram_app(deepgram), ports["deepgram"]),
        ServerThread(llm_app(script), ports["llm"]),
        ServerThread(
            elevenlabs_app(ElevenLabsStandIn(first_audio_latency=0.05)), ports["elevenlabs"]
        ),
        ServerThread(twilio_app(fake), ports["twilio"]),
    ):
        proxy = Proxy([])
        env = worker_env(data_dir, database, ports, proxy.url)
        llm_url = f"http://127.0.0.1:{ports['llm']}/v1"
        workers = [ServerProcess(data_dir, llm_url, **env) for _ in range(2)]
        proxy.backends = [w.port for w in workers]
        try:
            for worker in workers:
                worker.wait_ready()
            with proxy:
                yield Site(proxy, workers, database, deepgram, script, fake, data_dir, env)
        finally:
            for worker in workers:
                worker.stop()


async def call(
    site: Site, *lines: str, parts: int = 1, wait: float = 15.0, **options: Any
) -> Report:
    """A turn-taking call through the proxy; the caller says ``lines`` (the Deepgram stand-in
    must have them scripted), each answered in ``parts`` stretches of speech."""
    turns = [Turn(speech(line), answer_parts=parts) for line in lines]
    options.setdefault("server", site.proxy.url)
    report, _ = await converse(
        turns,
        RATE,
        max_wait_secs=wait,
        auth_token=AUTH_TOKEN,
        admin_token=ADMIN_TOKEN,
        public_url=site.proxy.url,
        **options,
    )
    return report


async def test_calls_complete_when_webhook_and_stream_land_on_different_workers(
    site: Site,
) -> None:
    site.deepgram.scripts[:] = [[HOURS, BYE]]
    site.proxy.route = alternate_crossing()
    calls = []
    before = site.proxy.count("/twilio/media")
    for n in range(20):  # one at a time into the proxy, so webhook n and stream n pair up
        calls.append(asyncio.create_task(call(site, HOURS, BYE, from_number=f"+1413555{n:04d}")))
        await _routed(site.proxy, "/twilio/media", before + n + 1)
    reports = await asyncio.wait_for(asyncio.gather(*calls), 240)
    for n, report in enumerate(reports):
        record = report.call_record
        assert record is not None, (report.call_sid, report.close_code)
        assert record["outcome"] == "completed" and record["ended_at"], record
        caller = [t["text"] for t in record["turns"] if t["role"] == "caller"]
        assert caller == [HOURS, BYE], record["turns"]
        assert [c["name"] for c in record["tool_calls"]] == ["end_call"]
        # The webhook was answered by one worker, the stream served by the other.
        answered = site.worker_of("incoming call {sid}", report.call_sid)
        streamed = site.worker_of("call {sid} streaming", report.call_sid)
        assert answered == [n % 2] and streamed == [(n + 1) % 2], (n, answered, streamed)


async def _routed(proxy: Proxy, path: str, count: int, timeout: float = 30.0) -> None:
    """Wait until the proxy has routed ``count`` connections for ``path``."""
    deadline = time.monotonic() + timeout
    # The proxy's thread counts; polling it every 20 ms costs nothing.
    while proxy.count(path) < count and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def alternate_crossing() -> Callable[[str], int]:
    """Voice webhook n goes to worker n % 2, media stream n to the other one; anything else
    alternates."""
    counts: Counter[str] = Counter()

    def route(path: str) -> int:
        n = counts[path]
        counts[path] += 1
        return (n + 1) % 2 if path == "/twilio/media" else n % 2

    return route


async def test_a_transfer_resumes_on_the_worker_that_took_the_dial_callback(site: Site) -> None:
    table = {"/twilio/media": 1}  # the call runs on worker 1; webhooks go to worker 0
    site.proxy.route = lambda path: table.get(path, 0)
    site.deepgram.scripts[:] = [["Hi, I want to talk to a real person."]]
    first = await call(site, "Hi, I want to talk to a real person.", from_number="+14135550166")
    sid = first.call_sid
    assert first.call_record is not None and first.call_record["outcome"] == "transferred"
    [update] = site.twilio.updates(sid)
    # Nobody answers: Twilio posts the Dial action, which worker 0 takes; the caller comes
    # back to the agent on a new stream, which worker 0 runs too: all it knows of the call
    # is in the shared database.
    table["/twilio/media"] = 0
    site.deepgram.scripts[:] = [["Please call me back about my booking."]]
    dialled = await site.twilio.dial(
        update.form["Twiml"],
        call_sid=sid,
        from_number="+14135550166",
        to_number="+14135550100",
        status="no-answer",
    )
    assert dialled.action_status == 200 and "<Stream" in dialled.action_twiml
    back = await call(
        site,
        "Please call me back about my booking.",
        call_sid=sid,
        answer_twiml=dialled.action_twiml,
        from_number="+14135550166",
    )
    assert [i for p, i in site.proxy.routed if p == "/twilio/dial-action"] == [0]
    assert site.worker_of("call {sid} streaming", sid) == [0, 1]
    record = back.call_record
    assert record is not None and record["call_sid"] == sid
    texts = [t["text"] for t in record["turns"]]
    assert phrases()["transfer_connecting"] in texts and phrases()["transfer_no_answer"] in texts
    handoffs = [(h["kind"], h["outcome"]) for h in record["handoffs"]]
    assert handoffs == [("transfer", "no_answer"), ("message", "message_taken")]
    # Worker 0's agent knew the conversation worker 1 had had.
    asked = [r for r in site.llm.requests if "call me back" in str(r["messages"][-1])]
    assert asked and "real person" in str(asked[0]["messages"])


TIMES = ["10am", "11am", "noon", "1pm", "2pm"]


class HeldRule(Rule):
    """A rule whose answer is held until ``release_at`` (time.time()): requests arriving before
    it all get their answers at that instant, so the tool calls they carry run at once."""

    release_at = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[float] = []  # when each request came (time.time())

    @property
    def first_token_delay(self) -> float:
        self.asked.append(time.time())
        return max(0.0, self.release_at - time.time())

    @first_token_delay.setter
    def first_token_delay(self, value: float) -> None:
        pass


async def test_fifty_bookings_race_through_both_workers_for_five_slots(site: Site) -> None:
    """Ten callers, five on each worker, each of whose model books all five times at once
    (parallel tool calls), all released in the same instant: fifty attempts, five slots."""
    day = date.today() + timedelta(days=10)
    line = "Book me a beard trim at any of your morning times."
    site.deepgram.scripts[:] = [[line]]
    attempts = [
        ("book_appointment", {"service": "beard trim", "when": f"{day:%B} {day.day} at {t}"})
        for t in TIMES
    ]
    held = HeldRule(r"beard trim", tool=attempts[0][0], arguments=attempts[0][1])
    held.parallel = attempts[1:]
    held.release_at = time.time() + 20.0
    site.llm.rules.insert(0, held)
    site.proxy.route = alternate_crossing()
    sids = [f"CAace0{n:028d}" for n in range(10)]
    calls = []
    before = site.proxy.count("/twilio/media")
    for n, sid in enumerate(sids):
        calls.append(
            asyncio.create_task(
                call(site, line, parts=2, wait=60, call_sid=sid, from_number=f"+1413666{n:04d}")
            )
        )
        await _routed(site.proxy, "/twilio/media", before + n + 1)
    reports = await asyncio.wait_for(asyncio.gather(*calls), 240)
    tried = []
    for report in reports:
        assert report.call_record is not None, (report.call_sid, report.close_code)
        tried += [c for c in report.call_record["tool_calls"] if c["name"] == "book_appointment"]
    assert len(tried) == 50 and sum(c["ok"] for c in tried) == 5, tried
    assert {c["error"] for c in tried if not c["ok"]} == {"slot_taken"}, tried
    # Every call's request was in before the release: the fifty answers left at one instant.
    assert len(held.asked) == 10 and max(held.asked) < held.release_at
    db = Database(site.database)
    try:
        async with db.read() as conn:
            rows = (await conn.execute(sa.select(schema.appointments))).mappings().all()
    finally:
        await db.close()
    assert len(rows) == 5 and len({r["starts_at"] for r in rows}) == 5
    assert {r["call_sid"] for r in rows} <= set(sids)
    streamed = [site.worker_of("call {sid} streaming", sid) for sid in sids]
    assert streamed == [[(n + 1) % 2] for n in range(10)]


async def test_kill_9_of_a_worker_interrupts_its_call_and_spares_the_others(site: Site) -> None:
    try:
        await _kill_9_mid_call(site)
    finally:  # a new worker 0, as a supervisor would start, for whatever runs next
        old = site.workers[0]
        old.stop()
        llm_url = old.env["OPENAI_BASE_URL"]
        site.workers[0] = ServerProcess(site.data_dir, llm_url, **site.env)
        await asyncio.to_thread(site.workers[0].wait_ready)
        site.proxy.backends[0] = site.workers[0].port


async def _kill_9_mid_call(site: Site) -> None:
    table = {"/twilio/voice": 1, "/twilio/media": 0}
    site.proxy.route = lambda path: table.get(path, 1)
    site.deepgram.scripts[:] = [[HOURS, BYE]]
    doomed_sid = "CA" + "d00fed" + "0" * 26
    doomed = asyncio.create_task(
        replay(
            silence(60.0),
            RATE,
            site.proxy.url,
            auth_token=AUTH_TOKEN,
            public_url=site.proxy.url,
            from_number="+14135550177",
            call_sid=doomed_sid,
        )
    )
    await _routed(site.proxy, "/twilio/media", 1 + site.proxy.count("/twilio/media"))
    table.update({"/twilio/voice": 0, "/twilio/media": 1})
    spared = asyncio.create_task(call(site, HOURS, BYE, from_number="+14135550188"))
    victim = site.workers[0]
    await asyncio.to_thread(_wait_for, lambda: f"call {doomed_sid} streaming" in victim.log())
    await asyncio.sleep(1.5)  # both calls under way
    victim.proc.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(victim.wait_exit, 30) == -signal.SIGKILL
    report, _ = await asyncio.wait_for(doomed, 30)
    assert report.closed_by_server
    # The survivor's reaper closes the dead worker's call...
    survivor = site.workers[1]
    async with httpx.AsyncClient(base_url=survivor.url, timeout=10) as client:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            record = (await client.get(f"/api/calls/{doomed_sid}", headers=headers)).json()
            if record["outcome"] != "in_progress":
                break
            await asyncio.sleep(0.3)
    assert record["outcome"] == "interrupted" and record["ended_at"], record
    assert "marked interrupted" in survivor.log()
    # ...and its own call goes on to the end.
    spared_report = await asyncio.wait_for(spared, 120)
    kept = spared_report.call_record
    assert kept is not None and kept["outcome"] == "completed", kept
    assert [t["text"] for t in kept["turns"] if t["role"] == "caller"] == [HOURS, BYE]
    assert site.worker_of("call {sid} streaming", spared_report.call_sid) == [1]


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


# --- The supervisor ---------------------------------------------------------------------------


async def test_supervisor_serves_with_two_workers_restarts_one_and_drains_on_sigterm(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    database = await pg_database(pg_cluster)
    llm_port = free_port()
    with ServerThread(llm_app(ScriptedLLM(rules=[])), llm_port):
        server = ServerProcess(
            tmp_path,
            f"http://127.0.0.1:{llm_port}/v1",
            FRONTDESK_DATABASE=database,
            FRONTDESK_WORKERS="2",
            FRONTDESK_TURN_AUDIO_THRESHOLD="0",
            DEEPGRAM_API_KEY="dg-test",
            ELEVENLABS_API_KEY="el-test",
        )
        try:
            await asyncio.to_thread(server.wait_ready)
            first = await pids_answering(server.url, 2)
            # The workers' metrics are one set (prometheus-client's multiprocess directory).
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                scraped = await client.get("/metrics")
            assert scraped.status_code == 200 and "# TYPE" in scraped.text
            # kill -9 of one worker: the supervisor starts another in its place.
            victim = sorted(first)[0]
            os.kill(victim, signal.SIGKILL)
            second = await pids_answering(server.url, 2, exclude=frozenset({victim}), timeout=180)
            assert victim not in second and len(second & first) == 1
            assert re.search(rf"worker \d \(pid {victim}\) died unexpectedly", server.log())
            # SIGTERM: every worker drains (no calls) and the supervisor exits 0.
            server.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(server.wait_exit, 60) == 0
            assert all(_gone(pid) for pid in second)
        finally:
            server.stop()


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


async def pids_answering(
    url: str, count: int, exclude: frozenset[int] = frozenset(), timeout: float = 60
) -> set[int]:
    """The pids behind ``url`` seen over fresh connections, once ``count`` distinct ones (none
    in ``exclude``) have answered /readyz and /healthz."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:  # a new connection
            try:
                ready = await client.get("/readyz")
                pid = (await client.get("/healthz")).json()["pid"]
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
                continue
        if ready.status_code == 200 and pid not in exclude:
            seen.add(pid)
        if len(seen) >= count:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"only pids {seen} answered in {timeout}s")


def test_more_than_one_worker_needs_a_remote_llm(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "run.py", "serve", "--workers", "3"],
        env={"FRONTDESK_DATA_DIR": str(tmp_path), "FRONTDESK_DEV": "1", "PATH": "/usr/bin"},
        cwd=str(BUSINESS_YAML.parent.parent),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "FRONTDESK_WORKERS=3 needs a remote LLM" in done.stderr
    assert "OPENAI_BASE_URL" in done.stderr
