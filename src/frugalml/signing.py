"""A bundle manifest's seal: a digest that shows any edit, and an optional keyed signature.

The digest (`Manifest.canonical_digest`) covers every field of the manifest and, through
`files`, every file's sha256: a swapped label, a new temperature or a changed weight file
changes it. It is the bundle's version (what the server reports as `model_version`). Anyone
can recompute a digest, so on its own it catches hand edits and damage; the signature, an
HMAC-SHA256 of the digest under a key from $FRUGALML_SIGNING_KEY, is what someone without the
key cannot forge. With the key set, frugalml signs every manifest it writes and loads only
bundles signed with that key.

Foundation layer: the standard library, `types` and `errors` only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Literal

from frugalml.errors import BundleError, ConfigError, plural
from frugalml.types import Manifest, SignatureRecord

KEY_ENV = "FRUGALML_SIGNING_KEY"
MIN_KEY_CHARS = 16
SCHEME = "hmac-sha256"
MAKE_KEY = "make one with: python -c 'import secrets; print(secrets.token_hex(32))'"


def signing_key() -> bytes | None:
    """The key in $FRUGALML_SIGNING_KEY, or None when it is unset or empty."""
    value = os.environ.get(KEY_ENV, "")
    if not value:
        return None
    if len(value) < MIN_KEY_CHARS:
        raise ConfigError(
            f"${KEY_ENV} is {plural(len(value), 'character')}; a signing key needs at least "
            f"{MIN_KEY_CHARS}, or anyone can guess it",
            [MAKE_KEY],
        )
    return value.encode("utf-8")


def key_id(key: bytes) -> str:
    """Names a key without revealing it: a wrong key is then told apart from an edit."""
    return hmac.new(key, b"frugalml signing key id", hashlib.sha256).hexdigest()[:16]


def _signature(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode("ascii"), hashlib.sha256).hexdigest()


def seal(manifest: Manifest) -> Manifest:
    """The manifest with its digest, and signed when $FRUGALML_SIGNING_KEY is set (a stale
    signature is dropped: only the key's holder can vouch for new content)."""
    digest = manifest.canonical_digest()
    key = signing_key()
    signature = (
        None
        if key is None
        else SignatureRecord(scheme=SCHEME, key_id=key_id(key), value=_signature(key, digest))
    )
    return manifest.model_copy(update={"digest": digest, "signature": signature})


@dataclass(frozen=True)
class Integrity:
    """What loading a bundle verified, and by what: `info` prints it, the server's version is
    its digest."""

    digest: str  # of the manifest as loaded, stored in it or not
    sealed: bool  # the manifest carried a digest, and it matched
    signature: Literal["checked", "unchecked"] | None = None
    key_id: str | None = None
    files: int = 0  # files whose name, size and sha256 were verified
    loaded: bool = True  # False: a Bundle built in memory, nothing verified

    @property
    def version(self) -> str:
        """The first 12 hex digits of the digest: short enough to log with each prediction."""
        return self.digest[:12]

    def describe(self) -> str:
        if not self.loaded:
            return "not verified: built in memory, not loaded from a bundle folder"
        files = f"sha256 of {plural(self.files, 'file')}"
        if not self.sealed:
            return (
                f"{files} verified; unsigned legacy bundle: its manifest has no digest, so an "
                "edit to it cannot be detected (re-export it with this frugalml to seal it)"
            )
        said = f"{files} and the manifest verified"
        if self.signature == "checked":
            return f"{said}; signed with the HMAC-SHA256 key in ${KEY_ENV}"
        if self.signature == "unchecked":
            return (
                f"{said}; signed (HMAC-SHA256, key id {self.key_id}), signature not checked: "
                f"set ${KEY_ENV} to check it"
            )
        return f"{said}; not signed"


def unverified(manifest: Manifest) -> Integrity:
    return Integrity(manifest.canonical_digest(), sealed=False, loaded=False)


def verify(manifest: Manifest, *, where: str, key: bytes | None) -> Integrity:
    """Check the manifest's digest, and its signature when there is a `key` (normally
    `signing_key()`); refuse an edited manifest, and, with a key, an unsigned or wrongly
    signed one."""
    digest = manifest.canonical_digest()
    signature = manifest.signature
    if manifest.digest is not None and not hmac.compare_digest(manifest.digest, digest):
        raise BundleError(
            f"{where} was changed after it was written: its content no longer matches its digest",
            [
                "a manifest is never edited by hand (labels, temperature and the rest are part "
                "of the model); undo the edit, or re-export the bundle"
            ],
        )
    if key is None:
        if signature is None:
            return Integrity(digest, sealed=manifest.digest is not None)
        return Integrity(digest, manifest.digest is not None, "unchecked", signature.key_id)
    if manifest.digest is None or signature is None:
        kind = "a legacy bundle without a digest" if manifest.digest is None else "no signature"
        raise BundleError(
            f"{where} is not signed ({kind}), and ${KEY_ENV} is set, so only bundles signed "
            "with that key load",
            [
                "if you trust it, sign it: `frugalml sign BUNDLE` (with the key set); or unset "
                f"${KEY_ENV} to load unsigned bundles"
            ],
        )
    ours = key_id(key)
    if signature.key_id != ours:
        reason = f"it was signed with another key (key id {signature.key_id}, yours is {ours})"
    elif not hmac.compare_digest(signature.value, _signature(key, digest)):
        reason = "the manifest was changed after it was signed"
    else:
        return Integrity(digest, True, "checked", ours)
    raise BundleError(
        f"{where}: the signature does not match: {reason}",
        [f"check ${KEY_ENV}, or ask whoever made the bundle to sign it again"],
    )
