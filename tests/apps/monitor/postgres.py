"""A throwaway PostgreSQL server on 127.0.0.1 for the monitor's store tests and benchmark.

`postgres` refuses to run as root, so as root the server runs as the `postgres` user (through
`runuser`) in a data folder under /tmp that this user owns; `absent()` says why it cannot run
here (no binary, no non-root user), for `pytest.skip`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER = "postgres"


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(versions[-1]) if versions else None


def absent() -> str | None:
    """Why no server can be started here, or None."""
    if not (_bin("postgres") and _bin("initdb") and _bin("pg_ctl")):
        return "PostgreSQL is not installed (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'frugalml[monitor]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            return f"running as root and there is no {USER!r} user to run postgres as"
        if shutil.which("runuser") is None:
            return "running as root and `runuser` is missing to run postgres as a user"
    return None


def _as_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", USER, "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_postgres() -> Iterator[str]:
    """Start a server (trust auth, no fsync) and yield the URL of its `postgres` database."""
    folder = Path(tempfile.mkdtemp(prefix="frugalml-pg-"))
    data, port = folder / "data", _free_port()
    if os.geteuid() == 0:
        entry = pwd.getpwnam(USER)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    assert initdb and pg_ctl
    run = {"check": True, "capture_output": True, "timeout": 120}
    try:
        subprocess.run(
            _as_user([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"]),
            **run,  # type: ignore[call-overload]
        )
        options = f"-h 127.0.0.1 -p {port} -k {folder} -F"
        start = [pg_ctl, "start", "-w", "-t", "60", "-D", str(data), "-o", options]
        subprocess.run(_as_user([*start, "-l", str(folder / "log")]), **run)  # type: ignore[call-overload]
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            stop = [pg_ctl, "stop", "-w", "-m", "immediate", "-D", str(data)]
            subprocess.run(_as_user(stop), capture_output=True, timeout=60)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
