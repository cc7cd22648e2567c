"""Who is calling: ``Authorization: Bearer <key>`` -> :class:`store.access.Principal`.

* No ``Authorization`` header: the anonymous ``reader`` when ``MEETNET_API_ANONYMOUS_READ`` is
  true (the default: open data), else 401.
* A malformed header or key, an unknown or revoked key, a wrong secret: 401 with
  ``WWW-Authenticate: Bearer``. The key is never logged nor echoed.
* Role checks (:data:`Writer`, :data:`AdminCaller`): 403 for a key of another role, 401 for an
  anonymous caller (a key would help).

**Key cache.** A key's row (its id, SHA-256, role, municipality, revoked flag) is kept per
worker for ``MEETNET_API_KEY_CACHE_S`` seconds (5), keyed by key id, so checking a key costs a
hash and a constant-time comparison, not a database round trip. The presented secret is hashed
and compared on every request, so a wrong secret for a cached key id fails too. Unknown key ids
are cached as well (bounded, oldest dropped first), so random keys cannot make every request
reach the database. Revoking a key through the API drops it from the revoking worker's cache at
once; other workers notice within the TTL.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import DatabaseDep, SettingsDep
from meetnet.secrets import api_key_matches, parse_api_key
from store import credentials
from store.access import ANONYMOUS, Principal
from store.credentials import StoredKey

log = logging.getLogger(__name__)

MAX_CACHED_KEYS = 10_000

# Declares the scheme in /openapi.json (the docs' "Authorize" button); the header itself is
# read below, so that a malformed one is a 401 rather than an anonymous request.
_bearer = HTTPBearer(auto_error=False, description="An API key: `mnk_<key id>_<secret>`.")


class KeyCache:
    """key id -> stored key (or None: unknown), each entry trusted for ``ttl_s`` seconds."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = MAX_CACHED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, StoredKey | None]] = OrderedDict()

    async def get(
        self, key_id: str, load: Callable[[str], Awaitable[StoredKey | None]]
    ) -> StoredKey | None:
        now = self._clock()
        hit = self._entries.get(key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load(key_id)
        if self.ttl_s > 0:
            self._entries[key_id] = (now + self.ttl_s, value)
            self._entries.move_to_end(key_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def invalidate(self, key_id: str) -> None:
        self._entries.pop(key_id, None)

    def __len__(self) -> int:
        return len(self._entries)


def get_key_cache(request: Request) -> KeyCache:
    cache: KeyCache = request.app.state.key_cache
    return cache


KeyCacheDep = Annotated[KeyCache, Depends(get_key_cache)]


def unauthorized(message: str, error: str | None = "invalid_token") -> HTTPException:
    challenge = 'Bearer realm="meetnet"' + (f', error="{error}"' if error else "")
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": challenge}
    )


async def current_principal(
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    cache: KeyCacheDep,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    header = request.headers.get("authorization")
    if header is None:
        if settings.api_anonymous_read:
            return ANONYMOUS
        raise unauthorized("this API needs a key: send `Authorization: Bearer <key>`", error=None)
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized(
            "malformed Authorization header: expected `Bearer <key>`", "invalid_request"
        )
    parsed = parse_api_key(token)
    if parsed is None:
        raise unauthorized("malformed API key: expected mnk_<key id>_<secret>")

    async def load(key_id: str) -> StoredKey | None:
        async with database.connection() as conn:
            return await credentials.lookup_api_key(conn, key_id)

    stored = await cache.get(parsed[0], load)
    if stored is None or stored.revoked or not api_key_matches(token, stored.secret_hash):
        log.debug("rejected API key", extra={"key_id": parsed[0]})
        raise unauthorized("unknown or revoked API key")
    return Principal(stored.role, stored.municipality, stored.key_id)


def require_writer(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if principal.may_write:
        return principal
    if principal.key_id is None:
        raise unauthorized(
            "this request changes the registry: send a municipality or admin key as "
            "`Authorization: Bearer <key>`",
            error=None,
        )
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        "a reader key only reads public data; this needs a municipality or admin key",
    )


def require_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if principal.is_admin:
        return principal
    if principal.key_id is None:
        raise unauthorized(
            "this request needs an admin key: send `Authorization: Bearer <key>`", error=None
        )
    raise HTTPException(status.HTTP_403_FORBIDDEN, "only an admin key may do this")


Caller = Annotated[Principal, Depends(current_principal)]
Writer = Annotated[Principal, Depends(require_writer)]
AdminCaller = Annotated[Principal, Depends(require_admin)]
