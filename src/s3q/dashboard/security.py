"""Who may see and steer the dashboard.

* **Bind rule**: on a loopback address (127.0.0.0/8, ::1, localhost) the dashboard may run
  without credentials (only users of this host reach it; an SSH tunnel is the way in from
  elsewhere), and then answers only requests whose Host header is a loopback name (no DNS
  rebinding). Any other address needs ``dashboard_token`` or ``dashboard_user`` +
  ``dashboard_password`` in the settings — secrets, read from the environment, the config
  file or SSM, never from a flag.
* **Authentication**: ``Authorization: Bearer <token>`` (scripts, Prometheus), HTTP basic
  authentication, or for a browser with a token a sign-in form that keeps the proof in the
  signed session cookie, for SESSION_LIFETIME from the sign-in (however busy the session).
  Credentials are compared in constant time and never logged. Signing out ends that
  session for good: its cookie, replayed (a copy kept elsewhere), is refused by this
  process from then on.
* **CSRF**: every action is a POST carrying the session's random token in a hidden field
  (compared in constant time); the session cookie is ``HttpOnly`` and ``SameSite=Strict``,
  and a POST whose ``Origin`` names another site is refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flask import Request, session

from s3q import clock
from s3q.config import Config
from s3q.settings import Secret

__all__ = ["SESSION_LIFETIME", "Credentials", "host_is_loopback", "is_loopback"]

#: How long a sign-in lasts, counted from the sign-in: Flask re-signs a permanent session's
#: cookie at every answer, so the cookie's own age never reaches it while pages are asked.
#: Counted on this machine's clock of lease deadlines (s3q.clock: a wall clock set back
#: would lengthen it; a restart ends every session anyway: a new signing key).
SESSION_LIFETIME = 12 * 3600.0


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_is_loopback(host_header: str) -> bool:
    """Does a Host header (``name``, ``name:port``, ``[v6]:port``) name a loopback host?"""
    if host_header.startswith("["):
        return is_loopback(host_header[1:host_header.find("]")])
    return is_loopback(host_header.split(":", 1)[0])


def _eq(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class Credentials:
    """The dashboard's credentials (secrets resolved)."""

    token: Secret | None = None
    user: str | None = None
    password: Secret | None = None
    #: Sessions signed out of (their ids). The cookie key is new at each start, so a
    #: restart ends every session anyway.
    ended: set[str] = field(default_factory=set, compare=False)

    @classmethod
    def from_config(cls, cfg: Config) -> Credentials:
        return cls(cfg.dashboard_token, cfg.dashboard_user, cfg.dashboard_password)

    @property
    def required(self) -> bool:
        return self.token is not None or self.password is not None

    def bind_refusal(self, host: str) -> str | None:
        """Why the dashboard must not listen on ``host`` (None: it may)."""
        if is_loopback(host) or self.required:
            return None
        return (f"--host {host} is not a loopback address: set dashboard_token (or "
                "dashboard_user and dashboard_password) in the settings first — "
                "S3Q_DASHBOARD_TOKEN, the config file or an ssm: parameter, never a flag")

    def who(self, request: Request) -> str | None:
        """Who made this request (None: not authenticated)."""
        if not self.required:
            return f"local ({request.remote_addr})"
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self.token is not None and _eq(
                value.strip(), self.token.reveal()):
            return f"token ({request.remote_addr})"
        if scheme.lower() == "basic" and self.password is not None:
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            if _eq(user, self.user or "") and _eq(password, self.password.reveal()):
                return f"{user} ({request.remote_addr})"
        signed_in, since = session.get("signed_in"), session.get("since")
        if (isinstance(signed_in, str) and self.token is not None
                and _eq(signed_in, _proof(self.token)) and session.get("sid") not in self.ended
                and isinstance(since, int | float)
                and 0 <= clock.monotonic() - since <= SESSION_LIFETIME):
            return f"token ({request.remote_addr})"
        return None

    def sign_in(self, token: str) -> bool:
        """The sign-in form: remember a correct token in the (signed) session."""
        if self.token is None or not _eq(token, self.token.reveal()):
            return False
        session["signed_in"] = _proof(self.token)
        session["sid"] = secrets.token_urlsafe(16)
        session["since"] = clock.monotonic()
        return True

    def sign_out(self) -> None:
        """End this browser's session: its cookie is cleared, and refused if replayed."""
        sid = session.get("sid")
        if isinstance(sid, str):
            self.ended.add(sid)
        session.clear()


def _proof(token: Secret) -> str:
    """What the session keeps instead of the token itself."""
    return hmac.new(token.reveal().encode(), b"s3q-dashboard-session", "sha256").hexdigest()


def csrf_token() -> str:
    """This session's CSRF token (created on first use)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_ok(request: Request) -> bool:
    expected = session.get("csrf")
    given = request.form.get("csrf", "")
    if not isinstance(expected, str) or not given or not _eq(given, expected):
        return False
    origin = request.headers.get("Origin")
    if origin and origin != "null":  # the host only: a TLS proxy in front changes the scheme
        return urlsplit(origin).netloc == request.host
    return True
