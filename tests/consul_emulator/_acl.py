"""ACL tokens as the agent reads and checks them (consul-api.md §3.8).

The emulator's ACL model is the smallest that shows every answer §3.8 names:

- off (`tokens=None`): tokens are ignored, the default policy is `allow`;
- on: each token in `tokens` may do everything; no token means the anonymous token, which may do
  nothing (default policy `deny`: writes get `403 Permission denied…`, lists come back without
  what it may not read); any other token gets `403 ACL not found`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ._errors import ApiError

_ANONYMOUS_SECRET: Final = "anonymous"  # the anonymous token's SecretID


def request_token(query: Mapping[str, list[str]], headers: Mapping[str, str]) -> str:
    """The token of a request: `?token=`, else `X-Consul-Token`, else `Authorization: Bearer`."""
    from_query = (query.get("token") or [""])[0]
    if from_query:
        return from_query
    if header := headers.get("X-Consul-Token", ""):
        return header
    parts = headers.get("Authorization", "").split(" ")
    if len(parts) > 1 and parts[0].lower() == "bearer":
        # Bearer tokens hold no spaces (RFC 6750): the agent keeps the first word.
        return " ".join(parts[1:]).strip().split(" ")[0].strip()
    return ""


@dataclass(frozen=True, slots=True)
class Authorizer:
    """What one resolved token may do: everything, or (anonymous under ACLs) nothing."""

    all_rights: bool

    def require(self, permission: str, resource: str) -> None:
        """Raise `403 Permission denied…` unless the token holds `permission` on `resource`."""
        if not self.all_rights:
            raise ApiError(
                403,
                f"Permission denied: anonymous token lacks permission '{permission}' on "
                f'"{resource}". The anonymous token is used implicitly when a request does not '
                "specify a token.",
            )


class Acl:
    """The agent's ACL system: off, or on with a fixed set of all-powerful tokens."""

    def __init__(self, tokens: frozenset[str] | None) -> None:
        self._tokens = tokens

    @property
    def default_policy(self) -> str:
        """The `X-Consul-Default-ACL-Policy` value (§3.5)."""
        return "allow" if self._tokens is None else "deny"

    def resolve(self, token: str) -> Authorizer:
        """The token's rights; `403 ACL not found` for a token the agent does not know."""
        if self._tokens is None or token in self._tokens:
            return Authorizer(all_rights=True)
        if token in ("", _ANONYMOUS_SECRET):
            return Authorizer(all_rights=False)
        raise ApiError(403, "ACL not found")
