"""The extender's exceptions: one small hierarchy, translated at the edges.

The HTTP layer turns :class:`BadRequestError` into a 400 with its one-line message;
the config loader logs :class:`ConfigError` with its field path and keeps the last
good config; the bind handler reports :class:`BindError` in the response's ``Error``.
"""

from __future__ import annotations


class FairpackError(Exception):
    """Base of every error fairpack raises on purpose."""


class BadRequestError(FairpackError):
    """A request body that does not follow the extender protocol (HTTP 400)."""


class ConfigError(FairpackError):
    """A config that failed validation; the message starts with the field path."""


class BindError(FairpackError):
    """The API server refused or failed the binding of a pod."""


class ObjectError(FairpackError):
    """A Kubernetes object that cannot be read (bad quantity, wrong type)."""
