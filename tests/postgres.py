"""A throw-away PostgreSQL cluster for the tests: Debian's binaries, initdb and pg_ctl in a
temporary directory, on a free local port, durability off (fsync, full page writes), removed
when the session ends.

``run.py setup --dev`` installs Debian's ``postgresql``. initdb refuses to run as root, so as
root the cluster belongs to the package's ``postgres`` system user."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.install import postgresql_bin

SUPERUSER = "frontdesk"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running cluster; ``url(name)`` is an asyncpg URL for one of its databases."""

    root: Path
    port: int
    bin: Path
    as_user: dict[str, Any]

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run(
            [str(self.bin / "pg_ctl"), "stop", "-D", str(self.root / "data"), "-m", "immediate"],
            capture_output=True,
            check=False,
            **self.as_user,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> Cluster:
    """initdb + pg_ctl start in a fresh temporary directory; raises RuntimeError naming what is
    missing or what PostgreSQL said."""
    binaries = postgresql_bin()
    if binaries is None:
        raise RuntimeError(
            "no PostgreSQL under /usr/lib/postgresql/*/bin: run `python3 run.py setup --dev` "
            "(it installs Debian's postgresql)"
        )
    root = Path(tempfile.mkdtemp(prefix="frontdesk-pg-"))
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    cluster = Cluster(root, _free_port(), binaries, as_user)
    data = root / "data"
    try:
        _run(cluster, "initdb", "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
             "--no-sync", "--no-instructions")  # fmt: skip
        options = (
            f"-p {cluster.port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        _run(cluster, "pg_ctl", "start", "-w", "-D", str(data), "-l", str(root / "log"),
             "-o", options)  # fmt: skip
    except RuntimeError:
        cluster.stop()
        raise
    return cluster


def _run(cluster: Cluster, program: str, *args: str) -> None:
    done = subprocess.run(
        [str(cluster.bin / program), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cluster.root,
        **cluster.as_user,
    )
    if done.returncode != 0:
        log = cluster.root / "log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr}{tail}")
