"""Refusals of the site server, each mapped to one HTTP status by the app."""

from __future__ import annotations


class SiteError(Exception):
    status = 400


class NotAuthenticated(SiteError):
    status = 401


class Forbidden(SiteError):
    status = 403


class NotFound(SiteError):
    status = 404


class Conflict(SiteError):
    """409; `detail` goes into the answer ({"claimed_by": ...} for a study claim)."""

    status = 409

    def __init__(self, message: str, **detail: object) -> None:
        super().__init__(message)
        self.detail = detail


class UserError(SiteError):
    """A user cannot be added (name taken, unknown role, empty password)."""
