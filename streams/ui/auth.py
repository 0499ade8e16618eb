"""Who is asking: one token per tenant, exchanged at the login form for a signed session cookie, or sent as a
bearer token to the JSON API.

The cookie holds ``tenant|expiry|nonce`` and an HMAC-SHA256 over it with a secret made when the process
starts (restarting the UI logs everyone out). It is ``HttpOnly`` and ``SameSite=Strict``; forms that change
something also carry a CSRF token derived from the session. A session is also live on the server: logging out
ends it there, so its cookie, replayed, is refused. The login form carries a CSRF token of its own, bound to a
short-lived pre-login cookie (double submit), so another site cannot log a browser into its tenant. Failed
logins and bad bearer tokens are rate-limited (:class:`FailureLimiter`). Tokens are compared in constant time
and never logged, echoed or stored in the cookie.

Tokens reach the process from a file or the environment, never the command line (``ps`` shows it to every
user): :func:`load_tokens`, :func:`parse_tokens`, and :func:`save_tokens` which writes the generated file
with mode 600 from its first byte.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

COOKIE = "triage_session"
LOGIN_COOKIE = "triage_login"
SESSION_TTL_S = 8 * 3600
LOGIN_FORM_TTL_S = 3600
MAX_SESSIONS = 10_000


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
        # nonce -> expiry of every session that has not logged out (oldest first, for eviction).
        self._live: OrderedDict[str, int] = OrderedDict()
        self._live_lock = threading.Lock()

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
        t = now or time.time()
        expires = int(t + self._ttl)
        nonce = secrets.token_urlsafe(12)
        with self._live_lock:
            for old, exp in list(self._live.items()):
                if exp < t:
                    del self._live[old]
            while len(self._live) >= MAX_SESSIONS:
                self._live.popitem(last=False)
            self._live[nonce] = expires
        payload = f"{tenant}|{expires}|{nonce}"
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=") + "." + self._sign(payload)

    def session(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie value stands for, if it is ours, intact, unexpired and of a known tenant."""
        payload = self._signed_payload(cookie, 512)
        if payload is None:
            return None
        try:
            tenant, expires, nonce = payload.split("|")
            exp = int(expires)
        except ValueError:
            return None
        if exp < (now or time.time()) or tenant not in self._digests:
            return None
        with self._live_lock:
            if self._live.get(nonce) != exp:
                return None  # logged out (or evicted): the cookie alone is not a session
        return Session(tenant, nonce, exp)

    def end_session(self, session: Session) -> None:
        """Log out: the session is over on the server, whatever the browser keeps."""
        with self._live_lock:
            self._live.pop(session.nonce, None)

    # ---- the login form's CSRF token (before there is a session) ---------------------------------------
    def new_login_nonce(self) -> str:
        """The value of the pre-login cookie: a random nonce and when it was made, signed."""
        payload = f"login|{int(time.time())}|{secrets.token_urlsafe(12)}"
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=") + "." + self._sign(payload)

    def _signed_payload(self, cookie: str | None, max_len: int) -> str | None:
        """What a cookie of ours carries, if it is ours and intact."""
        if not cookie or "." not in cookie or len(cookie) > max_len:
            return None
        body, sig = cookie.rsplit(".", 1)
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        # bytes, since compare_digest raises on a str that is not ASCII (a forged cookie would be a 500)
        return payload if hmac.compare_digest(sig.encode(), self._sign(payload).encode()) else None

    def _login_payload(self, cookie: str | None) -> str | None:
        payload = self._signed_payload(cookie, 256)
        if payload is None:
            return None
        parts = payload.split("|")
        if len(parts) != 3 or parts[0] != "login" or not parts[1].isdigit():
            return None
        if int(parts[1]) + LOGIN_FORM_TTL_S < time.time():
            return None
        return payload

    def login_csrf(self, cookie: str | None) -> str | None:
        """The CSRF token the login form carries for this pre-login cookie (None: the cookie is not ours)."""
        payload = self._login_payload(cookie)
        return None if payload is None else self._sign("csrf|" + payload)

    def check_login_csrf(self, cookie: str | None, token: str | None) -> bool:
        expected = self.login_csrf(cookie)
        return bool(expected) and bool(token) and hmac.compare_digest(str(token).encode("utf-8", "replace"),
                                                                      str(expected).encode())

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf|{session.tenant}|{session.nonce}")

    def check_csrf(self, session: Session, token: str | None) -> bool:
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500, not a 403).
        return bool(token) and hmac.compare_digest(str(token).encode("utf-8", "replace"),
                                                   self.csrf_token(session).encode())


class FailureLimiter:
    """Token buckets for failed attempts (a wrong login token, a wrong bearer token): one per client address
    and one for all clients together, so neither one address nor many can guess tokens quickly.

    A bucket holds ``burst`` failures and refills at ``per_s``; while a client's bucket or the shared one is
    empty, its attempts are refused *before* the token is looked at (else the refusal would not slow a guess),
    with the seconds until the next try. Successful attempts cost nothing."""

    def __init__(self, *, burst: float = 5, per_s: float = 1 / 12, shared_burst: float = 100, shared_per_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000) -> None:
        self.burst, self.per_s = float(burst), float(per_s)
        self.shared_burst, self.shared_per_s = float(shared_burst), float(shared_per_s)
        self._clock = clock
        self._max = max_clients
        self._clients: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (level, at)
        self._shared = (self.shared_burst, clock())
        self._lock = threading.Lock()

    @staticmethod
    def _level(bucket: tuple[float, float], burst: float, per_s: float, now: float) -> float:
        level, at = bucket
        return min(burst, level + (now - at) * per_s)

    def retry_after(self, client: str) -> int:
        """0 if ``client`` may try now, else the whole seconds until it may."""
        now = self._clock()
        with self._lock:
            mine = self._level(self._clients.get(client, (self.burst, now)), self.burst, self.per_s, now)
            shared = self._level(self._shared, self.shared_burst, self.shared_per_s, now)
        waits = [(1 - mine) / self.per_s if mine < 1 else 0.0, (1 - shared) / self.shared_per_s if shared < 1 else 0.0]
        wait = max(waits)
        return 0 if wait <= 0 else max(1, int(wait + 0.999))

    def failed(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            mine = self._level(self._clients.pop(client, (self.burst, now)), self.burst, self.per_s, now)
            self._clients[client] = (max(0.0, mine - 1), now)
            shared = self._level(self._shared, self.shared_burst, self.shared_per_s, now)
            self._shared = (max(0.0, shared - 1), now)
            while len(self._clients) > self._max:
                self._clients.popitem(last=False)


# ---- where tokens come from --------------------------------------------------------------------------------
class TokenSourceError(ValueError):
    """Tokens that cannot be used as given; the message says what to do instead."""


def parse_tokens(text: str, where: str) -> dict[str, str]:
    """Tokens from ``text``: a JSON object ``{"tenant": "token"}`` or ``tenant:token`` pairs separated by
    commas or lines (``#`` starts a comment line)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except ValueError as exc:
            raise TokenSourceError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
            raise TokenSourceError(f'{where}: expected a JSON object of "tenant": "token" strings')
        return dict(doc)
    pairs: dict[str, str] = {}
    for n, item in enumerate((p.strip() for line in stripped.splitlines() for p in line.split(",")), 1):
        if not item or item.startswith("#"):
            continue
        tenant, sep, token = item.partition(":")
        if not sep or not tenant.strip() or not token.strip():
            raise TokenSourceError(f"{where}: item {n} is not tenant:token")
        if tenant.strip() in pairs:
            raise TokenSourceError(f"{where}: tenant {tenant.strip()!r} is given twice")
        pairs[tenant.strip()] = token.strip()
    if not pairs:
        raise TokenSourceError(f"{where}: no tenant:token pairs")
    return pairs


def load_tokens(path: Path) -> dict[str, str]:
    """Tokens from a file only its owner can read (as ssh insists for a private key)."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenSourceError(f"cannot read the token file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenSourceError(f"the token file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                               f"run `chmod 600 {path}`")
    return parse_tokens(text, str(path))


def save_tokens(path: Path, tokens: Mapping[str, str]) -> None:
    """Write ``tokens`` to ``path`` atomically, in a file that is mode 600 from the moment it exists: a temp
    file created with ``O_CREAT | O_EXCL`` and mode 0600 in the same directory, then renamed over ``path``
    (so no reader ever sees a half-written or world-readable file, and a symlink at ``path`` is replaced,
    not written through)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(tokens), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
