"""Everything `frugalml serve` can be told, as one frozen model.

The CLI builds it from its options; a worker process rebuilds it (and the bundle's path) from
one environment variable, so `--workers N` starts N identical apps without a second parser.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
from pathlib import Path

from pydantic import Field, model_validator

from frugalml.config import Frozen
from frugalml.errors import ConfigError

ENV_VAR = "FRUGALML_SERVE_SETTINGS"
MIN_PUBLIC_KEY_CHARS = 16  # beyond loopback, a key short enough to guess is no key at all


class ServeSettings(Frozen):
    """Server, batching, back-pressure and input limits of one `frugalml serve`."""

    host: str = Field("127.0.0.1", description="Interface to bind; loopback by default.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port).")
    workers: int = Field(1, ge=1, description="Processes, each with its own model.")
    threads: int | None = Field(
        None, ge=1, description="Inference threads per worker (default: CPU cores / workers)."
    )
    spinning: bool = Field(
        True, description="Idle inference threads busy-wait: faster, but burns CPU while idle."
    )
    max_batch: int = Field(32, ge=1, description="Texts per inference batch; 1 turns off batching.")
    max_wait_ms: float = Field(5.0, ge=0, description="How long a batch waits to fill up.")
    max_queue: int = Field(1024, ge=1, description="Texts waiting for inference before 503.")
    max_concurrency: int = Field(256, ge=1, description="Predict requests in flight before 429.")
    max_texts: int = Field(256, ge=1, description="Texts in one request.")
    max_chars: int = Field(10_000, ge=1, description="Characters in one text.")
    max_body_bytes: int = Field(1_048_576, ge=1, description="Bytes in one request body.")
    request_timeout_s: float = Field(10.0, gt=0, description="Deadline of a predict request.")
    shutdown_timeout_s: float = Field(30.0, gt=0, description="Drain time after SIGTERM.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="Time a client has to send a request's headers before it is cut."
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="Time a client has to send a request's body before 408."
    )
    max_connections_per_client: int | None = Field(
        None,
        ge=1,
        description="Open connections from one address before 429 (off by default: behind a "
        "proxy every client shares its address).",
    )
    api_key_env: str | None = Field(None, description="Variable holding the API key.")
    admin_key_env: str | None = Field(None, description="Variable holding the reload key.")
    access_log: bool = Field(False, description="Log every request (metrics count them anyway).")

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        smallest = max(self.max_batch, self.max_texts)
        if self.max_queue < smallest:
            raise ValueError(
                f"max_queue ({self.max_queue}) must be at least max_batch ({self.max_batch}) "
                f"and max_texts ({self.max_texts}): a smaller queue would refuse a full batch "
                "or a request the limits allow"
            )
        return self

    def inference_threads(self) -> int:
        """One core's worth per thread across all workers: more would only contend."""
        return self.threads or max(1, available_cpus() // self.workers)

    @property
    def public(self) -> bool:
        """Reachable beyond this machine: any host but a loopback address (a name may resolve
        anywhere, so only `localhost` counts as loopback)."""
        if self.host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return True

    def api_key(self) -> str | None:
        return self._key(self.api_key_env, "--api-key-env")

    def admin_key(self) -> str | None:
        return self._key(self.admin_key_env, "--admin-key-env")

    def _key(self, variable: str | None, option: str) -> str | None:
        key = _read_key(variable, option)
        if key is not None and self.public and len(key) < MIN_PUBLIC_KEY_CHARS:
            raise ConfigError(
                f"{option} {variable}: the key has {len(key)} characters; serving on "
                f"{self.host} needs at least {MIN_PUBLIC_KEY_CHARS}",
                [f"export {variable}=$(openssl rand -hex 32), or bind --host 127.0.0.1"],
            )
        return key

    def to_env(self, bundle: Path) -> None:
        """Hand the bundle and these settings to worker processes (they inherit the environment)."""
        os.environ[ENV_VAR] = json.dumps({"bundle": str(bundle), "settings": self.model_dump()})

    @classmethod
    def from_env(cls) -> tuple[Path, ServeSettings]:
        raw = os.environ.get(ENV_VAR)
        if raw is None:
            raise ConfigError(f"${ENV_VAR} is not set; start the server with `frugalml serve`")
        data = json.loads(raw)
        return Path(data["bundle"]), cls.model_validate(data["settings"])


def available_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota.

    In a container with `limits: {cpu: "2"}` on a 64-core node, `os.cpu_count()` says 64;
    64 inference threads would then be throttled to 2 CPUs' worth of time.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def _read_key(variable: str | None, option: str) -> str | None:
    """Keys live in the environment, never on the command line, where `ps` would show them."""
    if variable is None:
        return None
    key = os.environ.get(variable, "")
    if not key.strip():
        raise ConfigError(
            f"{option} {variable}: the variable is unset or empty",
            [f"export {variable}=<a long random key> before starting the server"],
        )
    return key.strip()


def settings_from_options(**options: object) -> ServeSettings:
    """The CLI's options as settings; every invalid one is reported at once, by its flag."""
    from pydantic import ValidationError

    try:
        return ServeSettings.model_validate(options)
    except ValidationError as err:
        problems = [
            f"--{'.'.join(str(p) for p in e['loc']).replace('_', '-') or 'options'}: {e['msg']}"
            for e in err.errors()
        ]
        raise ConfigError("frugalml serve: invalid options", problems) from None
