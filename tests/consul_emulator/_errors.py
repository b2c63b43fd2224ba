"""The one error the emulator's cores raise: an HTTP answer the agent would give.

ApiError (Exception)        status + plain-text body, as `agent/http.go` writes errors
"""

from __future__ import annotations

from collections.abc import Mapping


class ApiError(Exception):
    """An error answer: `status`, the plain-text `message` and any extra `headers`."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})
