"""Everything `frugalml serve` can be told, as one frozen model.

The CLI builds it from its options; a worker process rebuilds it from one environment
variable, so `--workers N` starts N identical apps without a second parsing path.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator

from frugalml.config import Frozen
from frugalml.errors import ConfigError

ENV_VAR = "FRUGALML_SERVE_SETTINGS"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServeSettings(Frozen):
    """Server, batching, back-pressure and input limits of one `frugalml serve`."""

    bundle: Path = Field(description="The bundle folder to serve.")
    host: str = Field("127.0.0.1", description="Interface to bind; loopback by default.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port).")
    workers: int = Field(1, ge=1, description="Processes, each with its own model.")
    max_batch: int = Field(32, ge=1, description="Texts per inference batch; 1 turns off batching.")
    max_wait_ms: float = Field(5.0, ge=0, description="How long a batch waits to fill up.")
    max_queue: int = Field(1024, ge=1, description="Texts waiting for inference before 503.")
    max_concurrency: int = Field(256, ge=1, description="Predict requests in flight before 429.")
    max_texts: int = Field(256, ge=1, description="Texts in one request.")
    max_chars: int = Field(10_000, ge=1, description="Characters in one text.")
    max_body_bytes: int = Field(1_048_576, ge=1, description="Bytes in one request body.")
    request_timeout_s: float = Field(10.0, gt=0, description="Deadline of a predict request.")
    shutdown_timeout_s: float = Field(30.0, gt=0, description="Drain time after SIGTERM.")
    api_key_env: str | None = Field(None, description="Variable holding the API key.")
    admin_key_env: str | None = Field(None, description="Variable holding the reload key.")

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if self.max_queue < self.max_batch:
            raise ValueError(
                f"max_queue ({self.max_queue}) must be at least max_batch ({self.max_batch}): "
                "a queue smaller than one batch would refuse work the server could do"
            )
        return self

    @property
    def public(self) -> bool:
        return self.host not in LOCAL_HOSTS

    def api_key(self) -> str | None:
        return _read_key(self.api_key_env, "--api-key-env")

    def admin_key(self) -> str | None:
        return _read_key(self.admin_key_env, "--admin-key-env")

    def to_env(self) -> None:
        """Hand these settings to worker processes (they inherit the environment)."""
        os.environ[ENV_VAR] = self.model_dump_json()

    @classmethod
    def from_env(cls) -> ServeSettings:
        raw = os.environ.get(ENV_VAR)
        if raw is None:
            raise ConfigError(f"${ENV_VAR} is not set; start the server with `frugalml serve`")
        return cls.model_validate_json(raw)


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
