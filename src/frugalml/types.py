"""Typed records that cross module boundaries: the bundle manifest.

Foundation layer: imports only pydantic, the standard library and frugalml's errors and config,
so reading a manifest never pulls numpy, pandas or torch in. `bundle.py` does the file work;
this module says what a valid manifest is and how an older one becomes one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from frugalml.config import validation_problems
from frugalml.errors import BundleError, plural

MANIFEST_SCHEMA = 2
# How to make the bundle again with this version of frugalml, for a manifest it cannot read.
REEXPORT_HINT = (
    "re-export the bundle with this frugalml: `frugalml fit DATA` (or `frugalml fit --resume "
    "RUN_DIR`) for a new model, then `frugalml compress RUN_DIR/candidates/<rung>` if it was "
    "compressed"
)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _sha256(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ValueError("expected a sha256 digest (64 lowercase hexadecimal characters)")
    return value


def _unique(labels: tuple[str, ...]) -> tuple[str, ...]:
    twice = sorted(label for label, n in Counter(labels).items() if n > 1)
    if twice:
        raise ValueError(f"expected distinct labels; {twice[:5]} appear more than once")
    return labels


Sha256 = Annotated[str, AfterValidator(_sha256)]


class _Record(BaseModel):
    """Manifest parts: immutable, and a key the schema does not know is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class CostRecord(_Record):
    """A cost card as the manifest stores it (`costs.CostCard.to_dict()`)."""

    wall_s: float = Field(description="Wall-clock seconds.")
    cpu_s: float = Field(description="CPU seconds, user + system, all threads.")
    peak_rss_mb: float = Field(description="Peak resident memory in MB.")
    energy_kwh: float = Field(description="Energy in kWh, measured or estimated.")
    energy_source: str = Field(
        description="Where the energy figure comes from (RAPL, NVML, estimate)."
    )
    usd: float = Field(description="Money at the price basis below.")
    price_basis: str = Field(description="What compute was priced as.")
    device_s: float | None = Field(None, description="Accelerator busy seconds, if one was used.")
    peak_device_mb: float | None = Field(None, description="Peak accelerator memory in MB.")
    flops: float | None = Field(None, description="Estimated floating-point operations.")
    extra: dict[str, float] = Field(
        default_factory=dict, description="Further figures a strategy measured, by name."
    )
    processes: int = Field(
        1, ge=1, description="Processes the card covers: > 1 when combined from ranks or clients."
    )


class PricesRecord(_Record):
    """The compute prices a bundle's costs were figured at (`costs.Prices.to_dict()`)."""

    usd_per_hour: float = Field(gt=0, description="Price of the machine per hour, in US$.")
    basis: str = Field(description="What the price is for, in words.")
    watts_per_core: float = Field(gt=0, description="Power of one busy core, for estimates.")
    gpu_usd_per_hour: float = Field(ge=0, description="Price of one GPU per hour, in US$.")
    gpu_watts: float = Field(ge=0, description="Power of one busy GPU, for estimates.")
    vcpus: int = Field(2, ge=1, description="vCPUs the hourly price pays for.")


class SpeedRecord(_Record):
    """Inference speed of the saved, reloaded bundle (`metrics.Speed.to_dict()`)."""

    latency_p50_ms: float = Field(description="Median batch-1 latency in milliseconds.")
    latency_p95_ms: float = Field(description="95th-percentile batch-1 latency in milliseconds.")
    throughput_per_s: float = Field(description="Inputs per second at `throughput_batch`.")
    throughput_batch: int = Field(description="Batch size throughput was measured at.")
    cpu_ms_per_text: float | None = Field(
        None,
        description="Process CPU milliseconds per input at `throughput_batch` (all threads); "
        "null in bundles measured before it was recorded.",
    )


class MetricsRecord(_Record):
    """Quality the ladder measured on the saved bundle."""

    val: dict[str, Any] = Field(
        description="Validation quality (`metrics.Quality.to_dict()`): point estimates, 95% "
        "intervals, per-class figures and the confusion matrix."
    )
    test: dict[str, Any] | None = Field(
        None, description="The same on the test split; null when there was none."
    )
    val_ece: float | None = Field(
        description="Expected calibration error on validation, after temperature scaling "
        "(null for a ranker, which has no probabilities to calibrate)."
    )


class SignatureRecord(_Record):
    """Who vouches for the manifest: a keyed signature over its `digest` (`signing.py`)."""

    scheme: Literal["hmac-sha256"] = Field(description="How the signature was made.")
    key_id: str = Field(
        pattern=r"^[0-9a-f]{16}$",
        description="Names the key without revealing it, so a wrong key is told apart from "
        "an edit.",
    )
    value: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="HMAC-SHA256 of the digest, hexadecimal."
    )


# Not part of what the digest covers: the digest itself, and what is computed from it.
SEAL_FIELDS = ("digest", "signature")


class Manifest(_Record):
    """What `manifest.json` holds: what the model is, how it was made, what it scored and cost,
    and the sha256 of every file beside it. Every field is written, absent ones as null."""

    schema_version: Literal[2] = Field(
        2, description="Version of this layout; older ones migrate on load."
    )
    frugalml_version: str = Field(description="The frugalml version that wrote the bundle.")
    created: AwareDatetime = Field(description="When the bundle was written (ISO 8601, UTC).")
    task: str = Field(min_length=1, description="What the model does, e.g. text-classification.")
    strategy: str = Field(min_length=1, description="The ladder rung that trained the model.")
    config: dict[str, Any] = Field(
        description="The rung's settings, as its config model dumps them."
    )
    labels: Annotated[tuple[str, ...], AfterValidator(_unique)] = Field(
        description="Class names, in the order of the model's outputs (none for a task "
        "without classes, such as recommendation)."
    )
    predictor: dict[str, Any] = Field(
        description="The predictor's own description of its files (what `Predictor.save` "
        "returned), plus `format`/`precision` once exported to ONNX."
    )
    data_fingerprint: str = Field(description="sha256 of the training split's texts and labels.")
    train_cost: CostRecord | None = Field(
        None, description="What training cost, calibration included."
    )
    compress_cost: CostRecord | None = Field(
        None, description="What the compression step that made this bundle cost."
    )
    prices: PricesRecord | None = Field(
        None,
        description="The prices the costs were figured at; serving prices its CPU-seconds at "
        "them (null: the defaults).",
    )
    metrics: MetricsRecord | None = Field(None, description="Quality measured by the ladder.")
    speed: SpeedRecord | None = Field(None, description="Inference speed of this bundle.")
    forecast: dict[str, Any] | None = Field(
        None, description="The cost forecast made before training (wall_s, cpu_s, usd, basis)."
    )
    stopped: str = Field("", description="Why training stopped early ('deadline'), else empty.")
    compression: dict[str, Any] | None = Field(
        None, description="The compression chain's report (`ship.compress.CompressResult`)."
    )
    files: dict[str, Sha256] = Field(
        description="Every file of the bundle but the manifest, by path relative to the bundle "
        "folder ('/'-separated), with its sha256."
    )
    sizes: dict[str, NonNegativeInt] | None = Field(
        None,
        description="Every file's size in bytes, by the same paths as `files`: checked before "
        "any file is read. Null in bundles written before sizes were recorded.",
    )
    digest: Sha256 | None = Field(
        None,
        description="sha256 of this manifest in canonical form (keys sorted, no whitespace), "
        "without `digest` and `signature`: it covers every field and every file's sha256, so "
        "any edit shows. Null in a legacy bundle (schema 1), which is loaded unsealed.",
    )
    signature: SignatureRecord | None = Field(
        None, description="A keyed signature over `digest`; null when not signed."
    )

    @field_validator("labels")
    @classmethod
    def _classes(cls, labels: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not labels and str(info.data.get("task", "")).endswith("classification"):
            raise ValueError("expected at least 1 item, not 0")  # a classifier has classes
        return labels

    @model_validator(mode="after")
    def _sizes_match_files(self) -> Manifest:
        if self.sizes is not None and self.sizes.keys() != self.files.keys():
            raise ValueError(
                "sizes must list exactly the paths of files; differing: "
                f"{sorted(self.sizes.keys() ^ self.files.keys())[:5]}"
            )
        return self

    def updated(self, **fields: Any) -> Manifest:
        """A copy with `fields` replaced, validated like a manifest read from disk. Its seal
        (digest, signature) would be stale, so it has none until `bundle.write_manifest`."""
        unsealed = {**self.to_json(), **fields, **dict.fromkeys(SEAL_FIELDS)}
        return parse_manifest(unsealed, where="the updated manifest")

    def canonical_digest(self) -> str:
        """sha256 of the manifest's content, whatever its layout on disk: the JSON of every
        field but the seal, keys sorted, no whitespace, UTF-8."""
        content = {k: v for k, v in self.to_json().items() if k not in SEAL_FIELDS}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON-ready data, in field order (what `manifest.json` holds)."""
        return self.model_dump(mode="json")


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 had the same fields, but wrote only those it had (no `metrics` on a bundle the
    ladder had not scored yet) and accepted any extra key. Schema 2 writes every field, absent
    ones as null, and refuses unknown keys; a v1 manifest's fields map one to one."""
    return {**data, "schema_version": 2}


# Each step takes the raw manifest of its version to the next version's.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def migrate_manifest(data: Mapping[str, Any], *, where: str = "the manifest") -> dict[str, Any]:
    """The raw manifest of any version this frugalml reads, raised to the current schema.

    A newer or unknown version is refused with what to do about it.
    """
    raw = dict(data)
    version = raw.get("schema_version")
    if "schema_version" not in raw:
        raise BundleError(
            f"{where} has no schema version (schema_version); it is not a frugalml manifest or "
            "it is damaged",
            [REEXPORT_HINT],
        )
    while version != MANIFEST_SCHEMA:
        step = _MIGRATIONS.get(version) if type(version) is int else None
        if step is None:
            readable = ", ".join(str(v) for v in sorted({*_MIGRATIONS, MANIFEST_SCHEMA}))
            raise BundleError(
                f"{where}: bundle schema version {version!r} is not supported (this frugalml "
                f"reads versions {readable}; it writes version {MANIFEST_SCHEMA})",
                [
                    "if a newer frugalml wrote the bundle "
                    f"({raw.get('frugalml_version', 'version unknown')}), upgrade frugalml",
                    REEXPORT_HINT,
                ],
            )
        raw = step(raw)
        version = raw["schema_version"]
    return raw


def parse_manifest(data: Any, *, where: str = "the manifest") -> Manifest:
    """Validate raw JSON into a `Manifest`, migrating older versions first.

    Every problem is reported at once, each with its field path, what was expected and what was
    found, as a `BundleError` (never a KeyError or AttributeError later on).
    """
    if not isinstance(data, Mapping):
        raise BundleError(
            f"{where} must hold a JSON object; the bundle is damaged", [REEXPORT_HINT]
        )
    raw = migrate_manifest(data, where=where)
    try:
        return Manifest.model_validate(raw)
    except ValidationError as err:
        problems = validation_problems(err)
        raise BundleError(
            f"{where} does not match the manifest schema (version {MANIFEST_SCHEMA}), "
            f"{plural(len(problems), 'problem')}:",
            [*problems, f"the manifest was edited or damaged; {REEXPORT_HINT}"],
        ) from None
