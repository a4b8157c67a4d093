"""Credentials: generation, one-way storage, constant-time checks and request signing.

Design decisions (see docs/protocol.md, "Authentication"):

* ``api_key`` = ``CN`` + 32 letters/digits; ``api_secret`` = ``CS`` + 43 base64url characters
  (32 random bytes). Both come from ``secrets``.
* The parent stores the key in clear and only ``HMAC-SHA256(pepper, secret)`` of the secret. The
  secret carries 256 bits of randomness, so a slow password KDF would add latency to every plain
  ``AK-SK`` request without adding safety: nobody can brute-force 2**256.
* The signed form never sends the secret. Both sides derive an Ed25519 key pair from the secret
  (HKDF-SHA256, info ``cascade-node-signing-v1``); the parent stores only the public key, so a
  leaked database cannot be used to sign requests.
  Header: ``Authorization: Cascade-Ed25519 key=<api_key>,ts=<unix s>,nonce=<hex>,sig=<b64url>``
  over ``CASCADE-ED25519-V1\\n<METHOD>\\n<path?query>\\n<ts>\\n<nonce>\\n<sha256(body) hex>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_PREFIX = "CN"
SECRET_PREFIX = "CS"  # noqa: S105 - a prefix, not a secret
SIGNED_SCHEME = "Cascade-Ed25519"
PLAIN_SCHEME = "AK-SK"
_SIGN_PREFIX = "CASCADE-ED25519-V1"
_HASH_PEPPER = b"cascade-node-secret-v1"
_ALNUM = string.ascii_letters + string.digits
# Keys made here are ``CN`` + 32 letters/digits; keys imported from we-mp-rss are ``CN`` + 32
# base64url characters (``-`` and ``_`` too), and must keep working after the import.
API_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{7,63}$")
# The stored form of a secret hash imported from we-mp-rss: its unsalted SHA-256, hex.
LEGACY_HASH_PREFIX = "sha256$"
API_SECRET_RE = re.compile(r"^CS[A-Za-z0-9_\-]{20,200}$")


@dataclass(frozen=True)
class NodeCredentials:
    """Shown once to the operator; never stored as such."""

    api_key: str
    api_secret: str

    def __repr__(self) -> str:  # never leak the secret through a repr in a log
        return f"NodeCredentials(api_key={self.api_key!r}, api_secret='***')"


@dataclass(frozen=True)
class StoredSecret:
    """What the parent keeps for a secret: a one-way hash and the derived public key."""

    secret_hash: str
    public_key: str


def generate_api_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALNUM) for _ in range(32))


def generate_api_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def generate_credentials() -> NodeCredentials:
    return NodeCredentials(generate_api_key(), generate_api_secret())


def hash_secret(api_secret: str) -> str:
    # hmac.digest: OpenSSL's one-shot HMAC, the same bytes as hmac.new(...).digest() without
    # the pure-Python HMAC object (checked on every plain AK-SK request).
    digest = hmac.digest(_HASH_PEPPER, api_secret.encode("utf-8"), "sha256").hex()
    return f"hmac-sha256${digest}"


def legacy_hash(sha256_hex: str) -> str:
    """The stored form of a we-mp-rss ``api_secret_hash`` (hex SHA-256 of the secret)."""
    text = (sha256_hex or "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ValueError("not a hex SHA-256 digest")
    return LEGACY_HASH_PREFIX + text


def is_legacy_hash(secret_hash: str | None) -> bool:
    return bool(secret_hash) and secret_hash.startswith(LEGACY_HASH_PREFIX)  # type: ignore[union-attr]


def verify_secret(api_secret: str, secret_hash: str | None) -> bool:
    """Constant-time comparison of a presented secret with a stored hash (ours, or the
    unsalted SHA-256 an imported we-mp-rss node keeps until its secret is rotated)."""
    if not secret_hash:
        # Still do the work so timing does not reveal whether the key exists.
        hmac.compare_digest(hash_secret(api_secret), hash_secret("CS-none"))
        return False
    if secret_hash.startswith(LEGACY_HASH_PREFIX):
        hash_secret(api_secret)  # the same work as the other paths: timing tells nothing
        presented = hashlib.sha256(api_secret.encode("utf-8")).hexdigest()
        return hmac.compare_digest(LEGACY_HASH_PREFIX + presented, secret_hash)
    return hmac.compare_digest(hash_secret(api_secret), secret_hash)


def signing_key(api_secret: str) -> Ed25519PrivateKey:
    """The node's Ed25519 key, derived from its secret (HKDF). A client derives it once and
    passes it to ``sign_request`` instead of the secret: deriving costs more than signing."""
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"cascade-node-signing-v1").derive(api_secret.encode("utf-8"))
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_for(api_secret: str) -> str:
    raw = signing_key(api_secret).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def stored_secret_for(api_secret: str) -> StoredSecret:
    return StoredSecret(secret_hash=hash_secret(api_secret), public_key=public_key_for(api_secret))


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def string_to_sign(method: str, path_with_query: str, timestamp: str, nonce: str,
                   body: bytes) -> bytes:
    body_hash = hashlib.sha256(body).hexdigest()
    return "\n".join([_SIGN_PREFIX, method.upper(), path_with_query, timestamp, nonce,
                      body_hash]).encode("utf-8")


def sign_request(api_key: str, api_secret: str | Ed25519PrivateKey, method: str,
                 path_with_query: str, body: bytes, timestamp: int,
                 nonce: str | None = None) -> str:
    """The ``Authorization`` header value for the signed form (``api_secret``: the secret or
    the key ``signing_key`` derived from it)."""
    nonce = nonce or secrets.token_hex(16)
    ts = str(int(timestamp))
    key = signing_key(api_secret) if isinstance(api_secret, str) else api_secret
    sig = key.sign(string_to_sign(method, path_with_query, ts, nonce, body))
    sig_text = base64.urlsafe_b64encode(sig).decode("ascii").rstrip("=")
    return f"{SIGNED_SCHEME} key={api_key},ts={ts},nonce={nonce},sig={sig_text}"


def verify_signature(public_key: str | None, method: str, path_with_query: str, timestamp: str,
                     nonce: str, body: bytes, signature: str) -> bool:
    if not public_key:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(_b64decode(public_key))
        key.verify(_b64decode(signature),
                   string_to_sign(method, path_with_query, timestamp, nonce, body))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class PlainAuth:
    api_key: str
    api_secret: str


@dataclass(frozen=True)
class SignedAuth:
    api_key: str
    timestamp: str
    nonce: str
    signature: str


@dataclass(frozen=True)
class BearerAuth:
    token: str


ParsedAuth = PlainAuth | SignedAuth | BearerAuth

_SIGNED_FIELD = re.compile(r"\s*(key|ts|nonce|sig)=([A-Za-z0-9_\-]{1,200})\s*")


def parse_authorization(header: str | None) -> ParsedAuth | None:
    """Parse one ``Authorization`` header; ``None`` when absent or not understood."""
    if not header or len(header) > 2048:
        return None
    scheme, _, rest = header.strip().partition(" ")
    rest = rest.strip()
    lower = scheme.lower()
    if lower == PLAIN_SCHEME.lower():
        key, sep, secret = rest.partition(":")
        if not sep or not key or not secret:
            return None
        return PlainAuth(key.strip(), secret.strip())
    if lower == "bearer" and rest:
        return BearerAuth(rest)
    if lower == SIGNED_SCHEME.lower():
        fields: dict[str, str] = {}
        for part in rest.split(","):
            m = _SIGNED_FIELD.fullmatch(part)
            if not m:
                return None
            fields[m.group(1)] = m.group(2)
        if set(fields) != {"key", "ts", "nonce", "sig"}:
            return None
        return SignedAuth(fields["key"], fields["ts"], fields["nonce"], fields["sig"])
    return None


def mask_secret(value: str | None) -> str:
    """For display: keep a recognisable prefix, hide the rest."""
    if not value:
        return ""
    return value[:4] + "…" if len(value) > 8 else "***"
