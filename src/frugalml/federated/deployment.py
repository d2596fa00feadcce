"""Flower's deployment runtime: a SuperLink (the server side) and SuperNodes (one per party)
as separate processes, over TLS, with only listed client keys admitted and no dependency
installation at run time (the parties run the frugalml they installed).

`frugalml federate server` starts a SuperLink, registers the listed public keys, waits for
enough SuperNodes, submits the run (`flwr run` on a generated Flower App whose components
are frugalml's ServerApp and ClientApp) and waits for its report. `frugalml federate client`
is a SuperNode reading the party's own file. `make_certificates` / `make_client_key` make
the files a test (or a trial) needs; production parties bring their own.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frugalml.errors import ConfigError, FrugalError, MissingExtraError, installed
from frugalml.federated.settings import FederationSettings


class DeploymentError(FrugalError, RuntimeError):
    """The SuperLink or a Flower command failed; the message names its log."""


@dataclass(frozen=True)
class Certificates:
    """A CA and the server certificate it signed (PEM): the SuperLink's TLS files."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_folder(cls, folder: Path) -> Certificates:
        """`ca.crt`, `server.pem` and `server.key` in `folder`, as `make_certificates` writes."""
        found = cls(folder / "ca.crt", folder / "server.pem", folder / "server.key")
        missing = [str(p) for p in (found.ca, found.cert, found.key) if not p.is_file()]
        if missing:
            raise ConfigError(
                f"TLS files missing: {', '.join(missing)}",
                ["make them with `frugalml federate certs FOLDER` (for trials)"],
            )
        return found


def make_certificates(
    folder: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1"), days: int = 30
) -> Certificates:
    """A self-signed CA and a server certificate for `hosts` (names or IPs): for tests and
    trials; a real federation uses certificates from the parties' own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def builder(subject: str, issuer: str, public: Any) -> Any:
        def name(cn: str) -> Any:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
        )

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (
        builder("frugalml federation CA", "frugalml federation CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    names = [_san(h) for h in hosts]
    cert = (
        builder(hosts[0], "frugalml federation CA", key.public_key())
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out = Certificates(folder / "ca.crt", folder / "server.pem", folder / "server.key")
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out.key.chmod(0o600)
    return out


def _san(host: str) -> Any:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_client_key(folder: Path, name: str) -> tuple[Path, Path]:
    """A party's key pair (EC P-384, OpenSSH format, as Flower reads them): the private key
    stays with the party, the `.pub` is what the server lists."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / name, folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return private, public


def write_app(
    folder: Path, settings: FederationSettings, run_dir: Path, resume: bool = False
) -> Path:
    """A Flower App (what `flwr run` packs and sends): frugalml's ServerApp and ClientApp
    as components, the run's settings as its run config (`resume`: continue `run_dir`'s
    saved round). No code of its own: every party runs the frugalml it installed, so
    nothing is installed at run time."""
    import tomli_w

    folder.mkdir(parents=True, exist_ok=True)
    project = {
        "project": {
            "name": "frugalml-federation",
            "version": "1.0.0",
            "description": "A frugalml federated run",
            "license": "Apache-2.0",
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "frugalml",
                    "components": {
                        "serverapp": "frugalml.federated.server_app:app",
                        "clientapp": "frugalml.federated.client_app:app",
                    },
                    "config": {
                        "settings": settings.model_dump_json(),
                        "run-dir": str(run_dir.resolve()),
                        "resume": resume,
                    },
                }
            }
        },
    }
    (folder / "pyproject.toml").write_text(tomli_w.dumps(project), encoding="utf-8")
    return folder


class SuperLink:
    """A `flower-superlink` process with TLS and SuperNode authentication, and the `flwr`
    commands that talk to it (their connection kept in `home`, Flower's FLWR_HOME)."""

    def __init__(self, home: Path, certs: Certificates, host: str, port: int) -> None:
        self.home, self.certs, self.host, self.port = home, certs, host, port
        self.log = home / "superlink.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(
            "[superlink]\n"
            'default = "frugalml"\n\n'
            "[superlink.frugalml]\n"
            f'address = "{self.host}:{self.port}"\n'
            f'root-certificates = "{self.certs.ca.resolve()}"\n',
            encoding="utf-8",
        )
        cmd = [
            *_tool("flower-superlink"),
            "--ssl-ca-certfile", str(self.certs.ca),
            "--ssl-certfile", str(self.certs.cert),
            "--ssl-keyfile", str(self.certs.key),
            "--enable-supernode-auth",
            "--disable-runtime-dependency-installation",
            "--host", self.host,
            "--port", str(self.port),
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=flower_env(self.home)
            )
        wait_for(
            lambda: _listening(self.host, self.port),
            timeout,
            f"the SuperLink to listen on {self.host}:{self.port}",
            self._check_alive,
        )

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise DeploymentError(
                f"the SuperLink exited with code {self.process.returncode}",
                [f"its log: {self.log}"],
            )

    def flwr(self, *args: str, timeout: float = 120.0) -> str:
        """Run a `flwr` command against this SuperLink; its standard output."""
        done = subprocess.run(
            [*_tool("flwr"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=flower_env(self.home),
            check=False,
        )
        if done.returncode != 0:
            raise DeploymentError(
                f"`flwr {' '.join(args[:2])}` failed with code {done.returncode}",
                [(done.stdout + done.stderr).strip()[-2000:]],
            )
        return done.stdout

    def register(self, public_key: Path) -> None:
        """Admit the party holding `public_key`'s private key (no other may join)."""
        self.flwr("supernode", "register", str(public_key), "frugalml")

    def online(self) -> int:
        """How many registered SuperNodes are connected now."""
        nodes = _json(self.flwr("supernode", "ls", "frugalml", "--format", "json"))["nodes"]
        return sum(1 for node in nodes if node.get("status") == "online")

    def run(self, app: Path, timeout: float) -> str:
        """Submit the app and follow the run until it ends; the run's log."""
        return self.flwr("run", str(app), "frugalml", "--stream", timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> SuperLink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    settings: FederationSettings,
    run_dir: Path,
    *,
    certs: Certificates,
    allowed: Sequence[Path],
    host: str = "127.0.0.1",
    port: int = 9093,
    wait_clients_s: float = 600.0,
    on_ready: Callable[[SuperLink], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run one federation on Flower's deployment runtime: the SuperLink admits only the
    `allowed` public keys; the run starts once `settings.min_clients` of them are online
    (`resume`: from `run_dir`'s last saved round, checked before anything starts).
    Returns the run's report (also in `run_dir/report.json`)."""
    if not installed("flwr", "peft"):
        raise MissingExtraError("federated learning", "federated")
    if not allowed:
        raise ConfigError("no client keys listed", ["pass --allow KEY.pub once per party"])
    for key in allowed:
        if not Path(key).is_file():
            raise ConfigError(f"client key {key} does not exist")
    if resume:  # a mismatch is refused here, not after the clients have connected
        from frugalml.federated.checkpoint import load

        load(run_dir, settings)
    link = SuperLink(run_dir / ".flower", certs, host, port)
    with link:
        for key in allowed:
            link.register(Path(key))
        if on_ready is not None:
            on_ready(link)
        wait_for(
            lambda: link.online() >= settings.min_clients,
            wait_clients_s,
            f"{settings.min_clients} listed clients to connect",
            link._check_alive,
        )
        app = write_app(run_dir / ".flower" / "app", settings, run_dir, resume)
        log = link.run(app, timeout=settings.round_timeout_s * (settings.rounds + 1))
        (run_dir / "flower-run.log").write_text(log, encoding="utf-8")
    report = run_dir / "report.json"
    if not report.exists():
        raise DeploymentError(
            "the federated run ended without writing its report",
            [f"the ServerApp's log: {run_dir / 'flower-run.log'}"],
        )
    return dict(json.loads(report.read_text(encoding="utf-8")))


def supernode_command(
    data: Path,
    *,
    superlink: str,
    ca: Path,
    key: Path,
    port: int = 9094,
    max_wait_s: float | None = None,
) -> list[str]:
    """The `flower-supernode` command for a party: TLS to `superlink` (verified with `ca`),
    authenticated by `key`, reading its own `data`, installing nothing at run time."""
    for path, what in ((data, "--data"), (ca, "--ca"), (key, "--key")):
        if not path.is_file():
            raise ConfigError(f"{what} {path} does not exist")
    config = f"data={json.dumps(str(data.resolve()))}"
    cmd = [
        *_tool("flower-supernode"),
        "--superlink", superlink,
        "--root-certificates", str(ca),
        "--auth-supernode-private-key", str(key),
        "--node-config", config,
        "--port", str(port),
    ]  # fmt: skip
    if max_wait_s is not None:
        cmd += ["--max-wait-time", str(max_wait_s)]
    return cmd


def run_client(cmd: list[str], *, wait: float) -> int:
    """Run a SuperNode until it ends; its exit code. A party often starts before the server
    has listed its key, and Flower's SuperNode then exits at once as refused (code 1, with
    "Exit Code: 305" in its log): within `wait` seconds of starting, a SuperNode that exits
    with code 1 is started again (every 2 s); one stopped by a signal is not."""
    deadline = time.monotonic() + wait
    env = flower_env()
    while True:
        code, stopped = _supervise(subprocess.Popen(cmd, env=env))
        if stopped or code != 1 or time.monotonic() > deadline:
            return code
        threading.Event().wait(2.0)


def _supervise(proc: subprocess.Popen[bytes]) -> tuple[int, bool]:
    """Wait for `proc`, passing on a SIGTERM or Ctrl-C sent to this process; its exit code
    and whether this process was told to stop."""
    stopped = threading.Event()

    def stop(*_: object) -> None:
        stopped.set()
        proc.terminate()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait(), stopped.is_set()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait(), True
    finally:
        signal.signal(signal.SIGTERM, previous)


def flower_env(home: Path | None = None) -> dict[str, str]:
    """The environment Flower's processes need: this interpreter's scripts first on PATH
    (the SuperLink and SuperNodes start `flower-superexec` and the apps by name)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    if home is not None:
        env["FLWR_HOME"] = str(home)
    return env


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    check: Callable[[], None] | None = None,
    interval: float = 0.25,
) -> None:
    """Poll `condition` until it holds; `check` raises when waiting is pointless."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise DeploymentError(f"gave up waiting {timeout:.0f} s for {what}")
        pause.wait(interval)


def wait_until_listening(address: str, timeout: float) -> None:
    """Wait for `HOST:PORT` to accept connections (a SuperLink started after its clients)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--superlink must be HOST:PORT; got '{address}'")
    wait_for(lambda: _listening(host.strip("[]"), int(port)), timeout, f"a server at {address}")


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _tool(name: str) -> list[str]:
    return [str(Path(sys.executable).parent / name)]


def _json(text: str) -> dict[str, Any]:
    """`flwr --format json` prints one JSON object (after any banner line)."""
    return dict(json.loads(text[text.index("{") :]))
