"""Secrets of people (API keys) and devices (MQTT passwords): generation and hashing.

Nothing here stores or logs a secret; callers show a new secret once and keep only its hash.

* **API keys** look like ``mnk_<key_id>_<secret>``: the key id (public, the primary key of
  ``api_keys``) finds the row, the secret (32 random bytes, base64url) is compared by its
  SHA-256 in constant time. A slow password hash buys nothing for 256 random bits.
* **Device passwords** (MQTT) are 32 random bytes, base64url. They are stored in Mosquitto's
  own password-file format, ``$7$<iterations>$<salt b64>$<PBKDF2-HMAC-SHA512 b64>`` (what
  ``mosquitto_passwd`` writes), so the broker's password file is a plain dump of the table.
  101 iterations is Mosquitto's default; the secrets are random, so iterations add no
  security, while the broker pays them on every CONNECT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

API_KEY_PREFIX = "mnk"
_API_KEY_RE = re.compile(r"^mnk_([a-z0-9]{8,32})_([A-Za-z0-9_-]{43})$")
MOSQUITTO_ITERATIONS = 101
_SALT_BYTES = 12  # as mosquitto_passwd


def new_secret() -> str:
    """32 random bytes, base64url without padding (43 characters)."""
    return secrets.token_urlsafe(32)


# --- API keys -------------------------------------------------------------------------------
def new_api_key() -> tuple[str, str]:
    """A new key: ``(key_id, full_key)``. Store ``key_id`` and ``api_key_hash(full_key)``."""
    key_id = secrets.token_hex(6)  # 12 lowercase hex characters
    return key_id, f"{API_KEY_PREFIX}_{key_id}_{new_secret()}"


def parse_api_key(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None."""
    m = _API_KEY_RE.match(token)
    return (m[1], m[2]) if m else None


def api_key_hash(full_key: str) -> bytes:
    """SHA-256 of the key's secret part (32 bytes). Raises ValueError for a malformed key."""
    parsed = parse_api_key(full_key)
    if parsed is None:
        raise ValueError("malformed API key")
    return hashlib.sha256(parsed[1].encode()).digest()


def api_key_matches(full_key: str, stored_hash: bytes) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    try:
        return hmac.compare_digest(api_key_hash(full_key), stored_hash)
    except ValueError:
        return False


# --- MQTT device passwords (Mosquitto password-file hashes) ---------------------------------
def mosquitto_hash(
    password: str, *, iterations: int = MOSQUITTO_ITERATIONS, salt: bytes | None = None
) -> str:
    """A Mosquitto ``$7$`` hash of ``password``, as ``mosquitto_passwd`` would write it."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def mosquitto_verify(password: str, stored: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (constant time)."""
    parts = stored.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        want = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(got, want)
