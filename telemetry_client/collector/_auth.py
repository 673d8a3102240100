"""Bearer tokens with a name, roles and a team; the token itself never leaves this module.

A token is configured as a :class:`TokenSpec`: a bare token (``--token``,
``TELEMETRY_COLLECTOR_TOKENS``, a bare line of ``--token-file``) is named ``token-N`` with
roles ``ingest`` and ``read`` and no team, as in 0.1; a token-file line ``TOKEN name=NAME
roles=ingest|read|admin[,..] [team=TEAM]`` sets them (docs/collector-store.md, "Who may
read what"). A request authenticates as a :class:`Principal` (name, roles, team), which
is what the app checks roles against, stamps on ingested events and keys rate limits by.

Configured tokens are kept only as sha256 digests; the presented token is hashed the same
way and compared with ``hmac.compare_digest`` against *every* configured digest (no early
exit), so timing tells neither which token nor how much of it matched. Error messages
name the file and line of a bad token line, never its token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ADMIN",
    "ANONYMOUS",
    "INGEST",
    "READ",
    "ROLES",
    "Principal",
    "TokenAuth",
    "TokenSpec",
    "check_token",
    "parse_token_file",
]

INGEST, READ, ADMIN = "ingest", "read", "admin"
ROLES = frozenset({INGEST, READ, ADMIN})
_BARE_ROLES = frozenset({INGEST, READ})
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: the token's name, its roles and its team (None: no team)."""

    name: str
    roles: frozenset[str]
    team: str | None = None

    def may(self, role: str) -> bool:
        """True when the principal has ``role`` or is an admin (admins may do everything)."""
        return role in self.roles or ADMIN in self.roles


ANONYMOUS = Principal("anonymous", ROLES)  # --no-auth: development only


@dataclass(frozen=True, slots=True)
class TokenSpec:
    """One accepted token and the principal it authenticates as.

    ``name`` None is filled in as ``token-N`` by :class:`TokenAuth` (N counts the bare
    tokens, from 1). ``repr`` never shows the token.
    """

    token: str
    name: str | None = None
    roles: frozenset[str] = _BARE_ROLES
    team: str | None = None

    def __repr__(self) -> str:
        return f"TokenSpec(name={self.name!r}, roles={sorted(self.roles)!r}, team={self.team!r})"

    def __post_init__(self) -> None:
        roles: object = self.roles
        if isinstance(roles, str):  # "read" would be split into letters
            raise TypeError("roles: expected a set of role names, got one string")
        object.__setattr__(self, "roles", frozenset(self.roles))
        check_token(self.token)
        if self.name is not None and not _NAME_RE.fullmatch(self.name):
            raise ValueError(f"name={self.name!r}: expected 1-64 of A-Z a-z 0-9 _ . : -")
        if self.team is not None and not _NAME_RE.fullmatch(self.team):
            raise ValueError(f"team={self.team!r}: expected 1-64 of A-Z a-z 0-9 _ . : -")
        unknown = sorted(set(self.roles) - ROLES)
        if not self.roles or unknown:
            raise ValueError(
                f"roles={','.join(sorted(self.roles))!r}: expected one or more of"
                " ingest, read, admin (comma-separated)"
            )


def check_token(token: str) -> None:
    """A token travels in an HTTP header: visible ASCII only, or clients could never send
    it. The message never contains the token itself."""
    if not token or any(not 0x21 <= ord(ch) <= 0x7E for ch in token):
        raise ValueError("tokens: every token must be non-empty visible ASCII (no spaces)")


def parse_token_file(text: str, source: str) -> list[TokenSpec]:
    """The tokens of a ``--token-file`` (``source`` names it in messages).

    Blank lines and lines starting with ``#`` are skipped; each other line is ``TOKEN``
    or ``TOKEN name=NAME roles=R[,R..] [team=TEAM]``. A malformed line raises
    ``ValueError("<source> line <n>: <why>")``, never showing the token.
    """
    specs: list[TokenSpec] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        token, *fields = line.split()
        try:
            specs.append(_spec_of(token, fields))
        except ValueError as exc:
            raise ValueError(f"{source} line {number}: {exc}") from None
    return specs


def _spec_of(token: str, fields: list[str]) -> TokenSpec:
    if not fields:
        return TokenSpec(token)
    values: dict[str, str] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or key not in ("name", "roles", "team"):
            raise ValueError(
                f"{item!r} is not name=NAME, roles=ROLES or team=TEAM"
                if "=" in item
                else "expected TOKEN or TOKEN name=NAME roles=ROLES [team=TEAM]"
            )
        if key in values:
            raise ValueError(f"{key}= given twice")
        values[key] = value
    for required in ("name", "roles"):
        if required not in values:
            raise ValueError(f"missing {required}= (TOKEN name=NAME roles=ROLES [team=TEAM])")
    roles = frozenset(r.strip() for r in values["roles"].split(",") if r.strip())
    return TokenSpec(token, values["name"], roles, values.get("team"))


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class TokenAuth:
    """Who a request is, from its ``Authorization`` header; ``None`` means refuse (401)."""

    def __init__(self, specs: Iterable[TokenSpec | str], *, required: bool = True) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        bare = 0
        names: set[str] = set()
        digests: set[bytes] = set()
        for item in specs:
            spec = TokenSpec(item) if isinstance(item, str) else item
            name = spec.name
            if name is None:
                bare += 1
                name = f"token-{bare}"
            if name in names:
                raise ValueError(f"tokens: two tokens are named {name!r}")
            digest = _digest(spec.token.encode("ascii"))
            if digest in digests:
                raise ValueError(f"tokens: the token of {name!r} is configured twice")
            names.add(name)
            digests.add(digest)
            self._entries.append((digest, Principal(name, spec.roles, spec.team)))
        self._required = required

    @property
    def principals(self) -> Sequence[Principal]:
        """Every configured principal, in configuration order (no tokens)."""
        return [principal for _, principal in self._entries]

    @property
    def required(self) -> bool:
        """False for a ``--no-auth`` collector (every request is :data:`ANONYMOUS`)."""
        return self._required

    def derive_key(self, label: bytes) -> bytes:
        """A 32-byte secret for ``label`` derived from every configured token (the viewer
        signs its cookies with it): the same on every replica and across restarts with the
        same tokens, and a changed token set invalidates what it signed."""
        material = b"".join(digest for digest, _ in self._entries)
        return hmac.new(_digest(b"telemetry-collector:" + material), label, "sha256").digest()

    def principal(self, authorization: str | None) -> Principal | None:
        """The configured principal whose token is presented, :data:`ANONYMOUS` when auth
        is off, else None."""
        if not self._required:
            return ANONYMOUS
        if authorization is None:
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return None
        # Header values arrive latin-1 decoded: encoding back is lossless.
        presented = _digest(credentials.strip().encode("latin-1", "replace"))
        found: Principal | None = None
        for digest, principal in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = principal
        return found
