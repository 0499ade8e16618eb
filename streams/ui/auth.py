"""Who is asking: one token per tenant, exchanged at the login form for a signed session cookie, or sent as a
bearer token to the JSON API.

The cookie holds ``tenant|expiry|nonce`` and an HMAC-SHA256 over it with a secret made when the process
starts (restarting the UI logs everyone out). It is ``HttpOnly`` and ``SameSite=Strict``; forms that change
something also carry a CSRF token derived from the session. Tokens are compared in constant time and never
logged, echoed or stored in the cookie.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Mapping

COOKIE = "triage_session"
SESSION_TTL_S = 8 * 3600


@dataclass(frozen=True)
class Session:
    tenant: str
    nonce: str
    expires: int


class Auth:
    def __init__(self, tokens: Mapping[str, str], *, secret: bytes | None = None, ttl_s: int = SESSION_TTL_S) -> None:
        if not tokens:
            raise ValueError("no tenant tokens: every agent logs in with their tenant's token")
        for tenant, token in tokens.items():
            if not tenant or "|" in tenant:
                raise ValueError(f"bad tenant name {tenant!r}")
            if not isinstance(token, str) or len(token) < 8:
                raise ValueError(f"the token of tenant {tenant!r} is missing or shorter than 8 characters")
        if len(set(tokens.values())) != len(tokens):
            raise ValueError("two tenants share a token")
        # Only digests are kept: a token is never held where a repr or a traceback could show it.
        self._digests = {t: hashlib.sha256(tok.encode()).digest() for t, tok in tokens.items()}
        self._secret = secret or secrets.token_bytes(32)
        self._ttl = ttl_s

    @property
    def tenants(self) -> tuple[str, ...]:
        return tuple(self._digests)

    def tenant_for_token(self, token: str | None) -> str | None:
        """The tenant whose token this is, or None. Compares against every tenant, in constant time each."""
        if not token:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        found = None
        for tenant, expected in self._digests.items():
            if hmac.compare_digest(digest, expected):
                found = tenant
        return found

    def _sign(self, payload: str) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()).decode().rstrip("=")

    def new_session(self, tenant: str, *, now: float | None = None) -> str:
        """A cookie value for ``tenant``."""
        expires = int((now or time.time()) + self._ttl)
        payload = f"{tenant}|{expires}|{secrets.token_urlsafe(12)}"
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=") + "." + self._sign(payload)

    def session(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie value stands for, if it is ours, intact, unexpired and of a known tenant."""
        if not cookie or "." not in cookie or len(cookie) > 512:
            return None
        body, sig = cookie.rsplit(".", 1)
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(sig, self._sign(payload)):
            return None
        try:
            tenant, expires, nonce = payload.split("|")
            exp = int(expires)
        except ValueError:
            return None
        if exp < (now or time.time()) or tenant not in self._digests:
            return None
        return Session(tenant, nonce, exp)

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf|{session.tenant}|{session.nonce}")

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(session))
